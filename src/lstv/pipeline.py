"""``lstv infer``: selected studies -> read -> model input -> point net -> metrics -> outputs.

Reading runs in reader processes (CPU), the forward pass in batches across studies (GPU or
CPU), and each study's row is appended as soon as it is done, so an interrupted run resumes.
The output folder is held by one run at a time (:meth:`lstv.rundir.RunDir.lock`); a resumed run
must use the settings the folder's rows were made with.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstv import __version__
from lstv.atomic import file_sha256, json_safe, non_finite_keys
from lstv.config import InferenceConfig
from lstv.csv_files import check_header
from lstv.errors import UsageError
from lstv.levels import DEFAULT_IMAGE_SIZE
from lstv.results import METRIC_COLUMNS, StudyResult, metrics_row, save_heatmaps
from lstv.rundir import Manifest, RunDir, utc_now
from lstv.sample import Failure, Sample, SampleReader, iter_samples
from lstv.score_reference import check_checkpoint
from lstv.scoring import load_reference, resolve_reference
from lstv.studies import (
    StudyTask,
    filter_valid,
    hold_out_ids,
    select_mode,
    shard,
    study_tasks,
)
from lstv.uncertainty import (
    mutual_information,
    resolve_thresholds,
)

log = logging.getLogger(__name__)

__all__ = ["InferenceConfig", "RunInterrupted", "RunSummary", "run_inference"]


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal; what it wrote is whole and a rerun resumes."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def select_tasks(config: InferenceConfig) -> tuple[list[StudyTask], bool]:
    """The studies this run (shard) is responsible for, and whether the valid-ID filter applied.

    Raises:
        UsageError: the selection is empty before sharding (an empty series CSV, or a
            ``valid_id.npy`` that matches none of its studies): a run of nothing is a mistake.
    """
    tasks = study_tasks(config.series_csv)
    if not tasks:
        raise UsageError(f"{config.series_csv} lists no studies")
    valid_ids = hold_out_ids(config.valid_ids, tasks, config.series_csv)
    if valid_ids is None:
        log.warning(
            "VALIDATION FILTER OFF: %s not found (or not for this index's studies), so every "
            "study runs, including any the "
            "localizer was trained on. Results on training studies are optimistic.",
            config.valid_ids,
        )
    kept = filter_valid(tasks, valid_ids)
    if not kept:
        raise UsageError(
            f"none of the {len(tasks)} studies in {config.series_csv} is among the "
            f"{len(valid_ids)} IDs of {config.valid_ids}: is it the right file for this data?"
        )
    kept = select_mode(kept, config.mode, config.n_trial, config.seed, config.debug_study_id)
    return shard(kept, config.num_parts, config.part_id), valid_ids is not None


def library_versions() -> dict[str, str]:
    # pydicom and timm by their installed metadata: importing them here only for a version
    # would cost the run's start-up (pydicom lives in the reader processes).
    from importlib.metadata import version

    import cv2
    import torch

    return {
        "python": platform.python_version(),
        "lstv": __version__,
        "torch": torch.__version__,
        "timm": version("timm"),
        "pydicom": version("pydicom"),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def threshold_source(checkpoint_bands: dict | None, overrides: dict) -> str:
    """Where the run's bands came from, for the manifest."""
    base = "checkpoint config" if checkpoint_bands else "defaults (real checkpoint's scale)"
    given = sorted(overrides)
    return base + (f", overridden on the command line: {', '.join(given)}" if given else "")


def recordable_config(checkpoint_info) -> dict | None:
    """The checkpoint's ``config`` as the manifest records it: a NaN or infinite figure (a
    validation error that an older ``lstv train`` could not compute) becomes null, with a
    warning, so any checkpoint that loads can be run; the file itself is not changed."""
    config = checkpoint_info.config
    bad = non_finite_keys(config or {})
    if bad:
        log.warning(
            "%s: the checkpoint's config holds NaN or infinity at %s; recorded as null",
            checkpoint_info.path,
            ", ".join(bad),
        )
    return json_safe(config)


