"""Synthetic sagittal T2 lumbar MRI studies, written as RSNA-layout DICOM.

The real RSNA 2024 images cannot be downloaded everywhere the project runs, so the tests, the
shipped phantom localizer, the demo and the benchmark use studies drawn here. Each study is a
sagittal T2 series of 15-20 slices with real geometry, drawn like a T2 image: vertebral bodies with
rounded corners and textured fatty marrow, bright hydrated discs with a darker annulus, a bright
CSF canal with the darker cord and cauda equina, laminae and spinous processes, paraspinal muscle
and subcutaneous fat, abdominal contents, lordosis, random size, tilt and field of view, a smooth
receive-coil bias field and Rician noise. Parasagittal slices are the same anatomy narrowed by the
lateral half-width of each structure (bodies and discs shrink, the canal gives way to pedicles and
foramina, the spinous process to muscle), which is what a 3-4 mm slab sees.

Three kinds of study (:data:`LSTV_TYPES`):

* ``normal``: T8..T12 (those within the field of view), five lumbar vertebrae, a sacrum of five
  fused, tapering segments with thin vestigial S1/S2 and S2/S3 remnant discs, and a coccyx.
* ``sacralization``: L5 is partly fused to the sacrum. It is trapezoid (shorter posteriorly,
  narrower below), aligned with the sacrum, and the L5/S1 disc is a thin (1-3 mm), dim, partly
  bridged rudimentary disc or absent. Only four mobile lumbar discs look normal.
* ``lumbarization``: S1 is separated from S2 by a well-formed disc and is squared off like a
  lumbar body: six lumbar-type segments above a four-segment sacrum.

Label convention for transitional studies (``train_label_coordinates.csv``): levels are counted
from the top, as a radiologist reading a whole-spine localiser would, with L1 the first vertebra
below the last rib-bearing vertebra T12.

* Sacralization: L1/L2 .. L4/L5 are the four normal discs; L5/S1 is labelled at the centre of
  the thin rudimentary disc (or of the bony bridge where it is absent) between the fused L5 and
  the sacrum.
* Lumbarization: L1/L2 .. L5/S1 are the five discs counting down from L1 (so "L5/S1" is the disc
  between L5 and the lumbarized S1); the extra, well-formed S1/S2 disc below is not labelled.

Every study has one ``Sagittal T2/STIR`` series, labelled on its mid-sagittal slice (index
``D // 2`` in slice-normal order, see :func:`render_study`); some also have a small ``Sagittal
T1`` and/or ``Axial T2`` series so that series selection is exercised. About a third of the
T2 series are RLE Lossless, a sixth JPEG Lossless SV1 (encoded with python-gdcm: pydicom has no
encoder for it), the rest explicit VR little endian; about a quarter have instance numbers
shuffled against geometry. UIDs and every random draw derive from the seed, so the same seed
writes byte-identical files.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lstv.levels import LEVELS

log = logging.getLogger(__name__)

LSTV_TYPES = ("normal", "sacralization", "lumbarization")

T2_DESCRIPTION = "Sagittal T2/STIR"
T1_DESCRIPTION = "Sagittal T1"
AXIAL_DESCRIPTION = "Axial T2"
CONDITION = "Spinal Canal Stenosis"

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
SAGITTAL_ORIENTATION = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

MAX_PIXEL = 4095  # BitsStored 12
_MAX_STUDIES_PER_SEED = 100_000
# Study and series ids are a bijection of k = (seed, index) modulo a prime P just below 9.99e9
# (an affine map, then cubing, which permutes Z_P because gcd(3, P - 1) = 1), offset into 7-10
# digits: distinct pairs give distinct ids, so different seeds never share an id.
_ID_PRIME = 9_989_999_933
_ID_OFFSET = 1_000_000
_STUDY_ID_MUL, _STUDY_ID_ADD = 2_654_435_761, 1_234_567_891
_SERIES_ID_MUL, _SERIES_ID_ADD = 2_246_822_519, 3_266_489_917


# --------------------------------------------------------------------------------------------
# Tissue labels. Each slice is first drawn as a label map, then mapped to signal per contrast.
# --------------------------------------------------------------------------------------------
AIR, SKIN, FAT, MUSCLE, ABDOMEN, LIVER, MARROW, CORTEX, POST_BONE, ANNULUS = range(10)
CSF, CORD, EPIDURAL_FAT, LIGAMENT, VESSEL, BLADDER, FACET_FLUID, NERVE = range(10, 18)
_NUCLEUS0 = 32  # one label per disc, so each disc has its own hydration
_BOWEL0 = 96  # one label per bowel loop
_N_LABELS = 256

# fmt: off
# Relative signal of each tissue (CSF ~ 1). T2 fast spin echo: fluid and fat bright, marrow
# intermediate, muscle, cortex, ligaments and flowing blood dark.
_T2_SIGNAL = {
    AIR: 0.01, SKIN: 0.30, FAT: 0.72, MUSCLE: 0.20, ABDOMEN: 0.50, LIVER: 0.20, MARROW: 0.46,
    CORTEX: 0.07, POST_BONE: 0.40, ANNULUS: 0.30, CSF: 1.0, CORD: 0.36, EPIDURAL_FAT: 0.70,
    LIGAMENT: 0.10, VESSEL: 0.06, BLADDER: 0.95, FACET_FLUID: 0.75, NERVE: 0.32,
}
# T1 spin echo, for the small extra "Sagittal T1" series: fat and marrow bright, fluid dark.
_T1_SIGNAL = {
    AIR: 0.01, SKIN: 0.45, FAT: 1.0, MUSCLE: 0.38, ABDOMEN: 0.80, LIVER: 0.50, MARROW: 0.80,
    CORTEX: 0.07, POST_BONE: 0.72, ANNULUS: 0.30, CSF: 0.16, CORD: 0.48, EPIDURAL_FAT: 0.95,
    LIGAMENT: 0.12, VESSEL: 0.08, BLADDER: 0.12, FACET_FLUID: 0.20, NERVE: 0.45,
}
# Fraction of each tissue's signal modulated by the texture field (fatty marrow is speckled).
# fmt: on
_TEXTURE = {MARROW: 0.22, POST_BONE: 0.18, ABDOMEN: 0.12, MUSCLE: 0.10, FAT: 0.06, LIVER: 0.05}


@dataclass(frozen=True)
class Vertebra:
    """One vertebral body, in millimetres, before placement.

    Attributes:
        name: "T12", "L5", "S1", "Co1"...
        shape: "thoracic", "lumbar", "transitional" (sacralized L5), "sacral" or "coccygeal".
        height: central height between the endplate centres.
        depth: anterior-posterior depth of the superior endplate.
        taper: inferior endplate depth / superior endplate depth.
        half_width: lateral half-width (parasagittal slices beyond it miss the body).
        angle: tilt of the body axis from straight down, degrees, positive = posterior.
        wedge: inferior minus superior endplate angle, degrees (taller anteriorly if positive).
    """

    name: str
    shape: str
    height: float
    depth: float
    taper: float
    half_width: float
    angle: float
    wedge: float


@dataclass(frozen=True)
class Disc:
    """The space between two consecutive vertebrae.

    Attributes:
        name: "L4/L5", "S1/S2"...
        kind: "normal" (hydrated disc), "thoracic" (thin normal disc), "rudimentary" (thin, dim,
            partly bridged), "vestigial" (fused sacral level with a faint remnant) or "gap"
            (coccygeal joint).
        height: central height, mm.
        signal: nucleus signal relative to CSF (T2).
        extent: fraction of the endplate depth the (remnant) disc spans.
    """

    name: str
    kind: str
    height: float
    signal: float
    extent: float = 1.0


@dataclass
class _Body:
    """A placed vertebra: endplate centres and unit vectors in the canonical mm frame."""

    vertebra: Vertebra
    sup_centre: np.ndarray
    inf_centre: np.ndarray
    sup_angle: float
    inf_angle: float

    @property
    def name(self) -> str:
        return self.vertebra.name


@dataclass
class Anatomy:
    """Everything needed to draw one study's spine, in a canonical mm frame.

    The frame has u = anterior -> posterior and v = superior -> inferior, so it maps onto image
    columns and rows by a rotation, a translation and the pixel spacing. Soft-tissue fields are
    distances in mm; ``bowel`` holds one (position along the spine 0..1, depth 0..1, lateral
    centre, radii u, v, x, angle) per loop; ``extra`` keeps the patient factors drawn (size,
    lordosis) for inspection; ``cache`` holds reference lines shared by the slices.
    """

    kind: str
    bodies: list[_Body]
    discs: list[Disc]
    canal_depth: dict[str, float]
    sac_half_width: float
    fat_thickness: float
    muscle_depth: float
    spinous_length: float
    abdominal_depth: float
    bowel: list[tuple[float, float, float, float, float, float, float]]
    bowel_signal: list[float]
    vessel_depth: float
    conus_level: float
    root_offsets: tuple[float, ...]
    cord_half_width: float
    extra: dict[str, float] = field(default_factory=dict)
    cache: dict[str, object] = field(default_factory=dict, repr=False)

    def index(self, name: str) -> int:
        for i, body in enumerate(self.bodies):
            if body.name == name:
                return i
        raise KeyError(name)


@dataclass(frozen=True, eq=False)
class SeriesGeometry:
    """Where the slices of a series lie in patient space (LPS, mm).

    Attributes:
        rows, cols: matrix size.
        pixel_spacing: mm between pixel centres (rows and columns alike).
        slice_thickness, spacing_between_slices: mm.
        positions: (D, 3) ImagePositionPatient (centre of the top-left pixel) of each slice,
            in increasing slice-normal order.
        orientation: ImageOrientationPatient (row cosines, then column cosines).
    """

    rows: int
    cols: int
    pixel_spacing: float
    slice_thickness: float
    spacing_between_slices: float
    positions: np.ndarray
    orientation: tuple[float, ...] = SAGITTAL_ORIENTATION


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
    """

    kind: str
    volume: np.ndarray
    geometry: SeriesGeometry
    disc_centres: dict[str, tuple[float, float]]
    all_discs: dict[str, tuple[float, float]]
    disc_heights: dict[str, float]
    contrast: str = "T2"

    @property
    def mid_index(self) -> int:
        return self.volume.shape[0] // 2


