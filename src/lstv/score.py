"""The calibrated LSTV score: how far a study's L4/L5 and L5/S1 maps lie from normal studies'.

Each study's map features are set against a *reference* of normal studies run through the same
checkpoint: per feature the median and 1.4826 x MAD of the reference (falling back to IQR /
1.349, then the standard deviation, then 1 when a spread is zero). The reference's ``rule`` says
how they combine: ``max_abs_z`` (version-1 files) takes the largest two-sided |z|;
``mahalanobis`` (score v2) takes a robust Mahalanobis distance whose correlations come from a
MinCovDet fit, so correlated features do not count twice, with the map features one-sided. The
driver is the feature that adds most, and the flag says whether the score exceeds a threshold
fitted on the reference itself (a cross-fitted quantile for a target specificity, default 0.95,
or the leave-one-out maximum of the reference's scores).

The reference is a small JSON file (``lstv calibrate``) that names the SHA-256 of the checkpoint
whose maps it describes: every feature's scale belongs to one checkpoint, so using it with
another is an error. A checkpoint may carry its own reference in its ``config`` (key
``lstv_reference``, see :func:`lstv.model.checkpoint_reference`); that one needs no check.

This module is the score's maths and its reference file only: numpy and the standard library,
no pandas, no torch, and no file but the reference JSON. The commands that use it are
:mod:`lstv.calibrate` (fit a reference) and :mod:`lstv.scoring` (a run's reference,
``lstv score``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from lstv.columns import SCORE_COLUMNS
from lstv.levels import LEVEL_KEYS, LEVELS
from lstv.score_check import Vocabulary, check_fields

log = logging.getLogger(__name__)

SCORE_LEVELS = ("l4_l5", "l5_s1")
LEVEL_FEATURES = ("entropy", "one_minus_confidence", "peak2", "mass_out", "top100_entropy")
FEATURES = tuple(f"{level}_{name}" for level in SCORE_LEVELS for name in LEVEL_FEATURES)
# Features bounded below by 0 whose normal values crowd near 0 with a long right tail: on a log
# scale their normal spread is symmetric enough for a median and MAD, and a rise from 0.001 to
# 0.01 counts as much as one from 0.01 to 0.1 (measured, see README "Calibrated score").
LOG_LEVEL_FEATURES = ("one_minus_confidence", "peak2", "mass_out")
LOG_OFFSET = 1e-4
MAD_TO_SD = 1.4826
IQR_TO_SD = 1.349
CONFIG_KEY = "lstv_reference"
REFERENCE_FORMAT = "lstv-score-reference"
REFERENCE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: max |z| only, no rule, ranges or covariance
MIN_REFERENCE_STUDIES = 3
FEW_REFERENCE_STUDIES = 20
LEVEL_NAMES = dict(zip(LEVEL_KEYS, LEVELS, strict=True))  # l5_s1 -> L5/S1

# Score v2: the geometry of the five predicted points in the slice plane (mm from the CSV's
# patient coordinates; their meanings are in lstv.columns.GEOMETRY).
GEOMETRY_FEATURES = (
    "l5_s1_spacing_ratio",
    "l4_l5_bend_deg",
    "l5_s1_along",
    "l5_s1_across",
)
# Level features where only a rise is unusual (a surer, single-peaked map is not a sign).
ONE_SIDED_FEATURES = ("one_minus_confidence", "peak2", "mass_out")
RULES = ("max_abs_z", "mahalanobis")
# v2: the L5/S1 map features that carried the signal on the development seed (one-sided: a
# lower peak, a second candidate, mass outside the main spot), combined as a robust Mahalanobis
# distance so that their correlation counts once. The geometry columns are written for every
# study but left out of v2: with the shipped localizer on the realistic phantoms they lowered
# every AUC on the development seed (benchmarks/phantom_auc.py, "Pre-registration").
V2_FEATURES = ("l5_s1_one_minus_confidence", "l5_s1_peak2", "l5_s1_mass_out")
DEFAULT_TARGET_SPECIFICITY = 0.95
NORMAL_RANGE_PERCENTILES = (5.0, 95.0)


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
            cols.append(f"{level}_confidence" if feature == "one_minus_confidence" else name)
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
        ValueError: a row lacks a needed column, or a value is not a number; names ``source``.
    """
    out = np.full((len(rows), len(features)), math.nan)
    for i, row in enumerate(rows):
        geometry = None
        for j, name in enumerate(features):
            level, feature = split_feature(name)
            if name in GEOMETRY_FEATURES and not math.isfinite(as_number(row.get(name))):
                # A run written before these columns (or a row without them): from the points.
                if not any(f"{k}_y_mm" in row for k in LEVEL_KEYS):
                    raise ValueError(f"{source} has no column {name!r} nor the points' *_y_mm")
                geometry = geometry or _row_geometry(row)
                out[i, j] = geometry[name]
                continue
            col = f"{level}_confidence" if feature == "one_minus_confidence" else name
            if col not in row:
                raise ValueError(f"{source} has no column {col!r} (needed for {name})")
            try:
                value = as_number(row[col])
            except ValueError as exc:
                raise ValueError(f"{source}: {col} = {row[col]!r} is not a number") from exc
            out[i, j] = 1.0 - value if feature == "one_minus_confidence" else value
    return out


