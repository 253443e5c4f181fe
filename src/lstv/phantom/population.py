"""How a population of spinal columns is drawn: the published spreads and the priors of a normal
and a transitional column (:func:`sample_anatomy`), placed endplate by endplate into an
:class:`~lstv.phantom.anatomy.Anatomy`. The package docstring's table gives the sources."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from lstv.phantom.anatomy import (
    LSTV_SUBTYPES,
    LSTV_TYPES,
    Anatomy,
    Degeneration,
    Disc,
    PlacedBody,
    Vertebra,
    axis_vectors,
)

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
# Thoracic disc height range (mm) growing towards the junction: T11/T12 and T12/L1 overlap the
# lumbar range and are drawn as lumbar-type discs, so "the first thick disc" is not L1/L2.
_UPPER_DISC_HEIGHT = {
    "T8/T9": (4.5, 6.0),
    "T9/T10": (5.0, 6.5),
    "T10/T11": (5.5, 7.5),
    "T11/T12": (6.5, 9.0),
    "T12/L1": (7.2, 9.6),
}
# How strongly each disc follows the patient's degeneration load; L4/L5 and L5/S1 (and the
# lowest mobile disc of a lumbarized column) carry most of it, and may degenerate alone.
_DEGENERATION_WEIGHT = {
    "T10/T11": 0.25,
    "T11/T12": 0.3,
    "T12/L1": 0.32,
    "L1/L2": 0.35,
    "L2/L3": 0.45,
    "L3/L4": 0.65,
    "L4/L5": 1.0,
    "L5/S1": 1.0,
    "S1/S2": 1.0,
}
_FOCAL_DEGENERATION = {"L4/L5": 0.2, "L5/S1": 0.2}  # chance of an isolated extra +0.35
_GRADE_CUTS = (0.22, 0.42, 0.62, 0.9)
# Per grade: height factor range, nucleus T2 signal range (grade 1 keeps its hydrated signal).
_GRADE_HEIGHT = {2: (0.92, 1.0), 3: (0.78, 0.92), 4: (0.55, 0.78), 5: (0.25, 0.45)}
_GRADE_SIGNAL = {2: (0.66, 0.84), 3: (0.45, 0.62), 4: (0.26, 0.42), 5: (0.10, 0.20)}
_SPONDYLOLISTHESIS_RATE = 0.08

# Published spreads the column is drawn from; the package docstring's table gives the sources.
# Lumbosacral (Ferguson's) angle in the image: mean, SD, range (274 supine radiographs).
FERGUSON_ANGLE = (44.5, 9.9, 18.0, 71.0)
# Lordosis factor on the table's segment angles: mean 1.2, SD 0.33 gives L1-S1 lordosis of
# about 42 +- 11 degrees (supine 37 +- 13, standing 50 +- 11; range 30-80).
LORDOSIS_FACTOR = (1.2, 0.33)
LORDOSIS_SLOPE_R = 0.64  # L1-L5 lordosis against L5 incidence (Dominguez et al. 2016)
L5_WEDGE_SD = 2.0  # degrees, on top of the lordosis-driven wedge
L5_TAPER_SD = 0.03
LUMBAR_DISC_SD = 1.0  # mm, L1/L2..L4/L5 central height
LUMBOSACRAL_DISC_SD = 1.6  # mm, L5/S1 (middle height 11.3 +- 1.7 mm)
# S1/S2 of a sacral S1: a disc persisted between S1 and S2 in 39% of 56 adult sacra.
S1_S2_REMNANT_P = {"none": 0.25, "faint": 0.36, "residual": 0.39}
# A sacralized L5 against a normal one, each (mean, SD): height factor, taper (inferior over
# superior depth), extra tilt towards the sacrum and extra wedge (degrees). The tilt mirrors the
# L5 incidence difference (22 vs 33 degrees, about 1.1 SD); no published L5 height, taper or
# wedge of a sacralized L5 was found, so those overlap the normal ones by about one SD.
TRANSITIONAL_L5 = {
    "sacralization_partial": {
        "height": (0.965, 0.03), "taper": (0.91, 0.04), "tilt": (4.0, 2.0), "wedge": (1.5, 2.0),
    },
    "sacralization_complete": {
        "height": (0.95, 0.03), "taper": (0.87, 0.04), "tilt": (6.0, 2.0), "wedge": (2.5, 2.0),
    },
}  # fmt: skip


def _column_rows(kind: str, subtype: str = "") -> list[list]:
    """The column table of :data:`_NORMAL_COLUMN`, changed for a transitional kind."""
    rows = [list(r) for r in _NORMAL_COLUMN]
    by_name = {r[0]: r for r in rows}
    if kind == "sacralization":
        # L5 joins the sacrum and is wider laterally (its transverse processes meet the ala);
        # its height, taper, tilt and wedge are drawn around the normal L5's in
        # _sample_vertebrae, overlapping as the literature says.
        by_name["L5"][1] = "transitional"
        by_name["L5"][5] = 30.0 if subtype == "sacralization_partial" else 32.0
    elif kind == "lumbarization":
        # S1 becomes a sixth lumbar-type body; the lumbosacral angle moves down to S1/S2.
        by_name["S1"][1:7] = ["lumbar", 26.0, 38.0, 0.97, 25.0, 19.0]
        for name, shift in (("S2", 12.0), ("S3", 10.0), ("S4", 8.0), ("S5", 6.0)):
            by_name[name][6] += shift
        by_name["S2"][2:4] = [24.0, 38.0]
    return rows


def _sample_vertebrae(
    rng: np.random.Generator, kind: str, subtype: str, size: float, lordosis: float
) -> list[Vertebra]:
    vertebrae = []
    transitional = TRANSITIONAL_L5.get(subtype)
    for name, shape, height, depth, taper, half_width, angle in _column_rows(kind, subtype):
        if name == "L5":
            # Every L5 varies in taper; a sacralized one is drawn shorter, more tapered and
            # tilted towards the sacrum by amounts that overlap the normal spread.
            height_f, taper_mean, tilt = 1.0, taper, 0.0
            if transitional is not None:
                height_f = rng.normal(*transitional["height"])
                taper_mean = rng.normal(*transitional["taper"])
                tilt = rng.normal(*transitional["tilt"])
            height *= height_f
            taper = float(np.clip(taper_mean + rng.normal(0.0, L5_TAPER_SD), 0.75, 1.0))
            angle = angle * lordosis + tilt
        else:
            angle = angle * lordosis
        vertebrae.append(
            Vertebra(
                name=name,
                shape=shape,
                height=height * size * (1 + rng.normal(0.0, 0.025)),
                depth=depth * size * (1 + rng.normal(0.0, 0.025)),
                taper=taper,
                half_width=half_width * size,
                angle=angle + rng.normal(0.0, 1.2),
                wedge=0.0,
            )
        )
    # Part of the curvature sits in the bodies (wedged vertebrae), the rest in the discs.
    for i, v in enumerate(vertebrae):
        prev_angle = vertebrae[max(i - 1, 0)].angle
        next_angle = vertebrae[min(i + 1, len(vertebrae) - 1)].angle
        share = 0.7 if v.shape in ("sacral", "coccygeal") else 0.35
        wedge = share * (next_angle - prev_angle) / 2
        if v.name == "L5":
            wedge += rng.normal(0.0, L5_WEDGE_SD)
            if transitional is not None:
                wedge += rng.normal(*transitional["wedge"])
        vertebrae[i] = Vertebra(**{**v.__dict__, "wedge": wedge})
    return vertebrae


def _sample_grade(rng: np.random.Generator, load: float, name: str) -> int:
    """Pfirrmann grade of one disc for a patient's degeneration ``load`` (0..1)."""
    weight = _DEGENERATION_WEIGHT.get(name)
    if weight is None:
        return 1
    score = load * weight + rng.normal(0.0, 0.12)
    if rng.random() < _FOCAL_DEGENERATION.get(name, 0.0):
        score += 0.35
    return 1 + int(np.searchsorted(_GRADE_CUTS, score))