@dataclass(frozen=True)
class PhantomDataset:
    """What :func:`write_phantom_dataset` wrote."""

    root: Path
    images_dir: Path
    series_csv: Path
    labels_csv: Path
    lstv_labels_csv: Path
    valid_ids_path: Path
    study_ids: tuple[int, ...]
    valid_ids: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------
# name, shape, height, depth, taper, half-width, angle (deg) of a normal adult column; heights
# and depths are scaled per patient, angles by the lordosis factor.
_NORMAL_COLUMN = (
    ("T8", "thoracic", 21.0, 29.0, 1.0, 16.0, -4.0),
    ("T9", "thoracic", 21.5, 30.0, 1.0, 16.5, -6.0),
    ("T10", "thoracic", 22.0, 31.0, 1.0, 17.0, -8.0),
    ("T11", "thoracic", 23.0, 32.0, 1.0, 18.0, -10.0),
    ("T12", "thoracic", 24.0, 33.0, 1.0, 19.0, -11.0),
    ("L1", "lumbar", 27.0, 37.0, 1.0, 21.0, -9.0),
    ("L2", "lumbar", 28.0, 38.0, 1.0, 22.0, -5.0),
    ("L3", "lumbar", 28.5, 39.0, 1.0, 23.0, 0.0),
    ("L4", "lumbar", 28.5, 40.0, 0.99, 24.0, 6.0),
    ("L5", "lumbar", 27.5, 40.0, 0.97, 25.0, 12.0),
    ("S1", "sacral", 27.0, 42.0, 0.78, 45.0, 32.0),
    ("S2", "sacral", 22.0, 33.0, 0.82, 40.0, 27.0),
    ("S3", "sacral", 18.0, 27.0, 0.82, 33.0, 19.0),
    ("S4", "sacral", 14.0, 22.0, 0.8, 26.0, 10.0),
    ("S5", "sacral", 11.0, 17.0, 0.8, 18.0, 1.0),
    ("Co1", "coccygeal", 9.0, 14.0, 0.85, 10.0, -10.0),
    ("Co2", "coccygeal", 8.0, 11.0, 0.85, 8.0, -20.0),
    ("Co3", "coccygeal", 6.5, 9.0, 0.8, 6.0, -28.0),
)
_LUMBAR_DISC_HEIGHT = {"L1/L2": 8.8, "L2/L3": 9.5, "L3/L4": 10.0, "L4/L5": 10.5, "L5/S1": 10.0}


def _column_rows(kind: str) -> list[list]:
    """The column table of :data:`_NORMAL_COLUMN`, changed for a transitional kind."""
    rows = [list(r) for r in _NORMAL_COLUMN]
    by_name = {r[0]: r for r in rows}
    if kind == "sacralization":
        # L5 joins the sacrum: shorter, narrower below, tilted towards S1, wider laterally.
        l4_angle, s1_angle = by_name["L4"][6], by_name["S1"][6]
        l5_angle = l4_angle + 0.62 * (s1_angle - l4_angle)
        by_name["L5"][1:7] = ["transitional", 24.5, 40.0, 0.84, 32.0, l5_angle]
        by_name["S1"][6] = s1_angle + 2.0
    elif kind == "lumbarization":
        # S1 becomes a sixth lumbar-type body; the lumbosacral angle moves down to S1/S2.
        by_name["S1"][1:7] = ["lumbar", 26.0, 38.0, 0.97, 25.0, 19.0]
        for name, shift in (("S2", 12.0), ("S3", 10.0), ("S4", 8.0), ("S5", 6.0)):
            by_name[name][6] += shift
        by_name["S2"][2:4] = [24.0, 38.0]
    return rows


def _sample_vertebrae(
    rng: np.random.Generator, kind: str, size: float, lordosis: float
) -> list[Vertebra]:
    vertebrae = []
    for name, shape, height, depth, taper, half_width, angle in _column_rows(kind):
        vertebrae.append(
            Vertebra(
                name=name,
                shape=shape,
                height=height * size * (1 + rng.normal(0.0, 0.025)),
                depth=depth * size * (1 + rng.normal(0.0, 0.025)),
                taper=taper,
                half_width=half_width * size,
                angle=angle * lordosis + rng.normal(0.0, 1.2),
                wedge=0.0,
            )
        )
    # Part of the curvature sits in the bodies (wedged vertebrae), the rest in the discs.
    for i, v in enumerate(vertebrae):
        prev_angle = vertebrae[max(i - 1, 0)].angle
        next_angle = vertebrae[min(i + 1, len(vertebrae) - 1)].angle
        share = 0.7 if v.shape in ("sacral", "coccygeal", "transitional") else 0.35
        wedge = share * (next_angle - prev_angle) / 2
        if v.shape == "transitional":
            wedge = max(wedge, 7.0)
        vertebrae[i] = Vertebra(**{**v.__dict__, "wedge": wedge})
    return vertebrae


def _sample_disc(rng: np.random.Generator, upper: Vertebra, lower: Vertebra) -> Disc:
    name = f"{upper.name}/{lower.name}"
    if upper.shape == "coccygeal" or upper.name == "S5":
        return Disc(name, "gap", rng.uniform(1.5, 2.5), 0.0)
    if upper.shape == "transitional":
        # Sacralized L5/S1: a thin, dim remnant spanning part of the depth, or none at all.
        if rng.random() < 0.3:
            return Disc(name, "rudimentary", rng.uniform(1.0, 1.8), rng.uniform(0.30, 0.42), 0.0)
        return Disc(
            name,
            "rudimentary",
            rng.uniform(1.5, 3.0),
            rng.uniform(0.40, 0.55),
            rng.uniform(0.45, 0.8),
        )
    if upper.shape == "sacral" and lower.shape == "sacral":
        # Fused sacral levels keep a thin remnant, fainter further down.
        level = int(upper.name[1])
        signal = (0.58, 0.54, 0.51, 0.48)[min(level, 4) - 1]
        return Disc(
            name,
            "vestigial",
            rng.uniform(1.2, 2.6) * (1 - 0.1 * level),
            signal * rng.uniform(0.9, 1.05),
            rng.uniform(0.35, 0.6),
        )
    if upper.name == "S1":  # lumbarized S1: a well-formed S1/S2 disc
        return Disc(name, "normal", rng.uniform(8.0, 10.5), rng.uniform(0.75, 0.98))
    if upper.shape == "thoracic":
        # Thoracic discs are thinner; T12/L1 is between thoracic and lumbar.
        height = rng.uniform(6.5, 8.5) if upper.name == "T12" else rng.uniform(4.5, 6.5)
        return Disc(name, "thoracic", height, rng.uniform(0.62, 0.85))
    height = float(np.clip(_LUMBAR_DISC_HEIGHT[name] + rng.normal(0.0, 0.8), 8.0, 12.0))
    return Disc(name, "normal", height, rng.uniform(0.78, 1.0))


def _sample_bowel(rng: np.random.Generator) -> tuple[list[tuple[float, ...]], list[float]]:
    """Bowel loops (see :class:`Anatomy`) and their T2 signal: gas, fluid or soft content."""
    n = int(rng.integers(40, 70))
    loops = [
        (
            rng.uniform(0.0, 1.0),
            rng.uniform(0.0, 1.0),
            rng.uniform(-45.0, 45.0),
            rng.uniform(6.0, 18.0),
            rng.uniform(6.0, 16.0),
            rng.uniform(8.0, 25.0),
            rng.uniform(0.0, 180.0),
        )
        for _ in range(n)
    ]
    signal = []
    for r in rng.random(n):
        low, high = (0.03, 0.10) if r < 0.15 else (0.65, 0.9) if r < 0.35 else (0.18, 0.38)
        signal.append(rng.uniform(low, high))
    return loops, signal


