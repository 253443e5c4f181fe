"""The sbatch scripts' settings: the ``LSTV_*`` environment variables read once into
:class:`Settings`, with the defaults of ``lstv infer`` (:class:`lstv.config.InferenceConfig`) and
the run folder's file names (:mod:`lstv.rundir`). Standard library only, like :mod:`lstv.slurm`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lstv.config import InferenceConfig
from lstv.rundir import METRICS_CSV, REPORT_HTML

log = logging.getLogger("lstv.slurm")

_INFER = InferenceConfig  # the defaults the scripts share with lstv infer


class SlurmError(RuntimeError):
    """A step cannot go on; the message says what to do."""


def is_on(value: str | None) -> bool:
    return value == "1"


def positive_int(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise SlurmError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def whole_number(name: str, value: str) -> int:
    """A count that may be 0 (``LSTV_MIN_CHECKPOINT_MB=0`` turns the size check off)."""
    if not value.isdigit():
        raise SlurmError(f"{name} must be a whole number (0 or more), not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """The scripts' settings, read once from the environment; paths absolute.

    Relative paths are relative to the project, wherever the job starts. ``valid_ids`` None
    means "no hold-out filter" (``LSTV_VALID_IDS=`` set empty).
    """

    project_dir: Path
    data_dir: Path
    input_dir: Path
    series_csv: Path
    output_dir: Path
    checkpoint: Path
    valid_ids: Path | None
    log_dir: Path
    container: Path
    container_chosen: bool
    use_container: str = "auto"
    python: str = "python3"
    device: str = _INFER.device
    batch_size: str = str(_INFER.batch_size)
    num_workers: str = str(_INFER.num_workers)
    n_trial: str = str(_INFER.n_trial)
    seed: str = str(_INFER.seed)
    save_heatmaps: bool = True
    extra_args: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], project_dir: Path) -> Settings:
        """Read the ``LSTV_*`` settings; an empty value means the default, as in the scripts."""
        project = Path(project_dir).resolve()

        def path(name: str, default: str | Path) -> Path:
            return project / (env.get(name) or default)  # an absolute value replaces project

        data_dir = path("LSTV_DATA_DIR", "data/raw")
        valid_ids = env.get("LSTV_VALID_IDS", str(_INFER.valid_ids))
        return cls(
            project_dir=project,
            data_dir=data_dir,
            input_dir=path("LSTV_INPUT_DIR", data_dir / "train_images"),
            series_csv=path("LSTV_SERIES_CSV", data_dir / "train_series_descriptions.csv"),
            output_dir=path("LSTV_OUTPUT_DIR", "data/output"),
            checkpoint=path("LSTV_CHECKPOINT", _INFER.checkpoint),
            valid_ids=project / valid_ids if valid_ids else None,
            log_dir=path("LSTV_LOG_DIR", "logs"),
            container=path("LSTV_CONTAINER", "lstv.sif"),
            container_chosen=bool(env.get("LSTV_CONTAINER")),
            use_container=env.get("LSTV_USE_CONTAINER") or "auto",
            python=env.get("LSTV_PYTHON") or "python3",
            device=env.get("LSTV_DEVICE") or cls.device,
            batch_size=env.get("LSTV_BATCH_SIZE") or cls.batch_size,
            num_workers=env.get("LSTV_NUM_WORKERS")
            or env.get("SLURM_CPUS_PER_TASK")
            or cls.num_workers,
            n_trial=env.get("LSTV_N_TRIAL") or cls.n_trial,
            seed=env.get("LSTV_SEED") or cls.seed,
            save_heatmaps=(env.get("LSTV_SAVE_HEATMAPS") or "1") == "1",
            extra_args=tuple((env.get("LSTV_EXTRA_ARGS") or "").split()),
        )

    def infer_args(self) -> list[str]:
        """The flags every ``lstv infer`` of the scripts shares.

        No hold-out filter is ``--valid_ids /dev/null``: "no such file" to lstv.
        """
        args = [
            *("--input_dir", str(self.input_dir), "--series_csv", str(self.series_csv)),
            *("--checkpoint", str(self.checkpoint)),
            *("--valid_ids", str(self.valid_ids or "/dev/null")),
            *("--device", self.device, "--batch_size", self.batch_size),
            *("--num_workers", self.num_workers, "--seed", self.seed),
        ]
        if self.save_heatmaps:
            args.append("--save_heatmaps")
        return [*args, *self.extra_args]

    def report_args(self, out: Path) -> list[str]:
        """``lstv report`` of the run in ``out``."""
        return [
            "report",
            *("--csv", str(out / METRICS_CSV)),
            *("--output", str(out / REPORT_HTML), "--data_dir", str(self.input_dir)),
        ]

    def require_inputs(self) -> None:
        """Fail early, naming the step that makes the missing file, not deep inside Python."""
        if not self.checkpoint.is_file():
            raise SlurmError(
                f"checkpoint not found: {self.checkpoint} "
                "(run slurm_scripts/01b_download_model.sh, or set LSTV_CHECKPOINT)"
            )
        if not self.series_csv.is_file():
            raise SlurmError(
                f"series table not found: {self.series_csv} "
                "(run slurm_scripts/01_download_data.sh, or set LSTV_DATA_DIR)"
            )
        if not self.input_dir.is_dir():
            raise SlurmError(
                f"image folder not found: {self.input_dir} "
                "(run slurm_scripts/01_download_data.sh, or set LSTV_DATA_DIR / LSTV_INPUT_DIR)"
            )
        if self.valid_ids is not None and not self.valid_ids.is_file():
            log.warning(
                "%s not found: every study runs, with no hold-out filter (run "
                "01b_download_model.sh, or set LSTV_VALID_IDS= to silence this)",
                self.valid_ids,
            )


def find_project(env: Mapping[str, str]) -> Path:
    """The project folder: the one this module is in (the scripts put its ``src/`` first on
    ``PYTHONPATH``), else ``LSTV_PROJECT_DIR`` (an installed lstv)."""
    for candidate in (Path(__file__).resolve().parents[2], env.get("LSTV_PROJECT_DIR")):
        if candidate and (Path(candidate) / "slurm_scripts").is_dir():
            return Path(candidate).resolve()
    raise SlurmError("cannot find the project folder (with slurm_scripts/); set LSTV_PROJECT_DIR")
