"""Self-contained HTML report of an inference run (``lstv report``).

``build_report`` reads ``lstv_uncertainty_metrics.csv`` and, when present next to it,
``failures.csv``, ``run_manifest.json`` and ``heatmaps/``; it writes one HTML file whose figures
are embedded PNGs and whose styles are inline, so it opens offline and can be mailed as is.
Every value read from a file goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from lstv import __version__
from lstv.atomic import refuse_overwriting, write_text_atomic
from lstv.config import ReportConfig
from lstv.csv_files import read_csv_rows
from lstv.errors import UsageError
from lstv.evaluate import (
    evaluate_frames,
    read_labels,
    read_metrics_csv,
    roc_inputs,
)
from lstv.levels import LEVEL_KEYS, LEVELS
from lstv.report.render import render_html
from lstv.report.thumbnail import thumbnail
from lstv.rundir import FAILURE_COLUMNS, Manifest, RunDir
from lstv.study_view import SeriesLocator, number
from lstv.tables import ranking_score, score_fields
from lstv.uncertainty import RiskThresholds, resolve_thresholds

logger = logging.getLogger(__name__)

THUMBNAIL_LEVELS = ("l4_l5", "l5_s1")
# More rows than this in a table make the page long without helping anyone read it.
MAX_FAILURE_ROWS = 200
MAX_LISTED_IDS = 50
# A report should stay small enough to mail; 20 thumbnails and the plots take about 1 MB.
MAX_REPORT_BYTES = 15_000_000
# The ROC tables lead with the two levels where transitional anatomy shows; the rest fold away.
UPPER_LEVEL_PREFIXES = tuple(f"{key}_" for key in LEVEL_KEYS[:3])
_PROVENANCE_FIELDS = (
    ("command", "Command"),
    ("lstv_version", "lstv version"),
    ("device", "Device"),
    ("mode", "Mode"),
    ("seed", "Seed"),
    ("image_size", "Model input size"),
    ("validation_filter", "Validation filter"),
    ("num_parts", "Shards (num_parts)"),
    ("part_id", "Shard (part_id)"),
    ("n_selected", "Studies selected"),
    ("n_completed", "Studies completed"),
    ("n_failed", "Studies failed"),
    ("started_at", "Started"),
    ("finished_at", "Finished"),
)


def build_report(
    csv_path: str | Path,
    output_path: str | Path,
    *,
    manifest_path: str | Path | None = None,
    failures_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    data_dir: str | Path | None = None,
    heatmap_dir: str | Path | None = None,
    top_n: int = ReportConfig.top_n,
    thresholds: RiskThresholds | None = None,
) -> Path:
    """Render the HTML report of one inference run.

    Args:
        csv_path: ``lstv_uncertainty_metrics.csv`` of the run.
        output_path: Where to write the HTML file (its folder is created).
        manifest_path: ``run_manifest.json``; default: next to the CSV. Missing -> noted.
        failures_path: ``failures.csv``; default: next to the CSV. Missing -> noted.
        labels_path: Optional labels CSV (``study_id, lstv[, lstv_type]``) for the ROC section.
        data_dir: Optional ``train_images`` root; thumbnails then show the DICOM centre slice at
            full resolution instead of the 160 x 160 model input saved with the heatmaps.
        heatmap_dir: Folder of ``{study_id}.npz`` heatmaps; default: ``heatmaps/`` next to the CSV.
        top_n: How many top LSTV candidates to list with thumbnails.
        thresholds: Risk bands and flag threshold; default: those the run used (its
            manifest), else ``RiskThresholds()``.

    Returns:
        The path of the written report.

    Raises:
        UsageError: The CSV is empty or malformed, or ``top_n`` is negative.
    """
    start = time.perf_counter()
    from lstv import plots as figures

    if top_n < 0:
        raise UsageError(f"top_n must be >= 0, got {top_n}")
    csv_path = Path(csv_path)
    output_path = Path(output_path)
    run_dir = csv_path.parent
    run = RunDir(run_dir)
    thresholds = thresholds or resolve_thresholds(run.run_thresholds())
    manifest_path = Path(manifest_path) if manifest_path else run.manifest_json
    failures_path = Path(failures_path) if failures_path else run.failures_csv
    heatmap_dir = Path(heatmap_dir) if heatmap_dir else run.heatmaps
    refuse_overwriting(
        output_path, [csv_path, manifest_path, failures_path, labels_path], "--output"
    )

    df = read_metrics_csv(csv_path)
    df["risk"] = [_risk(e, thresholds) for e in df["l5_s1_entropy"]]
    df["flag"] = [bool(np.isfinite(e)) and thresholds.flag(e) for e in df["l5_s1_entropy"]]
    rank_by = ranking_score(df)
    manifest, manifest_note = _read_manifest(manifest_path)
    failures, failures_note = _read_failures(failures_path)

    n = len(df)
    counts = {level: int((df["risk"] == level).sum()) for level in figures.RISK_ORDER}
    summary = {
        "n_studies": n,
        "n_failed": len(failures) if failures is not None else None,
        "n_flagged": int(df["flag"].sum()),
        "pct_flagged": 100.0 * df["flag"].mean(),
        "risk": [
            {"level": level, "count": c, "pct": 100.0 * c / n, "color": figures.RISK_COLORS[level]}
            for level, c in counts.items()
        ],
        "n_unknown": int((df["risk"] == "Unknown").sum()),
        "n_series": int(df["series_id"].nunique()),
        "n_duplicate_studies": int(df["study_id"].duplicated().sum()),
    }

    plots = {
        "histograms": figures.png_data_uri(figures.entropy_histograms(df, thresholds)),
        "scatter": figures.png_data_uri(
            figures.entropy_confidence_scatter(df, df["risk"], thresholds)
        ),
        "levels": figures.png_data_uri(figures.level_boxplot(df, thresholds)),
    }

    locate = SeriesLocator(data_dir, (manifest or {}).get("series_csv")) if data_dir else None
    candidates = _candidates(df, top_n, heatmap_dir, locate, rank_by, thresholds)
    context = {
        "title": "LSTV uncertainty screening report",
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "lstv_version": __version__,
        "csv_path": str(csv_path),
        "csv_name": csv_path.name,
        "summary": summary,
        "thresholds": asdict(thresholds),
        "run_thresholds": _run_thresholds(manifest),
        "risk_changes": _risk_changes(df),
        "manifest": manifest,
        "manifest_note": manifest_note,
        "manifest_path": str(manifest_path),
        "provenance": _provenance(manifest) if manifest else [],
        "run_checkpoint": _checkpoint_summary(manifest),
        "validation_off": bool(manifest) and manifest.get("validation_filter") is False,
        "unfinished": RunDir(Path(manifest_path).parent).unfinished() if manifest else None,
        "failures": (failures or [])[:MAX_FAILURE_ROWS],
        "n_failures_hidden": max(0, len(failures or []) - MAX_FAILURE_ROWS),
        "failures_note": failures_note,
        "failures_path": str(failures_path),
        "plots": plots,
        "strata": _strata(df, thresholds),
        "levels": _level_table(df),
        "candidates": candidates,
        "rank_by": rank_by,
        "score": _score_summary(df, manifest),
        "top_n": top_n,
        "heatmap_dir": str(heatmap_dir),
        "data_dir": str(data_dir) if data_dir else None,
        "roc": _roc_section(df, labels_path, thresholds) if labels_path else None,
    }
    html = render_html(context)
    if len(html) > MAX_REPORT_BYTES:
        logger.warning(
            "report is %.1f MB, over %.0f MB: lower --top_n to shrink it",
            len(html) / 1e6,
            MAX_REPORT_BYTES / 1e6,
        )
    _atomic_write(output_path, html)
    logger.info(
        "report of %d studies written to %s (%.1f MB, %.1f s)",
        n,
        output_path,
        len(html.encode()) / 1e6,
        time.perf_counter() - start,
    )
    return output_path


# --------------------------------------------------------------------------- inputs


def _risk(entropy: float, thresholds: RiskThresholds) -> str:
    return thresholds.risk(entropy) if np.isfinite(entropy) else "Unknown"


def _read_manifest(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, f"run_manifest.json not found ({path})"
    try:
        return Manifest.from_json(path).to_dict(), None
    except ValueError as exc:
        return None, f"run_manifest.json could not be read ({exc})"


def _read_failures(path: Path) -> tuple[list[dict] | None, str | None]:
    if not path.is_file():
        return None, f"failures.csv not found ({path})"
    try:
        header, rows = read_csv_rows(path)
    except (OSError, ValueError, csv.Error) as exc:
        return None, f"failures.csv could not be read ({path}: {exc})"
    return [{c: r.get(c) or "" for c in FAILURE_COLUMNS} for r in rows], None


def _run_thresholds(manifest: dict | None) -> dict | None:
    if not manifest or not isinstance(manifest.get("thresholds"), dict):
        return None
    return manifest["thresholds"]


def _risk_changes(df: pd.DataFrame) -> int:
    """Studies whose band differs from the ``risk_level`` the run wrote (other thresholds)."""
    if "risk_level" not in df.columns:
        return 0
    recorded = df["risk_level"].astype(str).str.strip()
    return int(((recorded != df["risk"]) & (df["risk"] != "Unknown")).sum())


def _provenance(manifest: dict) -> list[tuple[str, str]]:
    rows = []
    for key, label in _PROVENANCE_FIELDS:
        if key in manifest:
            rows.append((label, _plain(manifest[key])))
    checkpoint = manifest.get("checkpoint")
    if isinstance(checkpoint, dict):
        rows.append(("Checkpoint", _plain(checkpoint.get("path", "—"))))
        rows.append(("Checkpoint SHA-256", _plain(checkpoint.get("sha256", "—"))))
        if checkpoint.get("config"):
            rows.append(("Checkpoint config", _plain(checkpoint.get("config"))))
    elif checkpoint is not None:
        rows.append(("Checkpoint", _plain(checkpoint)))
    versions = manifest.get("versions")
    if isinstance(versions, dict):
        rows.append(("Versions", ", ".join(f"{k} {_plain(v)}" for k, v in versions.items())))
    elif versions is not None:
        rows.append(("Versions", _plain(versions)))
    return rows


ORIGINAL_CHECKPOINT = "00002484.pth"


def _checkpoint_summary(manifest: dict | None) -> dict:
    """The checkpoint the run used (its manifest) and a credit that names it: hengck23's
    original, or one trained here (on what, from what)."""
    checkpoint = (manifest or {}).get("checkpoint")
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    name = Path(str(checkpoint.get("path") or "unknown")).name
    sha = str(checkpoint.get("sha256") or "unknown")
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    if not checkpoint:
        credit = "unknown (the run has no manifest)"
    elif name == ORIGINAL_CHECKPOINT and not config.get("trained_on"):
        credit = (
            f"{name} (SHA-256 {sha[:12]}…) by hengck23 (RSNA 2024 Lumbar Spine Degenerative "
            "Classification)"
        )
    else:
        credit = f"{name} (SHA-256 {sha[:12]}…)"
        if config.get("trained_on"):
            credit += f", trained with lstv train on {config['trained_on']}"
        if config.get("init_from"):
            credit += f", initialised from {Path(str(config['init_from'])).name}"
    return {"name": name, "sha256": sha, "credit": credit}


def _plain(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "—"
    return str(value)


# --------------------------------------------------------------------------- tables


def _strata(df: pd.DataFrame, thresholds: RiskThresholds) -> list[dict]:
    from lstv.plots import RISK_COLORS, RISK_ORDER

    rules = {
        "High": f"L5/S1 entropy > {thresholds.high_entropy:g}",
        "Medium": f"{thresholds.medium_entropy:g} ≤ L5/S1 entropy ≤ {thresholds.high_entropy:g}",
        "Low": f"L5/S1 entropy < {thresholds.medium_entropy:g}",
    }
    advice = {
        "High": "Review first: localizer unsure at L5/S1; count vertebrae on a whole-spine view.",
        "Medium": "Review when time allows.",
        "Low": "Localizer confident at L5/S1.",
    }
    rows = []
    for level in RISK_ORDER:
        sub = df[df["risk"] == level]
        rows.append(
            {
                "level": level,
                "color": RISK_COLORS[level],
                "rule": rules[level],
                "count": len(sub),
                "pct": 100.0 * len(sub) / len(df),
                "median_entropy": _median(sub["l5_s1_entropy"]),
                "median_confidence": _median(sub["l5_s1_confidence"]),
                "median_l4_l5_entropy": _median(sub["l4_l5_entropy"]),
                "advice": advice[level],
            }
        )
    return rows


def _median(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.median()) if len(v) else math.nan


def _level_table(df: pd.DataFrame) -> list[dict]:
    rows = []
    for key, name in zip(LEVEL_KEYS, LEVELS, strict=True):
        e = df[f"{key}_entropy"]
        rows.append(
            {
                "level": name,
                "median_entropy": _median(e),
                "q1": float(e.quantile(0.25)),
                "q3": float(e.quantile(0.75)),
                "median_normalized": _median(df[f"{key}_normalized_entropy"])
                if f"{key}_normalized_entropy" in df
                else math.nan,
                "median_spatial": _median(df[f"{key}_spatial_entropy"]),
                "median_confidence": _median(df[f"{key}_confidence"]),
                "pct_point": 100.0 * df[f"{key}_x"].notna().mean()
                if f"{key}_x" in df
                else math.nan,
            }
        )
    return rows


def _text(value: object) -> str:
    """A CSV cell as text; an empty cell (NaN) as ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _score_summary(df: pd.DataFrame, manifest: dict | None) -> dict:
    """How many studies the calibrated score flagged, and the reference it used (or why none)."""
    values = pd.to_numeric(df.get("lstv_score"), errors="coerce") if "lstv_score" in df else None
    n_scored = int(values.notna().sum()) if values is not None else 0
    flags = df.get("lstv_score_flag", pd.Series(dtype=str)).astype(str).str.lower() == "true"
    reference = (manifest or {}).get("score_reference")
    note = (manifest or {}).get("score_note") or (
        "This run has no calibrated score: fit a reference with lstv calibrate on normal "
        "studies of the same checkpoint, then run lstv score."
    )
    return {
        "n_scored": n_scored,
        "n_flagged": int(flags.sum()),
        "pct_flagged": 100.0 * flags.sum() / n_scored if n_scored else math.nan,
        "reference": reference if isinstance(reference, dict) else None,
        "note": note,
        "drift": (manifest or {}).get("score_drift"),  # lstv.score_drift.check_run, or None
    }