def sample_anatomy(rng: np.random.Generator, kind: str) -> Anatomy:
    """Draw one patient's spinal column and surroundings.

    Args:
        rng: the random generator (all randomness of the study comes from it).
        kind: one of :data:`LSTV_TYPES`.

    Returns:
        The placed column (endplates in the canonical mm frame) and the soft-tissue parameters.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in LSTV_TYPES:
        raise ValueError(f"kind must be one of {LSTV_TYPES}, got {kind!r}")
    size = rng.uniform(0.95, 1.12)
    lordosis = rng.uniform(0.75, 1.25)
    vertebrae = _sample_vertebrae(rng, kind, size, lordosis)
    discs = [_sample_disc(rng, u, lo) for u, lo in zip(vertebrae[:-1], vertebrae[1:], strict=True)]
    bowel, bowel_signal = _sample_bowel(rng)
    return Anatomy(
        kind=kind,
        bodies=_place_column(vertebrae, discs),
        discs=discs,
        canal_depth={
            "thoracic": rng.uniform(12.0, 14.0) * size,
            "lumbar": rng.uniform(14.0, 18.0) * size,
        },
        sac_half_width=rng.uniform(8.0, 11.0),
        fat_thickness=rng.uniform(8.0, 40.0),
        muscle_depth=rng.uniform(40.0, 58.0) * size,
        spinous_length=rng.uniform(24.0, 32.0) * size,
        abdominal_depth=rng.uniform(150.0, 260.0) * size,
        bowel=bowel,
        bowel_signal=bowel_signal,
        vessel_depth=rng.uniform(16.0, 23.0),
        conus_level=rng.uniform(-0.3, 0.4),
        root_offsets=tuple(sorted(rng.uniform(0.45, 0.9, size=4))),
        cord_half_width=rng.uniform(4.0, 5.0),
        extra={"size": size, "lordosis": lordosis},
    )


def _direction(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(t, n): unit vector down the body axis and its posterior normal for a tilt angle."""
    a = math.radians(angle_deg)
    s, c = math.sin(a), math.cos(a)
    return np.array([s, c]), np.array([c, -s])


def _place_column(vertebrae: list[Vertebra], discs: list[Disc]) -> list[_Body]:
    """Chain bodies and discs from the top endplate down, endplate angle by endplate angle."""
    bodies = []
    sup_centre = np.zeros(2)
    sup_angle = vertebrae[0].angle - vertebrae[0].wedge / 2
    for i, v in enumerate(vertebrae):
        inf_angle = sup_angle + v.wedge
        t, _ = _direction((sup_angle + inf_angle) / 2)
        inf_centre = sup_centre + t * v.height
        bodies.append(_Body(v, sup_centre, inf_centre, sup_angle, inf_angle))
        if i == len(discs):
            break
        d = discs[i]
        nxt = vertebrae[i + 1]
        target = nxt.angle - nxt.wedge / 2
        # Keep the posterior disc height at >= 30% of the central height.
        limit = math.degrees(math.atan(1.4 * d.height / max(v.depth, 1.0)))
        if d.kind in ("vestigial", "rudimentary", "gap"):
            limit = math.degrees(math.atan(1.2 * d.height / max(v.depth, 1.0)))
        disc_wedge = float(np.clip(target - inf_angle, -limit, limit))
        td, _ = _direction(inf_angle + disc_wedge / 2)
        sup_centre = inf_centre + td * d.height
        sup_angle = inf_angle + disc_wedge
    return bodies


# --------------------------------------------------------------------------------------------
# Geometry helpers (canonical mm frame)
# --------------------------------------------------------------------------------------------
_EDGE_T = np.linspace(0.0, 1.0, 8)
_CORNER_T = np.linspace(0.15, 0.85, 4)[None, :, None]
_NEXT = np.array([1, 2, 3, 0])
_CIRCLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Quadratic Bezier points; all arguments broadcast (``ts`` carries a trailing axis)."""
    return (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * c + ts**2 * p1


def _rounded_quad(corners: np.ndarray, bulge: tuple[float, ...], radius: float) -> np.ndarray:
    """A quadrilateral with curved edges and rounded corners, as a dense polygon.

    Args:
        corners: (4, 2) corners in drawing order.
        bulge: per edge (corner i -> i+1), how far its middle is pushed towards the centroid
            (negative: outward), mm.
        radius: corner rounding, mm.
    """
    a = np.asarray(corners, float)
    b = a[_NEXT]
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1]) + 1e-6
    normal = np.stack([-d[:, 1], d[:, 0]], 1) / length[:, None]
    mid = (a + b) / 2
    inward = np.einsum("ij,ij->i", a.mean(axis=0) - mid, normal)
    sign = np.where(inward < 0, -1.0, 1.0)
    ctrl = mid + normal * (sign * 2 * np.asarray(bulge, float))[:, None]
    tau = np.minimum(0.45, radius / length)[:, None]
    ts = (tau + (1 - 2 * tau) * _EDGE_T[None, :])[..., None]
    edges = _bezier(a[:, None], ctrl[:, None], b[:, None], ts)
    # Each corner is a Bezier from the end of one edge to the start of the next, pulled to it.
    corner = _bezier(edges[:, -1][:, None], b[:, None], edges[_NEXT, 0][:, None], _CORNER_T)
    return np.concatenate([edges, corner], axis=1).reshape(-1, 2)


def _ellipse(
    centre: np.ndarray, axes: tuple[float, float], angle_deg: float, n: int = 28
) -> np.ndarray:
    """Polygon of an ellipse; ``axes`` are the semi-axes along (t, n) of ``angle_deg``."""
    if n not in _CIRCLES:
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
        _CIRCLES[n] = (np.cos(phi)[:, None], np.sin(phi)[:, None])
    cos, sin = _CIRCLES[n]
    t, nn = _direction(angle_deg)
    return centre + cos * (axes[0] * t) + sin * (axes[1] * nn)


def _smooth_line(points: np.ndarray, step: float, window_mm: float) -> np.ndarray:
    """Resample a polyline to ``step`` mm and smooth it with a moving average."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    grid = np.arange(0.0, s[-1] + 1e-6, step)
    line = np.stack([np.interp(grid, s, points[:, 0]), np.interp(grid, s, points[:, 1])], 1)
    k = max(1, int(round(window_mm / step)))
    if k > 1:
        pad = np.concatenate([np.repeat(line[:1], k, 0), line, np.repeat(line[-1:], k, 0)])
        kernel = np.ones(2 * k + 1) / (2 * k + 1)
        line = np.stack([np.convolve(pad[:, j], kernel, mode="valid") for j in range(2)], 1)
    return line


