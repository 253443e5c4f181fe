"""The audit queue: the studies a radiologist should review first.

The queue ranks studies by the flag score (L5/S1 entropy, highest first) and leaves the
``lstv``, ``lstv_type``, ``reviewer`` and ``notes`` columns empty. Once a reviewer fills them, the
file is a labels CSV for ``lstv evaluate --labels`` (unfilled rows are ignored there).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lstv.columns import AUDIT_COLUMNS, REVIEW_COLUMNS
from lstv.rundir import RunDir, read_csv_rows, refuse_overwriting, write_csv_atomic
from lstv.tables import ranking_score, read_metrics_csv, score_fields
from lstv.uncertainty import RiskThresholds, resolve_thresholds

logger = logging.getLogger(__name__)

FLAG_SCORE = "l5_s1_entropy"


def audit_queue(
    metrics: pd.DataFrame, n: int = 60, thresholds: RiskThresholds | None = None
) -> pd.DataFrame:
    """The ``n`` studies with the highest score, ranked, with empty review columns.

    The score is the calibrated ``lstv_score`` when the run has one (see :mod:`lstv.score`),
    else the seed's L5/S1 entropy; the seed's risk level and flag stay beside it either way.
    Risk level and flag are recomputed with ``thresholds`` (default ``RiskThresholds()``), so the
    queue agrees with the report built with the same thresholds. A study listed twice (merged
    shards) appears once; ties are broken by study ID so the queue is reproducible.
    """
    if n < 0:
        raise ValueError(f"audit queue size must be >= 0, got {n}")
    thresholds = thresholds or RiskThresholds()
    by = ranking_score(metrics)
    metrics = metrics.assign(_rank_by=pd.to_numeric(metrics[by], errors="coerce"))
    ranked = metrics.sort_values(
        ["_rank_by", FLAG_SCORE, "study_id"],
        ascending=[False, False, True],
        na_position="last",
        kind="stable",
    ).drop_duplicates("study_id")
    top = ranked.head(n).reset_index(drop=True)
    entropy = top[FLAG_SCORE].to_numpy(dtype=float)
    queue = pd.DataFrame(
        {
            "rank": np.arange(1, len(top) + 1),
            "study_id": top["study_id"].astype(str),
            "series_id": top["series_id"].astype(str),
            "l5_s1_entropy": entropy.round(4),
            "l4_l5_entropy": top["l4_l5_entropy"].to_numpy(dtype=float).round(4),
            "l5_s1_confidence": top["l5_s1_confidence"].to_numpy(dtype=float).round(4),
            "risk_level": [
                thresholds.risk(e) if np.isfinite(e) else "" for e in entropy
            ],
            "lstv_flag": [bool(np.isfinite(e)) and thresholds.flag(e) for e in entropy],
        }
    )
    scores = [score_fields(row) for _, row in top.iterrows()]
    queue["lstv_score"] = [
        "" if np.isnan(s["lstv_score"]) else round(s["lstv_score"], 2) for s in scores
    ]
    queue["lstv_score_flag"] = [
        "" if np.isnan(s["lstv_score"]) else s["lstv_score_flag"] for s in scores
    ]
    queue["lstv_score_reason"] = [s["lstv_score_reason"] for s in scores]
    for col in REVIEW_COLUMNS:
        queue[col] = ""
    return queue[list(AUDIT_COLUMNS)]


def write_audit_queue(
    csv_path: str | Path,
    output_path: str | Path,
    n: int = 60,
    thresholds: RiskThresholds | None = None,
) -> Path:
    """Write ``audit_queue.csv`` from a metrics CSV.

    Args:
        csv_path: ``lstv_uncertainty_metrics.csv``.
        output_path: Where to write the queue (its folder is created).
        n: How many studies to queue (fewer when the CSV has fewer).
        thresholds: Risk bands and flag threshold; default: those the run used (its
            manifest), else ``RiskThresholds()``.

    Returns:
        ``output_path``.

    Raises:
        ValueError: The metrics CSV is empty or malformed, or ``n`` is negative.
    """
    thresholds = thresholds or resolve_thresholds(RunDir(Path(csv_path).parent).run_thresholds())
    output_path = Path(output_path)
    refuse_overwriting(output_path, [csv_path], "audit queue")
    queue = audit_queue(read_metrics_csv(csv_path), n=n, thresholds=thresholds)
    queue = keep_reviews(queue, output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    rows = queue.astype(str).map(spreadsheet_safe).to_dict("records")
    write_csv_atomic(output_path, list(queue.columns), rows)
    logger.info("audit queue of %d studies written to %s", len(queue), output_path)
    return output_path


def keep_reviews(queue: pd.DataFrame, previous_path: Path) -> pd.DataFrame:
    """``queue`` with the review entries of an earlier queue at ``previous_path`` carried over.

    A radiologist's entries are never lost: reviewed studies keep their ``lstv``,
    ``lstv_type``, ``reviewer`` and ``notes``, and a reviewed study that no longer ranks in
    the queue stays in it, after the others.
    """
    _, previous = read_csv_rows(previous_path)
    reviewed = {
        r["study_id"]: r
        for r in previous
        if r.get("study_id") and any((r.get(c) or "").strip() for c in REVIEW_COLUMNS)
    }
    if not reviewed:
        return queue
    queue = queue.copy()
    for col in REVIEW_COLUMNS:
        queue[col] = [(reviewed.get(s) or {}).get(col) or "" for s in queue["study_id"]]
    dropped = [r for s, r in reviewed.items() if s not in set(queue["study_id"])]
    if dropped:
        extra = pd.DataFrame([{c: r.get(c) or "" for c in queue.columns} for r in dropped])
        extra["rank"] = np.arange(len(queue) + 1, len(queue) + len(extra) + 1)
        queue = pd.concat([queue, extra[queue.columns]], ignore_index=True)
    logger.info("kept the review entries of %d studies from %s", len(reviewed), previous_path)
    return queue


# Leading characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def spreadsheet_safe(value: str) -> str:
    """``value`` with a ``'`` in front when a spreadsheet would run it as a formula.

    Numbers (``-1.5``, ``2e-3``) are left as they are; text that starts with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return (a study ID or reviewer note from an untrusted CSV)
    gets the apostrophe spreadsheets read as "this is text". Idempotent.
    """
    text = str(value)
    if text.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text