def robust_location_scale(values) -> tuple[float, float, str]:
    """Median and a robust spread of ``values`` (NaN ignored), with the rule that gave it.

    The spread is 1.4826 x MAD; where that is 0, IQR / 1.349; then the standard deviation; then
    1. All three estimate the standard deviation of a normal distribution.

    Raises:
        ValueError: no finite value.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite value to fit a median and spread on")
    centre = float(np.median(v))
    mad = MAD_TO_SD * float(np.median(np.abs(v - centre)))
    if mad > 0:
        return centre, mad, "mad"
    q1, q3 = np.percentile(v, [25, 75])
    if q3 - q1 > 0:
        return centre, float(q3 - q1) / IQR_TO_SD, "iqr"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    if sd > 0:
        return centre, sd, "std"
    return centre, 1.0, "one"


def _fit_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    fits = [robust_location_scale(x[:, j]) for j in range(x.shape[1])]
    return (
        np.array([f[0] for f in fits]),
        np.array([f[1] for f in fits]),
        [f[2] for f in fits],
    )


def _max_abs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest |z| over the finite entries and its column (NaN, -1 when none)."""
    a = np.where(np.isfinite(z), np.abs(z), -np.inf)
    idx = np.argmax(a, axis=1)
    best = a[np.arange(len(a)), idx]
    missing = ~np.isfinite(best)
    return np.where(missing, np.nan, best), np.where(missing, -1, idx)