def _degenerate(rng: np.random.Generator, disc: Disc, grade: int) -> Disc:
    """The disc aged to Pfirrmann ``grade``: lower, darker, blurred, bulging, with spurs."""
    if grade == 1:
        return disc
    chance = {2: 0.0, 3: 0.3, 4: 0.6, 5: 0.8}[grade]
    osteophyte = rng.uniform(1.5, 2.0 + 0.8 * grade) if rng.random() < chance else 0.0
    modic = 0
    if rng.random() < {2: 0.0, 3: 0.05, 4: 0.35, 5: 0.6}[grade]:
        modic = int(rng.choice([1, 2, 3], p=[0.3, 0.5, 0.2]))
    degeneration = Degeneration(
        grade=grade,
        blur={2: 0.0, 3: rng.uniform(0.4, 0.7), 4: rng.uniform(0.7, 1.0), 5: 1.0}[grade],
        cleft=grade < 5 and rng.random() < 0.7,
        bulge={
            2: 0.0,
            3: rng.uniform(0.3, 1.0),
            4: rng.uniform(0.8, 2.0),
            5: rng.uniform(1.0, 2.5),
        }[grade],
        osteophyte=osteophyte,
        modic=modic,
        modic_depth=rng.uniform(3.0, 8.0) if modic else 0.0,
        vacuum=grade == 5 and rng.random() < 0.35,
    )
    return replace(
        disc,
        height=disc.height * rng.uniform(*_GRADE_HEIGHT[grade]),
        signal=min(disc.signal, rng.uniform(*_GRADE_SIGNAL[grade])),
        degeneration=degeneration,
    )


