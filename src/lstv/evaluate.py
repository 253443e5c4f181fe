"""ROC analysis of the uncertainty scores against radiologist labels.

Every score is read as "higher means more likely transitional": the raw, normalized and spatial
entropy of each disc level, ``1 - peak confidence`` (``{level}_one_minus_confidence``) and any
numeric ``*_score`` column a later version adds to the metrics CSV. For each score the module
computes the ROC AUC with a percentile bootstrap confidence interval, the Youden-optimal threshold,
sensitivity and specificity at the seed's fixed entropy threshold, Cohen's d and the Mann-Whitney U
test between transitional and normal studies; with an ``lstv_type`` column, the same for each type
against normal.

The statistics are small pure functions over arrays, so the HTML report calls the very same code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lstv.columns import HIGHER, LOWER, metric_column
from lstv.config import EvaluateConfig
from lstv.errors import UsageError
from lstv.levels import LEVEL_KEYS
from lstv.tables import (  # noqa: F401 - part of this module's API since round 1
    NORMAL_TYPE,
    parse_lstv_label,
    read_labels,
    read_metrics_csv,
    required_metric_columns,
)

logger = logging.getLogger(__name__)

CI_LEVEL = 0.95
# Bootstrap draws are made in chunks of at most this many indices, to bound memory on large CSVs.
_BOOTSTRAP_CHUNK = 4_000_000
_METRIC_ORDER = ("entropy", "normalized_entropy", "spatial_entropy", "one_minus_confidence")


def score_direction(name: str, numeric: bool) -> str:
    """How a metrics column is read as a score: as declared in :mod:`lstv.columns` for the
    columns lstv writes; for any other column (a later version's, another tool's) by its name:
    ``*_entropy`` and numeric ``*_score`` columns as they are; '' for not a score."""
    column = metric_column(name)
    if column is not None:
        return column.score
    return HIGHER if name.endswith("_entropy") or (name.endswith("_score") and numeric) else ""


def score_columns(metrics: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every score in a metrics table, higher meaning more likely transitional.

    Returns:
        Ordered mapping name -> float array: per level ``entropy``, ``normalized_entropy``,
        ``spatial_entropy``, ``one_minus_confidence``; then any other ``*_entropy`` column, the
        shape features ``*_peak2`` and ``*_mass_out``, the test-time mutual information
        ``*_tta_mi`` where it was measured, and every numeric ``*_score`` column, the calibrated
        ``lstv_score`` first of all.
    """
    scores: dict[str, np.ndarray] = {}
    for col in metrics.columns:
        how = score_direction(col, pd.api.types.is_numeric_dtype(metrics[col]))
        if how == HIGHER:
            values = pd.to_numeric(metrics[col], errors="coerce")
            if values.notna().any():
                scores[col] = values.to_numpy(dtype=float)
        elif how == LOWER:
            conf = pd.to_numeric(metrics[col], errors="coerce")
            if conf.notna().any():  # an empty column (--parasagittal 0) is no score
                name = col.replace("_confidence", "_one_minus_confidence")
                scores[name] = 1.0 - conf.to_numpy(dtype=float)

    def sort_key(name: str) -> tuple[int, int, str]:
        if name == "lstv_score":
            return (-1, 0, name)
        for li, key in enumerate(LEVEL_KEYS):
            if name.startswith(key + "_"):
                metric = name[len(key) + 1 :]
                mi = _METRIC_ORDER.index(metric) if metric in _METRIC_ORDER else len(_METRIC_ORDER)
                return (0, li * 10 + mi, name)
        return (1, 0, name)

    return {name: scores[name] for name in sorted(scores, key=sort_key)}


def is_fixed_threshold_score(name: str) -> bool:
    """True for the raw per-level entropies, the scale the seed's fixed threshold is set on."""
    return name.endswith("_entropy") and not name.endswith(
        ("_normalized_entropy", "_spatial_entropy", "_top100_entropy")
    )


# --------------------------------------------------------------------------- statistics