def _normals(line: np.ndarray) -> np.ndarray:
    """Posterior unit normals of a top-to-bottom line (the n of :func:`_direction`)."""
    tangent = np.gradient(line, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    return np.stack([tangent[:, 1], -tangent[:, 0]], 1)


def _band(line: np.ndarray, normals: np.ndarray, a, b) -> np.ndarray:
    """Polygon between offsets ``a`` and ``b`` (scalars or per-point arrays) along the normals."""
    a = np.broadcast_to(np.asarray(a, float), (len(line),))[:, None]
    b = np.broadcast_to(np.asarray(b, float), (len(line),))[:, None]
    return np.concatenate([line + normals * a, (line + normals * b)[::-1]])


def _extend(points: np.ndarray, before: float, after: float) -> np.ndarray:
    """Extend a polyline straight beyond its ends by ``before``/``after`` mm."""
    d0 = points[0] - points[1]
    d1 = points[-1] - points[-2]
    d0 /= np.linalg.norm(d0)
    d1 /= np.linalg.norm(d1)
    return np.concatenate([[points[0] + d0 * before], points, [points[-1] + d1 * after]])


def _lateral(dx: float, half_width: float) -> float:
    """Fraction of a structure's sagittal extent left at lateral offset ``dx`` (ellipsoid)."""
    r = dx / half_width if half_width > 0 else 2.0
    return math.sqrt(1.0 - r * r) if abs(r) < 1.0 else 0.0


def _endplate(body: _Body, which: str, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """(anterior end, posterior end) of a body's endplate in a slice ``dx`` mm off the midline.

    Laterally the anterior wall recedes faster than the posterior one (bodies are kidney-shaped).
    """
    v = body.vertebra
    if which == "sup":
        centre, angle, depth = body.sup_centre, body.sup_angle, v.depth
    else:
        centre, angle, depth = body.inf_centre, body.inf_angle, v.depth * v.taper
    _, n = _direction(angle)
    f = _lateral(dx, v.half_width)
    ant = depth / 2 - 0.72 * (1 - f) * depth
    post = depth / 2 - 0.28 * (1 - f) * depth
    return centre - n * ant, centre + n * post


# --------------------------------------------------------------------------------------------
# Placement in the image
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Placement:
    """Maps canonical mm (u, v) to pixel (column, row): ``(R @ p + offset) / spacing``."""

    rotation: float
    offset: tuple[float, float]
    spacing: float
    rows: int
    cols: int

    def __post_init__(self) -> None:
        a = math.radians(self.rotation)
        c, s = math.cos(a), math.sin(a)
        # Row-vector form: pixels = pts @ matrix + shift.
        object.__setattr__(self, "_matrix", np.array([[c, s], [-s, c]]) / self.spacing)
        object.__setattr__(self, "_shift", np.asarray(self.offset, float) / self.spacing)

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, float) @ self._matrix + self._shift


def _place(
    rng: np.random.Generator, anatomy: Anatomy, rows: int, cols: int, spacing: float
) -> _Placement:
    """Rotate and shift the column so that L1 to the top of the sacrum is always in view."""
    rotation = rng.uniform(-10.0, 10.0)
    probe = _Placement(rotation, (0.0, 0.0), 1.0, rows, cols)
    l1 = anatomy.bodies[anatomy.index("L1")]
    top_pts = probe.to_pixels(np.array(_endplate(l1, "sup", 0.0)))
    # Must show the top of the sacrum; should show two sacral segments where the FOV allows.
    sacrum = "S2" if anatomy.kind == "lumbarization" else "S1"
    must = anatomy.bodies[anatomy.index(sacrum)]
    want = anatomy.bodies[anatomy.index(sacrum) + 1]
    bottom_pts = probe.to_pixels(np.array([*_endplate(must, "sup", 0.0)]))
    want_pts = probe.to_pixels(np.array([*_endplate(want, "inf", 0.0)]))
    l3 = anatomy.bodies[anatomy.index("L3")]
    l3_post = probe.to_pixels(_endplate(l3, "sup", 0.0)[1])
    height_mm, width_mm = rows * spacing, cols * spacing
    top = float(top_pts[:, 1].min()) - 6.0
    lo = -top
    hi = height_mm - float(want_pts[:, 1].max()) - 4.0
    if lo > hi:  # a short field of view: L1 and the top of the sacrum are what must be in
        hi = max(lo, height_mm - float(bottom_pts[:, 1].max()) - 15.0)
        if lo > hi:
            log.debug("field of view %.0f mm is short for this column", height_mm)
            hi = lo
    dv = rng.uniform(lo, hi)
    du = width_mm * rng.uniform(0.50, 0.62) - float(l3_post[0])
    return _Placement(rotation, (du, dv), spacing, rows, cols)


# --------------------------------------------------------------------------------------------
# Drawing one slice
# --------------------------------------------------------------------------------------------
class _Canvas:
    """A label map with polygon drawing in canonical mm coordinates."""

    def __init__(self, placement: _Placement):
        self.p = placement
        self.labels = np.zeros((placement.rows, placement.cols), np.uint8)
        self.px_mm = 1.0 / placement.spacing

    def _pts(self, poly: np.ndarray) -> np.ndarray:
        # cv2 takes fixed-point vertices: 4 fractional bits (shift=4).
        return np.rint(self.p.to_pixels(poly) * 16).astype(np.int32)

    def fill(self, poly: np.ndarray, label: int) -> None:
        cv2.fillPoly(self.labels, [self._pts(poly)], int(label), cv2.LINE_8, 4)

    def line(self, poly: np.ndarray, label: int, width_mm: float, closed: bool = False) -> None:
        thickness = max(1, int(round(width_mm * self.px_mm)))
        cv2.polylines(self.labels, [self._pts(poly)], closed, int(label), thickness, cv2.LINE_8, 4)


def _column_lines(anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior wall line (smoothed, top->bottom) and per-point canal depth and CSF fraction."""
    pts, depth, csf = [], [], []
    a = anatomy
    sacral_depths = {"S1": 13.0, "S2": 10.0, "S3": 8.0, "S4": 6.0, "S5": 4.0}
    sacrum_top = "S2" if a.kind == "lumbarization" else "S1"
    in_sacrum = False
    for body in a.bodies:
        shape = body.vertebra.shape
        if shape == "coccygeal":
            break
        in_sacrum = in_sacrum or body.name == sacrum_top
        for which in ("sup", "inf"):
            pts.append(_endplate(body, which, 0.0)[1])
            if in_sacrum:
                d = sacral_depths[body.name] * (0.9 if which == "inf" else 1.0)
            elif shape == "thoracic":
                d = a.canal_depth["thoracic"]
            else:
                d = a.canal_depth["lumbar"]
            depth.append(d)
            # The thecal sac ends at S2: CSF fades from the top of S2 to its lower third.
            if body.name == "S2":
                csf.append(0.85 if which == "sup" else 0.0)
            elif body.name in ("S3", "S4", "S5"):
                csf.append(0.0)
            else:
                csf.append(1.0)
    pts = np.array(pts)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    line = _smooth_line(_extend(pts, 120.0, 5.0), 1.0, 3.0)
    ls = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(line, axis=0).T))]) - 120.0
    return line, np.interp(ls, s, depth), np.interp(ls, s, csf)


def _anterior_line(anatomy: Anatomy) -> np.ndarray:
    pts = []
    for body in anatomy.bodies:
        if body.vertebra.shape == "coccygeal":
            break
        pts.append(_endplate(body, "sup", 0.0)[0])
        pts.append(_endplate(body, "inf", 0.0)[0])
    return _smooth_line(_extend(np.array(pts), 150.0, 40.0), 2.0, 6.0)


@dataclass(frozen=True, eq=False)
class _Lines:
    """Reference lines of a column (mm), shared by all its slices.

    Attributes:
        wall, wall_n: posterior wall of the bodies (top to bottom) and its posterior normals.
        canal, csf: canal depth (mm) and thecal-sac fraction (0..1) at each wall point.
        rough, rough_n: a heavily smoothed wall line, for skin, fat and muscle offsets.
        ant, ant_n: anterior wall of the bodies, for vessels, psoas and bowel.
    """

    wall: np.ndarray
    wall_n: np.ndarray
    canal: np.ndarray
    csf: np.ndarray
    rough: np.ndarray
    rough_n: np.ndarray
    ant: np.ndarray
    ant_n: np.ndarray


def _lines(a: Anatomy) -> _Lines:
    cached = a.cache.get("lines")
    if isinstance(cached, _Lines):
        return cached
    wall, canal, csf = _column_lines(a)
    rough = _smooth_line(_extend(wall, 0.0, 250.0), 4.0, 40.0)
    ant = _anterior_line(a)
    lines = _Lines(wall, _normals(wall), canal, csf, rough, _normals(rough), ant, _normals(ant))
    a.cache["lines"] = lines
    return lines


def _draw_soft_tissue(cv: _Canvas, a: Anatomy, dx: float, ln: _Lines) -> None:
    """Air, skin, fat, paraspinal muscle, abdomen, liver, bowel, vessels, pelvis."""
    rough, rough_n, wall, wall_n, canal = ln.rough, ln.rough_n, ln.wall, ln.wall_n, ln.canal
    n_pts = len(rough)
    # Offsets from a heavily smoothed posterior wall line; the buttocks bulge below the sacrum.
    ramp = np.clip((np.arange(n_pts) - n_pts * 0.78) / (n_pts * 0.22), 0, 1)
    belly = np.sin(np.linspace(0, np.pi, n_pts)) * 25.0
    muscle_back = a.muscle_depth + a.spinous_length * 0.2 + 25.0 * ramp
    skin_back = muscle_back + a.fat_thickness + 12.0 * ramp
    front = -(a.abdominal_depth + belly + 40.0 * ramp)
    wall_fat = a.fat_thickness * 0.6
    cv.fill(_band(rough, rough_n, front - 3.0, skin_back + 2.0), SKIN)
    cv.fill(_band(rough, rough_n, front, skin_back), FAT)
    cv.fill(_band(rough, rough_n, front + wall_fat, front + wall_fat + 9.0), MUSCLE)
    cv.fill(_band(rough, rough_n, front + wall_fat + 9.0, -10.0), ABDOMEN)
    # Liver (and heart above it) anterior to the lower thoracic spine.
    t12 = a.bodies[a.index("T12")]
    cv.fill(_ellipse(t12.sup_centre + np.array([-105.0, -25.0]), (95.0, 80.0), 10.0), LIVER)
    ant, ant_n = ln.ant, ln.ant_n
    l1 = a.bodies[a.index("L1")]
    first = int(np.argmin(np.hypot(*(ant - l1.sup_centre).T)))
    # Bowel loops: ellipsoids cut by the slice, each with a darker wall.
    room = a.abdominal_depth - a.vessel_depth - 30.0
    for (pos, depth, xc, ru, rv, rx, ang), label in zip(
        a.bowel, range(_BOWEL0, _N_LABELS), strict=False
    ):
        f = _lateral(dx - xc, rx)
        if f <= 0:
            continue
        i = min(first + int(pos * (len(ant) - first)), len(ant) - 1)
        dist = a.vessel_depth + 8.0 + ru + depth * max(room - 2 * ru, 0.0)
        c = ant[i] - ant_n[i] * dist
        cv.fill(_ellipse(c, (rv * f + 1.0, ru * f + 1.0), ang, 20), MUSCLE)
        cv.fill(_ellipse(c, (rv * f, ru * f), ang, 20), label)
    # Pelvis: rectum in front of the lower sacrum, bladder in front of it.
    s3 = a.bodies[a.index("S3")]
    _, n3 = _direction(s3.vertebra.angle)
    f = _lateral(dx, 22.0)
    if f > 0:
        rectum = s3.inf_centre - n3 * (s3.vertebra.depth / 2 + 22.0)
        cv.fill(_ellipse(rectum, (30.0, 16.0 * f), s3.vertebra.angle), MUSCLE)
        cv.fill(_ellipse(rectum, (27.0, 13.0 * f), s3.vertebra.angle), _BOWEL0)
    f = _lateral(dx, 45.0)
    if f > 0:
        bladder = s3.inf_centre - n3 * (s3.vertebra.depth / 2 + 85.0) + np.array([0.0, 25.0])
        cv.fill(_ellipse(bladder, (38.0 * f, 45.0 * f), 0.0), BLADDER)
    # Paraspinal muscle behind the canal; at the midline only between the processes.
    behind = canal + 2.0
    cv.fill(_band(rough, rough_n, 18.0, muscle_back), MUSCLE)
    cv.fill(_band(wall, wall_n, behind, behind + 10.0), MUSCLE)
    # Prevertebral vessels: aorta (patient left, +x) and IVC, ending at the L4 bifurcation.
    l4 = a.bodies[a.index("L4")]
    stop = int(np.argmin(np.hypot(*(ant - (l4.sup_centre + l4.inf_centre) / 2).T)))
    for xc, radius in ((6.0, 11.0), (-20.0, 12.0)):
        f = _lateral(dx - xc, radius)
        if f > 0:
            depth = a.vessel_depth * f
            seg = slice(0, stop + 1)
            cv.fill(
                _band(
                    ant[seg],
                    ant_n[seg],
                    -2.5 - (a.vessel_depth - depth) / 2,
                    -2.5 - (a.vessel_depth + depth) / 2,
                ),
                VESSEL,
            )
    # Psoas lateral to the bodies, growing from L1 down to the sacrum.
    f = _lateral(dx, 60.0)
    if abs(dx) > 12.0 and f > 0:
        s1 = a.bodies[a.index("S1")]
        last = int(np.argmin(np.hypot(*(ant - s1.inf_centre).T)))
        grow = np.linspace(0.2, 1.0, max(last - first, 2))
        width = 28.0 * grow * f * min(1.0, (abs(dx) - 12.0) / 8.0)
        seg = slice(first, first + len(grow))
        cv.fill(_band(ant[seg], ant_n[seg], 18.0 * f, 18.0 * f - width), MUSCLE)


def _draw_canal(cv: _Canvas, a: Anatomy, dx: float, ln: _Lines) -> None:
    """Thecal sac with cord and cauda equina; laterally, pedicles and foramina."""
    wall, wall_n, canal, csf = ln.wall, ln.wall_n, ln.canal, ln.csf
    sac = a.sac_half_width
    if abs(dx) > sac + 16.0:
        # Beyond the lateral recess: intertransverse muscle, and the lateral sacral mass.
        cv.fill(_band(wall, wall_n, 0.0, canal + 2.0), MUSCLE)
        sacrum = a.bodies[a.index("S2" if a.kind == "lumbarization" else "S1")]
        i0 = int(np.argmin(np.hypot(*(wall - _endplate(sacrum, "sup", 0.0)[1]).T)))
        cv.fill(_band(wall[i0:], wall_n[i0:], -1.0, canal[i0:] + 2.0), MARROW)
        return
    cv.fill(_band(wall, wall_n, 0.0, canal + 2.0), EPIDURAL_FAT)
    cv.fill(_band(wall, wall_n, canal, canal + 2.0), LIGAMENT)
    f = _lateral(dx, sac)
    if f > 0:
        width = (canal - 3.5) * csf * f
        centre = 1.0 + (canal - 3.5) / 2
        cv.fill(_band(wall, wall_n, centre - width / 2, centre + width / 2), CSF)
        # Cord down to the conus near L1/L2, then the cauda equina roots layered dorsally.
        l1 = a.bodies[a.index("L1")]
        conus = l1.inf_centre + (l1.inf_centre - l1.sup_centre) * a.conus_level
        stop = int(np.argmin(np.hypot(*(wall - conus).T)))
        fc = _lateral(dx, a.cord_half_width)
        if fc > 0:
            half = 4.2 * fc * np.clip((stop - np.arange(stop)) / 25.0, 0.25, 1.0)
            mid = (centre + 0.1 * (canal - 3.5))[:stop]
            cv.fill(_band(wall[:stop], wall_n[:stop], mid - half, mid + half), CORD)
        for k, off in enumerate(a.root_offsets):
            lateral = -6.0 + 4.0 * k
            if abs(dx - lateral) > 2.5:
                continue
            end = stop + int((len(wall) - stop) * (0.55 + 0.1 * k))
            seg = slice(max(stop - 5, 0), min(end, len(wall)))
            pos = np.minimum(1.0 + off * (canal[seg] - 3.5), (width / 2 + centre)[seg] - 0.5)
            root = wall[seg] + wall_n[seg] * pos[:, None]
            cv.line(root, NERVE, 0.9)
    # Pedicles and neural foramina between the sac and the facet columns.
    if sac - 2.0 < abs(dx) < sac + 16.0:
        strength = min(1.0, (abs(dx) - sac + 2.0) / 4.0)
        for body, disc in zip(a.bodies[:-1], a.discs, strict=True):
            if body.vertebra.shape in ("sacral", "coccygeal"):
                break
            sup_post = _endplate(body, "sup", dx)[1]
            inf_post = _endplate(body, "inf", dx)[1]
            _, n = _direction(body.sup_angle)
            h = body.vertebra.height
            ped = np.array(
                [
                    sup_post + n * 0.5,
                    sup_post + n * (_canal_at(a, body) + 1),
                    sup_post + n * (_canal_at(a, body) + 1) + (inf_post - sup_post) * 0.5,
                    sup_post + n * 0.5 + (inf_post - sup_post) * 0.5,
                ]
            )
            cv.fill(_rounded_quad(ped, (0.0, 0.0, 0.0, 0.0), 2.0), POST_BONE)
            if disc.kind in ("normal", "thoracic", "rudimentary"):
                fc = inf_post + n * (_canal_at(a, body) * 0.45 + 1.0)
                axes = (0.38 * h * strength + 0.1, _canal_at(a, body) * 0.32 * strength + 0.1)
                cv.fill(_ellipse(fc, axes, body.inf_angle), EPIDURAL_FAT)
                cv.fill(
                    _ellipse(
                        fc - (inf_post - sup_post) * 0.12,
                        (2.8 * strength + 0.1, 2.4 * strength + 0.1),
                        0.0,
                        12,
                    ),
                    NERVE,
                )


def _canal_at(a: Anatomy, body: _Body) -> float:
    """Canal depth (mm) at a mobile vertebra."""
    return a.canal_depth["thoracic" if body.vertebra.shape == "thoracic" else "lumbar"]


def _draw_posterior_elements(cv: _Canvas, a: Anatomy, dx: float, ln: _Lines) -> None:
    """Laminae and spinous processes (midline), facet columns (parasagittal), sacral crest."""
    wall, wall_n, canal = ln.wall, ln.wall_n, ln.canal
    sacrum_top = "S2" if a.kind == "lumbarization" else "S1"
    for body in a.bodies:
        v = body.vertebra
        if v.shape in ("sacral", "coccygeal") or body.name == sacrum_top:
            break
        sup_post = _endplate(body, "sup", 0.0)[1]
        inf_post = _endplate(body, "inf", 0.0)[1]
        t, n = _direction(v.angle)
        h = v.height
        canal_mm = _canal_at(a, body) + 2.0
        thoracic = v.shape == "thoracic"
        base_top = sup_post + n * canal_mm + t * (0.05 * h)
        base_bot = inf_post + n * canal_mm + t * (0.15 * h)
        if abs(dx) < 4.5:
            length = a.spinous_length * (0.9 if thoracic else 1.0)
            if v.shape == "transitional":
                length *= 0.75
            drop = (0.85 if thoracic else 0.3) * h
            tip_h = (0.28 if thoracic else 0.55) * h
            tip_top = base_top + n * length + t * drop
            poly = np.array([base_top, tip_top, tip_top + t * tip_h, base_bot])
            outline = _rounded_quad(poly, (-1.0, 0.0, -1.0, 0.0), 3.0)
            cv.fill(outline, POST_BONE)
            cv.line(outline, CORTEX, 0.8, closed=True)
        elif abs(dx) < 13.0:
            poly = np.array([base_top, base_top + n * 8.0, base_bot + n * 8.0, base_bot])
            outline = _rounded_quad(poly, (0.0,) * 4, 2.5)
            cv.fill(outline, POST_BONE)
            cv.line(outline, CORTEX, 0.8, closed=True)
        elif abs(dx) < 26.0:
            # Facet column: superior and inferior articular processes with a joint line.
            top = sup_post + n * (canal_mm - 4.0) - t * (0.1 * h)
            poly = np.array([top, top + n * 16.0, top + n * 16.0 + t * 1.05 * h, top + t * h])
            cv.fill(_rounded_quad(poly, (0.0,) * 4, 3.0), POST_BONE)
            joint = np.array([top + t * 0.8 * h + n * 2.0, top + t * 0.95 * h + n * 14.0])
            cv.line(joint, FACET_FLUID, 0.9)
        elif v.shape in ("lumbar", "transitional") and abs(dx) < 48.0:
            # Transverse processes; a sacralized L5's are broad and meet the sacral ala.
            c = sup_post + n * 4.0 + t * (0.35 * h)
            axes = (0.22 * h, 6.0)
            if v.shape == "transitional":
                axes = (0.5 * h, 9.0)
            cv.fill(_ellipse(c, axes, v.angle), POST_BONE)
    # Sacral canal roof, a little thicker along the median crest.
    top = _endplate(a.bodies[a.index(sacrum_top)], "sup", 0.0)[1]
    bottom = _endplate(a.bodies[a.index("S5")], "inf", 0.0)[1]
    i0 = int(np.argmin(np.hypot(*(wall - top).T)))
    i1 = int(np.argmin(np.hypot(*(wall - bottom).T)))
    seg = slice(i0, i1 + 1)
    roof = 8.0 if abs(dx) < 4.0 else 6.0 if abs(dx) < 30.0 else 12.0
    poly = _band(wall[seg], wall_n[seg], canal[seg] + 1.0, canal[seg] + 1.0 + roof)
    cv.fill(poly, POST_BONE)
    cv.line(poly, CORTEX, 0.8, closed=True)


def _draw_column(cv: _Canvas, a: Anatomy, dx: float) -> dict[str, tuple[np.ndarray, float]]:
    """Discs, bodies, fused sacral segments. Returns disc name -> (centre mm, disc angle)."""
    centres: dict[str, tuple[np.ndarray, float]] = {}
    bodies = a.bodies
    # Discs first: the bodies drawn after them trim the disc to the endplates.
    quads = []
    for i, d in enumerate(a.discs):
        upper, lower = bodies[i], bodies[i + 1]
        fu = _lateral(dx, upper.vertebra.half_width)
        fl = _lateral(dx, lower.vertebra.half_width)
        ua, up = _endplate(upper, "inf", dx)
        la, lp = _endplate(lower, "sup", dx)
        centre = (ua + up + la + lp) / 4
        angle = (upper.inf_angle + lower.sup_angle) / 2
        centres[d.name] = (centre, angle)
        if fu <= 0 or fl <= 0:
            quads.append(None)
            continue
        quad = np.array([ua, up, lp, la])
        quads.append(quad)
        if d.kind in ("normal", "thoracic"):
            bulge = 1.2 if d.kind == "normal" else 0.6
            poly = _rounded_quad(quad, (-0.6, -bulge, -0.6, -bulge), 1.0)
            cv.fill(poly, ANNULUS)
            # Nucleus: hydrated centre, narrower laterally than the annulus.
            fn = _lateral(dx, upper.vertebra.half_width * 0.6)
            if fn > 0:
                depth = np.hypot(*(up - ua))
                half_h = d.height / 2 + (0.8 if d.kind == "normal" else 0.3)
                axes = (half_h * 0.85, depth * 0.41 * fn / max(fu, 1e-3))
                label = _NUCLEUS0 + i
                cv.fill(_ellipse(centre + _direction(angle)[1] * depth * 0.02, axes, angle), label)
        elif d.kind == "gap":
            cv.fill(_rounded_quad(quad, (0.0,) * 4, 0.5), LIGAMENT)
    for body in bodies:
        v = body.vertebra
        if _lateral(dx, v.half_width) <= 0:
            continue
        sa, sp = _endplate(body, "sup", dx)
        ia, ip = _endplate(body, "inf", dx)
        quad = np.array([sa, sp, ip, ia])
        concave = 0.9 if v.shape in ("lumbar", "thoracic", "transitional") else 0.3
        radius = {"coccygeal": 2.5, "sacral": 2.5}.get(v.shape, 3.2)
        poly = _rounded_quad(quad, (concave, 0.4, concave, 0.7), radius)
        cv.fill(poly, MARROW)
        cv.line(poly, CORTEX, 0.9, closed=True)
        if v.shape in ("lumbar", "thoracic") and abs(dx) < 3.0:
            # Basivertebral vein: a short bright notch in the posterior wall.
            mid = (sp + ip) / 2
            _, n = _direction(v.angle)
            cv.line(np.array([mid, mid - n * 6.0]), EPIDURAL_FAT, 1.0)
    # Fused levels: bony bridge across the disc space, with walls and a faint remnant.
    for i, d in enumerate(a.discs):
        quad = quads[i]
        if quad is None or d.kind not in ("vestigial", "rudimentary"):
            continue
        ua, up, lp, la = quad
        _, n_up = _direction(bodies[i].inf_angle)
        t_up, _ = _direction(bodies[i].inf_angle)
        _, n_lo = _direction(bodies[i + 1].sup_angle)
        t_lo, _ = _direction(bodies[i + 1].sup_angle)
        bridge = np.array(
            [
                ua - t_up * 1.2 + n_up * 1.5,
                up - t_up * 1.2 - n_up * 1.5,
                lp + t_lo * 1.2 - n_lo * 1.5,
                la + t_lo * 1.2 + n_lo * 1.5,
            ]
        )
        cv.fill(bridge, MARROW)
        cv.line(np.array([ua, la]), CORTEX, 0.9)
        cv.line(np.array([up, lp]), CORTEX, 0.9)
        centre, angle = centres[d.name]
        depth = float(np.hypot(*(up - ua)))
        if d.extent > 0:
            axes = (max(d.height / 2, 0.5), depth * d.extent / 2)
            shift = (
                _direction(angle)[1]
                * depth
                * (0.5 - d.extent / 2)
                * (0.4 if d.kind == "rudimentary" else 0.0)
            )
            if d.kind == "rudimentary":
                # Sclerotic endplates around a thin, dim disc remnant.
                cv.fill(_ellipse(centre + shift, (axes[0] + 0.9, axes[1] + 0.5), angle), CORTEX)
            cv.fill(_ellipse(centre + shift, axes, angle), _NUCLEUS0 + i)
        else:
            cv.line(
                np.array(
                    [
                        centre - _direction(angle)[1] * depth * 0.3,
                        centre + _direction(angle)[1] * depth * 0.3,
                    ]
                ),
                _NUCLEUS0 + i,
                0.6,
            )
    return centres


def _draw_slice(
    a: Anatomy, placement: _Placement, dx: float
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, float]]]:
    """Label map of one sagittal slice ``dx`` mm from the midline, and its disc centres (mm)."""
    cv = _Canvas(placement)
    ln = _lines(a)
    _draw_soft_tissue(cv, a, dx, ln)
    _draw_canal(cv, a, dx, ln)
    _draw_posterior_elements(cv, a, dx, ln)
    centres = _draw_column(cv, a, dx)
    return cv.labels, centres


# --------------------------------------------------------------------------------------------
# Signal
# --------------------------------------------------------------------------------------------
def _lookup_tables(
    a: Anatomy, contrast: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label signal and texture amplitude for one study."""
    base = _T2_SIGNAL if contrast == "T2" else _T1_SIGNAL
    lut = np.zeros(_N_LABELS, np.float32)
    for label, value in base.items():
        lut[label] = value * rng.uniform(0.92, 1.08)
    lut[CSF] = base[CSF]
    for i, d in enumerate(a.discs):
        if contrast == "T2":
            lut[_NUCLEUS0 + i] = (
                d.signal
                if d.kind not in ("vestigial", "rudimentary")
                else (d.signal * lut[MARROW] / 0.46)
            )
        else:
            lut[_NUCLEUS0 + i] = 0.32 if d.kind in ("normal", "thoracic") else lut[MARROW] * 0.8
    for j, s in enumerate(a.bowel_signal):
        lut[_BOWEL0 + j] = s if contrast == "T2" else 0.3 + 0.4 * (s - 0.4)
    amp = np.zeros(_N_LABELS, np.float32)
    for label, value in _TEXTURE.items():
        amp[label] = value
    amp[_BOWEL0:] = 0.12
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


# --------------------------------------------------------------------------------------------
# Rendering a series
# --------------------------------------------------------------------------------------------
def _sample_matrix(rng: np.random.Generator) -> tuple[int, int, float]:
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
    placement: _Placement,
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
        labels, centres = _draw_slice(a, placement, dx)
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
    return RenderedStudy(a.kind, volume, geometry, disc_centres, all_discs, heights, contrast)


def _render_t2(rng: np.random.Generator, kind: str) -> tuple[RenderedStudy, Anatomy, _Placement]:
    a = sample_anatomy(rng, kind)
    rows, cols, spacing = _sample_matrix(rng)
    n_slices = int(rng.integers(15, 21))
    thickness = round(float(rng.uniform(3.0, 4.0)), 2)
    gap = round(float(rng.choice([0.0, 0.0, 0.3, 0.5])), 2)
    placement = _place(rng, a, rows, cols, spacing)
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


def render_study(rng: np.random.Generator, kind: str) -> RenderedStudy:
    """Render the sagittal T2 series of one study (pure: all randomness comes from ``rng``).

    Args:
        rng: random generator.
        kind: one of :data:`LSTV_TYPES`.

    Returns:
        The uint16 volume (15-20 slices), its geometry and the disc centres of the
        mid-sagittal slice ``D // 2`` in pixel coordinates. Slices are in increasing projection
        of their position on the slice normal (row x column cosines = -x here), which is the
        order hengck23's demo and :func:`lstv.dicom.read_series` stack them in, so ``D // 2`` is
        the slice the localizer reads, for even ``D`` too.
    """
    return _render_t2(rng, kind)[0]


def study_rng(seed: int, index: int) -> np.random.Generator:
    """The generator :func:`write_phantom_dataset` renders study ``index`` of ``seed`` with."""
    return np.random.default_rng([seed, index, 0x5EED])


def _render_t1(
    rng: np.random.Generator, a: Anatomy, t2: RenderedStudy, placement: _Placement
) -> RenderedStudy:
    """A small sagittal T1 of the same patient: 320 x 320, 5-7 slices, same frame of reference."""
    g = t2.geometry
    size = 320
    spacing = round(g.pixel_spacing * g.rows / size, 4)
    scaled = _Placement(placement.rotation, placement.offset, spacing, size, size)
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


def _render_axial(
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
        cv2.ellipse(lab, disc_c, axes, 0, 0, 360, _NUCLEUS0 + a.index(name.split("/")[0]), -1)
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


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------
def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["lstv-phantom", *map(str, parts)]))


def _scrambled_id(k: int, mul: int, add: int) -> int:
    return _ID_OFFSET + pow((k * mul + add) % _ID_PRIME, 3, _ID_PRIME)


def study_id_for(seed: int, index: int) -> int:
    """The study id of study ``index`` of seed ``seed`` (7-10 digits, unique per pair)."""
    return _scrambled_id(seed * _MAX_STUDIES_PER_SEED + index, _STUDY_ID_MUL, _STUDY_ID_ADD)


def series_id_for(seed: int, index: int, series: int) -> int:
    """The series id of series ``series`` (0..3) of study ``index`` of seed ``seed``."""
    k = (seed * _MAX_STUDIES_PER_SEED + index) * 4 + series
    return _scrambled_id(k, _SERIES_ID_MUL, _SERIES_ID_ADD)


@dataclass(frozen=True)
class _SeriesSpec:
    """Per-series DICOM header values."""

    study_id: int
    series_id: int
    series_number: int
    description: str
    contrast: str
    transfer_syntax: str
    instance_numbers: tuple[int, ...]
    study_date: str
    study_time: str
    field_strength: float


def _gdcm_jpeg_lossless(frame: np.ndarray) -> bytes:
    """JPEG Lossless SV1 codestream of one 12-bit frame (pydicom has no encoder for it)."""
    try:
        import gdcm
    except ImportError as exc:  # a declared dependency; say which one if it is missing
        raise RuntimeError(
            "JPEG Lossless phantoms need python-gdcm (pip install python-gdcm)"
        ) from exc

    # ImageWriter owns the image; keep it alive while the converter reads it.
    writer = gdcm.ImageWriter()
    image = writer.GetImage()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((frame.shape[1], frame.shape[0], 1))
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.MONOCHROME2)
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ImplicitVRLittleEndian))
    image.SetPixelFormat(gdcm.PixelFormat(1, 16, 12, 11, 0))
    elem = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    elem.SetByteStringValue(np.ascontiguousarray(frame, "<u2").tobytes())
    image.SetDataElement(elem)
    converter = gdcm.ImageChangeTransferSyntax()
    converter.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    converter.SetInput(image)
    if not converter.Change():
        raise RuntimeError("python-gdcm could not encode JPEG Lossless SV1")
    fragments = converter.GetOutput().GetDataElement().GetSequenceOfFragments()
    if fragments is None or fragments.GetNumberOfFragments() != 1:
        raise RuntimeError("python-gdcm returned an unexpected JPEG Lossless encapsulation")
    buffer = fragments.GetFragment(0).GetByteValue().GetBuffer()
    return buffer.encode("utf-8", "surrogateescape")


