"""What a score reference's JSON must hold, field by field (:func:`check_fields`).

:func:`lstv.score_reference.validate_reference` runs these checks with the score's own
vocabulary (its features and rules) every time a reference is loaded. A new field of the
reference gets its check here, in :data:`REFERENCE_FIELDS`. The standard library and numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lstv.errors import UsageError


@dataclass(frozen=True)
class Vocabulary:
    """What the score knows: the features a reference may name, its rules, and the fields a
    reference must have."""

    features: tuple[str, ...]
    rules: tuple[str, ...]
    required: frozenset[str]


# A spread below this is no spread: z-scores would overflow to infinity and read as missing.
MIN_SCALE = 1e-12


def _finite(value) -> float:
    """``value`` as a finite float: a JSON number, not text, not true/false, not null."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{_shown(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise UsageError(f"{_shown(value)} is not a finite number")
    return number


def _shown(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**20:
        return f"a {len(str(abs(value)))}-digit number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{_shown(value)} is not a list of {what}")
    return value


def _check_features(value, data, vocabulary) -> None:
    names = _names(value, "feature names")
    if not names:
        raise UsageError("is empty: a reference scores at least one feature")
    known = vocabulary.features
    for name in names:
        if name not in known:
            raise UsageError(f"unknown feature {name!r} (known: {', '.join(known)})")
    if len(set(names)) != len(names):
        raise UsageError("names a feature twice")


def _check_log_features(value, data, vocabulary=None) -> None:
    extra = set(_names(value, "feature names")) - set(data["features"])
    if extra:
        raise UsageError(f"{sorted(extra)} are not among its features")


def _per_feature(check):
    """A check of a ``{feature: number}`` field: every feature present, each value checked."""

    def check_field(value, data, vocabulary=None) -> None:
        if not isinstance(value, dict):
            raise UsageError(f"{_shown(value)} is not an object of feature -> number")
        for name in data["features"]:
            if name not in value:
                raise UsageError(f"no value for {name}")
            try:
                check(_finite(value[name]))
            except ValueError as exc:
                raise UsageError(f"{name}: {exc}") from None

    return check_field


def _positive_scale(number: float) -> None:
    if number <= 0:
        raise UsageError(f"{number!r} is not a positive scale (spread)")
    if number < MIN_SCALE:
        raise UsageError(f"{number!r} is too small a spread (below {MIN_SCALE:g}): z overflows")


def _check_threshold(value, data, vocabulary=None) -> None:
    if _finite(value) < 0:
        raise UsageError(f"{value!r} is below 0: every study would be flagged (scores are >= 0)")


def _check_log_offset(value, data, vocabulary=None) -> None:
    if _finite(value) <= 0:
        raise UsageError(f"{value!r} is not positive: log features would be NaN or -infinity")