def new_manifest(
    config: InferenceConfig, checkpoint_info, device, tasks, validated, score=None
) -> Manifest:
    """The manifest of a run that is about to start (``score``: a
    :class:`lstv.scoring.ScoreSetup`, whose reference or reason for none it records)."""
    checkpoint_bands = (checkpoint_info.config or {}).get("risk_thresholds")
    overrides = config.threshold_overrides.given()
    thresholds = resolve_thresholds(checkpoint_bands, source="the checkpoint's config", **overrides)
    return Manifest.from_config(
        config,
        lstv_version=__version__,
        versions=library_versions(),
        device=device.type,
        checkpoint={
            "path": checkpoint_info.path,
            "sha256": checkpoint_info.sha256,
            "config": recordable_config(checkpoint_info),
        },
        thresholds=asdict(thresholds),
        thresholds_source=threshold_source(checkpoint_bands, overrides),
        validation_filter=validated,
        selected_study_ids=[t.study_id for t in tasks],
        n_selected=len(tasks),
        status="running",
        started_at=utc_now(),
        pid=None,
        **(score.manifest if score is not None else {}),
    )


def check_resumable(run_dir: RunDir, manifest: Manifest) -> None:
    """Refuse to add rows to a folder whose rows were made another way; change nothing.

    Raises:
        UsageError: the folder holds results of other settings, of another version's columns,
            or results whose manifest is missing or unreadable.
    """
    if run_dir.metrics_csv.is_file() and run_dir.metrics_csv.stat().st_size > 0:
        check_header(run_dir.metrics_csv, METRIC_COLUMNS)
    holding = run_dir.files_with_rows()
    if not holding:
        return  # nothing written yet (or only headers): a start that failed resumes
    which = " and ".join(p.name for p in holding)
    try:
        previous = run_dir.read_manifest()
    except ValueError as exc:
        raise UsageError(
            f"{run_dir.path} holds results ({which}) but its manifest cannot be read ({exc}); "
            "use a new --output_dir"
        ) from exc
    if previous is None:
        raise UsageError(
            f"{run_dir.path} holds results ({which}) but no {run_dir.manifest_json.name}, so "
            "how they were made is unknown; use a new --output_dir"
        )
    differences = previous.differences(manifest)
    if differences:
        raise UsageError(
            f"{run_dir.path} holds results made with other settings ({'; '.join(differences)}); "
            "rerun with the same settings to resume, or use a new --output_dir"
        )


class _Run:
    """State of one inference run: writers, counters and the manifest."""

    def __init__(
        self,
        config: InferenceConfig,
        predictor,
        run_dir: RunDir,
        manifest: Manifest,
        reference=None,
    ):
        self.config = config
        self.reference = reference  # lstv.score.Reference, or None: empty score columns
        self.predictor = predictor
        self.run_dir = run_dir
        self.manifest = manifest
        self.thresholds = resolve_thresholds(manifest.thresholds)
        self.metrics = run_dir.metrics_appender(METRIC_COLUMNS)
        self.failures = run_dir.failures_appender()
        self.n_completed = 0
        self.n_failed = 0

    def fail(self, failure: Failure) -> None:
        t = failure.task
        log.warning("study %s failed at %s: %s", t.study_id, failure.stage, failure.error)
        self.failures.write(
            {
                "study_id": t.study_id,
                "series_id": "" if t.series_id is None else t.series_id,
                "stage": failure.stage,
                "error": failure.error,
            }
        )
        self.n_failed += 1

    def finish_batch(self, samples: list[Sample]) -> None:
        # One forward pass for the batch: every centre slice, then every parasagittal slice.
        sides = [s.side_images for s in samples if s.side_offsets]
        try:
            probs = self.predictor(np.concatenate([np.stack([s.image for s in samples]), *sides]))
        except Exception as exc:
            for s in samples:
                self.fail(Failure(s.task, "model", f"{type(exc).__name__}: {exc}"))
            return
        log.debug("timeline: forward pass of %d studies done", len(samples))
        start = len(samples)
        for sample, p in zip(samples, probs[: len(samples)], strict=True):
            side = probs[start : start + len(sample.side_offsets)] if sample.side_offsets else None
            start += len(sample.side_offsets)
            try:
                self.finish_study(sample, p, side)
            except Exception as exc:
                self.fail(Failure(sample.task, "metrics", f"{type(exc).__name__}: {exc}"))
        self.metrics.sync()  # one fsync per batch, not per row (5 ms each here)
        log.debug("timeline: batch of %d written", len(samples))

    def finish_study(self, sample: Sample, probs: np.ndarray, side_probs=None) -> None:
        task = sample.task
        tta_mi = None
        if self.config.tta:
            # The batch forward already made the unshifted view's maps: reuse them.
            views = self.predictor.predict_views(sample.image, unshifted=probs)
            tta_mi = mutual_information(views)
        result = StudyResult.from_maps(
            probs,
            sample.slice_shape,
            sample.pixel_spacing,
            self.reference,
            tta_mi,
            "this run",
            side_probs,
        )
        row = metrics_row(result, sample, self.thresholds)
        if self.config.save_heatmaps or self.config.visualize:
            save_heatmaps(self.run_dir, task.study_id, task.series_id, probs, sample)
        if self.config.visualize:
            from lstv.visualize import save_study_figures

            save_study_figures(
                self.run_dir.visualizations, sample, probs, result.levels, row["risk_level"]
            )
        self.metrics.write(row, sync=False)
        self.n_completed += 1

    def write_manifest(self, status: str) -> None:
        self.manifest = self.manifest.replace(
            n_completed=self.n_completed,
            n_failed=self.n_failed,
            status=status,
            finished_at=None if status == "running" else utc_now(),
        )
        self.run_dir.write_manifest(self.manifest)

    def check_drift(self) -> None:
        """The run's acquisition and feature medians against its score reference's
        (lstv.score_drift.check_run): in the manifest, and a warning in the log when they sit
        far apart, saying whether the acquisition or only the features moved."""
        from lstv.score_drift import check_run
        from lstv.scoring import read_run_csv, warn_drift

        _, rows = read_run_csv(self.run_dir.metrics_csv, self.reference.features)
        drift = check_run(self.reference, rows)
        warn_drift(drift)
        self.manifest = self.manifest.replace(score_drift=drift)

    def close(self) -> None:
        self.metrics.close()
        self.failures.close()