def _candidates(
    df: pd.DataFrame,
    top_n: int,
    heatmap_dir: Path,
    locate: SeriesLocator | None,
    rank_by: str = "l5_s1_entropy",
    thresholds: RiskThresholds | None = None,
) -> list[dict]:
    """The ``top_n`` studies with the highest ``rank_by`` (the calibrated score when the run
    has one, else L5/S1 entropy), with their thumbnails and verdicts: the primary one (the
    calibrated score when the study has one) and the seed's entropy rule."""
    from lstv.plots import RISK_COLORS
    from lstv.study_view import verdicts

    order = df.assign(_rank_by=pd.to_numeric(df[rank_by], errors="coerce")).sort_values(
        ["_rank_by", "l5_s1_entropy", "study_id"],
        ascending=[False, False, True],
        na_position="last",
        kind="stable",
    )
    order = order.drop_duplicates("study_id").head(top_n)
    rows = []
    for rank, (_, row) in enumerate(order.iterrows(), start=1):
        uri, note = thumbnail(row, heatmap_dir, locate, thresholds)
        rows.append(
            {
                "rank": rank,
                "study_id": row["study_id"],
                "series_id": row["series_id"],
                "description": _text(row.get("series_description")),
                "n_slices": row.get("n_slices", ""),
                "l5_s1_entropy": number(row.get("l5_s1_entropy")),
                "l5_s1_normalized": number(row.get("l5_s1_normalized_entropy")),
                "l5_s1_spatial": number(row.get("l5_s1_spatial_entropy")),
                "l5_s1_confidence": number(row.get("l5_s1_confidence")),
                "l4_l5_entropy": number(row.get("l4_l5_entropy")),
                "l4_l5_confidence": number(row.get("l4_l5_confidence")),
                "risk": row["risk"],
                "risk_color": RISK_COLORS.get(row["risk"], "#607d8b"),
                "flag": bool(row["flag"]),
                **score_fields(row),
                **verdicts(row, thresholds or RiskThresholds()),
                "thumbnail": uri,
                "thumbnail_note": note,
            }
        )
    return rows


