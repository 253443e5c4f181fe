"""``lstv infer``: selected studies -> read -> model input -> point net -> metrics -> outputs.

Reading runs in DataLoader workers (CPU), the forward pass in batches across studies (GPU or
CPU), and each study's row is appended as soon as it is done, so an interrupted run resumes.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lstv import __version__
from lstv.levels import DEFAULT_IMAGE_SIZE
from lstv.results import (
    FAILURE_COLUMNS,
    FAILURES_CSV,
    MANIFEST_JSON,
    METRIC_COLUMNS,
    METRICS_CSV,
    CsvAppender,
    completed_study_ids,
    metrics_row,
    prune_failures,
    save_heatmaps,
    write_json_atomic,
)
from lstv.studies import (
    StudyTask,
    filter_valid,
    load_valid_ids,
    read_series_table,
    sagittal_t2_tasks,
    select_mode,
    shard,
)
from lstv.uncertainty import (
    model_pixel_mm,
    mutual_information,
    resolve_thresholds,
    study_metrics,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceConfig:
    """Everything ``lstv infer`` needs; the CLI fills it from its flags."""

    input_dir: Path
    series_csv: Path
    output_dir: Path
    checkpoint: Path
    valid_ids: Path | None = None
    mode: str = "trial"
    n_trial: int = 10
    seed: int = 42
    debug_study_id: int | None = None
    device: str = "auto"
    batch_size: int = 16
    num_workers: int = 2
    num_parts: int = 1
    part_id: int = 0
    image_size: int = DEFAULT_IMAGE_SIZE
    save_heatmaps: bool = False
    tta: bool = False
    visualize: bool = False
    # Flag and band thresholds given on the command line (None: the checkpoint's, else the seed's).
    threshold_overrides: dict = field(default_factory=dict)
    quiet: bool = False
    command: str = ""


@dataclass(frozen=True)
class Sample:
    """What the reader hands the model for one study: the centre slice and its geometry."""

    task: StudyTask
    image: np.ndarray  # (S, S) uint8 model input
    slice_pixels: np.ndarray  # (H, W) uint8 original centre slice
    slice_index: int
    n_slices: int
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray

    @property
    def slice_shape(self) -> tuple[int, int]:
        return tuple(self.slice_pixels.shape)

    def pixel_to_patient(self, x: float, y: float) -> list[float]:
        from lstv.dicom import pixel_to_patient

        mm = pixel_to_patient(self.position, self.orientation, self.pixel_spacing, x, y)
        return [float(v) for v in mm]


@dataclass(frozen=True)
class Failure:
    task: StudyTask
    stage: str
    error: str


def read_sample(task: StudyTask, images_dir: Path, image_size: int) -> Sample:
    """Read one study's series and cut out the model's input. Raises on bad input."""
    from lstv.dicom import read_series
    from lstv.inference import model_input

    series = read_series(task.series_dir(images_dir))
    index = series.centre_index
    return Sample(
        task=task,
        image=model_input(series.volume[index], image_size),
        slice_pixels=series.volume[index],
        slice_index=index,
        n_slices=series.volume.shape[0],
        position=series.positions[index],
        orientation=series.orientations[index],
        pixel_spacing=series.pixel_spacings[index],
    )


class SampleReader:
    """Map-style dataset for a DataLoader: a Sample, or a Failure instead of raising."""

    def __init__(self, tasks: list[StudyTask], images_dir: Path, image_size: int):
        self.tasks = tasks
        self.images_dir = Path(images_dir)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> Sample | Failure:
        task = self.tasks[i]
        if task.series_id is None:
            return Failure(task, "select", "study has no sagittal T2 series")
        try:
            return read_sample(task, self.images_dir, self.image_size)
        except Exception as exc:  # one bad study must not stop the run
            return Failure(task, "read", f"{type(exc).__name__}: {exc}")


def _as_is(item):
    return item


def iter_samples(reader: SampleReader, num_workers: int):
    """Samples in task order, read by ``num_workers`` processes (0 = in this process)."""
    if num_workers <= 0 or len(reader) <= 1:
        yield from (reader[i] for i in range(len(reader)))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        reader,
        batch_size=None,
        shuffle=False,
        num_workers=min(num_workers, len(reader)),
        collate_fn=_as_is,
        prefetch_factor=4,
    )
    yield from loader


def select_tasks(config: InferenceConfig) -> tuple[list[StudyTask], bool]:
    """The studies this run (shard) is responsible for, and whether the valid-ID filter applied."""
    tasks = sagittal_t2_tasks(read_series_table(config.series_csv))
    valid_ids = load_valid_ids(config.valid_ids)
    if valid_ids is None:
        log.warning(
            "VALIDATION FILTER OFF: %s not found, so every study runs, including any the "
            "localizer was trained on. Results on training studies are optimistic.",
            config.valid_ids,
        )
    tasks = filter_valid(tasks, valid_ids)
    tasks = select_mode(tasks, config.mode, config.n_trial, config.seed, config.debug_study_id)
    return shard(tasks, config.num_parts, config.part_id), valid_ids is not None


def library_versions() -> dict[str, str]:
    import cv2
    import pydicom
    import timm
    import torch

    return {
        "python": platform.python_version(),
        "lstv": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def threshold_source(checkpoint_bands: dict | None, overrides: dict) -> str:
    """Where the run's bands came from, for the manifest."""
    base = "checkpoint config" if checkpoint_bands else "defaults (real checkpoint's scale)"
    given = sorted(k for k, v in overrides.items() if v is not None)
    return base + (f", overridden on the command line: {', '.join(given)}" if given else "")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _Run:
    """State of one inference run: writers, counters and the manifest."""

    def __init__(self, config: InferenceConfig, predictor, checkpoint_info, tasks, validated):
        self.config = config
        checkpoint_bands = (checkpoint_info.config or {}).get("risk_thresholds")
        self.thresholds = resolve_thresholds(checkpoint_bands, **config.threshold_overrides)
        self.predictor = predictor
        self.out = Path(config.output_dir)
        self.metrics = CsvAppender(self.out / METRICS_CSV, METRIC_COLUMNS)
        self.failures = CsvAppender(self.out / FAILURES_CSV, FAILURE_COLUMNS)
        self.n_completed = 0
        self.n_failed = 0
        self.manifest = {
            "command": config.command or " ".join(sys.argv),
            "lstv_version": __version__,
            "versions": library_versions(),
            "device": predictor.device.type,
            "checkpoint": {
                "path": checkpoint_info.path,
                "sha256": checkpoint_info.sha256,
                "config": checkpoint_info.config,
            },
            "image_size": config.image_size,
            "thresholds": asdict(self.thresholds),
            "thresholds_source": threshold_source(checkpoint_bands, config.threshold_overrides),
            "mode": config.mode,
            "seed": config.seed,
            "n_trial": config.n_trial,
            "num_parts": config.num_parts,
            "part_id": config.part_id,
            "tta": config.tta,
            "validation_filter": validated,
            "valid_ids": str(config.valid_ids) if config.valid_ids else None,
            "input_dir": str(config.input_dir),
            "series_csv": str(config.series_csv),
            "selected_study_ids": [t.study_id for t in tasks],
            "n_selected": len(tasks),
            "n_completed": 0,
            "n_failed": 0,
            "status": "running",
            "started_at": _now(),
            "finished_at": None,
        }

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
        try:
            probs = self.predictor(np.stack([s.image for s in samples]))
        except Exception as exc:
            for s in samples:
                self.fail(Failure(s.task, "model", f"{type(exc).__name__}: {exc}"))
            return
        for sample, p in zip(samples, probs, strict=True):
            try:
                self.finish_study(sample, p)
            except Exception as exc:
                self.fail(Failure(sample.task, "metrics", f"{type(exc).__name__}: {exc}"))

    def finish_study(self, sample: Sample, probs: np.ndarray) -> None:
        task = sample.task
        tta_mi = None
        if self.config.tta:
            # The batch forward already made the unshifted view's maps: reuse them.
            views = self.predictor.predict_views(sample.image, unshifted=probs)
            tta_mi = mutual_information(views)
        pixel_mm = model_pixel_mm(sample.pixel_spacing, sample.slice_shape, probs.shape[-2:])
        metrics = study_metrics(probs, pixel_mm)
        row = metrics_row(
            task.study_id,
            task.series_id,
            task.series_description,
            metrics,
            sample,
            self.thresholds,
            tta_mi,
        )
        if self.config.save_heatmaps or self.config.visualize:
            save_heatmaps(self.out, task.study_id, task.series_id, probs, sample)
        if self.config.visualize:
            from lstv.visualize import save_study_figures

            save_study_figures(
                self.out / "visualizations", sample, probs, metrics, row["risk_level"]
            )
        self.metrics.write(row)
        self.n_completed += 1

    def write_manifest(self, status: str) -> None:
        self.manifest.update(n_completed=self.n_completed, n_failed=self.n_failed, status=status)
        if status != "running":
            self.manifest["finished_at"] = _now()
        write_json_atomic(self.out / MANIFEST_JSON, self.manifest)

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