@dataclass(frozen=True)
class RunSummary:
    output_dir: Path
    n_selected: int
    n_skipped: int
    n_completed: int
    n_failed: int
    validation_filter: bool


class _StopSignals:
    """Turns SIGTERM (a batch job's time limit, ``scancel``) into a request to stop cleanly.

    The main loop checks ``requested`` after each batch, so what is written stays whole. While
    the run only waits for a study to be read (:meth:`interruptible`), nothing is being written
    and a read may take minutes: the signal then stops the run at once, and the readers with it.
    Only the main thread may install handlers, so elsewhere (a web server's thread) this is inert.
    """

    def __init__(self):
        self.requested: int | None = None
        self._previous = None
        self._interruptible = False

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = signum
        name = signal.Signals(signum).name
        if self._interruptible:
            log.warning("received %s: stopping now; the studies being read wait for a rerun", name)
            raise RunInterrupted(signum)
        log.warning("received %s: stopping after the studies in flight", name)

    @contextlib.contextmanager
    def interruptible(self):
        """A block that a stop request may end at once (it raises :class:`RunInterrupted`)."""
        if self.requested is not None:
            raise RunInterrupted(self.requested)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def run_inference(config: InferenceConfig, predictor=None, checkpoint_info=None) -> RunSummary:
    """Run the localizer over the selected studies and write the outputs.

    Args:
        config: the run's settings.
        predictor, checkpoint_info: an already loaded model (the web demo and tests reuse one);
            loaded from ``config.checkpoint`` when omitted.

    Raises:
        FileNotFoundError: ``input_dir``, the series CSV or the checkpoint is missing.
        UsageError: a malformed series CSV, impossible settings, or an output folder that holds
            results made another way; nothing is changed then.
        lstv.rundir.RunDirBusyError: another run holds the output folder.
        RunInterrupted: SIGTERM stopped the run; the manifest says ``interrupted``.
    """
    if not Path(config.input_dir).is_dir():
        raise FileNotFoundError(f"--input_dir not found: {config.input_dir}")
    tasks, validated = select_tasks(config)
    digest = None  # the checkpoint's SHA-256 once computed here: the load does not hash again
    if config.reference is not None:  # a bad reference stops the run before any work
        reference = load_reference(config.reference)
        if predictor is None and Path(config.checkpoint).is_file():
            # ...as does one fitted on another checkpoint: before the output folder exists.
            digest = file_sha256(config.checkpoint)
            check_checkpoint(reference, digest, f"reference {Path(config.reference)}")
    if predictor is None:
        _check_checkpoint_exists(config.checkpoint)
    run_dir = RunDir(config.output_dir)
    with run_dir.lock(), _StopSignals() as stop:
        done = run_dir.completed_study_ids()
        todo = [t for t in tasks if str(t.study_id) not in done]
        # The readers start before the model loads: its import and load (seconds of CPU) overlap
        # the first studies' decoding. Reading writes nothing, so a refusal below is still clean.
        reader = SampleReader(
            todo, config.input_dir, config.image_size, config.parasagittal
        )
        # At full priority while the model imports: readers started at nice 19 (so that the
        # single-threaded import kept a core) got no CPU on a machine other work loaded, and
        # the model then waited for them (issue 22's timeline).
        with contextlib.closing(iter_samples(reader, config.num_workers)) as samples:
            # "timeline:" debug lines mark the start-up's steps (benchmarks/throughput.py
            # --timeline reads them from --verbose's log).
            log.debug("timeline: %d reader processes started", samples.workers)
            if predictor is None:
                from lstv.inference import load_predictor

                predictor, checkpoint_info = load_predictor(
                    config.checkpoint, config.device, sha256=digest
                )
            log.debug(
                "timeline: model loaded; %d of %d studies read ahead", samples.n_read(), len(todo)
            )
            if predictor.device.type == "cpu":
                samples.yield_to_model()  # the forward pass's threads get the cores first
            check_image_size(checkpoint_info, config.image_size)
            score = resolve_reference(
                config.reference, checkpoint_info.sha256, checkpoint_info.config
            )
            manifest = new_manifest(
                config, checkpoint_info, predictor.device, tasks, validated, score
            )
            check_resumable(run_dir, manifest)
            manifest.check_writable(run_dir.manifest_json)  # before any file is created
            if stop.requested is not None:  # stopped while starting: nothing was written
                raise RunInterrupted(stop.requested)
            # Accepted: only now may earlier failure rows of the studies to retry go.
            run_dir.keep_failures_except({str(t.study_id) for t in todo})
            log.info(
                "%d studies selected (part %d of %d), %d already done, %d to run on %s",
                len(tasks),
                config.part_id,
                config.num_parts,
                len(tasks) - len(todo),
                len(todo),
                predictor.device,
            )
            run = _Run(config, predictor, run_dir, manifest, score.reference)
            run.n_completed = len(tasks) - len(todo)
            _run_to_the_end(run, samples, len(todo), config, stop)
            log.debug("timeline: outputs written")
    return RunSummary(
        run_dir.path, len(tasks), len(tasks) - len(todo), run.n_completed, run.n_failed, validated
    )