# --------------------------------------------------------------------------- ROC


def _roc_section(df: pd.DataFrame, labels_path: str | Path, thresholds: RiskThresholds) -> dict:
    """Evaluation against labels, through the same functions as ``lstv evaluate``."""
    from lstv.plots import png_data_uri, roc_figure

    labels, n_unreviewed = read_labels(labels_path)
    metrics = df.drop(columns=["risk", "flag"])
    try:
        result = evaluate_frames(
            metrics,
            labels,
            fixed_threshold=thresholds.flag_entropy,
            n_unreviewed=n_unreviewed,
        )
    except ValueError as exc:
        return {"error": str(exc), "labels_path": str(labels_path)}
    joined, scores, groups = roc_inputs(metrics, labels)
    figure = png_data_uri(roc_figure(joined["lstv"].to_numpy(dtype=int), scores, groups, result))
    join = result["join"]
    headline, upper = {}, {}
    for group, info in result["groups"].items():
        rows = list(info["scores"].items())
        lower = [r for r in rows if not r[0].startswith(UPPER_LEVEL_PREFIXES)]
        headline[group] = lower
        upper[group] = [r for r in rows if r[0].startswith(UPPER_LEVEL_PREFIXES)]
    return {
        "headline": headline,
        "upper": upper,
        "labels_path": str(labels_path),
        "result": result,
        "figure": figure,
        "missing_in_labels": join["missing_in_labels"][:MAX_LISTED_IDS],
        "missing_in_labels_more": max(0, len(join["missing_in_labels"]) - MAX_LISTED_IDS),
        "missing_in_metrics": join["missing_in_metrics"][:MAX_LISTED_IDS],
        "missing_in_metrics_more": max(0, len(join["missing_in_metrics"]) - MAX_LISTED_IDS),
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
