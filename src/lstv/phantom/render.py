"""Signal and rendering: label maps to a textured, blurred, biased, noisy 12-bit series."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lstv.levels import LEVELS
from lstv.phantom.anatomy import Anatomy
from lstv.phantom.draw import draw_slice
from lstv.phantom.geometry import AXIAL_ORIENTATION, Placement, SeriesGeometry, place_in_image
from lstv.phantom.population import sample_anatomy
from lstv.phantom.tissues import (
    AIR,
    ANNULUS,
    BLUR0,
    BOWEL0,
    CSF,
    FAT,
    MARROW,
    MUSCLE,
    N_LABELS,
    NERVE,
    NUCLEUS0,
    POST_BONE,
    T1_SIGNAL,
    T2_SIGNAL,
    TEXTURE,
    VESSEL,
)

MAX_PIXEL = 4095  # BitsStored 12


@dataclass(frozen=True, eq=False)
class RenderedStudy:
    """A rendered sagittal series and its ground truth.

    Attributes:
        kind: one of :data:`LSTV_TYPES`.
        volume: (D, H, W) uint16, slices in increasing projection of ImagePositionPatient on
            the slice normal (row x column cosines), the order :mod:`lstv.dicom` reads them in.
            For the sagittal orientation the normal is -x, so x decreases with the index.
        geometry: slice geometry of ``volume``.
        disc_centres: the five labelled levels ("L1/L2".."L5/S1") -> (x, y) = (column, row) of
            the disc centre in the mid-sagittal slice ``D // 2``.
        all_discs: every disc of the column that lies in the mid slice's field of view, by
            anatomical name ("T11/T12", "L5/S1", "S1/S2", ...), same coordinates.
        disc_heights: anatomical disc name -> central height in mm.
        contrast: "T2" or "T1".
        subtype: one of ``LSTV_SUBTYPES[kind]``.
        castellvi: Castellvi type of the transitional vertebra ("" for none).
        grades: the five labelled levels -> Pfirrmann grade (1-5) of the disc labelled there.
        fov_top: the vertebra whose body the first row of the mid slice cuts (T10..L1).
    """

    kind: str
    volume: np.ndarray
    geometry: SeriesGeometry
    disc_centres: dict[str, tuple[float, float]]
    all_discs: dict[str, tuple[float, float]]
    disc_heights: dict[str, float]
    contrast: str = "T2"
    subtype: str = "normal"
    castellvi: str = ""
    grades: dict[str, int] = field(default_factory=dict)
    fov_top: str = ""

    @property
    def mid_index(self) -> int:
        return self.volume.shape[0] // 2


def _lookup_tables(
    a: Anatomy, contrast: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label signal and texture amplitude for one study."""
    base = T2_SIGNAL if contrast == "T2" else T1_SIGNAL
    lut = np.zeros(N_LABELS, np.float32)
    for label, value in base.items():
        lut[label] = value * rng.uniform(0.92, 1.08)
    lut[CSF] = base[CSF]
    for i, d in enumerate(a.discs):
        if contrast == "T2":
            lut[NUCLEUS0 + i] = (
                d.signal
                if d.kind not in ("vestigial", "rudimentary")
                else (d.signal * lut[MARROW] / 0.46)
            )
        else:
            lut[NUCLEUS0 + i] = 0.32 if d.kind in ("normal", "thoracic") else lut[MARROW] * 0.8
        # A degenerated disc's nucleus fades into its annulus through a mid-signal border.
        lut[BLUR0 + i] = (lut[NUCLEUS0 + i] + lut[ANNULUS]) / 2
    for j, s in enumerate(a.bowel_signal):
        lut[BOWEL0 + j] = s if contrast == "T2" else 0.3 + 0.4 * (s - 0.4)
    amp = np.zeros(N_LABELS, np.float32)
    for label, value in TEXTURE.items():
        amp[label] = value
    amp[BOWEL0:] = 0.12
    for i, d in enumerate(a.discs):  # degenerated nuclei are inhomogeneous
        amp[NUCLEUS0 + i] = amp[BLUR0 + i] = 0.07 * (d.grade - 1)
    return lut, amp


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field with features about ``cell`` pixels wide."""
    small = rng.standard_normal((shape[0] // cell + 3, shape[1] // cell + 3), dtype=np.float32)
    big = cv2.resize(
        small, (shape[1] + 3 * cell, shape[0] + 3 * cell), interpolation=cv2.INTER_CUBIC
    )
    return big[cell : cell + shape[0], cell : cell + shape[1]]


def _bias_field(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Smooth receive-coil sensitivity: brighter posteriorly (spine coil), low-order drift."""
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j].astype(np.float32)
    c = rng.uniform(-0.12, 0.12, size=4)
    field = np.exp(
        rng.uniform(0.05, 0.25) * x + c[0] * y + c[1] * x * x + c[2] * y * y + c[3] * x * y
    )
    return (field / field.mean()).astype(np.float32)