def _check_checkpoint_exists(checkpoint: Path) -> None:
    """A missing checkpoint stops the run before it takes (and creates) the output folder."""
    if not Path(checkpoint).is_file():
        from lstv.errors import CheckpointNotFoundError
        from lstv.model import REAL_CHECKPOINT_HELP

        raise CheckpointNotFoundError(f"checkpoint not found: {checkpoint}. {REAL_CHECKPOINT_HELP}")


def _run_to_the_end(run: _Run, samples, n_todo: int, config: InferenceConfig, stop) -> None:
    """Run every sample, keeping the manifest true: running, then complete, interrupted or
    failed; SIGTERM ends in :class:`RunInterrupted` once what was written is whole."""
    run.write_manifest("running")
    status = "failed"
    try:
        _run_batches(run, samples, n_todo, config, stop)
        status = "complete" if stop.requested is None else "interrupted"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        run.close()
        if status == "complete" and run.reference is not None and run.n_completed:
            run.check_drift()  # (every study failed: no row to test)
        run.write_manifest(status)
    if stop.requested is not None:
        raise RunInterrupted(stop.requested)


def _run_batches(run: _Run, samples, n_todo: int, config: InferenceConfig, stop) -> None:
    from tqdm import tqdm

    pending: list[Sample] = []
    disable = config.quiet or not sys.stderr.isatty()
    items = iter(samples)
    with tqdm(total=n_todo, unit="study", desc="infer", disable=disable) as bar:
        while True:
            if stop.requested is not None:
                return  # the batch in hand is dropped: a rerun redoes it
            with stop.interruptible():  # waiting for a read: SIGTERM ends it at once
                item = next(items, None)
            if item is None:
                break
            if isinstance(item, Failure):
                run.fail(item)
                bar.update(1)
                continue
            pending.append(item)
            if len(pending) >= config.batch_size:
                run.finish_batch(pending)
                bar.update(len(pending))
                pending = []
        if pending:
            run.finish_batch(pending)
            bar.update(len(pending))


def check_image_size(checkpoint_info, image_size: int) -> None:
    trained = (checkpoint_info.config or {}).get("image_size", DEFAULT_IMAGE_SIZE)
    if int(trained) != int(image_size):
        log.warning(
            "the checkpoint was trained at %s px but --image_size is %s: entropy thresholds "
            "assume %s px maps",
            trained,
            image_size,
            DEFAULT_IMAGE_SIZE,
        )
