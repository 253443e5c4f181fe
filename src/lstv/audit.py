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

from lstv.evaluate import read_metrics_csv
from lstv.results import run_thresholds
from lstv.uncertainty import RiskThresholds, resolve_thresholds, risk_level

logger = logging.getLogger(__name__)

FLAG_SCORE = "l5_s1_entropy"
AUDIT_COLUMNS = (
    "rank",
    "study_id",
    "series_id",
    "l5_s1_entropy",
    "l4_l5_entropy",
    "l5_s1_confidence",
    "risk_level",
    "lstv_flag",
    "lstv",
    "lstv_type",
    "reviewer",
    "notes",
)
REVIEW_COLUMNS = ("lstv", "lstv_type", "reviewer", "notes")


def audit_queue(
    metrics: pd.DataFrame, n: int = 60, thresholds: RiskThresholds | None = None
) -> pd.DataFrame:
    """The ``n`` studies with the highest flag score, ranked, with empty review columns.

    Risk level and flag are recomputed with ``thresholds`` (default ``RiskThresholds()``), so the
    queue agrees with the report built with the same thresholds. A study listed twice (merged
    shards) appears once; ties are broken by study ID so the queue is reproducible.
    """
    if n < 0:
        raise ValueError(f"audit queue size must be >= 0, got {n}")
    thresholds = thresholds or RiskThresholds()
    ranked = metrics.sort_values(
        [FLAG_SCORE, "study_id"], ascending=[False, True], na_position="last", kind="stable"
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
                risk_level(float(e), thresholds) if np.isfinite(e) else "" for e in entropy
            ],
            "lstv_flag": [bool(e > thresholds.flag_entropy) for e in entropy],
        }
    )
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
    thresholds = thresholds or resolve_thresholds(run_thresholds(Path(csv_path).parent))
    queue = audit_queue(read_metrics_csv(csv_path), n=n, thresholds=thresholds)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    queue.astype(str).map(spreadsheet_safe).to_csv(output_path, index=False)
    logger.info("audit queue of %d studies written to %s", len(queue), output_path)
    return output_path


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
