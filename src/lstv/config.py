"""Settings of each command as frozen dataclasses: the one source of defaults and choices.

The CLI reads its defaults and choices from these classes (``lstv.cli``), the library functions
take them, and the manifest records them. Stdlib only, so ``lstv --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from lstv.levels import DEFAULT_IMAGE_SIZE

DEVICES = ("auto", "cpu", "cuda")
MODES = ("trial", "debug", "prod")
DEFAULT_CHECKPOINT = Path("models/point_net_checkpoint.pth")
DEFAULT_VALID_IDS = Path("models/valid_id.npy")
PHANTOM_CHECKPOINT = Path("models/phantom_point_net.pth")


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
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class ThresholdOverrides:
    """Risk-band thresholds given on the command line; None keeps the checkpoint's or run's."""

    flag_entropy: float | None = None
    high_entropy: float | None = None
    medium_entropy: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.given().items():
            if not math.isfinite(value):
                raise ValueError(f"threshold {name} must be a finite number, got {value}")

    def given(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class InferenceConfig:
    """Everything ``lstv infer`` needs; the CLI fills it from its flags."""

    input_dir: Path
    series_csv: Path
    output_dir: Path
    checkpoint: Path = DEFAULT_CHECKPOINT
    valid_ids: Path | None = DEFAULT_VALID_IDS
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
    threshold_overrides: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    reference: Path | None = None
    quiet: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        _check_choice("--mode", self.mode, MODES)
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--n_trial", self.n_trial, 1)
        _check_at_least("--batch_size", self.batch_size, 1)
        _check_at_least("--num_workers", self.num_workers, 0)
        _check_at_least("--image_size", self.image_size, 32)
        _check_at_least("--num_parts", self.num_parts, 1)
        if not 0 <= self.part_id < self.num_parts:
            raise ValueError(
                f"--part_id must be in 0..{self.num_parts - 1} for --num_parts "
                f"{self.num_parts}, got {self.part_id}"
            )
        if isinstance(self.threshold_overrides, dict):  # from a caller: validate it too
            overrides = ThresholdOverrides(**self.threshold_overrides)
            object.__setattr__(self, "threshold_overrides", overrides)


@dataclass(frozen=True)
class TrainConfig:
    """``lstv train``: a point net trained on normal phantoms."""

    data_dir: Path
    output: Path
    encoder: str = "resnet10t"
    image_size: int = DEFAULT_IMAGE_SIZE
    steps: int = 400
    batch_size: int = 12
    lr: float = 2e-3
    weight_decay: float = 1e-4
    background_weight: float = 0.05
    seed: int = 0
    disc_radius_mm: float = 5.0
    device: str = "auto"
    num_workers: int = 2
    quiet: bool = False
    init_from: Path | None = None  # start from this checkpoint's weights (fine-tuning)

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--steps", self.steps, 1)
        _check_at_least("--batch_size", self.batch_size, 1)
        _check_at_least("--image_size", self.image_size, 32)


@dataclass(frozen=True)
class DemoConfig:
    """``lstv demo``: phantoms -> infer -> report -> evaluate with the shipped localizer."""

    output_dir: Path = Path("data/output/demo")
    n_studies: int = 40
    lstv_fraction: float = 0.3
    seed: int = 2024
    checkpoint: Path | None = None  # None: the shipped phantom localizer
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--n_studies", self.n_studies, 1)


@dataclass(frozen=True)
class ServeConfig:
    """``lstv serve``: the web demo."""

    checkpoint: Path = PHANTOM_CHECKPOINT
    host: str = "127.0.0.1"  # this machine only, unless asked
    port: int = 5000
    max_upload_mb: int = 200
    device: str = "auto"
    reference: Path | None = None  # None: the checkpoint's own score reference, if any

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, DEVICES)
        _check_at_least("--max_upload_mb", self.max_upload_mb, 1)
