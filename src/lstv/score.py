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

The score's maths has one module per idea: :mod:`lstv.score_features` (a row's features),
:mod:`lstv.score_reference` (the fitted reference, its rule and its JSON file),
:mod:`lstv.score_reasons` (a score's reason in words), :mod:`lstv.score_drift` (a run against
its reference) and this one, which fits a reference and writes the score columns of rows. It
re-exports the names that scripts reach as ``lstv.score.X`` (the README's, the benchmarks').
All of them are numpy and the standard library, no pandas, no torch, and no file but the
reference JSON. The commands that use them are
:mod:`lstv.calibrate` (fit a reference) and :mod:`lstv.scoring` (a run's reference,
``lstv score``).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from lstv.columns import SCORE_COLUMNS
from lstv.config import DEFAULT_TARGET_SPECIFICITY
from lstv.errors import UsageError
from lstv.score_drift import drift_check
from lstv.score_features import FEATURES, feature_matrix, split_feature
from lstv.score_reasons import describe, explain
from lstv.score_reference import (
    LOG_OFFSET,
    RULES,
    Reference,
    mahalanobis,
    max_abs,
    validate_reference,
)

# Reached as lstv.score.X by the README and the benchmarks: their homes are the modules above.
__all__ = [
    "DEFAULT_TARGET_SPECIFICITY", "FEATURES", "V2_FEATURES", "Reference", "drift_check",
    "feature_matrix", "fit_reference", "leave_one_out_scores", "robust_location_scale",
    "score_rows", "validate_reference",
]  # fmt: skip

log = logging.getLogger(__name__)

# Features bounded below by 0 whose normal values crowd near 0 with a long right tail: on a log
# scale their normal spread is symmetric enough for a median and MAD, and a rise from 0.001 to
# 0.01 counts as much as one from 0.01 to 0.1 (measured, see README "Calibrated score").
LOG_LEVEL_FEATURES = (
    "one_minus_confidence", "peak2", "mass_out", "para_min_one_minus_confidence", "para_mean_peak2"
)
MAD_TO_SD = 1.4826
IQR_TO_SD = 1.349
MIN_REFERENCE_STUDIES = 3
FEW_REFERENCE_STUDIES = 20
# Level features where only a rise is unusual (a surer, single-peaked map is not a sign).
ONE_SIDED_FEATURES = (
    "one_minus_confidence", "peak2", "mass_out", "para_min_one_minus_confidence",
    "para_mean_peak2", "para_shift_mm",
)
# v2: the L5/S1 map features that carried the signal on the development seed (one-sided: a
# lower peak, a second candidate, mass outside the main spot), combined as a robust Mahalanobis
# distance so that their correlation counts once. The geometry columns are written for every
# study but left out of v2: with the shipped localizer on the realistic phantoms they lowered
# every AUC on the development seed (benchmarks/phantom_auc.py, "Pre-registration").
V2_FEATURES = ("l5_s1_one_minus_confidence", "l5_s1_peak2", "l5_s1_mass_out")
NORMAL_RANGE_PERCENTILES = (5.0, 95.0)


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
        raise UsageError("no finite value to fit a median and spread on")
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
        raise UsageError(
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
            scores[i] = mahalanobis(x[i][None], location, cov, one_sided)[0][0]
        else:
            centre, scale, _ = _fit_columns(rest)
            scores[i] = max_abs(((x[i] - centre) / scale)[None])[0][0]
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
        raise UsageError(
            f"a reference needs at least {MIN_REFERENCE_STUDIES} studies, got {len(raw)}"
        )
    if target_specificity is not None and not 0 < target_specificity <= 1:
        raise UsageError(f"target specificity must be in (0, 1], got {target_specificity}")
    if rule not in RULES:
        raise UsageError(f"rule must be one of {RULES}, got {rule!r}")
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
                # "The column bends" -> "the column bends", but "L5/S1 ..." keeps its capital.
                lead = reason[0].lower() if reason[1:2].islower() else reason[0]
                reason = f"Within normal limits; closest to a flag: {lead}{reason[1:]}"
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