def _check_binary(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    score = np.asarray(score, dtype=float).ravel()
    if y.shape != score.shape:
        raise ValueError(f"labels ({y.size}) and scores ({score.size}) differ in length")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 or 1")
    if np.isnan(score).any():
        raise ValueError("scores contain NaN; drop those studies first")
    return y, score


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn); ties count one half.

    Raises:
        ValueError: ``y`` does not hold both classes.
    """
    from sklearn.metrics import roc_auc_score

    y, score = _check_binary(y, score)
    if y.min() == y.max():
        raise ValueError("ROC AUC needs both transitional and normal studies")
    return float(roc_auc_score(y, score))


def _auc_from_counts(counts: np.ndarray, y_sorted: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """AUC of each row of multiplicities ``counts`` over studies sorted by score.

    This is the Mann-Whitney statistic with weights: each positive beats the negatives in lower
    tie groups and half of those in its own group. Rows that miss a class give NaN.
    """
    pos = np.add.reduceat(counts * y_sorted, starts, axis=1)
    neg = np.add.reduceat(counts * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def bootstrap_aucs(y: np.ndarray, score: np.ndarray, n: int = 2000, seed: int = 0) -> np.ndarray:
    """AUCs of ``n`` bootstrap resamples of the studies (NaN where a resample lacks a class).

    Resample ``b`` is ``rng.integers(0, len(y), size=(n, len(y)))[b]`` with
    ``rng = numpy.random.default_rng(seed)``, drawn in row chunks.
    """
    y, score = _check_binary(y, score)
    m = y.size
    order = np.argsort(score, kind="stable")
    s_sorted = score[order]
    y_sorted = y[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK // max(m, 1))
    out = []
    for first in range(0, n, rows_per_chunk):
        b = min(rows_per_chunk, n - first)
        idx = rng.integers(0, m, size=(b, m))
        flat = (np.arange(b)[:, None] * m + idx).ravel()
        counts = np.bincount(flat, minlength=b * m).reshape(b, m).astype(float)
        out.append(_auc_from_counts(counts[:, order], y_sorted, starts))
    return np.concatenate(out) if out else np.empty(0)


def bootstrap_auc_ci(
    y: np.ndarray, score: np.ndarray, n: int = 2000, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the ROC AUC (deterministic for ``seed``).

    Resamples that miss a class are left out.

    Returns:
        (low, high); (nan, nan) when no resample holds both classes.
    """
    aucs = bootstrap_aucs(y, score, n=n, seed=seed)
    aucs = aucs[~np.isnan(aucs)]
    if aucs.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(aucs, [tail, 100.0 - tail])
    return float(low), float(high)


