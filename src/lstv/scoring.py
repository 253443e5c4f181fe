"""The score in a run: which reference a run scores with, what its manifest says about it, and
``lstv score``, which (re)writes the score columns of a finished run without the net.

The maths is :mod:`lstv.score`; this module reads and writes run folders (through
:class:`lstv.rundir.RunDir`) around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from lstv.atomic import csv_writer, file_sha256
from lstv.columns import SCORE_COLUMNS
from lstv.csv_files import read_csv_rows
from lstv.errors import UsageError
from lstv.rundir import RunDir
from lstv.score import score_rows
from lstv.score_drift import NO_DRIFT, check_run
from lstv.score_features import required_columns
from lstv.score_reference import CONFIG_KEY, Reference, check_checkpoint, read_reference

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt")


def load_reference(path: str | Path) -> Reference:
    """A reference JSON file, or the one a checkpoint (``.pth``) carries in its config.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UsageError: it is not a reference, or the checkpoint carries none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference not found: {path}")
    if path.suffix in CHECKPOINT_SUFFIXES:
        from lstv.model import checkpoint_reference  # torch only for a checkpoint

        return checkpoint_reference(path)
    return read_reference(path)


@dataclass(frozen=True)
class ScoreSetup:
    """The reference a run scores with (None: no score) and what the manifest says about it."""

    reference: Reference | None
    manifest: dict  # score_reference (dict or None), score_reference_sha256, score_note


def resolve_reference(
    reference_path: str | Path | None, checkpoint_sha256: str | None, checkpoint_config: dict
) -> ScoreSetup:
    """The reference for a run: ``--reference`` (checked against the run's checkpoint), else
    the one the checkpoint carries, else none (and the manifest says why).

    Raises:
        FileNotFoundError, ValueError: a given reference is missing, invalid or fitted on
            another checkpoint.
    """
    if reference_path is not None:
        path = Path(reference_path)
        ref = load_reference(path)
        check_checkpoint(ref, checkpoint_sha256, f"reference {path}")
        return ScoreSetup(ref, manifest_entry(ref, str(path), file_sha256(path), "file"))
    embedded = (checkpoint_config or {}).get(CONFIG_KEY)
    if embedded is not None:
        ref = Reference.from_dict(embedded, f"checkpoint config {CONFIG_KEY!r}")
        digest = hashlib.sha256(json.dumps(embedded, sort_keys=True).encode()).hexdigest()
        return ScoreSetup(ref, manifest_entry(ref, "checkpoint config", digest, "checkpoint"))
    note = (
        "no score reference: lstv_score columns are empty. Pass --reference REFERENCE.json "
        "(from lstv calibrate on this checkpoint's normal studies), or use a checkpoint that "
        f"carries one ({CONFIG_KEY!r} in its config); lstv score adds the columns later"
    )
    return ScoreSetup(
        None, {"score_reference": None, "score_reference_sha256": None, "score_note": note}
    )


def manifest_entry(ref: Reference, path: str, digest: str, source: str) -> dict:
    """The manifest's ``score_reference``, ``score_reference_sha256`` and ``score_note``."""
    return {
        "score_reference": {
            "path": path,
            "source": source,
            "sha256": digest,
            "checkpoint_sha256": ref.checkpoint_sha256,
            "n": ref.n,
            "reference_studies": ref.reference_studies,
            "threshold": ref.threshold,
            "threshold_rule": ref.threshold_rule,
            "rule": ref.rule,
            "features": list(ref.features),
            "created_at": ref.created_at,
        },
        "score_reference_sha256": digest,
        "score_note": f"lstv_score against {ref.n} reference studies ({source}: {path})",
    }


# --------------------------------------------------------------------------- a finished run


