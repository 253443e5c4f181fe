"""The score's features: what a study's metrics row says about its L4/L5 and L5/S1 maps and the
geometry of its five predicted points, as numbers a reference can score (:mod:`lstv.score`).

Numpy and the standard library only; a row is a dict of text or numbers, as the metrics CSV
holds it.
"""

from __future__ import annotations

import math

import numpy as np

from lstv.errors import UsageError
from lstv.levels import LEVEL_KEYS, LEVELS

SCORE_LEVELS = ("l4_l5", "l5_s1")
LEVEL_FEATURES = ("entropy", "one_minus_confidence", "peak2", "mass_out", "top100_entropy")
FEATURES = tuple(f"{level}_{name}" for level in SCORE_LEVELS for name in LEVEL_FEATURES)
LEVEL_NAMES = dict(zip(LEVEL_KEYS, LEVELS, strict=True))  # l5_s1 -> L5/S1

# Score v2: the geometry of the five predicted points in the slice plane (mm from the CSV's
# patient coordinates; their meanings are in lstv.columns.GEOMETRY).
GEOMETRY_FEATURES = (
    "l5_s1_spacing_ratio",
    "l4_l5_bend_deg",
    "l5_s1_along",
    "l5_s1_across",
)
# The model on the slices beside the centre (lstv infer --parasagittal; lstv.columns.PARASAGITTAL):
# the lowest peak read as 1 - peak, as the centre's confidence is.
PARASAGITTAL_FEATURES = (
    "l4_l5_para_min_one_minus_confidence",
    "l4_l5_para_mean_peak2",
    "l5_s1_para_min_one_minus_confidence",
    "l5_s1_para_mean_peak2",
    "l5_s1_para_shift_mm",
)
# Features a reference may name.
KNOWN_FEATURES = FEATURES + GEOMETRY_FEATURES + PARASAGITTAL_FEATURES


def source_column(name: str) -> tuple[str, bool]:
    """The CSV column a feature is read from, and whether it is read as 1 - value
    (``l5_s1_one_minus_confidence`` from ``l5_s1_confidence``, ``l5_s1_para_min_one_minus_
    confidence`` from ``l5_s1_para_min_confidence``)."""
    if name.endswith("_one_minus_confidence"):
        return name.removesuffix("_one_minus_confidence") + "_confidence", True
    return name, False


def split_feature(name: str) -> tuple[str, str]:
    """``l5_s1_peak2`` -> (``l5_s1``, ``peak2``)."""
    level, feature = name[:5], name[6:]
    if level not in LEVEL_NAMES or name[5:6] != "_" or not feature:
        raise ValueError(f"{name!r} is not a per-level feature name like 'l5_s1_peak2'")
    return level, feature


def required_columns(features=FEATURES) -> list[str]:
    """CSV columns the features are computed from (``one_minus_confidence`` from confidence,
    geometry from the points' patient coordinates)."""
    cols = []
    for name in features:
        level, feature = split_feature(name)
        if name in GEOMETRY_FEATURES:
            cols += [f"{k}_{a}_mm" for k in LEVEL_KEYS for a in ("y", "z")]
        else:
            cols.append(source_column(name)[0])
    return list(dict.fromkeys(cols))


def geometry_features(points: dict[str, tuple[float, float, float] | None]) -> dict[str, float]:
    """:data:`GEOMETRY_FEATURES` from the five predicted points (level key -> LPS mm), NaN
    where a point is missing.

    The slice is sagittal, so its plane is (posterior = +y, inferior = -z); a tilt is the angle
    from straight down, positive posteriorly, as a vertebra's axis.
    """
    nan = dict.fromkeys(GEOMETRY_FEATURES, math.nan)
    q = []
    for key in LEVEL_KEYS:
        p = points.get(key)
        if p is None or not all(math.isfinite(float(c)) for c in p):
            return nan
        q.append(np.array([float(p[1]), -float(p[2])]))
    steps = [q[k + 1] - q[k] for k in range(4)]
    lengths = [float(np.hypot(*s)) for s in steps]
    if min(lengths[:3]) <= 0 or lengths[2] <= 0:
        return nan
    v1, v2 = steps[2], steps[3]
    u = v1 / lengths[2]
    n = np.array([u[1], -u[0]])
    bend = math.degrees(math.atan2(v2[0], v2[1]) - math.atan2(v1[0], v1[1]))
    return {
        "l5_s1_spacing_ratio": lengths[3] / float(np.mean(lengths[:3])),
        "l4_l5_bend_deg": (bend + 180.0) % 360.0 - 180.0,
        "l5_s1_along": float(v2 @ u) / lengths[2],
        "l5_s1_across": float(v2 @ n) / lengths[2],
    }


def _row_geometry(row: dict) -> dict[str, float]:
    points = {}
    for key in LEVEL_KEYS:
        values = [as_number(row.get(f"{key}_{a}_mm")) for a in ("x", "y", "z")]
        points[key] = None if not all(math.isfinite(v) for v in values[1:]) else values
    return geometry_features(points)


def as_number(text) -> float:
    """A CSV cell (text or number) as a float; NaN when empty (a ValueError when not a number)."""
    if text is None:
        return math.nan
    if isinstance(text, int | float | np.floating):
        return float(text)
    text = str(text).strip()
    return float(text) if text else math.nan


def feature_matrix(rows: list[dict], features=FEATURES, source: str = "metrics CSV") -> np.ndarray:
    """(n, F) raw feature values of CSV rows (dicts of text or numbers); NaN where empty.

    Raises:
        UsageError: a row lacks a needed column, or a value is not a number; names ``source``.
    """
    out = np.full((len(rows), len(features)), math.nan)
    for i, row in enumerate(rows):
        geometry = None
        for j, name in enumerate(features):
            level, feature = split_feature(name)
            if name in GEOMETRY_FEATURES and not math.isfinite(as_number(row.get(name))):
                # A run written before these columns (or a row without them): from the points.
                if not any(f"{k}_y_mm" in row for k in LEVEL_KEYS):
                    raise UsageError(f"{source} has no column {name!r} nor the points' *_y_mm")
                geometry = geometry or _row_geometry(row)
                out[i, j] = geometry[name]
                continue
            col, flipped = source_column(name)
            if col not in row:
                raise UsageError(f"{source} has no column {col!r} (needed for {name})")
            try:
                value = as_number(row[col])
            except ValueError as exc:
                raise UsageError(f"{source}: {col} = {row[col]!r} is not a number") from exc
            out[i, j] = 1.0 - value if flipped else value
    return out