def _sample_disc(
    rng: np.random.Generator, upper: Vertebra, lower: Vertebra, subtype: str, load: float
) -> Disc:
    name = f"{upper.name}/{lower.name}"
    if upper.shape == "coccygeal" or upper.name == "S5":
        return Disc(name, "gap", rng.uniform(1.5, 2.5), 0.0)
    if upper.shape == "transitional" and subtype == "sacralization_partial":
        # A narrowed, degenerated-looking but real disc between a partly fused L5 and S1.
        disc = Disc(name, "normal", rng.uniform(5.0, 7.0), rng.uniform(0.7, 0.9))
        return _degenerate(rng, disc, int(rng.choice([3, 4])))
    if upper.shape == "transitional":
        # Completely sacralized L5/S1: a thin, dim remnant spanning part of the depth, or none
        # at all; graded 5 (collapsed) for what it looks like.
        collapsed = Degeneration(grade=5, blur=1.0)
        if rng.random() < 0.3:
            return Disc(
                name,
                "rudimentary",
                rng.uniform(1.0, 1.8),
                rng.uniform(0.30, 0.42),
                0.0,
                collapsed,
            )
        return Disc(
            name,
            "rudimentary",
            rng.uniform(1.5, 3.0),
            rng.uniform(0.40, 0.55),
            rng.uniform(0.45, 0.8),
            collapsed,
        )
    if upper.name == "S1" and upper.shape == "sacral":
        return _s1_s2_remnant(rng, name)
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
    if upper.name == "S1" and subtype == "lumbarization_rudimentary":
        # A lumbarized S1 only partly separated from S2: a thin, dim, partly bridged disc.
        return Disc(
            name,
            "rudimentary",
            rng.uniform(2.0, 4.0),
            rng.uniform(0.42, 0.6),
            rng.uniform(0.5, 0.85),
        )
    if upper.name == "S1":  # a fully lumbarized S1: a well-formed S1/S2 disc
        disc = Disc(name, "normal", rng.uniform(8.0, 10.5), rng.uniform(0.75, 0.98))
    elif name in _UPPER_DISC_HEIGHT:
        junction = name in ("T11/T12", "T12/L1")
        disc = Disc(
            name,
            "normal" if junction else "thoracic",
            rng.uniform(*_UPPER_DISC_HEIGHT[name]),
            rng.uniform(0.72, 0.95) if junction else rng.uniform(0.62, 0.85),
        )
    else:
        sd = LUMBOSACRAL_DISC_SD if name == "L5/S1" else LUMBAR_DISC_SD
        height = float(np.clip(_LUMBAR_DISC_HEIGHT[name] + rng.normal(0.0, sd), 6.5, 14.5))
        disc = Disc(name, "normal", height, rng.uniform(0.78, 1.0))
    return _degenerate(rng, disc, _sample_grade(rng, load, name))


def _s1_s2_remnant(rng: np.random.Generator, name: str) -> Disc:
    """The S1/S2 level of a sacrum whose S1 is sacral: no remnant, a faint line or a small
    residual disc, with the prevalences of :data:`S1_S2_REMNANT_P`."""
    kind = str(rng.choice(list(S1_S2_REMNANT_P), p=list(S1_S2_REMNANT_P.values())))
    if kind == "none":  # fully fused: the remnant has the marrow's signal and no extent
        return Disc(name, "vestigial", rng.uniform(1.0, 1.6), 0.46, 0.0)
    if kind == "faint":
        return Disc(
            name,
            "vestigial",
            rng.uniform(1.1, 2.3),
            0.58 * rng.uniform(0.9, 1.05),
            rng.uniform(0.35, 0.6),
        )
    # A small residual disc: taller, brighter and wider than a faint line, still in a fused
    # sacrum (no facet joints), and so partly like a rudimentary lumbarized S1/S2.
    return Disc(
        name, "vestigial", rng.uniform(2.5, 4.2), rng.uniform(0.62, 0.85), rng.uniform(0.5, 0.8)
    )