def _rle_plugin() -> str:
    """A fixed RLE encoder, so that files are byte-identical run to run on one installation."""
    from pydicom.pixels import get_encoder
    from pydicom.uid import RLELossless

    available = get_encoder(RLELossless).available_plugins
    for name in ("pylibjpeg", "gdcm", "pydicom"):
        if name in available:
            return name
    return ""


def _base_dataset(
    spec: _SeriesSpec,
    geometry: SeriesGeometry,
    frame_of_reference: str,
    study_uid: str,
    series_uid: str,
):
    from pydicom.dataset import Dataset, FileMetaDataset

    import lstv

    t2 = spec.contrast == "T2"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = spec.study_time
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "lstv phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LUMBAR SPINE"
    ds.SeriesDescription = spec.description
    ds.ManufacturerModelName = "synthetic"
    ds.PatientName = f"PHANTOM^{spec.study_id}"
    ds.PatientID = str(spec.study_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "LSPINE"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "OSP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "tse2d1" if t2 else "se2d1"
    ds.SliceThickness = f"{geometry.slice_thickness:g}"
    ds.RepetitionTime = "3500" if t2 else "550"
    ds.EchoTime = "95" if t2 else "12"
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = f"{42.577 * spec.field_strength:.3f}"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = f"{spec.field_strength:g}"
    ds.SpacingBetweenSlices = f"{geometry.spacing_between_slices:g}"
    ds.EchoTrainLength = "17" if t2 else "3"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "190"
    ds.SoftwareVersions = f"lstv {lstv.__version__}"
    ds.ProtocolName = spec.description
    ds.ReceiveCoilName = "SPINE"
    ds.TransmitCoilName = "BODY"
    ds.AcquisitionMatrix = [0, geometry.cols, geometry.rows, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = "150" if t2 else "90"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [f"{v:g}" for v in geometry.orientation]
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geometry.rows
    ds.Columns = geometry.cols
    ds.PixelSpacing = [f"{geometry.pixel_spacing:g}"] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _write_series(
    series_dir: Path, volume: np.ndarray, geometry: SeriesGeometry, spec: _SeriesSpec, seed: int
) -> None:
    """Write one file per slice, ``{InstanceNumber}.dcm``, in the spec's transfer syntax."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    series_dir.mkdir(parents=True, exist_ok=True)
    study_uid = _uid(seed, spec.study_id, "study")
    series_uid = _uid(seed, spec.study_id, spec.series_id, "series")
    frame_uid = _uid(seed, spec.study_id, "frame-of-reference")
    ds = _base_dataset(spec, geometry, frame_uid, study_uid, series_uid)
    normal = np.cross(geometry.orientation[:3], geometry.orientation[3:])
    rle_plugin = _rle_plugin() if spec.transfer_syntax == RLE_LOSSLESS else ""
    # One display window for the series, as scanners write it.
    lo, median, hi = np.percentile(volume[:, ::4, ::4], (1, 50, 99.5))
    ds.WindowCenter = int(median + 400)
    ds.WindowWidth = int(max(hi - lo, 100))
    for k, instance in enumerate(spec.instance_numbers):
        frame = np.ascontiguousarray(volume[k], "<u2")
        sop_uid = _uid(seed, spec.study_id, spec.series_id, instance)
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [f"{v:.3f}" for v in geometry.positions[k]]
        ds.SliceLocation = f"{float(np.dot(geometry.positions[k], normal)):.3f}"
        if spec.transfer_syntax == RLE_LOSSLESS:
            ds.LossyImageCompression = "00"
            ds.compress(RLELossless, frame, encoding_plugin=rle_plugin, generate_instance_uid=False)
        elif spec.transfer_syntax == JPEG_LOSSLESS_SV1:
            ds.LossyImageCompression = "00"
            ds.PixelData = encapsulate([_gdcm_jpeg_lossless(frame)])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = JPEG_LOSSLESS_SV1
        else:
            ds.PixelData = frame.tobytes()
            ds["PixelData"].VR = "OW"
            ds["PixelData"].is_undefined_length = False
            ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        ds.save_as(series_dir / f"{instance}.dcm", enforce_file_format=True)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StudyPlan:
    index: int
    study_id: int
    kind: str
    transfer_syntax: str
    shuffled: bool
    with_t1: bool
    with_axial: bool


def _balanced(rng: np.random.Generator, n: int, counts: dict[str, int], rest: str) -> list[str]:
    values = [v for v, c in counts.items() for _ in range(c)]
    values += [rest] * (n - len(values))
    return [values[i] for i in rng.permutation(n)]


def _plan_studies(n: int, lstv_fraction: float, seed: int) -> list[_StudyPlan]:
    rng = np.random.default_rng([seed, 0xDA7A])
    n_lstv = int(round(n * lstv_fraction))
    n_sacral = n_lstv // 2 + (int(rng.integers(2)) if n_lstv % 2 else 0)
    kinds = _balanced(
        rng, n, {"sacralization": n_sacral, "lumbarization": n_lstv - n_sacral}, "normal"
    )
    n_rle, n_jpeg = int(round(n / 3)), int(round(n / 6))
    if n >= 3:
        n_rle, n_jpeg = max(n_rle, 1), max(n_jpeg, 1)
    syntaxes = _balanced(
        rng, n, {RLE_LOSSLESS: n_rle, JPEG_LOSSLESS_SV1: n_jpeg}, EXPLICIT_VR_LITTLE_ENDIAN
    )
    n_shuffled = max(1, int(round(n / 4))) if n >= 2 else 0
    shuffled = _balanced(rng, n, {"yes": n_shuffled}, "no")
    with_t1 = rng.random(n) < 0.35
    with_axial = rng.random(n) < 0.35
    if n >= 3:  # make sure series selection meets both kinds of extra series
        with_t1[int(rng.integers(n))] = True
        with_axial[int(rng.integers(n))] = True
    return [
        _StudyPlan(
            i,
            study_id_for(seed, i),
            kinds[i],
            syntaxes[i],
            shuffled[i] == "yes",
            bool(with_t1[i]),
            bool(with_axial[i]),
        )
        for i in range(n)
    ]


def _valid_split(plans: list[_StudyPlan], valid_fraction: float, seed: int) -> list[int]:
    """Held-out ids: ``valid_fraction`` of the studies, stratified by kind.

    Where both kinds exist (and there are at least three studies) at least one normal and one
    transitional study are held out, even if ``valid_fraction`` rounds to fewer.
    """
    n = len(plans)
    normal = [p.study_id for p in plans if p.kind == "normal"]
    lstv = [p.study_id for p in plans if p.kind != "normal"]
    n_valid = int(round(n * valid_fraction))
    if valid_fraction > 0:
        n_valid = max(n_valid, 2 if normal and lstv and n >= 3 else 1)
    if n_valid >= n:
        return sorted(p.study_id for p in plans)
    rng = np.random.default_rng([seed, 0x7A11D])
    n_lstv = int(round(n_valid * len(lstv) / n))
    if n_valid >= 2 and normal and lstv:
        n_lstv = min(max(n_lstv, 1), n_valid - 1)
    n_lstv = min(n_lstv, len(lstv))
    n_normal = min(n_valid - n_lstv, len(normal))
    n_lstv = n_valid - n_normal
    chosen = list(rng.choice(normal, n_normal, replace=False)) if n_normal else []
    chosen += list(rng.choice(lstv, n_lstv, replace=False)) if n_lstv else []
    return sorted(int(i) for i in chosen)


def _instance_numbers(rng: np.random.Generator, n: int, shuffled: bool) -> tuple[int, ...]:
    if not shuffled:
        return tuple(range(1, n + 1))
    while True:  # a permutation with no order along x, neither ascending nor descending
        perm = rng.permutation(n) + 1
        diffs = np.diff(perm)
        if not (np.all(diffs > 0) or np.all(diffs < 0)):
            return tuple(int(v) for v in perm)


def _write_study(
    images_dir: Path, plan: _StudyPlan, seed: int
) -> tuple[list[tuple[int, int, str]], list[tuple]]:
    """Render and write one study; returns its series rows and label rows."""
    rng = study_rng(seed, plan.index)
    t2, anatomy, placement = _render_t2(rng, plan.kind)
    n_slices = t2.volume.shape[0]
    year, month, day = (
        int(rng.integers(2018, 2024)),
        int(rng.integers(1, 13)),
        int(rng.integers(1, 29)),
    )
    date = f"{year}{month:02d}{day:02d}"
    clock = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00"
    field_strength = float(rng.choice([1.5, 3.0]))
    study_dir = images_dir / str(plan.study_id)
    series_rows: list[tuple[int, int, str]] = []
    number = 1
    extra = []
    if plan.with_t1:
        t1 = _render_t1(rng, anatomy, t2, placement)
        extra.append((1, T1_DESCRIPTION, "T1", t1.volume, t1.geometry))
    if plan.with_axial:
        vol, geom = _render_axial(rng, anatomy, t2)
        if len(vol):
            extra.append((2, AXIAL_DESCRIPTION, "T2", vol, geom))
    t2_instances = _instance_numbers(rng, n_slices, plan.shuffled)
    series = [(0, T2_DESCRIPTION, "T2", t2.volume, t2.geometry, plan.transfer_syntax, t2_instances)]
    series += [
        (j, d, c, v, g, EXPLICIT_VR_LITTLE_ENDIAN, tuple(range(1, len(v) + 1)))
        for j, d, c, v, g in extra
    ]
    series.sort(key=lambda s: s[0] if s[0] else 1.5)  # T1, then T2, then axial, as scanned
    for j, description, contrast, volume, geometry, syntax, instances in series:
        series_id = series_id_for(seed, plan.index, j)
        spec = _SeriesSpec(
            plan.study_id,
            series_id,
            number,
            description,
            contrast,
            syntax,
            instances,
            date,
            clock,
            field_strength,
        )
        _write_series(study_dir / str(series_id), volume, geometry, spec, seed)
        series_rows.append((plan.study_id, series_id, description))
        number += 1
    t2_series = series_id_for(seed, plan.index, 0)
    mid_instance = t2_instances[t2.mid_index]
    label_rows = [
        (plan.study_id, t2_series, mid_instance, CONDITION, level, x, y)
        for level, (x, y) in t2.disc_centres.items()
    ]
    return series_rows, label_rows


def write_phantom_dataset(
    output_dir: str | Path,
    n_studies: int = 20,
    lstv_fraction: float = 0.3,
    seed: int = 0,
    valid_fraction: float = 0.25,
    progress: bool = False,
) -> PhantomDataset:
    """Write ``n_studies`` phantom studies in the RSNA 2024 layout.

    Args:
        output_dir: the dataset root (created if needed).
        n_studies: number of studies (1..100000).
        lstv_fraction: fraction of transitional studies, split about evenly between
            sacralization and lumbarization.
        seed: non-negative seed; the same seed writes byte-identical files, different seeds
            disjoint study and series ids.
        valid_fraction: fraction of studies listed in ``valid_id.npy`` (stratified so that
            normal and transitional studies are both held out; 1.0 holds out every study).
        progress: show a progress bar on stderr.

    Returns:
        The paths written and the study ids.

    Raises:
        ValueError: an argument out of range.
    """
    if not 1 <= n_studies <= _MAX_STUDIES_PER_SEED:
        raise ValueError(f"n_studies must be in 1..{_MAX_STUDIES_PER_SEED}, got {n_studies}")
    if not 0.0 <= lstv_fraction <= 1.0:
        raise ValueError(f"lstv_fraction must be in [0, 1], got {lstv_fraction}")
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(output_dir)
    images_dir = root / "train_images"
    images_dir.mkdir(parents=True, exist_ok=True)
    plans = _plan_studies(n_studies, lstv_fraction, seed)
    iterator = plans
    if progress:
        from tqdm import tqdm

        iterator = tqdm(plans, desc="phantom studies", unit="study")
    series_rows, label_rows = [], []
    for plan in iterator:
        s_rows, l_rows = _write_study(images_dir, plan, seed)
        series_rows += s_rows
        label_rows += l_rows
    series_csv = root / "train_series_descriptions.csv"
    labels_csv = root / "train_label_coordinates.csv"
    lstv_csv = root / "lstv_labels.csv"
    valid_path = root / "valid_id.npy"
    _write_csv(series_csv, ("study_id", "series_id", "series_description"), series_rows)
    _write_csv(
        labels_csv,
        ("study_id", "series_id", "instance_number", "condition", "level", "x", "y"),
        [(*r[:5], f"{r[5]:.6f}", f"{r[6]:.6f}") for r in label_rows],
    )
    _write_csv(
        lstv_csv,
        ("study_id", "lstv", "lstv_type"),
        [(p.study_id, int(p.kind != "normal"), p.kind) for p in plans],
    )
    valid_ids = _valid_split(plans, valid_fraction, seed)
    np.save(valid_path, np.array(valid_ids, dtype=np.int64))
    log.info(
        "wrote %d phantom studies (%d transitional, %d held out) to %s",
        len(plans),
        sum(p.kind != "normal" for p in plans),
        len(valid_ids),
        root,
    )
    return PhantomDataset(
        root=root,
        images_dir=images_dir,
        series_csv=series_csv,
        labels_csv=labels_csv,
        lstv_labels_csv=lstv_csv,
        valid_ids_path=valid_path,
        study_ids=tuple(p.study_id for p in plans),
        valid_ids=tuple(valid_ids),
    )


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
