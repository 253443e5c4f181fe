"""The audit queue: the studies a radiologist should review first.

The queue ranks studies by the flag score (L5/S1 entropy, highest first) and leaves the
``lstv``, ``lstv_type``, ``reviewer`` and ``notes`` columns empty, right after the IDs
(``rank``, ``study_id``, ``series_id``, ``study_instance_uid``) and before ``path``, where the
study's series lies. Once a reviewer fills them (``lstv review`` or a spreadsheet), the file is
a labels CSV for ``lstv evaluate --labels`` and ``lstv calibrate --labels`` (unfilled rows are
ignored there, ``unsure`` ones skipped and counted).

:func:`save_review` changes one row's review columns and nothing else, atomically, and only
when the file is still the one the reviewer's page loaded (:func:`queue_token`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from lstv.atomic import refuse_overwriting, write_csv_atomic
from lstv.columns import AUDIT_COLUMNS, REVIEW_COLUMNS
from lstv.config import ReportConfig
from lstv.csv_files import read_csv_rows
from lstv.errors import UsageError
from lstv.rundir import RunDir
from lstv.tables import ranking_score, read_metrics_csv, score_fields
from lstv.uncertainty import RiskThresholds, resolve_thresholds

logger = logging.getLogger(__name__)

FLAG_SCORE = "l5_s1_entropy"


def audit_queue(
    metrics: pd.DataFrame,
    n: int = ReportConfig.audit_n,
    thresholds: RiskThresholds | None = None,
) -> pd.DataFrame:
    """The ``n`` studies with the highest score, ranked, with empty review columns.

    The score is the calibrated ``lstv_score`` when the run has one (see :mod:`lstv.score`),
    else the seed's L5/S1 entropy; the seed's risk level and flag stay beside it either way.
    Risk level and flag are recomputed with ``thresholds`` (default ``RiskThresholds()``), so the
    queue agrees with the report built with the same thresholds. A study listed twice (merged
    shards) appears once; ties are broken by study ID so the queue is reproducible.
    ``study_instance_uid`` and ``path`` are left empty (see :func:`study_locations`).
    """
    if n < 0:
        raise UsageError(f"audit queue size must be >= 0, got {n}")
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
    queue["study_instance_uid"] = queue["path"] = ""
    return queue[list(AUDIT_COLUMNS)]


def study_locations(run: RunDir, study_ids) -> dict[str, tuple[str, str]]:
    """Study ID -> (StudyInstanceUID, path of its series) for a run, to find a study in PACS
    or on disk: from the run's ``lstv index`` CSV when it used one (its ``study_uid`` and
    ``path`` columns, relative to the run's input folder), else the RSNA layout's
    ``{input_dir}/{study}/{series}``, with the UID read from one header there."""
    manifest = run.read_manifest() if run.manifest_json.is_file() else None
    if manifest is None:
        return {}
    index = Path(manifest.series_csv) if manifest.series_csv else None
    if index is not None and index.is_file():
        from lstv.studies import is_index

        if is_index(index):
            _, rows = read_csv_rows(index)
            return {r["study_id"]: (r.get("study_uid") or "", r.get("path") or "") for r in rows}
    root = Path(manifest.input_dir) if manifest.input_dir else None
    if root is None or not root.is_dir():
        return {}
    folders = [root / s for s in study_ids if s.isdigit()]
    return {f.name: _rsna_location(f) for f in folders if f.is_dir()}


def _rsna_location(study: Path) -> tuple[str, str]:
    """(StudyInstanceUID from the first file found, the study's folder)."""
    import pydicom

    for path in sorted(study.glob("*/*.dcm"))[:1]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            return str(ds.get("StudyInstanceUID", "")), str(study)
        except Exception:  # noqa: BLE001 - a bad header only loses the UID
            break
    return "", str(study)


def write_audit_queue(
    csv_path: str | Path,
    output_path: str | Path,
    n: int = ReportConfig.audit_n,
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
        UsageError: The metrics CSV is empty or malformed, or ``n`` is negative.
    """
    thresholds = thresholds or resolve_thresholds(RunDir(Path(csv_path).parent).run_thresholds())
    output_path = Path(output_path)
    refuse_overwriting(output_path, [csv_path], "audit queue")
    queue = audit_queue(read_metrics_csv(csv_path), n=n, thresholds=thresholds)
    found = study_locations(RunDir(Path(csv_path).parent), queue["study_id"])
    queue["study_instance_uid"] = [found.get(s, ("", ""))[0] for s in queue["study_id"]]
    queue["path"] = [found.get(s, ("", ""))[1] for s in queue["study_id"]]
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


# --------------------------------------------------------------------------- reviewing

# What each verdict writes into the review columns ``lstv`` and ``lstv_type``.
VERDICTS = {
    "normal": ("0", "normal"),
    "sacralization": ("1", "sacralization"),
    "lumbarization": ("1", "lumbarization"),
    "unsure": ("unsure", ""),
    "lstv": ("1", ""),  # transitional, type not given (as a spreadsheet may hold it)
    "": ("", ""),  # undone: not reviewed
}
_SAVE_LOCK = threading.Lock()


class StaleQueueError(UsageError):
    """The queue changed on disk since the reviewer's page read it; nothing was written."""


def queue_token(path: str | Path) -> str:
    """What a page must send back to save: the file's modification time and content hash, so
    an edit in a spreadsheet or another tab's save is seen even within one clock tick."""
    path = Path(path)
    data = path.read_bytes()
    return f"{path.stat().st_mtime_ns}-{hashlib.sha256(data).hexdigest()[:20]}"


def read_queue(path: str | Path) -> tuple[list[str], list[dict[str, str]], str]:
    """The queue's header, its rows and its :func:`queue_token`.

    Raises:
        UsageError: The file lacks ``study_id`` or a review column.
    """
    with _SAVE_LOCK:
        token = queue_token(path)
        header, rows = read_csv_rows(path)
    missing = [c for c in ("study_id", *REVIEW_COLUMNS) if c not in header]
    if missing:
        raise UsageError(f"{path} is not an audit queue: it lacks {', '.join(missing)}")
    return header, rows, token


def review_values(verdict: str, reviewer: str, notes: str) -> dict[str, str]:
    """The review columns for a verdict (normal, sacralization, lumbarization, unsure or ""
    to undo), a reviewer's name and a note."""
    if verdict not in VERDICTS:
        raise UsageError(f"verdict {verdict!r} is not one of {', '.join(v for v in VERDICTS if v)}")
    lstv, lstv_type = VERDICTS[verdict]
    return {"lstv": lstv, "lstv_type": lstv_type, "reviewer": reviewer, "notes": notes}


def verdict_of(row: dict[str, str]) -> str:
    """The verdict a queue row holds (a key of :data:`VERDICTS`), however it was typed; a cell
    the labels reader would refuse reads as ``invalid: ...``."""
    from lstv.tables import is_unsure, normalise_type, parse_lstv_label

    if is_unsure(row.get("lstv")):
        return "unsure"
    try:
        label, kind = parse_lstv_label(row.get("lstv")), normalise_type(row.get("lstv_type"))
    except ValueError as exc:
        return f"invalid: {exc}"
    if np.isnan(label):
        return ""
    if label == 0:
        return "normal"
    return kind if kind and kind != "normal" else "lstv"


def save_review(path: str | Path, study_id: str, values: dict[str, str], token: str) -> str:
    """Write one study's review columns and return the file's new token.

    Only the review columns of that row change; every other cell is written back as read.
    The file is replaced atomically, and each value goes through :func:`spreadsheet_safe`.

    Raises:
        StaleQueueError: The file is not the one ``token`` was taken from (edited in a
            spreadsheet, or saved from another tab): nothing is written.
        ValueError: No such study in the queue, or a column that is not a review column.
    """
    wrong = sorted(set(values) - set(REVIEW_COLUMNS))
    if wrong:
        raise ValueError(f"only the review columns can be written, not {', '.join(wrong)}")
    path = Path(path)
    with _SAVE_LOCK:
        if queue_token(path) != token:
            raise StaleQueueError(
                f"{path.name} changed on disk since this page loaded it (edited in a "
                "spreadsheet, or saved from another tab); nothing was written: reload the page"
            )
        header, rows = read_csv_rows(path)
        matches = [r for r in rows if r.get("study_id") == study_id]
        if len(matches) != 1:
            raise UsageError(f"study {study_id} is in {path.name} {len(matches)} times, not once")
        for col, value in values.items():
            matches[0][col] = spreadsheet_safe(" ".join(str(value).split()))
        write_csv_atomic(path, header, rows)
        return queue_token(path)