def _sample_transverse(rng: np.random.Generator, subtype: str) -> tuple[str, tuple[str, str]]:
    """Castellvi type and the (right, left) transverse process states that draw it."""
    if subtype == "sacralization_complete":
        sides = ["fused", "fused"]
    elif subtype == "sacralization_partial":
        sides = ["fused", str(rng.choice(["articulating", "enlarged", "normal"]))]
    elif subtype == "lumbarization_full":
        castellvi = str(rng.choice(["", "I", "II"], p=[0.4, 0.3, 0.3]))
        sides = {"": ["normal", "normal"], "I": ["enlarged", "enlarged"]}.get(
            castellvi, ["articulating", str(rng.choice(["articulating", "normal"]))]
        )
    elif subtype == "lumbarization_rudimentary":
        castellvi = str(rng.choice(["", "I", "II", "III"], p=[0.25, 0.2, 0.35, 0.2]))
        sides = {
            "": ["normal", "normal"],
            "I": ["enlarged", str(rng.choice(["enlarged", "normal"]))],
            "II": ["articulating", str(rng.choice(["articulating", "enlarged"]))],
            "III": ["fused", str(rng.choice(["fused", "normal"]))],
        }[castellvi]
    else:
        return "", ("normal", "normal")
    if rng.random() < 0.5:
        sides.reverse()
    states = set(sides)
    if {"fused", "articulating"} <= states:
        castellvi = "IV"
    elif "fused" in states:
        castellvi = "III"
    elif "articulating" in states:
        castellvi = "II"
    elif "enlarged" in states:
        castellvi = "I"
    else:
        castellvi = ""
    return castellvi, (sides[0], sides[1])


def _add_spondylolisthesis(rng: np.random.Generator, discs: list[Disc], kind: str) -> None:
    """Now and then, a grade-1 anterolisthesis (3-8 mm) at L4/L5 or L5/S1."""
    if rng.random() >= _SPONDYLOLISTHESIS_RATE:
        return
    name = "L4/L5" if kind == "sacralization" or rng.random() < 0.6 else "L5/S1"
    slip = rng.uniform(3.0, 8.0)
    for i, d in enumerate(discs):
        if d.name == name and d.kind == "normal":
            discs[i] = replace(d, slip=slip)


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


def sample_anatomy(rng: np.random.Generator, kind: str, subtype: str | None = None) -> Anatomy:
    """Draw one patient's spinal column and surroundings.

    Args:
        rng: the random generator (all randomness of the study comes from it).
        kind: one of :data:`LSTV_TYPES`.
        subtype: one of ``LSTV_SUBTYPES[kind]``; None draws one (about half each).

    Returns:
        The placed column (endplates in the canonical mm frame) and the soft-tissue parameters.

    Raises:
        ValueError: an unknown ``kind`` or a ``subtype`` of another kind.
    """
    if kind not in LSTV_TYPES:
        raise ValueError(f"kind must be one of {LSTV_TYPES}, got {kind!r}")
    if subtype is None:
        subtype = str(rng.choice(LSTV_SUBTYPES[kind]))
    if subtype not in LSTV_SUBTYPES[kind]:
        raise ValueError(f"subtype of {kind} must be one of {LSTV_SUBTYPES[kind]}, got {subtype!r}")
    size = rng.uniform(0.95, 1.12)
    z = rng.normal()
    lordosis = float(np.clip(LORDOSIS_FACTOR[0] + LORDOSIS_FACTOR[1] * z, 0.55, 2.0))
    # The sacrum's slope in the image follows the lordosis (r = LORDOSIS_SLOPE_R).
    r = LORDOSIS_SLOPE_R
    ferguson = FERGUSON_ANGLE[0] + FERGUSON_ANGLE[1] * (r * z + math.sqrt(1 - r * r) * rng.normal())
    ferguson = float(np.clip(ferguson, *FERGUSON_ANGLE[2:]))
    load = rng.beta(1.5, 1.6)  # the patient's degeneration load, 0..1
    vertebrae = _sample_vertebrae(rng, kind, subtype, size, lordosis)
    discs = [
        _sample_disc(rng, u, lo, subtype, load)
        for u, lo in zip(vertebrae[:-1], vertebrae[1:], strict=True)
    ]
    _add_spondylolisthesis(rng, discs, kind)
    castellvi, transverse = _sample_transverse(rng, subtype)
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
        subtype=subtype,
        castellvi=castellvi,
        transverse=transverse,
        extra={
            "size": size,
            "lordosis": lordosis,
            "degeneration_load": load,
            "ferguson_target": ferguson,
        },
    )


def _place_column(vertebrae: list[Vertebra], discs: list[Disc]) -> list[PlacedBody]:
    """Chain bodies and discs from the top endplate down, endplate angle by endplate angle."""
    bodies = []
    sup_centre = np.zeros(2)
    sup_angle = vertebrae[0].angle - vertebrae[0].wedge / 2
    for i, v in enumerate(vertebrae):
        inf_angle = sup_angle + v.wedge
        t, _ = axis_vectors((sup_angle + inf_angle) / 2)
        inf_centre = sup_centre + t * v.height
        bodies.append(PlacedBody(v, sup_centre, inf_centre, sup_angle, inf_angle))
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
        td, nd = axis_vectors(inf_angle + disc_wedge / 2)
        # Anterolisthesis: everything below slips back, i.e. the upper body lies anterior.
        sup_centre = inf_centre + td * d.height + nd * d.slip
        sup_angle = inf_angle + disc_wedge
    return bodies
