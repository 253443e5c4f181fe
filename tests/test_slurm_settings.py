"""The sbatch scripts' settings (lstv.slurm_settings): LSTV_* variables with lstv infer's defaults
and the run folder's file names, the inputs checked before a job, the project folder found."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstv.config import InferenceConfig
from lstv.rundir import METRICS_CSV, REPORT_HTML
from lstv.slurm_settings import (
    Settings,
    SlurmError,
    find_project,
    is_on,
    positive_int,
    whole_number,
)


@pytest.fixture
def project(tmp_path) -> Path:
    """The settings need no slurm_scripts/ (finding the project does)."""
    return tmp_path / "project"


def settings_for(project: Path, **env: str) -> Settings:
    return Settings.from_env(env, project)


def test_defaults_are_relative_to_the_project(project):
    s = settings_for(project)
    assert s.input_dir == project / "data/raw/train_images"
    assert s.series_csv == project / "data/raw/train_series_descriptions.csv"
    assert s.output_dir == project / "data/output"
    assert s.checkpoint == project / "models/point_net_checkpoint.pth"
    assert s.valid_ids == project / "models/valid_id.npy"
    assert s.container == project / "lstv.sif" and not s.container_chosen
    assert s.log_dir == project / "logs"


def test_infer_arguments_from_the_settings(project, tmp_path):
    data = tmp_path / "scratch"
    s = settings_for(
        project,
        LSTV_DATA_DIR=str(data),
        LSTV_CHECKPOINT="ckpt.pth",
        LSTV_VALID_IDS="",  # no hold-out filter
        LSTV_DEVICE="cpu",
        SLURM_CPUS_PER_TASK="6",
        LSTV_SAVE_HEATMAPS="0",
        LSTV_EXTRA_ARGS="--tta  --quiet",
    )
    assert s.infer_args() == [
        *("--input_dir", f"{data}/train_images"),
        *("--series_csv", f"{data}/train_series_descriptions.csv"),
        *("--checkpoint", f"{project}/ckpt.pth", "--valid_ids", "/dev/null"),
        *("--device", "cpu", "--batch_size", "16", "--num_workers", "6", "--seed", "42"),
        *("--tta", "--quiet"),
    ]
    s = settings_for(project, SLURM_CPUS_PER_TASK="6", LSTV_NUM_WORKERS="3")
    assert s.infer_args()[-5:] == ["--num_workers", "3", "--seed", "42", "--save_heatmaps"]


def test_the_defaults_are_lstv_infers():
    """One home for a default: the scripts' batch size, workers, trial size and seed are
    InferenceConfig's, not copies that could drift."""
    s = Settings.from_env({}, Path("/p"))
    infer = InferenceConfig
    assert (s.device, s.batch_size, s.num_workers, s.n_trial, s.seed) == (
        infer.device,
        str(infer.batch_size),
        str(infer.num_workers),
        str(infer.n_trial),
        str(infer.seed),
    )


def test_report_arguments_use_the_run_folder_s_file_names(project, tmp_path):
    out = tmp_path / "run"
    args = settings_for(project).report_args(out)
    assert args[:3] == ["report", "--csv", str(out / METRICS_CSV)]
    assert args[3:5] == ["--output", str(out / REPORT_HTML)]
    assert args[5:] == ["--data_dir", str(project / "data/raw/train_images")]


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("0", False), ("", False), (None, False), ("yes", False)]
)
def test_a_switch_is_on_only_when_1(value, on):
    assert is_on(value) is on


def test_a_count_must_be_a_positive_whole_number():
    assert positive_int("LSTV_NUM_PARTS", "12") == 12
    for bad in ("0", "-3", "2.5", "", "x"):
        with pytest.raises(
            SlurmError, match=f"LSTV_NUM_PARTS must be a positive integer, not {bad!r}"
        ):
            positive_int("LSTV_NUM_PARTS", bad)


def test_a_size_limit_may_be_zero_but_must_be_a_whole_number():
    assert whole_number("LSTV_MIN_CHECKPOINT_MB", "0") == 0
    assert whole_number("LSTV_MIN_CHECKPOINT_MB", "100") == 100
    for bad in ("-1", "1e2", "", "100MB"):
        with pytest.raises(
            SlurmError, match=f"LSTV_MIN_CHECKPOINT_MB must be a whole number .*{bad!r}"
        ):
            whole_number("LSTV_MIN_CHECKPOINT_MB", bad)


def test_missing_inputs_name_the_script_that_makes_them(project, caplog):
    s = settings_for(project)
    with pytest.raises(SlurmError, match="checkpoint not found.*01b_download_model.sh"):
        s.require_inputs()
    s.checkpoint.parent.mkdir(parents=True)
    s.checkpoint.write_bytes(b"x")
    with pytest.raises(SlurmError, match="series table not found.*01_download_data.sh"):
        s.require_inputs()
    s.series_csv.parent.mkdir(parents=True)
    s.series_csv.write_text("study_id,series_id,series_description\n")
    with pytest.raises(SlurmError, match="image folder not found"):
        s.require_inputs()
    s.input_dir.mkdir()
    s.require_inputs()  # no valid_id.npy: a warning, every study runs
    assert "no hold-out filter" in caplog.text


def test_the_project_folder_is_found_from_the_environment(tmp_path):
    here = find_project({})  # this checkout holds slurm_scripts/
    assert (here / "slurm_scripts").is_dir()
    assert find_project({"LSTV_PROJECT_DIR": str(tmp_path)}) == here  # the checkout comes first
