"""A patient's spinal column: vertebrae, discs and soft-tissue parameters, in millimetres.

Besides the three kinds of :data:`LSTV_TYPES`, a column carries what makes real spines hard to
count and to read: disc degeneration graded per disc on the Pfirrmann scale (in normal and
transitional studies alike, more often and worse at L4/L5 and L5/S1), an occasional grade-1
spondylolisthesis at L4/L5 or L5/S1, a thoracolumbar junction whose discs grow gradually from T10
down (T11/T12 and T12/L1 overlap the lumbar range), and the transitional spectrum of
:data:`LSTV_SUBTYPES` with the Castellvi type of the transverse processes. A column is drawn
from its priors by :func:`lstv.phantom.population.sample_anatomy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def axis_vectors(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(t, n): unit vector down the body axis and its posterior normal for a tilt angle."""
    a = math.radians(angle_deg)
    s, c = math.sin(a), math.cos(a)
    return np.array([s, c]), np.array([c, -s])


LSTV_TYPES = ("normal", "sacralization", "lumbarization")
# Sacralization: partial (a narrowed disc, one transverse process fused) or complete (a bony
# bridge with a rudimentary remnant or none). Lumbarization: the S1/S2 disc rudimentary (thin,
# dim, partly bridged) or fully formed.
LSTV_SUBTYPES = {
    "normal": ("normal",),
    "sacralization": ("sacralization_partial", "sacralization_complete"),
    "lumbarization": ("lumbarization_rudimentary", "lumbarization_full"),
}
CASTELLVI_TYPES = ("", "I", "II", "III", "IV")
# Transverse process of the transitional vertebra, per side: its Castellvi building block.
TRANSVERSE_STATES = ("normal", "enlarged", "articulating", "fused")


@dataclass(frozen=True)
class Degeneration:
    """How a disc has aged (Pfirrmann grade) and what is drawn for it.

    Attributes:
        grade: 1 (bright, homogeneous, full height) .. 5 (collapsed, black).
        blur: 0..1, how much of the nucleus/annulus border is lost (grade 3 and above).
        cleft: a dark horizontal intranuclear band (grade 2 to 4).
        bulge: posterior and anterior bulge of the annulus beyond a normal disc's, mm.
        osteophyte: length of the spurs at the anterior endplate corners, mm (0: none).
        modic: endplate signal change in both bodies: 0 none, 1 oedema (T2 bright, T1 dark),
            2 fatty (bright on both), 3 sclerosis (dark on both).
        modic_depth: how deep the band reaches into each body, mm.
        vacuum: gas in a collapsed disc, a black cleft (grade 5).
    """

    grade: int = 1
    blur: float = 0.0
    cleft: bool = False
    bulge: float = 0.0
    osteophyte: float = 0.0
    modic: int = 0
    modic_depth: float = 0.0
    vacuum: bool = False


NO_DEGENERATION = Degeneration()


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
        degeneration: Pfirrmann grade and its signs (grade 1: none).
        slip: anterior slip of the upper vertebra over the lower one, mm (spondylolisthesis).
    """

    name: str
    kind: str
    height: float
    signal: float
    extent: float = 1.0
    degeneration: Degeneration = NO_DEGENERATION
    slip: float = 0.0

    @property
    def grade(self) -> int:
        return self.degeneration.grade


@dataclass
class PlacedBody:
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
    ``subtype`` is one of :data:`LSTV_SUBTYPES` of ``kind``; ``castellvi`` the Castellvi type
    ("" for none) drawn by ``transverse``, the state of the transitional vertebra's right (-x)
    and left (+x) transverse process (:data:`TRANSVERSE_STATES`).
    """

    kind: str
    bodies: list[PlacedBody]
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
    subtype: str = "normal"
    castellvi: str = ""
    transverse: tuple[str, str] = ("normal", "normal")
    extra: dict[str, float] = field(default_factory=dict)
    cache: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def transitional_vertebra(self) -> str | None:
        """The vertebra whose transverse processes meet the sacrum in a transitional column."""
        return {"sacralization": "L5", "lumbarization": "S1"}.get(self.kind)

    def disc(self, name: str) -> Disc:
        for d in self.discs:
            if d.name == name:
                return d
        raise KeyError(name)

    def index(self, name: str) -> int:
        for i, body in enumerate(self.bodies):
            if body.name == name:
                return i
        raise KeyError(name)


def s1_s2_remnant(anatomy: Anatomy) -> str:
    """What lies between S1 and S2: ``none``, ``faint``, ``residual`` or ``full`` (a lumbarized
    S1's well-formed disc); a rudimentary lumbarized S1/S2 is a residual disc."""
    disc = anatomy.disc("S1/S2")
    if disc.kind == "normal":
        return "full"
    if disc.kind == "rudimentary" or disc.height >= 2.5:
        return "residual"
    return "faint" if disc.extent > 0 else "none"


def l5_wedge_deg(anatomy: Anatomy) -> float:
    """The angle between the upper and lower endplates of L5 (positive: taller anteriorly)."""
    body = anatomy.bodies[anatomy.index("L5")]
    return float(body.inf_angle - body.sup_angle)