def youden(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1.

    A study is called positive when ``score >= threshold``. Among equal J the highest threshold
    (the most specific rule) wins.

    Returns:
        ``threshold``, ``sensitivity``, ``specificity`` and ``j``.
    """
    from sklearn.metrics import roc_curve

    y, score = _check_binary(y, score)
    if y.min() == y.max():
        raise ValueError("Youden's J needs both transitional and normal studies")
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    # The first point of roc_curve is the empty rule (threshold +inf); it is never a usable cut.
    j = tpr[1:] - fpr[1:]
    # First index within rounding of the maximum, so equal J picks the higher threshold even
    # when 1 - 1/3 and 2/3 differ in the last bit.
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0]) + 1
    return {
        "threshold": float(thresholds[best]),
        "sensitivity": float(tpr[best]),
        "specificity": float(1.0 - fpr[best]),
        "j": float(tpr[best] - fpr[best]),
    }


def sensitivity_specificity(
    y: np.ndarray, score: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity of the rule ``score > threshold`` (the seed's flag rule).

    Returns:
        (sensitivity, specificity); NaN for a class that has no studies.
    """
    y, score = _check_binary(y, score)
    pred = score > threshold
    pos = y == 1
    sens = float(pred[pos].mean()) if pos.any() else math.nan
    spec = float((~pred[~pos]).mean()) if (~pos).any() else math.nan
    return sens, spec


def cohens_d(a: Iterable[float], b: Iterable[float]) -> float:
    """Cohen's d of ``a`` against ``b``: mean difference over the pooled standard deviation.

    The pooled variance uses ``n - 1`` denominators. NaN when either group has fewer than two
    values or both have zero spread.
    """
    a = np.asarray(list(a), dtype=float)
    b = np.asarray(list(b), dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    if pooled <= 0:
        return math.nan
    return float((a.mean() - b.mean()) / math.sqrt(pooled))


def mann_whitney(a: Iterable[float], b: Iterable[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of ``a`` against ``b`` (SciPy, exact for small samples).

    Returns:
        (U of ``a``, p-value); NaN when a group is empty.
    """
    from scipy.stats import mannwhitneyu

    a = np.asarray(list(a), dtype=float)
    b = np.asarray(list(b), dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    res = mannwhitneyu(a, b, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def score_metrics(
    y: np.ndarray,
    score: np.ndarray,
    *,
    n_bootstrap: int = EvaluateConfig.n_bootstrap,
    seed: int = EvaluateConfig.seed,
    fixed_threshold: float | None = None,
) -> dict[str, float | int | None]:
    """All statistics of one score; studies with a missing score are left out.

    Args:
        y: 1 for transitional, 0 for normal.
        score: The score, higher meaning more likely transitional.
        n_bootstrap: Bootstrap resamples for the AUC interval.
        seed: Seed of the bootstrap.
        fixed_threshold: Threshold of the rule ``score > t``; None to skip (scores on another
            scale than raw entropy).

    Returns:
        A flat dict of plain numbers (NaN where a statistic is undefined).
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    keep = ~np.isnan(score)
    y, score = y[keep], score[keep]
    pos, neg = score[y == 1], score[y == 0]
    out: dict[str, float | int | None] = {
        "n": int(y.size),
        "n_positive": int(pos.size),
        "n_negative": int(neg.size),
        "mean_positive": float(pos.mean()) if pos.size else math.nan,
        "mean_negative": float(neg.mean()) if neg.size else math.nan,
    }
    both = pos.size > 0 and neg.size > 0
    out["auc"] = roc_auc(y, score) if both else math.nan
    low, high = bootstrap_auc_ci(y, score, n_bootstrap, seed) if both else (math.nan, math.nan)
    out["auc_ci_low"], out["auc_ci_high"] = low, high
    yd = (
        youden(y, score)
        if both
        else dict.fromkeys(("threshold", "sensitivity", "specificity", "j"), math.nan)
    )
    out["youden_threshold"] = yd["threshold"]
    out["youden_sensitivity"] = yd["sensitivity"]
    out["youden_specificity"] = yd["specificity"]
    out["youden_j"] = yd["j"]
    out["fixed_threshold"] = fixed_threshold
    if fixed_threshold is not None and y.size:
        out["fixed_sensitivity"], out["fixed_specificity"] = sensitivity_specificity(
            y, score, fixed_threshold
        )
    else:
        out["fixed_sensitivity"] = out["fixed_specificity"] = math.nan
    out["cohens_d"] = cohens_d(pos, neg)
    out["mann_whitney_u"], out["mann_whitney_p"] = mann_whitney(pos, neg)
    return out


# --------------------------------------------------------------------------- joining, groups


def join_labels(
    metrics: pd.DataFrame, labels: pd.DataFrame
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Inner join of metrics and labels on ``study_id``.

    A study analysed twice (merged shards) keeps its first row.

    Returns:
        (joined, missing_in_labels, missing_in_metrics): the study IDs analysed but not labelled,
        and labelled but not analysed (failed, filtered out or never run), sorted.
    """
    metrics = metrics.copy()
    metrics["study_id"] = metrics["study_id"].astype(str).str.strip()
    n_dup = int(metrics["study_id"].duplicated().sum())
    if n_dup:
        logger.warning("%d studies appear more than once in the metrics; keeping the first", n_dup)
        metrics = metrics.drop_duplicates("study_id")
    m_ids, l_ids = set(metrics["study_id"]), set(labels["study_id"])
    joined = metrics.merge(labels[["study_id", "lstv", "lstv_type"]], on="study_id", how="inner")
    return joined, sorted(m_ids - l_ids, key=_id_key), sorted(l_ids - m_ids, key=_id_key)


def _id_key(study_id: str) -> tuple[int, int | str]:
    return (0, int(study_id)) if study_id.isdigit() else (1, study_id)


def label_groups(joined: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row masks of each comparison: ``all`` (every study) and one per LSTV type.

    A type group holds the studies of that type and every normal study; its positives are the
    type.
    """
    groups = {"all": np.ones(len(joined), dtype=bool)}
    normal = (joined["lstv"] == 0).to_numpy()
    types = sorted(t for t in set(joined.loc[joined["lstv"] == 1, "lstv_type"]) if t)
    for t in types:
        groups[t] = normal | ((joined["lstv"] == 1) & (joined["lstv_type"] == t)).to_numpy()
    return groups


def evaluate_frames(
    metrics: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    n_bootstrap: int = EvaluateConfig.n_bootstrap,
    seed: int = EvaluateConfig.seed,
    fixed_threshold: float = 5.0,
    n_unreviewed: int = 0,
) -> dict:
    """Evaluate every score of ``metrics`` against ``labels`` (tables already read).

    Returns:
        The content of ``evaluation.json`` (see :func:`evaluate`).

    Raises:
        UsageError: The joined studies lack transitional or normal cases.
    """
    joined, missing_in_labels, missing_in_metrics = join_labels(metrics, labels)
    if missing_in_labels:
        logger.warning("%d analysed studies have no label", len(missing_in_labels))
    if missing_in_metrics:
        logger.warning("%d labelled studies are not in the metrics", len(missing_in_metrics))
    n_pos = int((joined["lstv"] == 1).sum())
    n_neg = int((joined["lstv"] == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise UsageError(
            f"the {len(joined)} studies with both metrics and labels hold {n_pos} transitional "
            f"and {n_neg} normal: ROC analysis needs both"
        )
    scores = score_columns(joined)
    y_all = joined["lstv"].to_numpy(dtype=int)
    groups = {}
    for group, mask in label_groups(joined).items():
        y = y_all[mask]
        groups[group] = {
            "positive": "transitional" if group == "all" else group,
            "negative": NORMAL_TYPE,
            "n_positive": int(y.sum()),
            "n_negative": int((y == 0).sum()),
            "scores": {
                name: score_metrics(
                    y,
                    values[mask],
                    n_bootstrap=n_bootstrap,
                    seed=seed,
                    fixed_threshold=fixed_threshold if is_fixed_threshold_score(name) else None,
                )
                for name, values in scores.items()
            },
        }
    return {
        "n_studies": int(len(joined)),
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "ci_level": CI_LEVEL,
        "fixed_threshold": fixed_threshold,
        "fixed_threshold_rule": "score > fixed_threshold, on the raw {level}_entropy scores",
        "youden_rule": "score >= youden_threshold",
        "join": {
            "n_metrics": int(metrics["study_id"].nunique()),
            "n_labels": int(len(labels)),
            "n_unreviewed": int(n_unreviewed),
            "n_unsure": int(labels.attrs.get("n_unsure", 0)),
            "n_matched": int(len(joined)),
            "missing_in_labels": missing_in_labels,
            "missing_in_metrics": missing_in_metrics,
        },
        "groups": groups,
    }


def roc_inputs(
    metrics: pd.DataFrame, labels: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The joined table, its scores and its group masks, as the ROC figure needs them."""
    joined, _, _ = join_labels(metrics, labels)
    return joined, score_columns(joined), label_groups(joined)


def evaluation_table(result: dict) -> pd.DataFrame:
    """One row per (group, score) of an evaluation result, for ``evaluation.csv``."""
    rows = []
    for group, info in result["groups"].items():
        for name, stats in info["scores"].items():
            rows.append({"group": group, "score": name, **stats})
    return pd.DataFrame(rows)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def evaluate(
    csv_path: str | Path,
    labels_path: str | Path,
    output_dir: str | Path,
    *,
    n_bootstrap: int = EvaluateConfig.n_bootstrap,
    seed: int = EvaluateConfig.seed,
    fixed_threshold: float | None = None,
) -> dict:
    """Evaluate every score of a metrics CSV against radiologist labels.

    Writes ``evaluation.json`` (this function's return value, undefined numbers as null),
    ``evaluation.csv`` (one row per group and score) and ``roc.png`` to ``output_dir``.

    Args:
        csv_path: ``lstv_uncertainty_metrics.csv``.
        labels_path: CSV with ``study_id, lstv`` (0/1, true/false, yes/no; empty = unreviewed)
            and optionally ``lstv_type`` (normal, sacralization, lumbarization). A filled
            ``audit_queue.csv`` qualifies.
        output_dir: Folder for the outputs, created if needed.
        n_bootstrap: Bootstrap resamples for the 95% AUC interval.
        seed: Seed of the bootstrap.
        fixed_threshold: The seed's flag rule, ``entropy > fixed_threshold``; default: the
            flag threshold the run recorded in its manifest (next to the CSV), else 5.0, so
            the evaluation cuts where the run flagged.

    Returns:
        Dict with ``join`` (counts and the study IDs missing on either side) and ``groups``:
        ``all`` and one entry per LSTV type, each with per-score statistics ``auc``,
        ``auc_ci_low``, ``auc_ci_high``, ``youden_threshold``, ``youden_sensitivity``,
        ``youden_specificity``, ``fixed_sensitivity``, ``fixed_specificity``, ``cohens_d``,
        ``mann_whitney_u``, ``mann_whitney_p``, means and counts.
    """
    from lstv.atomic import write_json_atomic
    from lstv.rundir import RunDir
    from lstv.uncertainty import resolve_thresholds

    thresholds = resolve_thresholds(
        RunDir(Path(csv_path).parent).run_thresholds(), flag_entropy=fixed_threshold
    )
    fixed_threshold = thresholds.flag_entropy
    metrics = read_metrics_csv(csv_path)
    labels, n_unreviewed = read_labels(labels_path)
    result = evaluate_frames(
        metrics,
        labels,
        n_bootstrap=n_bootstrap,
        seed=seed,
        fixed_threshold=fixed_threshold,
        n_unreviewed=n_unreviewed,
    )
    result = _json_safe({"csv": str(csv_path), "labels": str(labels_path), **result})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "evaluation.json", result)
    evaluation_table(result).to_csv(out / "evaluation.csv", index=False)

    from lstv.plots import roc_figure, save_png

    joined, scores, groups = roc_inputs(metrics, labels)
    save_png(
        roc_figure(joined["lstv"].to_numpy(dtype=int), scores, groups, result), out / "roc.png"
    )
    logger.info(
        "evaluated %d scores on %d studies (%d marked unsure left out) -> %s",
        len(scores),
        result["join"]["n_matched"],
        result["join"]["n_unsure"],
        out,
    )
    return result