def _mahalanobis(
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


def _robust_covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Location and covariance for the Mahalanobis rule on ``x`` (transformed scale): the
    median and robust spread of each feature (as the max |z| rule's), and the correlations of a
    MinCovDet fit of the complete rows between them.

    MinCovDet's own variances shrink and wander on 40 studies (a near-duplicate pair of
    features halves them), so it is asked for correlations only; a ridge of 1e-3 keeps the
    matrix invertible.
    """
    from sklearn.covariance import MinCovDet

    complete = x[np.isfinite(x).all(axis=1)]
    if len(complete) <= x.shape[1] + 1:
        raise ValueError(
            f"a Mahalanobis reference of {x.shape[1]} features needs more than "
            f"{x.shape[1] + 1} complete studies, got {len(complete)}"
        )
    centre, scale, _ = _fit_columns(x)
    try:
        cov = MinCovDet(random_state=0).fit(complete).covariance_
    except ValueError:  # a support whose covariance is 0 (features constant on most studies)
        log.warning("MinCovDet found no spread in the reference; using plain correlations")
        cov = np.cov(complete, rowvar=False)
    sd = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(sd, sd)
    corr = np.where(np.isfinite(corr), corr, 0.0)  # a constant feature: uncorrelated
    np.fill_diagonal(corr, 1.0)
    corr = (corr + np.eye(len(corr)) * 1e-3) / (1 + 1e-3)
    return centre, corr * np.outer(scale, scale)


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
            return _mahalanobis(self.transform(raw), location, np.array(self.covariance), one_sided)
        return _max_abs(self.z_scores(raw))

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
        return {"format": REFERENCE_FORMAT, "version": REFERENCE_VERSION, **extra, **data}

    @classmethod
    def from_dict(cls, data: dict, source: str = "reference") -> Reference:
        """Read a reference written by :meth:`to_dict`, every field checked first
        (:func:`validate_reference`); a ValueError naming ``source`` and the field."""
        if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"{source} is not an LSTV score reference (written by lstv calibrate)")
        if data.get("version") not in READABLE_VERSIONS:
            raise ValueError(
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
        from lstv.rundir import write_json_atomic

        return write_json_atomic(path, self.to_dict())


# --------------------------------------------------------------------------- validation

# Features a reference may name.
KNOWN_FEATURES = FEATURES + GEOMETRY_FEATURES


def validate_reference(data: dict, source: str = "reference") -> None:
    """Check every field of a reference's JSON before it is used (the checks are
    :data:`lstv.score_check.REFERENCE_FIELDS`, against this module's features and rules), so
    a bad file stops a command before any work instead of failing each study or scoring wrongly
    in silence.

    Raises:
        ValueError: ``"{source}: field 'name': what is wrong"``, for the first bad field.
    """
    required = {
        f.name for f in fields(Reference) if f.default is MISSING and f.default_factory is MISSING
    }
    check_fields(data, source, Vocabulary(KNOWN_FEATURES, RULES, frozenset(required)))


def read_reference(path: str | Path) -> Reference:
    """A reference JSON file written by :meth:`Reference.save` (``lstv calibrate``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not valid JSON or not a reference.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as exc:
        raise ValueError(f"reference {path} is not valid JSON: nested too deeply") from exc
    except (OSError, ValueError) as exc:  # JSONDecodeError, bad UTF-8, a 5000-digit number
        raise ValueError(f"reference {path} is not valid JSON: {exc}") from exc
    return Reference.from_dict(data, f"reference {path}")


def check_checkpoint(ref: Reference, checkpoint_sha256: str | None, source: str) -> None:
    """Refuse a reference fitted on another checkpoint than the one that made the maps.

    Raises:
        ValueError: naming both SHA-256s.
    """
    if not ref.checkpoint_sha256:
        raise ValueError(f"{source} names no checkpoint SHA-256: fit it again with lstv calibrate")
    if checkpoint_sha256 != ref.checkpoint_sha256:
        raise ValueError(
            f"{source} was fitted on checkpoint SHA-256 {ref.checkpoint_sha256}, but these maps "
            f"come from checkpoint SHA-256 {checkpoint_sha256}: a reference holds only for its "
            "own checkpoint; fit one with lstv calibrate on this checkpoint's normal studies"
        )


# --------------------------------------------------------------------------- fitting


def leave_one_out_scores(
    x: np.ndarray, rule: str = "max_abs_z", one_sided: np.ndarray | None = None
) -> np.ndarray:
    """Score of each reference study against a reference fitted on all the others (cross-fit).

    ``x`` is (n, F) on the transformed scale. The maximum of these is the flag threshold under
    which no reference study would have been flagged by a reference that did not contain it;
    a quantile of them flags about that share of studies like the reference.
    """
    n = len(x)
    scores = np.empty(n)
    for i in range(n):
        rest = np.delete(x, i, axis=0)
        if rule == "mahalanobis":
            location, cov = _robust_covariance(rest)
            scores[i] = _mahalanobis(x[i][None], location, cov, one_sided)[0][0]
        else:
            centre, scale, _ = _fit_columns(rest)
            scores[i] = _max_abs(((x[i] - centre) / scale)[None])[0][0]
    return scores


def fit_reference(
    raw: np.ndarray,
    checkpoint_sha256: str | None,
    *,
    features=FEATURES,
    target_specificity: float | None = None,
    reference_studies: str = "",
    extra: dict | None = None,
    rule: str = "max_abs_z",
) -> Reference:
    """Fit centre, spread and flag threshold on ``raw`` (n, F) features of normal studies.

    Args:
        raw: feature values (see :func:`feature_matrix`), one row per reference study.
        checkpoint_sha256: the checkpoint whose maps they come from.
        features: the names of ``raw``'s columns.
        target_specificity: None for the leave-one-out maximum of the reference's scores;
            else the flag threshold is that quantile of them (e.g. 0.95 flags about 5% of
            studies like the reference).
        reference_studies: which studies these are, in words, for the JSON.
        extra: more provenance for the JSON (source CSV, labels file).
        rule: ``max_abs_z`` (the largest two-sided robust |z|, score v1) or ``mahalanobis``
            (the robust Mahalanobis distance from a MinCovDet fit, one-sided for the features
            of :data:`ONE_SIDED_FEATURES`, score v2).

    Raises:
        ValueError: fewer than 3 studies, a feature with no finite value, or a specificity
            outside (0, 1].
    """
    from lstv import __version__
    from lstv.rundir import utc_now

    raw = np.asarray(raw, dtype=float)
    features = tuple(features)
    if raw.ndim != 2 or raw.shape[1] != len(features):
        raise ValueError(f"expected ({len(features)}) feature columns, got shape {raw.shape}")
    if len(raw) < MIN_REFERENCE_STUDIES:
        raise ValueError(
            f"a reference needs at least {MIN_REFERENCE_STUDIES} studies, got {len(raw)}"
        )
    if target_specificity is not None and not 0 < target_specificity <= 1:
        raise ValueError(f"target specificity must be in (0, 1], got {target_specificity}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if len(raw) < FEW_REFERENCE_STUDIES:
        log.warning(
            "only %d reference studies: the medians and spreads will be rough (20 or more "
            "are better)",
            len(raw),
        )
    logs = tuple(f for f in features if split_feature(f)[1] in LOG_LEVEL_FEATURES)
    draft = Reference(
        checkpoint_sha256, features, logs, {}, {}, {}, len(raw), math.inf, "", log_offset=LOG_OFFSET
    )
    x = draft.transform(raw)
    centre, scale, rules = _fit_columns(x)
    one_sided = tuple(f for f in features if split_feature(f)[1] in ONE_SIDED_FEATURES)
    mahalanobis = {}
    if rule == "mahalanobis":
        location, cov = _robust_covariance(x)
        mahalanobis = {
            "one_sided": one_sided,
            "location": {f: float(v) for f, v in zip(features, location, strict=True)},
            "covariance": cov.tolist(),
        }
    mask = np.array([f in one_sided for f in features])
    loo = leave_one_out_scores(x, rule, mask)
    finite = loo[np.isfinite(loo)]
    if target_specificity is None:
        threshold = float(finite.max())
        threshold_rule = "leave-one-out maximum of the reference studies' scores"
    else:
        threshold = float(np.quantile(finite, target_specificity))
        threshold_rule = (
            f"quantile {target_specificity:g} of the reference studies' leave-one-out scores "
            f"(target specificity {target_specificity:g}: about {1 - target_specificity:.0%} "
            "of normal studies like these go to review by design)"
        )
    return Reference(
        checkpoint_sha256=checkpoint_sha256,
        features=features,
        log_features=logs,
        centre={f: float(c) for f, c in zip(features, centre, strict=True)},
        scale={f: float(s) for f, s in zip(features, scale, strict=True)},
        scale_rule=dict(zip(features, rules, strict=True)),
        n=len(raw),
        threshold=threshold,
        threshold_rule=threshold_rule,
        target_specificity=target_specificity,
        reference_studies=reference_studies,
        created_at=utc_now(),
        lstv_version=__version__,
        rule=rule,
        normal_range={
            f: [float(v) for v in np.nanpercentile(raw[:, j], NORMAL_RANGE_PERCENTILES)]
            for j, f in enumerate(features)
        },
        **mahalanobis,
        extra=dict(extra or {}),
    )


# --------------------------------------------------------------------------- explaining


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
        where = "away from the first"
        dx = as_number((row or {}).get(f"{level}_peak2_dx_mm"))
        dy = as_number((row or {}).get(f"{level}_peak2_dy_mm"))
        if math.isfinite(dx) and math.isfinite(dy):
            if abs(dy) >= abs(dx):
                where = f"{abs(dy):.0f} mm {'below' if dy > 0 else 'above'} the first"
            else:
                where = f"{math.hypot(dx, dy):.0f} mm from the first"
        return (
            f"{name} map has a second peak {where} ({value:.2f} of the peak; "
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
    if feature == "one_minus_confidence":
        return (
            f"The localizer is unsure where {name} is (peak probability {1 - value:.2f}; "
            f"normal {1 - hi:.2f}-{1 - lo:.2f})"
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


def score_rows(rows: list[dict], ref: Reference, source: str = "metrics") -> list[dict]:
    """The score columns (:data:`SCORE_COLUMNS`) of each row; empty where no feature is known."""
    if not rows:
        return []
    raw = feature_matrix(rows, ref.features, source)
    z = ref.z_scores(raw)
    best, idx = ref.combine(raw)
    out = []
    for i, row in enumerate(rows):
        if idx[i] < 0:
            out.append(dict.fromkeys(SCORE_COLUMNS, ""))
            continue
        driver = ref.features[idx[i]]
        flagged = bool(best[i] > ref.threshold)
        if ref.normal_range:
            reason = explain(driver, raw[i, idx[i]], ref, row)
            if not flagged:  # the driver of an unflagged study is no finding: say so first
                reason = f"Within normal limits; closest to a flag: {reason[0].lower()}{reason[1:]}"
        else:
            reason = describe(driver, raw[i, idx[i]], z[i, idx[i]], ref, row)
        out.append(
            {
                "lstv_score": round(float(best[i]), 4),
                "lstv_score_driver": driver,
                "lstv_score_flag": flagged,
                "lstv_score_reason": reason,
            }
        )
    return out


# --------------------------------------------------------------------------- drift

DRIFT_ALPHA = 1e-3  # family-wise, over the reference's features (Bonferroni)
DRIFT_MIN_SHIFT = 0.5  # reference spreads: smaller shifts of a median are not worth a word
DRIFT_MIN_STUDIES = 10


def drift_check(ref: Reference, raw: np.ndarray) -> dict:
    """Do a run's studies sit where the reference's normal studies sat? A robust test of each
    feature's median against the reference's.

    Per feature, the run's median on the reference's scale, shifted by the reference's median
    and divided by its spread, is ``shift`` (in reference SDs); under "like the reference" it
    is about normal with a standard error of 1.2533 / sqrt(n) (a median's). A feature drifts
    when its two-sided p, times the number of features, is below :data:`DRIFT_ALPHA` and its
    shift is at least :data:`DRIFT_MIN_SHIFT`. Most of a screened set is normal, so its medians
    should sit near the reference's whatever a few LSTV do.

    Returns:
        ``{"drift": bool or None (fewer than 10 studies: not tested), "n": studies,
        "features": {name: {"median_shift_sd", "p_adjusted"}} of the drifted ones, "note"}``.
    """
    x = ref.transform(np.asarray(raw, dtype=float))
    drifted, n_max = {}, 0
    for j, name in enumerate(ref.features):
        v = x[:, j][np.isfinite(x[:, j])]
        n_max = max(n_max, len(v))
        if len(v) < DRIFT_MIN_STUDIES:
            continue
        shift = (float(np.median(v)) - ref.centre[name]) / ref.scale[name]
        z = shift / (1.2533 / math.sqrt(len(v)))
        p_adjusted = min(1.0, math.erfc(abs(z) / math.sqrt(2)) * len(ref.features))
        if p_adjusted < DRIFT_ALPHA and abs(shift) >= DRIFT_MIN_SHIFT:
            drifted[name] = {"median_shift_sd": round(shift, 2), "p_adjusted": p_adjusted}
    if n_max < DRIFT_MIN_STUDIES:
        return {"drift": None, "n": n_max, "features": {}, "note": "too few studies to test"}
    if not drifted:
        note = f"feature medians of {n_max} studies are like the reference's"
    else:
        worst = sorted(drifted, key=lambda f: -abs(drifted[f]["median_shift_sd"]))[:3]
        note = (
            f"these {n_max} studies sit far from the reference's normal studies ("
            + ", ".join(f"{f} median {drifted[f]['median_shift_sd']:+.1f} SD" for f in worst)
            + "): the reference may come from another scanner, protocol or population, and "
            "its flag rate will not hold; run lstv calibrate on confirmed normal studies of "
            "this set"
        )
    return {"drift": bool(drifted), "n": n_max, "features": drifted, "note": note}
