"""``lstv calibrate``: fit the score's reference on a run's normal studies and write it as JSON.

The fitting is :func:`lstv.score.fit_reference`; this command picks the studies (those labelled
normal, or all with a warning), reads their features from the run's CSV and names the run's
checkpoint in the reference.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from lstv.atomic import refuse_overwriting
from lstv.errors import UsageError
from lstv.rundir import RunDir
from lstv.score import DEFAULT_TARGET_SPECIFICITY, V2_FEATURES, fit_reference
from lstv.score_features import FEATURES, feature_matrix
from lstv.score_reference import Reference
from lstv.scoring import read_run_csv, run_manifest
from lstv.tables import read_labels

log = logging.getLogger(__name__)


def reference_rows(
    rows: list[dict], labels_path: str | Path | None, csv_path: Path
) -> tuple[list[dict], str]:
    """The rows a reference is fitted on: labelled normal studies, or all with a warning."""
    if labels_path is None:
        log.warning(
            "no --labels: the reference is fitted on all %d studies of %s. Robust statistics "
            "(median, MAD) tolerate a few LSTV among them but not many; fit it on studies a "
            "radiologist confirmed normal (a filled-in audit_queue.csv) when you can",
            len(rows),
            csv_path,
        )
        return rows, f"all {len(rows)} studies of {csv_path.name} (no labels)"
    labels, n_unreviewed = read_labels(labels_path)
    n_unsure = labels.attrs.get("n_unsure", 0)
    if n_unsure:
        log.info("%d studies marked unsure in %s are left out", n_unsure, labels_path)
    normal = set(labels.loc[labels["lstv"] == 0, "study_id"])
    chosen = [r for r in rows if str(r["study_id"]).strip() in normal]
    found = {str(r["study_id"]).strip() for r in chosen}
    if len(normal - found):
        log.warning(
            "%d studies labelled normal in %s are not in %s (failed or not run)",
            len(normal - found),
            labels_path,
            csv_path,
        )
    if not chosen:
        raise UsageError(
            f"no study of {csv_path} is labelled normal (lstv = 0) in {labels_path}"
            + (f" ({n_unreviewed} rows not reviewed yet)" if n_unreviewed else "")
        )
    unsure = f" ({n_unsure} unsure left out)" if n_unsure else ""
    return chosen, f"{len(chosen)} studies labelled normal in {Path(labels_path).name}{unsure}"


def once_per_study(rows: list[dict], csv_path: Path) -> list[dict]:
    """The first row of each study: a study listed twice (a merge of overlapping shards, a
    hand-made CSV) must not count twice in the reference."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        study = str(row.get("study_id", "")).strip()
        if study not in seen:
            seen.add(study)
            unique.append(row)
    if len(unique) < len(rows):
        log.warning(
            "%s: %d duplicate rows of the same studies, counted once",
            csv_path,
            len(rows) - len(unique),
        )
    return unique


def fit_acquisition(rows: list[dict], csv_path: Path) -> dict:
    """How the reference studies were acquired (:func:`lstv.acquisition.fit_descriptors`), for
    the drift check; ``{}`` (with a note) when the run's CSV has no acquisition columns."""
    from lstv.acquisition import descriptor_matrix, fit_descriptors

    matrix = descriptor_matrix(rows, str(csv_path))
    if matrix is None:
        log.warning(
            "%s has no acquisition columns (an lstv before them wrote it): the reference "
            "records no acquisition, and its drift check cannot tell a scanner change from a "
            "set rich in transitional studies; run lstv infer again to have them",
            csv_path,
        )
        return {}
    return fit_descriptors(matrix)


def calibrate(
    csv_path: str | Path,
    output: str | Path,
    labels_path: str | Path | None = None,
    target_specificity: float | None = DEFAULT_TARGET_SPECIFICITY,
    rule: str = "mahalanobis",
) -> Reference:
    """``lstv calibrate``: fit a reference on a run's normal studies and write it as JSON.

    Args:
        csv_path: the run's ``lstv_uncertainty_metrics.csv`` (with shape features); its
            ``run_manifest.json`` must name the checkpoint.
        output: the reference JSON to write (never one of the inputs).
        labels_path: ``study_id, lstv[, lstv_type]`` (or a filled-in ``audit_queue.csv``):
            only the studies labelled normal form the reference. Without it, all studies do.
        target_specificity: see :func:`fit_reference` (default 0.95: about 1 normal study in
            20 goes to review by design; None for the leave-one-out maximum).
        rule: ``mahalanobis`` (score v2: the L5/S1 map features of
            :data:`~lstv.score.V2_FEATURES`) or ``max_abs_z`` (score v1: the ten map features).

    Raises:
        UsageError: missing feature columns, no manifest, no normal study, too few studies.
    """
    csv_path = Path(csv_path)
    refuse_overwriting(output, [csv_path, labels_path], "--output")
    features = V2_FEATURES if rule == "mahalanobis" else FEATURES
    _, rows = read_run_csv(csv_path, features)
    sha = run_manifest(csv_path).checkpoint_sha256
    unfinished = RunDir(csv_path.parent).unfinished()
    if unfinished:
        log.warning(
            "%s is from %s: the reference is fitted on the studies done so far; finish the run "
            "(the same lstv infer command resumes it) for a reference of all its studies",
            csv_path,
            unfinished,
        )
    chosen, described = reference_rows(once_per_study(rows, csv_path), labels_path, csv_path)
    if unfinished:
        described += f", of {unfinished}"
    raw = feature_matrix(chosen, features, str(csv_path))
    complete = np.isfinite(raw).all(axis=1)
    if rule == "mahalanobis" and complete.sum() <= 2 * (len(features) + 1):
        # A covariance of F features needs well over F studies; the max |z| rule does not.
        log.warning(
            "%d complete reference studies are too few for the Mahalanobis rule over %d "
            "features (it needs more than %d): using the max |z| rule (score v1)",
            int(complete.sum()),
            len(features),
            2 * (len(features) + 1),
        )
        rule, features = "max_abs_z", FEATURES
        raw = feature_matrix(chosen, features, str(csv_path))
        complete = np.isfinite(raw).all(axis=1)
    if not complete.all():
        log.warning("%d reference studies lack some features; left out", int((~complete).sum()))
    ref = fit_reference(
        raw[complete],
        sha,
        features=features,
        rule=rule,
        target_specificity=target_specificity,
        reference_studies=described,
        extra={
            "source_csv": str(csv_path),
            "labels": str(labels_path) if labels_path else None,
        },
    )
    ref = replace(ref, acquisition=fit_acquisition(chosen, csv_path))
    ref.save(output)
    log.info(
        "reference of %d studies written to %s: flag threshold %.3f (%s)",
        ref.n,
        output,
        ref.threshold,
        ref.threshold_rule,
    )
    return ref
