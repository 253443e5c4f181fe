"""The score's reference: a fitted description of normal studies (:class:`Reference`), how it
scores raw features by its rule, and its JSON file, checked field by field when read.

The fit itself is :func:`lstv.score.fit_reference`; numpy and the standard library only.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from lstv.errors import UsageError
from lstv.score_check import Vocabulary, check_fields
from lstv.score_features import KNOWN_FEATURES

LOG_OFFSET = 1e-4
CONFIG_KEY = "lstv_reference"
REFERENCE_FORMAT = "lstv-score-reference"
REFERENCE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: max |z| only, no rule, ranges or covariance
RULES = ("max_abs_z", "mahalanobis")


def max_abs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest |z| over the finite entries and its column (NaN, -1 when none)."""
    a = np.where(np.isfinite(z), np.abs(z), -np.inf)
    idx = np.argmax(a, axis=1)
    best = a[np.arange(len(a)), idx]
    missing = ~np.isfinite(best)
    return np.where(missing, np.nan, best), np.where(missing, -1, idx)


def mahalanobis(
    x: np.ndarray, location: np.ndarray, covariance: np.ndarray, one_sided: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the Mahalanobis distance of ``x`` (transformed scale) from ``location`` over the
    features it has, and the feature contributing most to it (NaN, -1 when none).

    A one-sided feature below the location counts as at the location: a more confident,
    single-peaked map than normal is no sign of LSTV. The contributions ``d_j (P d)_j`` sum to
    the squared distance, so the driver is the feature that adds most to it.
    """
    d = x - location
    d[:, one_sided] = np.maximum(d[:, one_sided], 0.0)
    scores = np.full(len(x), np.nan)
    drivers = np.full(len(x), -1)
    for i, row in enumerate(d):
        known = np.isfinite(row)
        if not known.any():
            continue
        sub = row[known]
        contributions = sub * np.linalg.solve(covariance[np.ix_(known, known)], sub)
        scores[i] = math.sqrt(max(float(contributions.sum()), 0.0))
        drivers[i] = int(np.flatnonzero(known)[int(np.argmax(contributions))])
    return scores, drivers


@dataclass(frozen=True)
class Reference:
    """A fitted reference: per-feature centre and spread on the (log-)transformed scale."""

    checkpoint_sha256: str | None
    features: tuple[str, ...]
    log_features: tuple[str, ...]
    centre: dict[str, float]
    scale: dict[str, float]
    scale_rule: dict[str, str]
    n: int
    threshold: float
    threshold_rule: str
    target_specificity: float | None = None
    reference_studies: str = ""
    created_at: str = ""
    lstv_version: str = ""
    log_offset: float = LOG_OFFSET
    # Score v2 (version 2 files); a version-1 file leaves them at these defaults and scores
    # as it always did: the largest two-sided |z|.
    rule: str = "max_abs_z"
    one_sided: tuple[str, ...] = ()
    location: dict[str, float] = field(default_factory=dict)
    covariance: list[list[float]] = field(default_factory=list)
    normal_range: dict[str, list[float]] = field(default_factory=dict)
    # How the normal studies were acquired (lstv.acquisition.fit_descriptors), for the drift
    # check; empty in a reference fitted before it (written only when present).
    acquisition: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    # -- scoring

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw (n, F) feature values onto the fitted scale (log for the skewed ones)."""
        x = np.array(raw, dtype=float, copy=True)
        for j, name in enumerate(self.features):
            if name in self.log_features:
                x[:, j] = np.log(np.maximum(x[:, j], 0.0) + self.log_offset)
        return x

    def z_scores(self, raw: np.ndarray) -> np.ndarray:
        """(n, F) signed robust z-scores of raw feature values."""
        centre = np.array([self.centre[f] for f in self.features])
        scale = np.array([self.scale[f] for f in self.features])
        return (self.transform(raw) - centre) / scale

    def combine(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the score and the index of the feature that drives it (NaN, -1 when no
        feature is known), by the reference's rule."""
        if self.rule == "mahalanobis":
            location = np.array([self.location[f] for f in self.features])
            one_sided = np.array([f in self.one_sided for f in self.features])
            return mahalanobis(self.transform(raw), location, np.array(self.covariance), one_sided)
        return max_abs(self.z_scores(raw))

    def score(self, raw: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Score, driver name ('' when no feature is known) and flag of each row."""
        best, idx = self.combine(raw)
        drivers = [self.features[i] if i >= 0 else "" for i in idx]
        return best, drivers, np.isfinite(best) & (np.nan_to_num(best) > self.threshold)

    def normal_value(self, feature: str) -> float:
        """The reference's median of ``feature`` on the raw scale."""
        c = self.centre[feature]
        return math.exp(c) - self.log_offset if feature in self.log_features else c

    # -- serialisation

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        data["features"] = list(self.features)
        data["log_features"] = list(self.log_features)
        data["one_sided"] = list(self.one_sided)
        if not self.acquisition:
            del data["acquisition"]  # an older reference reads and writes as it did
        return {"format": REFERENCE_FORMAT, "version": REFERENCE_VERSION, **extra, **data}

    @classmethod
    def from_dict(cls, data: dict, source: str = "reference") -> Reference:
        """Read a reference written by :meth:`to_dict`, every field checked first
        (:func:`validate_reference`); a ValueError naming ``source`` and the field."""
        if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
            raise UsageError(f"{source} is not an LSTV score reference (written by lstv calibrate)")
        if data.get("version") not in READABLE_VERSIONS:
            raise UsageError(
                f"{source} is reference version {data.get('version')}; this lstv reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}: fit it again with lstv "
                "calibrate"
            )
        validate_reference(data, source)
        names = set(cls.__dataclass_fields__) - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names | {"format", "version"}}
        tuples = ("features", "log_features", "one_sided")
        return cls(**{**known, **{k: tuple(known[k]) for k in tuples if k in known}}, extra=extra)

    def save(self, path: str | Path) -> Path:
        from lstv.atomic import write_json_atomic

        return write_json_atomic(path, self.to_dict())


# --------------------------------------------------------------------------- validation

# Features a reference may name.


def validate_reference(data: dict, source: str = "reference") -> None:
    """Check every field of a reference's JSON before it is used (the checks are
    :data:`lstv.score_check.REFERENCE_FIELDS`, against this module's features and rules), so
    a bad file stops a command before any work instead of failing each study or scoring wrongly
    in silence.

    Raises:
        UsageError: ``"{source}: field 'name': what is wrong"``, for the first bad field.
    """
    required = {
        f.name for f in fields(Reference) if f.default is MISSING and f.default_factory is MISSING
    }
    check_fields(data, source, Vocabulary(KNOWN_FEATURES, RULES, frozenset(required)))


def read_reference(path: str | Path) -> Reference:
    """A reference JSON file written by :meth:`Reference.save` (``lstv calibrate``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UsageError: it is not valid JSON or not a reference.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as exc:
        raise UsageError(f"reference {path} is not valid JSON: nested too deeply") from exc
    except (OSError, ValueError) as exc:  # JSONDecodeError, bad UTF-8, a 5000-digit number
        raise UsageError(f"reference {path} is not valid JSON: {exc}") from exc
    return Reference.from_dict(data, f"reference {path}")


def check_checkpoint(ref: Reference, checkpoint_sha256: str | None, source: str) -> None:
    """Refuse a reference fitted on another checkpoint than the one that made the maps.

    Raises:
        UsageError: naming both SHA-256s.
    """
    if not ref.checkpoint_sha256:
        raise UsageError(f"{source} names no checkpoint SHA-256: fit it again with lstv calibrate")
    if checkpoint_sha256 != ref.checkpoint_sha256:
        raise UsageError(
            f"{source} was fitted on checkpoint SHA-256 {ref.checkpoint_sha256}, but these maps "
            f"come from checkpoint SHA-256 {checkpoint_sha256}: a reference holds only for its "
            "own checkpoint; fit one with lstv calibrate on this checkpoint's normal studies"
        )