def _check_n(value, data, vocabulary=None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{_shown(value)} is not a whole number of studies >= 1")


def _check_specificity(value, data, vocabulary=None) -> None:
    if value is not None and not 0 < _finite(value) <= 1:
        raise UsageError(f"{value!r} is not between 0 and 1 (or null)")


def _text(optional: bool):
    def check(value, data, vocabulary=None) -> None:
        if not (isinstance(value, str) or (optional and value is None)):
            raise UsageError(f"{_shown(value)} is not text" + (" (or null)" if optional else ""))

    return check


def _check_object(value, data, vocabulary=None) -> None:
    if not isinstance(value, dict):
        raise UsageError(f"{_shown(value)} is not an object")


def _check_rule(value, data, vocabulary) -> None:
    if value not in vocabulary.rules:
        raise UsageError(f"{_shown(value)} is not one of {', '.join(vocabulary.rules)}")


def _check_one_sided(value, data, vocabulary=None) -> None:
    extra = set(_names(value, "feature names")) - set(data["features"])
    if extra:
        raise UsageError(f"{sorted(extra)} are not among its features")


def _check_location(value, data, vocabulary=None) -> None:
    if data.get("rule") == "mahalanobis":
        _per_feature(lambda number: None)(value, data)
    else:
        _check_object(value, data)


def _check_covariance(value, data, vocabulary=None) -> None:
    """For the Mahalanobis rule: a finite, symmetric, positive definite matrix of the
    features' size."""
    if not isinstance(value, list):
        raise UsageError(f"{_shown(value)} is not a matrix (a list of rows)")
    if data.get("rule") != "mahalanobis":
        return
    k = len(data["features"])
    if len(value) != k or not all(isinstance(row, list) and len(row) == k for row in value):
        raise UsageError(f"is not a {k} x {k} matrix (one row and column per feature)")
    cov = np.array([[_finite(v) for v in row] for row in value])
    if not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
        raise UsageError("is not symmetric positive definite")


def _check_normal_range(value, data, vocabulary=None) -> None:
    _check_object(value, data)
    for name, bounds in value.items():
        if name not in data["features"]:
            raise UsageError(f"{name!r} is not among its features")
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise UsageError(f"{name}: {_shown(bounds)} is not [low, high]")
        low, high = (_finite(b) for b in bounds)
        if low > high:
            raise UsageError(f"{name}: low {low:g} is above high {high:g}")


def _check_acquisition(value, data, vocabulary=None) -> None:
    """``{"n": studies, "descriptors": {name: {"centre", "spread", "n"}}}`` of known
    descriptors (lstv.acquisition.fit_descriptors), or ``{}``."""
    from lstv.acquisition import DESCRIPTORS

    _check_object(value, data)
    if not value:
        return
    try:
        _check_n(value.get("n"), data)
    except ValueError as exc:
        raise UsageError(f"n: {exc}") from None
    descriptors = value.get("descriptors")
    if not isinstance(descriptors, dict) or not descriptors:
        raise UsageError(f"descriptors: {_shown(descriptors)} is not a non-empty object")
    for name, fitted in descriptors.items():
        if name not in DESCRIPTORS:
            raise UsageError(f"unknown descriptor {name!r} (known: {', '.join(DESCRIPTORS)})")
        if not isinstance(fitted, dict):
            raise UsageError(f"{name}: {_shown(fitted)} is not an object")
        try:
            _finite(fitted.get("centre"))
            _positive_scale(_finite(fitted.get("spread")))
            _check_n(fitted.get("n"), data)
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from None


# Every field of a reference and its check, features first (the others are checked against
# them). A check takes (value, the whole reference, the vocabulary) and raises ValueError
# saying what is wrong.
REFERENCE_FIELDS = {
    "features": _check_features,
    "log_features": _check_log_features,
    "centre": _per_feature(lambda number: None),
    "scale": _per_feature(_positive_scale),
    "scale_rule": _check_object,
    "n": _check_n,
    "threshold": _check_threshold,
    "threshold_rule": _text(optional=False),
    "checkpoint_sha256": _text(optional=True),
    "target_specificity": _check_specificity,
    "reference_studies": _text(optional=False),
    "created_at": _text(optional=False),
    "lstv_version": _text(optional=False),
    "log_offset": _check_log_offset,
    # score v2
    "rule": _check_rule,
    "one_sided": _check_one_sided,
    "location": _check_location,
    "covariance": _check_covariance,
    "normal_range": _check_normal_range,
    "acquisition": _check_acquisition,
    "extra": _check_object,
}


def check_fields(data: dict, source: str, vocabulary: Vocabulary) -> None:
    """Check every field of a reference's JSON: types (numbers are JSON numbers, not text),
    finiteness, positive spreads, known and non-empty features, a finite threshold >= 0, a
    positive log offset, and for score v2 a known rule and, for the Mahalanobis rule, a finite
    location and a symmetric positive definite covariance.

    Raises:
        UsageError: ``"{source}: field 'name': what is wrong"``, for the first bad field.
    """
    for name, check in REFERENCE_FIELDS.items():
        if name not in data:
            if name in vocabulary.required:
                raise UsageError(f"{source}: field {name!r} is missing")
            continue
        try:
            check(data[name], data, vocabulary)
        except ValueError as exc:
            raise UsageError(f"{source}: field {name!r}: {exc}") from None