def run_manifest(csv_path: str | Path):
    """The :class:`lstv.rundir.Manifest` of the run that wrote ``csv_path`` (its folder's).

    Raises:
        UsageError: no readable manifest, or one without a checkpoint SHA-256: a reference
            must name the checkpoint its maps came from.
    """
    run = RunDir(Path(csv_path).parent)
    if not run.manifest_json.is_file():
        raise UsageError(
            f"{run.manifest_json} not found: the checkpoint of {csv_path} is unknown, and a "
            "reference must name the checkpoint its maps came from"
        )
    manifest = run.read_manifest()
    if not manifest.checkpoint_sha256:
        raise UsageError(f"{run.manifest_json} records no checkpoint SHA-256")
    return manifest


def read_run_csv(csv_path: str | Path, features) -> tuple[list[str], list[dict]]:
    """A run's metrics CSV (header, rows), refused when it lacks the ``features``' columns.

    Raises:
        FileNotFoundError: no CSV. ValueError: feature columns missing, or no rows.
    """
    if not Path(csv_path).is_file():
        raise FileNotFoundError(f"metrics CSV not found: {csv_path}")
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in required_columns(features) if c not in header]
    if missing:
        raise UsageError(
            f"{csv_path} lacks the feature columns {', '.join(missing)}: it was written by an "
            "lstv without shape features; run lstv infer again to get them"
        )
    if not rows:
        raise UsageError(f"{csv_path} has a header but no rows")
    return header, rows


def rescore_run(csv_path: str | Path, reference_path: str | Path) -> dict:
    """``lstv score``: (re)write the score columns of a finished run without the net.

    Every other column and row is kept as it was (text for text); score columns are added at
    the end when the CSV lacks them. The CSV and the manifest are replaced as one
    (:meth:`lstv.rundir.RunDir.replace_together`), under the run folder's lock.

    Returns:
        Counts: ``n_rows``, ``n_scored``, ``n_flagged``, and the ``threshold``.

    Raises:
        FileNotFoundError, ValueError: no CSV or reference, the CSV lacks feature columns, no
            manifest, or the reference belongs to another checkpoint.
    """
    csv_path = Path(csv_path)
    run = RunDir(csv_path.parent)
    ref = load_reference(reference_path)
    read_run_csv(csv_path, ref.features)
    check_checkpoint(ref, run_manifest(csv_path).checkpoint_sha256, f"reference {reference_path}")
    with run.lock():
        header, rows = read_run_csv(csv_path, ref.features)  # as it is now, under the lock
        manifest = run_manifest(csv_path)
        columns = header + [c for c in SCORE_COLUMNS if c not in header]
        scores = score_rows(rows, ref, str(csv_path))
        for row, score in zip(rows, scores, strict=True):
            row.update(score)
        entry = manifest_entry(
            ref, str(reference_path), file_sha256(Path(reference_path)), "lstv score"
        )
        drift = check_run(ref, rows, str(csv_path))
        warn_drift(drift)
        text = replace(manifest, **entry, score_drift=drift).to_text(run.manifest_json)
        # One commit point for the pair: a kill leaves both old or both new.
        run.replace_together(
            {csv_path: csv_writer(columns, rows), run.manifest_json: lambda f: f.write(text)}
        )
    n_scored = sum(1 for s in scores if s["lstv_score"] != "")
    n_flagged = sum(1 for s in scores if s["lstv_score_flag"] is True)
    log.info("%d of %d rows scored, %d flagged, in %s", n_scored, len(rows), n_flagged, csv_path)
    return {
        "n_rows": len(rows),
        "n_scored": n_scored,
        "n_flagged": n_flagged,
        "threshold": ref.threshold,
        "drift": drift,
    }


def warn_drift(drift: dict) -> None:
    """Say in the log, once per run, when a run sits far from its reference, and which it is:
    acquisition drift, or a feature shift without it (lstv.score_drift.check_run)."""
    verdict = drift.get("verdict", "feature drift" if drift.get("drift") else NO_DRIFT)
    if verdict != NO_DRIFT:
        log.warning("score reference drift (%s): %s", verdict, drift["note"])
    else:
        log.info("score reference drift check: %s", drift["note"])
