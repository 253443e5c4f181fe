"""The reason of a score in words: the feature that drives it, what it means for the map or the
column, and the reference's normal value or range (:mod:`lstv.score`)."""

from __future__ import annotations

import math

import numpy as np

from lstv.score_features import LEVEL_NAMES, as_number, split_feature
from lstv.score_reference import Reference


def _signed(value: float) -> str:
    return f"{value:+.1f}"


def describe(driver: str, value: float, z: float, ref: Reference, row: dict | None = None) -> str:
    """The driver of a score in plain words, e.g. "L5/S1 map has a second peak 23 mm below
    the first (0.81 of the peak; normal studies 0.02), z = +9.4".

    Args:
        driver: the feature name.
        value: the study's raw value of it.
        z: its signed z-score.
        ref: the reference (for the normal value).
        row: the study's CSV row, for the second peak's offset.
    """
    level, feature = split_feature(driver)
    name = LEVEL_NAMES[level]
    normal = ref.normal_value(driver)
    high = z > 0
    tail = f", z = {_signed(z)}"
    if feature == "peak2":
        if not high:
            return (
                f"{name} map has less of a second peak than normal studies "
                f"({value:.2f} of the peak; normal {normal:.2f}){tail}"
            )
        return (
            f"{name} map has a second peak {_peak2_where(level, row)} ({value:.2f} of the peak; "
            f"normal {normal:.2f}){tail}"
        )
    if feature == "entropy":
        how = "more spread out" if high else "more concentrated"
        return f"{name} map {how} than normal (entropy {value:.2f}; normal {normal:.2f}){tail}"
    if feature == "one_minus_confidence":
        how = "lower" if high else "higher"
        return (
            f"{name} peak probability {how} than normal ({1 - value:.4f}; "
            f"normal {1 - normal:.4f}){tail}"
        )
    if feature == "mass_out":
        how = "More" if high else "Less"
        return (
            f"{how} of the {name} map's mass lies outside its main blob than normal "
            f"({100 * value:.1f}%; normal {100 * normal:.1f}%){tail}"
        )
    if feature == "top100_entropy":
        how = "spread over more than one spot" if high else "more concentrated than normal"
        return (
            f"{name} map's 100 strongest pixels {how} (entropy {value:.2f}; "
            f"normal {normal:.2f}){tail}"
        )
    return f"{name} {feature.replace('_', ' ')} {value:.3g} (normal {normal:.3g}){tail}"


def _peak2_where(level: str, row: dict | None) -> str:
    dx = as_number((row or {}).get(f"{level}_peak2_dx_mm"))
    dy = as_number((row or {}).get(f"{level}_peak2_dy_mm"))
    if not (math.isfinite(dx) and math.isfinite(dy)):
        return "away from the first"
    if abs(dy) >= abs(dx):
        return f"{abs(dy):.0f} mm {'below' if dy > 0 else 'above'} the first"
    return f"{math.hypot(dx, dy):.0f} mm from the first"


def explain(driver: str, value: float, ref: Reference, row: dict | None = None) -> str:
    """The driver of a score as a radiologist would say it, with the reference's normal range
    (its 5th-95th percentiles), e.g. "L5/S1 disc space 41% of the mean spacing above it;
    normal 78-104%". A reference without ranges (version 1) keeps :func:`describe`'s words."""
    if driver not in ref.normal_range:
        z = float(
            ref.z_scores(np.array([[value if f == driver else math.nan for f in ref.features]]))[
                0, ref.features.index(driver)
            ]
        )
        return describe(driver, value, z, ref, row)
    lo, hi = ref.normal_range[driver]
    level, feature = split_feature(driver)
    name = LEVEL_NAMES[level]
    if driver == "l5_s1_spacing_ratio":
        return (
            f"L5/S1 disc space {100 * value:.0f}% of the mean spacing above it; "
            f"normal {100 * lo:.0f}-{100 * hi:.0f}%"
        )
    if driver == "l4_l5_bend_deg":
        return (
            f"The column bends {value:+.0f} degrees at L4/L5 (L3/L4 -> L4/L5 against "
            f"L4/L5 -> L5/S1); normal {lo:+.0f} to {hi:+.0f}"
        )
    if driver == "l5_s1_along":
        return (
            f"L5/S1 lies {100 * value:.0f}% of the L3/L4-L4/L5 spacing below L4/L5; "
            f"normal {100 * lo:.0f}-{100 * hi:.0f}%"
        )
    if driver == "l5_s1_across":
        side = "posterior" if value > 0 else "anterior"
        return (
            f"L5/S1 sits {100 * abs(value):.0f}% of a level {side} to the L3/L4-L4/L5 line; "
            f"normal {100 * lo:+.0f}% to {100 * hi:+.0f}% (positive: posterior)"
        )
    # "Unsure" is a finding: said only outside the normal range, since an unflagged study's
    # reason names its closest feature too.
    if feature == "one_minus_confidence":
        if value <= hi:
            return f"{name} peak probability {1 - value:.3f}; normal {1 - hi:.3f}-{1 - lo:.3f}"
        return (
            f"The localizer is unsure where {name} is (peak probability {1 - value:.3f}; "
            f"normal {1 - hi:.3f}-{1 - lo:.3f})"
        )
    if feature == "para_min_one_minus_confidence":
        if value <= hi:
            return (
                f"Beside the centre slice the lowest {name} peak probability is "
                f"{1 - value:.3f}; normal {1 - hi:.3f}-{1 - lo:.3f}"
            )
        return (
            f"Beside the centre slice the localizer is unsure where {name} is (lowest peak "
            f"probability {1 - value:.3f}; normal {1 - hi:.3f}-{1 - lo:.3f})"
        )
    if feature == "para_mean_peak2":
        return (
            f"Beside the centre slice the {name} map has a second candidate ({value:.2f} of "
            f"the peak on average; normal {lo:.2f}-{hi:.2f})"
        )
    if feature == "para_shift_mm":
        return (
            f"The {name} point moves {value:.0f} mm between the centre slice and the slices "
            f"beside it; normal {lo:.0f}-{hi:.0f} mm"
        )
    if feature == "peak2":
        return (
            f"The {name} map has a second candidate {_peak2_where(level, row)} ({value:.2f} of "
            f"the peak; normal {lo:.2f}-{hi:.2f})"
        )
    if feature == "mass_out":
        return (
            f"{100 * value:.0f}% of the {name} map lies outside its main spot; normal "
            f"{100 * lo:.0f}-{100 * hi:.0f}%"
        )
    if feature in ("entropy", "top100_entropy"):
        what = "map" if feature == "entropy" else "map's 100 strongest pixels"
        how = "more spread out" if value > hi else "more concentrated" if value < lo else "as"
        return (
            f"The {name} {what} {how} than normal (entropy {value:.2f}; normal {lo:.2f}-{hi:.2f})"
        )
    return f"{name} {feature.replace('_', ' ')} {value:.3g}; normal {lo:.3g}-{hi:.3g}"
