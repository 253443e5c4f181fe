"""Settings of each command as frozen dataclasses: the one home of defaults, choices and help.

Every ``lstv`` command has a config class here (:data:`COMMAND_CONFIGS`); the CLI generates its
flags from the fields (``--name``, type, default, choices and help from :func:`flag`), the
library functions take the configs or their defaults, and the manifest records them. Stdlib
only, so ``lstv --help`` stays instant and the login node's plain Python reads it for SLURM.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from lstv.errors import UsageError
from lstv.levels import DEFAULT_IMAGE_SIZE, DEFAULT_PARASAGITTAL, MAX_PARASAGITTAL

DEVICES = ("auto", "cpu", "cuda")
MODES = ("trial", "debug", "prod")
DEFAULT_CHECKPOINT = Path("models/point_net_checkpoint.pth")
DEFAULT_VALID_IDS = Path("models/valid_id.npy")
PHANTOM_CHECKPOINT = Path("models/phantom_point_net.pth")
# The score's flag threshold: this quantile of the reference's leave-one-out scores.
DEFAULT_TARGET_SPECIFICITY = 0.95
# Steps of ``lstv slurm``: one per script of slurm_scripts/ (lstv.slurm.SCRIPTS), and check_model.
SLURM_STEPS = (
    "master",
    "download_data",
    "download_model",
    "trial",
    "prod",
    "merge",
    "debug",
    "check_model",
)


def flag(
    default=dataclasses.MISSING,
    help: str = "",  # noqa: A002 - argparse's word
    *,
    choices: tuple | None = None,
    name: str | None = None,
    positional: bool = False,
    nargs: str | None = None,
    cli: bool = True,
    default_factory=dataclasses.MISSING,
):
    """A config field and how the CLI shows it: ``--{field}`` (or ``name``), its help text and
    choices; ``cli=False`` for a field the command sets itself (not a flag). A field with no
    default is a required flag."""
    metadata = {
        "help": help,
        "choices": choices,
        "name": name,
        "positional": positional,
        "nargs": nargs,
        "cli": cli,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def default(config_class: type, name: str):
    """The default of field ``name`` of a config dataclass (for the CLI's flags)."""
    f = config_class.__dataclass_fields__[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{config_class.__name__}.{name} has no default")


def from_namespace(config_class: type, namespace, **values):
    """A config from parsed flags: every field that the namespace holds, then ``values``."""
    names = config_class.__dataclass_fields__
    given = {k: v for k, v in vars(namespace).items() if k in names}
    return config_class(**{**given, **values})


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_parasagittal(value: int) -> None:
    _check_at_least("--parasagittal", value, 0)
    if value > MAX_PARASAGITTAL:
        raise UsageError(
            f"--parasagittal must be at most {MAX_PARASAGITTAL} slices each side, got {value}"
        )


@dataclass(frozen=True)
class ThresholdOverrides:
    """Risk-band thresholds given on the command line; None keeps the checkpoint's or run's."""

    flag_entropy: float | None = flag(
        None,
        "L5/S1 entropy above which a study is flagged (default: the bands of the checkpoint "
        "or run, else 5.0)",
        name="--flag_threshold",
    )
    high_entropy: float | None = flag(
        None,
        "L5/S1 entropy above which risk is High (default: likewise, else 5.5)",
        name="--high_threshold",
    )
    medium_entropy: float | None = flag(
        None,
        "L5/S1 entropy at or above which risk is Medium (default: likewise, else 4.0)",
        name="--medium_threshold",
    )

    def __post_init__(self) -> None:
        for name, value in self.given().items():
            if not math.isfinite(value):
                raise UsageError(f"threshold {name} must be a finite number, got {value}")

    def given(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


QUIET = flag(False, cli=False)  # every command's --quiet (the CLI adds it to all)


@dataclass(frozen=True)
class IndexConfig:
    """``lstv index``: any DICOM export -> a series CSV."""

    input_dir: Path = flag(
        help="a DICOM export: any folders, any file names (a DICOMDIR is used when present)"
    )
    output: Path = flag(
        help="series CSV to write (for lstv infer --series_csv); never a file of the export"
    )
    num_workers: int | None = flag(
        None, "header-reading processes (default: the CPU count, at most 8)"
    )
    quiet: bool = QUIET


@dataclass(frozen=True)
class InferenceConfig:
    """Everything ``lstv infer`` needs; the CLI fills it from its flags."""

    input_dir: Path = flag(help="folder of studies: {study_id}/{series_id}/{instance}.dcm")
    series_csv: Path = flag(
        help="train_series_descriptions.csv (study_id, series_id, series_description)"
    )
    output_dir: Path = flag(
        help="folder for the metrics CSV, failures.csv, the manifest and heatmaps; an "
        "interrupted run resumes in it"
    )
    checkpoint: Path = flag(
        DEFAULT_CHECKPOINT,
        f"point-net checkpoint (default {DEFAULT_CHECKPOINT}: the real hengck23 model)",
    )
    valid_ids: Path | None = flag(
        DEFAULT_VALID_IDS, "hold-out study IDs; without the file every study runs (with a warning)"
    )
    mode: str = flag(
        "trial",
        "trial: --n_trial sampled studies; debug: one study with figures; prod: every study",
        choices=MODES,
    )
    n_trial: int = flag(10, "studies in trial mode (%(default)s)")
    seed: int = flag(42, "trial sampling seed (%(default)s)")
    debug_study_id: int | None = flag(None, "study for debug mode (default: the first selected)")
    device: str = flag("auto", "auto: CUDA when torch sees a GPU, else the CPU", choices=DEVICES)
    batch_size: int = flag(16, "slices through the net at once")
    num_workers: int = flag(2, "DICOM reader processes")
    num_parts: int = flag(1, "split the studies into N shards")
    part_id: int = flag(0, "which shard to run (0-based)")
    image_size: int = flag(
        DEFAULT_IMAGE_SIZE, "the net's input side in pixels (a checkpoint's own config wins)"
    )
    save_heatmaps: bool = flag(False, "write heatmaps/{study_id}.npz with the probability maps")
    tta: bool = flag(
        False, "test-time shifted views: adds per-level mutual information ({level}_tta_mi)"
    )
    parasagittal: int = flag(
        DEFAULT_PARASAGITTAL,
        "also run the model on the K slices each side of the centre, in the same forward "
        "pass: adds the parasagittal_slices and *_para_* columns (default %(default)s; 0: off)",
    )
    visualize: bool = flag(False, cli=False)  # debug mode's figures
    threshold_overrides: ThresholdOverrides = flag(default_factory=ThresholdOverrides)
    reference: Path | None = flag(
        None,
        "score reference JSON (lstv calibrate) of this checkpoint: adds lstv_score, "
        "lstv_score_driver, lstv_score_flag (default: the checkpoint's own, if it carries one)",
    )
    quiet: bool = QUIET
    command: str = flag("", cli=False)  # the command line, for the manifest

    def __post_init__(self) -> None:
        _check_choice("--mode", self.mode, MODES)
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--n_trial", self.n_trial, 1)
        _check_at_least("--batch_size", self.batch_size, 1)
        _check_at_least("--num_workers", self.num_workers, 0)
        _check_at_least("--image_size", self.image_size, 32)
        _check_parasagittal(self.parasagittal)
        _check_at_least("--num_parts", self.num_parts, 1)
        if not 0 <= self.part_id < self.num_parts:
            raise UsageError(
                f"--part_id must be in 0..{self.num_parts - 1} for --num_parts "
                f"{self.num_parts}, got {self.part_id}"
            )
        if isinstance(self.threshold_overrides, dict):  # from a caller: validate it too
            overrides = ThresholdOverrides(**self.threshold_overrides)
            object.__setattr__(self, "threshold_overrides", overrides)


@dataclass(frozen=True)
class ReportConfig:
    """``lstv report``: the HTML report and the audit queue of a run."""

    csv: Path = flag(help="lstv_uncertainty_metrics.csv")
    output: Path = flag(help="HTML file to write")
    labels: Path | None = flag(
        None, "CSV with study_id, lstv (and optionally lstv_type): adds the ROC section"
    )
    data_dir: Path | None = flag(
        None, "train_images folder: candidate thumbnails from the original DICOM slice"
    )
    top_n: int = flag(20, "candidates shown (default %(default)s)")
    audit_n: int = flag(60, "studies in audit_queue.csv (default %(default)s)")
    threshold_overrides: ThresholdOverrides = flag(default_factory=ThresholdOverrides)
    quiet: bool = QUIET


@dataclass(frozen=True)
class EvaluateConfig:
    """``lstv evaluate``: ROC analysis against expert labels."""

    csv: Path = flag(help="a run's lstv_uncertainty_metrics.csv")
    labels: Path = flag(help="CSV with study_id, lstv (0/1) and optionally lstv_type")
    output_dir: Path = flag(help="folder for the evaluation JSON, CSV and ROC figure")
    n_bootstrap: int = flag(2000, "bootstrap resamples for the AUC's confidence interval")
    seed: int = flag(0, "seed of the bootstrap")
    fixed_threshold: float | None = flag(
        None,
        "L5/S1 entropy cut for sensitivity/specificity (default: the run's flag threshold "
        "from its manifest, else 5.0)",
    )
    quiet: bool = QUIET


@dataclass(frozen=True)
class CalibrateConfig:
    """``lstv calibrate``: fit the score's reference on a run's normal studies."""

    csv: Path = flag(help="a run's lstv_uncertainty_metrics.csv")
    output: Path = flag(help="reference JSON to write")
    labels: Path | None = flag(
        None,
        "study_id, lstv[, lstv_type] (a filled-in audit_queue.csv works): the reference is "
        "the studies labelled normal; without it, all studies (with a warning)",
    )
    target_specificity: float | None = flag(
        DEFAULT_TARGET_SPECIFICITY,
        "flag threshold at this quantile of the reference's leave-one-out scores "
        "(default 0.95: about 1 normal study in 20 goes to review by design; 1 = their maximum)",
    )
    rule: str = flag(
        "mahalanobis",
        "mahalanobis (score v2: robust Mahalanobis distance of the L5/S1 map features) "
        "or max_abs_z (score v1: largest robust |z| of ten map features)",
        choices=("mahalanobis", "max_abs_z"),
    )
    quiet: bool = QUIET


@dataclass(frozen=True)
class ScoreConfig:
    """``lstv score``: (re)write a finished run's score columns."""

    csv: Path = flag(
        help="a finished run's lstv_uncertainty_metrics.csv: its score columns are rewritten"
    )
    reference: Path = flag(
        help="reference JSON from lstv calibrate (or a checkpoint that carries one), fitted on "
        "the same checkpoint as the run"
    )
    quiet: bool = QUIET


@dataclass(frozen=True)
class MergeConfig:
    """``lstv merge``: join the outputs of sharded runs."""

    shards_dir: Path = flag(help="folder holding one part_* output folder per shard")
    output_dir: Path = flag(help="folder for the merged run (not one of the shards)")
    num_parts: int | None = flag(None, "shards expected (default: from the shards' manifests)")
    quiet: bool = QUIET


@dataclass(frozen=True)
class PhantomConfig:
    """``lstv phantom``: synthetic RSNA-layout DICOM studies with known labels."""

    output_dir: Path = flag(help="folder for the RSNA-layout dataset and its labels")
    n_studies: int = flag(20, "studies to write")
    lstv_fraction: float = flag(0.3, "share of transitional studies (sacralization, lumbarization)")
    seed: int = flag(0, "seed: the same seed writes the same files")
    valid_fraction: float = flag(
        0.25, "share of studies held out in valid_id.npy (default %(default)s)"
    )
    workers: int = flag(
        1, "processes writing studies in parallel; the files are the same for any count"
    )
    layout: str = flag(
        "rsna",
        "hospital: also copy the studies into hospital_export/ (nested folders, no "
        "extensions, DICOMDIR, vendor descriptions, one Enhanced MR) for lstv index",
        choices=("rsna", "hospital"),
    )
    quiet: bool = QUIET


@dataclass(frozen=True)
class TrainConfig:
    """``lstv train``: a point net trained on normal phantoms."""

    data_dir: Path = flag(help="RSNA-layout folder (e.g. from lstv phantom)")
    output: Path = flag(help="checkpoint to write")
    encoder: str = flag(
        "resnet10t", "timm ResNet encoder (built offline: resnet10t ... resnet200d)"
    )
    image_size: int = flag(DEFAULT_IMAGE_SIZE, "the net's input side in pixels")
    steps: int = flag(400, "optimiser steps")
    batch_size: int = flag(12, "slices per step")
    lr: float = flag(2e-3, "peak of the one-cycle schedule")
    weight_decay: float = flag(1e-4, cli=False)
    background_weight: float = flag(
        0.05, "cross-entropy weight of the background class (discs weigh 1)"
    )
    seed: int = flag(0, "seed of the weights, the sampling and the augmentation")
    disc_radius_mm: float = flag(
        5.0, "radius of the disc-shaped class mask around each label (default %(default)s mm)"
    )
    device: str = flag("auto", "auto: CUDA when torch sees a GPU, else the CPU", choices=DEVICES)
    num_workers: int = flag(2, "DICOM reader processes")
    quiet: bool = QUIET
    init_from: Path | None = flag(
        None, "start from the weights of this checkpoint (same encoder): fine-tuning"
    )

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--steps", self.steps, 1)
        _check_at_least("--batch_size", self.batch_size, 1)
        _check_at_least("--image_size", self.image_size, 32)


@dataclass(frozen=True)
class DemoConfig:
    """``lstv demo``: phantoms -> infer -> report -> evaluate with the shipped localizer."""

    output_dir: Path = flag(
        Path("data/output/demo"), "folder for the phantoms, the run, the report and the ROC"
    )
    n_studies: int = flag(40, "phantom studies to draw")
    lstv_fraction: float = flag(0.3, "share of transitional studies")
    seed: int = flag(2024, "seed of the phantoms")
    checkpoint: Path | None = flag(None, f"default: {PHANTOM_CHECKPOINT} shipped with the project")
    device: str = flag("auto", "auto: CUDA when torch sees a GPU, else the CPU", choices=DEVICES)
    quiet: bool = QUIET

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--n_studies", self.n_studies, 1)


@dataclass(frozen=True)
class ServeConfig:
    """``lstv serve``: the web demo."""

    checkpoint: Path = flag(PHANTOM_CHECKPOINT, "point-net checkpoint the demo analyses with")
    host: str = flag("127.0.0.1", "address to bind (default 127.0.0.1: this machine only)")
    port: int = flag(5000, "port to listen on")
    max_upload_mb: int = flag(200, "largest upload accepted, in MB")
    device: str = flag("auto", "auto: CUDA when torch sees a GPU, else the CPU", choices=DEVICES)
    reference: Path | None = flag(
        None, "score reference JSON of this checkpoint (lstv calibrate); default: its own"
    )

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--max_upload_mb", self.max_upload_mb, 1)


@dataclass(frozen=True)
class ReviewConfig:
    """``lstv review``: label a run's audit queue in a local web page, one key per study."""

    run_dir: Path = flag(help="an lstv infer output folder", positional=True)
    data_dir: Path | None = flag(None, "where its DICOM lies; default: the run's input folder")
    reviewer: str = flag("", "name written in the reviewer column")
    port: int = flag(8765, "port to listen on (this machine only)")
    blind: bool = flag(False, "hide the score until a verdict")
    quiet: bool = QUIET


@dataclass(frozen=True)
class SlurmConfig:
    """``lstv slurm STEP``: what the sbatch script of that name does (settings: ``LSTV_*``)."""

    step: str = flag(
        help="what the sbatch script of that name does",
        choices=SLURM_STEPS,
        positional=True,
    )
    operands: tuple = flag(
        (),
        "debug: the study ID (else LSTV_DEBUG_STUDY_ID); check_model: CHECKPOINT VALID_IDS",
        positional=True,
        nargs="*",
    )
    skip_download: bool = flag(
        False, "master: submit without the downloads (as LSTV_SKIP_DOWNLOAD=1)"
    )


# Each command's settings, in the order ``lstv --help`` lists the commands.
COMMAND_CONFIGS = {
    "index": IndexConfig,
    "infer": InferenceConfig,
    "report": ReportConfig,
    "evaluate": EvaluateConfig,
    "calibrate": CalibrateConfig,
    "score": ScoreConfig,
    "merge": MergeConfig,
    "phantom": PhantomConfig,
    "train": TrainConfig,
    "demo": DemoConfig,
    "serve": ServeConfig,
    "review": ReviewConfig,
    "slurm": SlurmConfig,
}