def _rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise, clipped to 12 bits."""
    real, imag = rng.standard_normal((2, *img.shape), dtype=np.float32)
    real *= sigma
    real += img
    real *= real
    imag *= sigma
    imag *= imag
    real += imag
    np.sqrt(real, out=real)
    return np.clip(real, 0, MAX_PIXEL).astype(np.uint16)


def _synthesise(
    labels: np.ndarray,
    lut: np.ndarray,
    amp: np.ndarray,
    texture: np.ndarray,
    sigma_px: float,
    partial_volume: float = 0.0,
) -> np.ndarray:
    """Signal of a label map: tissue values, texture, point-spread blur.

    ``partial_volume`` (0..1) mixes in a coarse blur: a thick slab at the edge of the
    structures it cuts sees them at lower contrast.
    """
    img = lut[labels]
    img *= 1.0 + amp[labels] * texture
    sharp = cv2.GaussianBlur(img, (0, 0), sigma_px)
    if partial_volume <= 0:
        return sharp
    coarse = cv2.GaussianBlur(sharp, (0, 0), 4.0 * sigma_px)
    return cv2.addWeighted(sharp, 1.0 - partial_volume, coarse, partial_volume, 0.0)


def sample_matrix(rng: np.random.Generator) -> tuple[int, int, float]:
    rows = int(rng.choice([320, 352, 384, 416, 448, 480, 512]))
    cols = rows if rng.random() < 0.8 else max(320, rows - int(rng.choice([16, 32, 64])))
    lo, hi = max(0.5, 270.0 / rows), min(0.9, 340.0 / rows)
    spacing = round(float(rng.uniform(lo, hi)), 4)
    return rows, cols, spacing


def _render_series(
    a: Anatomy,
    rng: np.random.Generator,
    *,
    rows: int,
    cols: int,
    spacing: float,
    n_slices: int,
    thickness: float,
    gap: float,
    placement: Placement,
    origin: np.ndarray,
    mid_offset: float,
    contrast: str,
) -> RenderedStudy:
    """Draw, texture, blur, bias and add Rician noise to every slice of one sagittal series.

    Slice ``k`` lies ``mid_offset - (k - D // 2) * step`` mm from the midline (patient +x), so
    the volume is in slice-normal order; ``origin`` is the ImagePositionPatient of slice D // 2.
    """
    step = thickness + gap
    mid = n_slices // 2
    lut, amp = _lookup_tables(a, contrast, rng)
    texture = _smooth_noise(rng, (rows, cols), 3)
    coarse = _smooth_noise(rng, (rows, cols), 14)
    texture = texture * 0.8 + coarse * 0.5
    bias = _bias_field(rng, rows, cols)
    tilt = rng.uniform(-0.08, 0.08)
    scale = rng.uniform(2200.0, 3600.0)
    noise = rng.uniform(0.018, 0.04) * scale
    sigma_px = max(0.45, 0.35 / spacing)
    volume = np.empty((n_slices, rows, cols), np.uint16)
    mid_centres: dict[str, tuple[np.ndarray, float]] = {}
    for k in range(n_slices):
        # Volume order follows the slice normal, which is -x for this orientation.
        dx = mid_offset - (k - mid) * step
        labels, centres = draw_slice(a, placement, dx)
        if k == mid:
            mid_centres = centres
        # A shifted texture per slice, so neighbouring slices do not repeat the marrow pattern.
        shift = int(rng.integers(0, 64))
        slab = np.roll(texture, (shift, 2 * shift), (0, 1))
        # Lateral slices cut structures obliquely: lower contrast further from the midline.
        partial = 0.35 * min(1.0, abs(dx) / 35.0)
        img = _synthesise(labels, lut, amp, slab, sigma_px, partial)
        img *= bias * (scale * (1.0 + tilt * dx / 40.0))
        volume[k] = _rician(rng, img, noise)
    positions = np.array([origin - np.array([(k - mid) * step, 0.0, 0.0]) for k in range(n_slices)])
    geometry = SeriesGeometry(rows, cols, spacing, thickness, step, positions)
    all_discs, heights = {}, {}
    for d in a.discs:
        c = placement.to_pixels(mid_centres[d.name][0])
        heights[d.name] = d.height
        if 0 <= c[0] <= cols - 1 and 0 <= c[1] <= rows - 1:
            all_discs[d.name] = (float(c[0]), float(c[1]))
    # Counting down from L1, the five labelled levels carry the anatomical names of their discs
    # in every kind (sacralization: L5/S1 is the rudimentary disc; lumbarization: S1/S2 is not
    # labelled), so the labels are the discs of those names.
    disc_centres = {level: all_discs[level] for level in LEVELS}
    return RenderedStudy(
        a.kind,
        volume,
        geometry,
        disc_centres,
        all_discs,
        heights,
        contrast,
        subtype=a.subtype,
        castellvi=a.castellvi,
        grades={level: a.disc(level).grade for level in LEVELS},
        fov_top=placement.top,
    )


def render_t2(
    rng: np.random.Generator, kind: str, subtype: str | None = None
) -> tuple[RenderedStudy, Anatomy, Placement]:
    a = sample_anatomy(rng, kind, subtype)
    rows, cols, spacing = sample_matrix(rng)
    n_slices = int(rng.integers(15, 21))
    thickness = round(float(rng.uniform(3.0, 4.0)), 2)
    gap = round(float(rng.choice([0.0, 0.0, 0.3, 0.5])), 2)
    placement = place_in_image(rng, a, rows, cols, spacing)
    origin = np.round(
        np.array(
            [
                rng.uniform(-15.0, 15.0),
                -cols * spacing / 2 + rng.uniform(-20.0, 20.0),
                rows * spacing / 2 + rng.uniform(-60.0, 60.0),
            ]
        ),
        3,
    )
    study = _render_series(
        a,
        rng,
        rows=rows,
        cols=cols,
        spacing=spacing,
        n_slices=n_slices,
        thickness=thickness,
        gap=gap,
        placement=placement,
        origin=origin,
        mid_offset=rng.uniform(-0.5, 0.5),
        contrast="T2",
    )
    return study, a, placement


def scanner_shift(volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same anatomy as another scanner and protocol would show it: a coarser in-plane
    resolution (down to 60% and back), a gamma of 0.8 on the signal, a stronger receive-coil
    bias field and more noise. Used to test a score reference against a scanner change."""
    d, rows, cols = volume.shape
    img = volume.astype(np.float32) / MAX_PIXEL
    small = (max(8, int(cols * 0.6)), max(8, int(rows * 0.6)))
    field = 1.0 + 0.3 * _smooth_noise(rng, (rows, cols), max(rows // 3, 8)) * 0.5
    field *= np.exp(rng.uniform(0.2, 0.4) * np.linspace(-1, 1, cols, dtype=np.float32))[None]
    out = np.empty_like(volume)
    for k in range(d):
        s = cv2.resize(
            cv2.resize(img[k], small, interpolation=cv2.INTER_AREA),
            (cols, rows),
            interpolation=cv2.INTER_LINEAR,
        )
        s = np.power(np.clip(s, 0, None), 0.8) * field * MAX_PIXEL
        out[k] = _rician(rng, s, 0.02 * MAX_PIXEL)
    return out


def render_study(rng: np.random.Generator, kind: str, subtype: str | None = None) -> RenderedStudy:
    """Render the sagittal T2 series of one study (pure: all randomness comes from ``rng``).

    Args:
        rng: random generator.
        kind: one of :data:`LSTV_TYPES`.
        subtype: one of ``LSTV_SUBTYPES[kind]``; None draws one.

    Returns:
        The uint16 volume (15-20 slices), its geometry and the disc centres of the
        mid-sagittal slice ``D // 2`` in pixel coordinates. Slices are in increasing projection
        of their position on the slice normal (row x column cosines = -x here), which is the
        order hengck23's demo and :func:`lstv.dicom.read_series` stack them in, so ``D // 2`` is
        the slice the localizer reads, for even ``D`` too.
    """
    return render_t2(rng, kind, subtype)[0]


def study_rng(seed: int, index: int) -> np.random.Generator:
    """The generator :func:`write_phantom_dataset` renders study ``index`` of ``seed`` with."""
    return np.random.default_rng([seed, index, 0x5EED])


def render_t1(
    rng: np.random.Generator, a: Anatomy, t2: RenderedStudy, placement: Placement
) -> RenderedStudy:
    """A small sagittal T1 of the same patient: 320 x 320, 5-7 slices, same frame of reference."""
    g = t2.geometry
    size = 320
    spacing = round(g.pixel_spacing * g.rows / size, 4)
    scaled = Placement(placement.rotation, placement.offset, spacing, size, size)
    origin = g.positions[t2.mid_index].copy()
    return _render_series(
        a,
        rng,
        rows=size,
        cols=size,
        spacing=spacing,
        n_slices=int(rng.integers(5, 8)),
        thickness=4.0,
        gap=0.4,
        placement=scaled,
        origin=origin,
        mid_offset=0.0,
        contrast="T1",
    )


def render_axial(
    rng: np.random.Generator, a: Anatomy, t2: RenderedStudy
) -> tuple[np.ndarray, SeriesGeometry]:
    """A few axial T2 slices through the lower lumbar discs (a simple cross-section drawing)."""
    g = t2.geometry
    size, spacing = 320, 0.625
    levels = [name for name in ("L3/L4", "L4/L5", "L5/S1") if name in t2.all_discs]
    mid = g.positions[t2.mid_index]
    lut, amp = _lookup_tables(a, "T2", rng)
    texture = _smooth_noise(rng, (size, size), 3)
    scale = rng.uniform(2200.0, 3600.0)
    noise = rng.uniform(0.02, 0.04) * scale
    slices, positions = [], []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for name in levels:
        col, row = t2.all_discs[name]
        # Patient position of the disc centre on the mid-sagittal slice.
        y_disc = mid[1] + col * g.pixel_spacing
        z_disc = mid[2] - row * g.pixel_spacing
        centre_x, centre_y = size / 2, size * 0.42
        px = 1.0 / spacing
        lab = np.full((size, size), FAT, np.uint8)
        outside = ((xx - centre_x) / (150 * px)) ** 2 + ((yy - centre_y) / (105 * px)) ** 2 > 1
        lab[outside] = AIR
        disc_c = (int(centre_x), int(centre_y))
        axes = (int(24 * px), int(18 * px))
        cv2.ellipse(
            lab, disc_c, (axes[0] + int(2 * px), axes[1] + int(2 * px)), 0, 0, 360, ANNULUS, -1
        )
        cv2.ellipse(lab, disc_c, axes, 0, 0, 360, NUCLEUS0 + a.index(name.split("/")[0]), -1)
        canal_c = (int(centre_x), int(centre_y + 28 * px))
        for side in (-1, 1):
            psoas = (int(centre_x + side * 38 * px), int(centre_y - 2 * px))
            cv2.ellipse(lab, psoas, (int(16 * px), int(20 * px)), 0, 0, 360, MUSCLE, -1)
            erector = (int(centre_x + side * 28 * px), int(centre_y + 62 * px))
            cv2.ellipse(lab, erector, (int(24 * px), int(22 * px)), 0, 0, 360, MUSCLE, -1)
            facet = (int(centre_x + side * 16 * px), int(centre_y + 34 * px))
            cv2.ellipse(lab, facet, (int(6 * px), int(9 * px)), 0, 0, 360, POST_BONE, -1)
        cv2.ellipse(lab, canal_c, (int(11 * px), int(8 * px)), 0, 0, 360, CSF, -1)
        cv2.ellipse(
            lab,
            (canal_c[0], canal_c[1] + int(4 * px)),
            (int(6 * px), int(2 * px)),
            0,
            0,
            360,
            NERVE,
            -1,
        )
        cv2.line(
            lab,
            (int(centre_x), int(centre_y + 42 * px)),
            (int(centre_x), int(centre_y + 75 * px)),
            POST_BONE,
            max(1, int(5 * px)),
        )
        cv2.ellipse(
            lab,
            (int(centre_x - 6 * px), int(centre_y - 34 * px)),
            (int(10 * px), int(10 * px)),
            0,
            0,
            360,
            VESSEL,
            -1,
        )
        slices.append(_rician(rng, _synthesise(lab, lut, amp, texture, 0.6) * scale, noise))
        positions.append([mid[0] - centre_x * spacing, y_disc - centre_y * spacing, z_disc])
    # Axial slices are ordered by increasing z along their normal (row x column = +z).
    order = np.argsort([p[2] for p in positions])
    volume = (
        np.stack([slices[i] for i in order]) if slices else np.zeros((0, size, size), np.uint16)
    )
    geometry = SeriesGeometry(
        size,
        size,
        spacing,
        4.0,
        4.0,
        np.round(np.array([positions[i] for i in order]), 3),
        AXIAL_ORIENTATION,
    )
    return volume, geometry
