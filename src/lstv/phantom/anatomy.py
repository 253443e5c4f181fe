"""A patient's spinal column: vertebrae, discs and soft-tissue parameters, in millimetres."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lstv.phantom.geometry import _direction

LSTV_TYPES = ("normal", "sacralization", "lumbarization")


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