def run_inference(config: InferenceConfig, predictor=None, checkpoint_info=None) -> RunSummary:
    """Run the localizer over the selected studies and write the outputs.

    Args:
        config: the run's settings.
        predictor, checkpoint_info: an already loaded model (the web demo and tests reuse one);
            loaded from ``config.checkpoint`` when omitted.

    Raises:
        FileNotFoundError: ``input_dir``, the series CSV or the checkpoint is missing.
        ValueError: a malformed series CSV or impossible settings.
    """
    from tqdm import tqdm

    if not Path(config.input_dir).is_dir():
        raise FileNotFoundError(f"--input_dir not found: {config.input_dir}")
    tasks, validated = select_tasks(config)
    if predictor is None:
        predictor, checkpoint_info = load_predictor(config.checkpoint, config.device)
    check_image_size(checkpoint_info, config.image_size)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = completed_study_ids(out)
    todo = [t for t in tasks if t.study_id not in done]
    prune_failures(out, {t.study_id for t in todo})
    log.info(
        "%d studies selected (part %d of %d), %d already done, %d to run on %s",
        len(tasks),
        config.part_id,
        config.num_parts,
        len(tasks) - len(todo),
        len(todo),
        predictor.device,
    )
    run = _Run(config, predictor, checkpoint_info, tasks, validated)
    run.n_completed = len(tasks) - len(todo)
    run.write_manifest("running")
    status = "interrupted"
    try:
        reader = SampleReader(todo, config.input_dir, config.image_size)
        pending: list[Sample] = []
        bar = tqdm(
            total=len(todo),
            unit="study",
            desc="infer",
            disable=config.quiet or not sys.stderr.isatty(),
        )
        for item in iter_samples(reader, config.num_workers):
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
        bar.close()
        status = "complete"
    finally:
        run.write_manifest(status)
        run.close()
    return RunSummary(
        out, len(tasks), len(tasks) - len(todo), run.n_completed, run.n_failed, validated
    )


def load_predictor(checkpoint: Path, device: str = "auto"):
    """The checkpoint's model wrapped in a :class:`lstv.inference.Predictor`, and its info."""
    import torch

    from lstv.inference import Predictor, resolve_device
    from lstv.model import load_checkpoint

    torch.manual_seed(0)
    dev = resolve_device(device)
    model, info = load_checkpoint(checkpoint, device=dev)
    return Predictor(model, dev), info


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
