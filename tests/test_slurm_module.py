"""src/lstv/slurm.py without a cluster: settings, container choice, the lstv and sbatch command
lines, and the job chain built from ``sbatch --parsable`` output. (The real cluster runs the same
code in tests/test_slurm.py.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstv.slurm import (
    CONTAINER_CACHES,
    Runtime,
    Settings,
    SlurmError,
    Submitter,
    child_env,
    choose_runtime,
    container_path,
    lstv_command,
    parse_job_id,
    resource_args,
    run_lstv,
    run_step,
    sbatch_command,
    submitted_lines,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path) -> Path:
    path = tmp_path / "project"
    (path / "slurm_scripts").mkdir(parents=True)
    return path


def settings_for(project: Path, **env: str) -> Settings:
    return Settings.from_env(env, project)


def only(*tools: str):
    """A ``shutil.which`` that finds just ``tools``."""
    return lambda name: f"/usr/bin/{name}" if name in tools else None






@pytest.mark.parametrize(
    ("env", "tools", "image", "expected"),
    [
        ({}, ("apptainer",), False, ("host", "no container image at {image}")),
        ({}, ("apptainer", "singularity"), True, ("apptainer", "image {image}")),
        ({}, ("singularity",), True, ("singularity", "image {image}")),
        ({}, (), True, ("host", "no apptainer or singularity on PATH")),
        ({"LSTV_USE_CONTAINER": "0"}, ("apptainer",), True, ("host", "LSTV_USE_CONTAINER=0")),
    ],
)
def test_container_choice(project, env, tools, image, expected):
    if image:
        (project / "lstv.sif").write_bytes(b"sif")
    runtime = choose_runtime(settings_for(project, **env), which=only(*tools))
    tool, why = expected
    assert runtime == Runtime(tool, why.format(image=project / "lstv.sif"))
    assert runtime.in_container == (tool != "host")


@pytest.mark.parametrize(
    ("env", "image", "message"),
    [
        ({"LSTV_CONTAINER": "missing.sif"}, False, "container image not found: {project}"),
        ({"LSTV_USE_CONTAINER": "1"}, False, "container image not found: {project}/lstv.sif"),
        ({"LSTV_USE_CONTAINER": "1"}, True, "module load apptainer"),
        ({"LSTV_USE_CONTAINER": "maybe"}, True, "must be auto, 1 or 0, not 'maybe'"),
    ],
)
def test_container_required_but_unusable_is_an_error(project, env, image, message):
    if image:
        (project / "lstv.sif").write_bytes(b"sif")
    with pytest.raises(SlurmError, match=message.format(project=project)):
        choose_runtime(settings_for(project, **env), which=only())


def test_container_command_mounts_the_project_and_translates_paths(project, tmp_path):
    (project / "lstv.sif").write_bytes(b"sif")
    outside = tmp_path / "scratch"
    (outside / "train_images").mkdir(parents=True)
    (outside / "train_series_descriptions.csv").write_text("study_id\n")
    s = settings_for(project, LSTV_DATA_DIR=str(outside))
    runtime = choose_runtime(s, which=only("apptainer"))
    command = lstv_command(s, runtime, ["infer", "--output_dir", f"{project}/data/output/trial"])
    assert command == [
        *("apptainer", "exec", "--nv", "--bind", f"{project}:/work"),
        # Inputs outside the project, read-only at the same path; one bind for one folder.
        *("--bind", f"{outside}/train_images:{outside}/train_images:ro"),
        *("--bind", f"{outside}:{outside}:ro"),
        *("--pwd", "/work", "--env", CONTAINER_CACHES, str(project / "lstv.sif")),
        *("python", "-m", "lstv", "infer", "--output_dir", "/work/data/output/trial"),
    ]
    assert container_path(s, str(project)) == "/work"
    assert container_path(s, f"{project}x/y") == f"{project}x/y"


def test_host_command_is_the_chosen_python(project):
    s = settings_for(project, LSTV_PYTHON="/opt/py/bin/python")
    assert lstv_command(s, Runtime("host", "test"), ["merge", "--num_parts", "3"]) == [
        *("/opt/py/bin/python", "-m", "lstv", "merge", "--num_parts", "3")
    ]


def test_host_run_uses_the_python_that_has_lstv(project, capfd, caplog):
    s = settings_for(project, LSTV_PYTHON=sys.executable)
    with caplog.at_level(logging.INFO, logger="lstv.slurm"):
        run_lstv(s, Runtime("host", "no container image at x"), ["--version"], dict(os.environ))
    assert capfd.readouterr().out.startswith("lstv ")
    assert f"on the host (no container image at x): {sys.executable} -m lstv --version" in (
        caplog.text
    )


def test_host_python_without_lstv_says_what_to_do(project, tmp_path):
    python = tmp_path / "python-no-lstv"
    python.write_text("#!/bin/bash\nexit 1\n")
    python.chmod(0o755)
    s = settings_for(project, LSTV_PYTHON=str(python))
    with pytest.raises(SlurmError, match="cannot import lstv.*LSTV_PYTHON"):
        run_lstv(s, Runtime("host", "test"), ["--version"], {})


def test_failing_lstv_fails_the_step(project):
    s = settings_for(project, LSTV_PYTHON=sys.executable)
    with pytest.raises(SlurmError, match="lstv merge failed with exit code 2"):
        run_lstv(s, Runtime("host", "test"), ["merge", "--no_such_flag"], dict(os.environ))


def test_container_refuses_outputs_outside_the_project(project, tmp_path):
    s = settings_for(project, LSTV_OUTPUT_DIR=str(tmp_path / "out"))
    with pytest.raises(SlurmError, match="outside .* the only folder the container may write"):
        run_lstv(s, Runtime("singularity", "image x"), ["--version"], {})


def test_child_env_drops_only_the_scripts_pythonpath_entry(project):
    env = {"PYTHONPATH": f"{project}/slurm_scripts/../src:/opt/mine", "HOME": "/h"}
    assert child_env(env, project, LSTV_NUM_PARTS="3") == {
        "PYTHONPATH": "/opt/mine",
        "HOME": "/h",
        "LSTV_PROJECT_DIR": str(project),
        "LSTV_NUM_PARTS": "3",
    }
    assert "PYTHONPATH" not in child_env({"PYTHONPATH": f"{project}/src"}, project)


def test_resource_settings_become_sbatch_options():
    env = {
        "LSTV_PARTITION": "a100",
        "LSTV_CPU_PARTITION": "short",
        "LSTV_GRES": "gpu:a100:1",
        "LSTV_TIME": "02:00:00",
        "LSTV_MEM": "64G",
        "LSTV_SBATCH_ARGS": "--constraint=a100  --mail-type=FAIL",
    }
    assert resource_args(env, "gpu") == [
        *("--partition", "a100", "--gres", "gpu:a100:1", "--time", "02:00:00", "--mem", "64G"),
        *("--constraint=a100", "--mail-type=FAIL"),
    ]
    assert resource_args(env, "cpu") == [
        *("--partition", "short", "--mem", "64G", "--constraint=a100", "--mail-type=FAIL")
    ]
    assert resource_args({}, "gpu") == []


def test_sbatch_command_line(project):
    s = settings_for(project, LSTV_LOG_DIR="/scratch/logs")
    command = sbatch_command(
        s, {"LSTV_CPUS": "2"}, "cpu", "04_debug_single.sh", ["--dependency", "afterok:7"], ["42"]
    )
    assert command == [
        *("sbatch", "--parsable", "--chdir", str(project)),
        *("--output", "/scratch/logs/%x_%A_%a.out", "--error", "/scratch/logs/%x_%A_%a.err"),
        *("--export", "ALL", "--cpus-per-task", "2", "--dependency", "afterok:7"),
        *(str(project / "slurm_scripts" / "04_debug_single.sh"), "42"),
    ]


@pytest.mark.parametrize(("stdout", "job_id"), [("123\n", "123"), ("77;cluster-a\n", "77")])
def test_job_id_from_parsable_output(stdout, job_id):
    assert parse_job_id(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 5\n", ";cluster\n"])
def test_output_without_a_job_id_is_an_error(stdout):
    with pytest.raises(SlurmError, match="sbatch printed no job ID"):
        parse_job_id(stdout)


class FakeSbatch:
    """Answers like ``sbatch --parsable`` on a federated cluster (``ID;CLUSTER``), numbering
    jobs from 101; records each command line and the environment it got."""

    def __init__(self):
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, command, env=None, **_):
        self.calls.append((command, env))
        return subprocess.CompletedProcess(command, 0, f"{100 + len(self.calls)};c1\n", "")

    def options(self, i: int) -> dict[str, str]:
        """The sbatch options of call ``i`` after the common ones, and the script's name."""
        command = self.calls[i][0]
        script = next(j for j, arg in enumerate(command) if arg.endswith(".sh"))
        pairs = command[10:script]
        return {**dict(zip(pairs[::2], pairs[1::2], strict=True)), "script": command[script]}


def kaggle_ready(tmp_path: Path) -> dict[str, str]:
    """A token file (never read) and a Kaggle CLI on PATH: what the master checks first."""
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    (tmp_path / "home" / ".kaggle" / "kaggle.json").write_text("{}")
    (tmp_path / "home" / ".kaggle" / "kaggle.json").chmod(0o600)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kaggle").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "kaggle").chmod(0o755)
    return {"HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "bin")}


def test_pipeline_chains_the_jobs_by_their_ids(project, tmp_path):
    env = {**kaggle_ready(tmp_path), "PYTHONPATH": f"{project}/src"}
    sbatch = FakeSbatch()
    jobs = Submitter(settings_for(project, **env), env, run=sbatch).pipeline(False, "4003253")
    assert [(job.script, job.job_id) for job in jobs] == [
        ("01_download_data.sh", "101"),
        ("01b_download_model.sh", "102"),
        ("02_trial_inference.sh", "103"),
        ("03_prod_inference.sh", "104"),
        ("03b_merge_report.sh", "105"),
        ("04_debug_single.sh", "106"),
    ]
    scripts = project / "slurm_scripts"
    assert sbatch.options(0) == {"script": str(scripts / "01_download_data.sh")}
    assert sbatch.options(2)["--dependency"] == "afterok:101:102"
    assert sbatch.options(3) == {
        "--array": "0-7",
        "--dependency": "afterok:103",
        "script": str(scripts / "03_prod_inference.sh"),
    }
    assert sbatch.options(4)["--dependency"] == "afterok:104"
    assert sbatch.options(5)["--dependency"] == "afterok:103"
    assert sbatch.calls[5][0][-1] == "4003253"
    for command, job_env in sbatch.calls:
        assert command[:2] == ["sbatch", "--parsable"]
        assert job_env["LSTV_PROJECT_DIR"] == str(project)
        assert "PYTHONPATH" not in job_env
    # The shard count (default 8) travels with the prod and merge jobs, so a task rerun alone
    # still knows the split.
    parts = [job_env.get("LSTV_NUM_PARTS") for _, job_env in sbatch.calls]
    assert parts == [None, None, None, "8", "8", None]
    lines = submitted_lines(jobs, settings_for(project), {"USER": "ann"})
    assert lines[-2] == "job ids: 101 102 103 104 105 106"
    assert lines[-1].startswith("follow with: squeue -u ann;")


def test_pipeline_without_downloads_checks_the_inputs_first(project):
    sbatch = FakeSbatch()
    submitter = Submitter(settings_for(project), {}, run=sbatch)
    with pytest.raises(SlurmError, match="checkpoint not found: .*01b_download_model.sh"):
        submitter.pipeline(True)
    assert sbatch.calls == []


def test_pipeline_without_a_kaggle_token_submits_nothing(project, tmp_path):
    from lstv.download import DownloadError

    sbatch = FakeSbatch()
    env = {"HOME": str(tmp_path)}
    with pytest.raises(DownloadError, match="no Kaggle API token"):
        Submitter(settings_for(project), env, run=sbatch).pipeline(False)
    assert sbatch.calls == []


def test_rerun_of_some_tasks(project):
    sbatch = FakeSbatch()
    env = {"LSTV_NUM_PARTS": "8", "LSTV_ARRAY_INDICES": "3,5"}
    jobs = Submitter(settings_for(project), env, run=sbatch).prod()
    assert sbatch.options(0)["--array"] == "3,5"
    assert "--dependency" not in sbatch.options(0)
    assert sbatch.options(1)["--dependency"] == f"afterok:{jobs[0].job_id}"
    assert jobs[0].line() == "03_prod_inference.sh     job 101 (array of 8 shards, tasks 3,5)"


@pytest.mark.parametrize("parts", ["0", "two", "-1"])
def test_number_of_parts_must_be_positive(project, parts):
    with pytest.raises(
        SlurmError, match=f"LSTV_NUM_PARTS must be a positive integer, not '{parts}'"
    ):
        Submitter(settings_for(project), {"LSTV_NUM_PARTS": parts}, run=FakeSbatch()).prod()


def test_sbatch_missing_or_refusing_is_an_error(project):
    def missing(command, **_):
        raise FileNotFoundError(command[0])

    def refusing(command, **_):
        return subprocess.CompletedProcess(command, 1, "", "sbatch: error: invalid partition\n")

    with pytest.raises(SlurmError, match="sbatch not found: run this on a SLURM login node"):
        Submitter(settings_for(project), {}, run=missing).prod()
    with pytest.raises(SlurmError, match="sbatch refused 03_prod_inference.sh: .*partition"):
        Submitter(settings_for(project), {}, run=refusing).prod()


@pytest.mark.parametrize(
    ("step", "operands", "message"),
    [
        ("trial", ["x"], "trial takes 0 argument"),
        ("debug", ["1", "2"], "debug takes 1 argument"),
        ("check_model", ["a.pth"], "check_model takes 2 argument"),
        ("launch", [], "unknown step 'launch'"),
    ],
)
def test_step_arguments_are_checked(step, operands, message):
    with pytest.raises(SlurmError, match=message):
        run_step(step, operands, {})


def test_debug_needs_a_numeric_study(monkeypatch):
    monkeypatch.delenv("LSTV_DEBUG_STUDY_ID", raising=False)
    with pytest.raises(SlurmError, match="usage: sbatch slurm_scripts/04_debug_single.sh"):
        run_step("debug", ["abc"], {"LSTV_USE_CONTAINER": "0", "LSTV_PROJECT_DIR": str(REPO)})


@pytest.mark.parametrize("save", ["1", "0"])
def test_debug_runs_infer_with_save_heatmaps_once(project, monkeypatch, save):
    """04's pictures need heatmaps: the flag is there whatever LSTV_SAVE_HEATMAPS says, and
    only once, so the manifest records the command as it was meant."""
    import lstv.slurm

    data = project / "data/raw"
    (data / "train_images").mkdir(parents=True)
    (data / "train_series_descriptions.csv").write_text("study_id,series_id\n")
    (project / "models").mkdir()
    (project / "models/point_net_checkpoint.pth").write_bytes(b"x")
    calls = []
    monkeypatch.setattr(lstv.slurm, "run_lstv", lambda s, r, args, env: calls.append(args))
    settings = settings_for(project, LSTV_SAVE_HEATMAPS=save)
    lstv.slurm.run_debug(settings, Runtime("host", "test"), {}, "4003253")
    infer, report = calls
    assert infer[0] == "infer" and infer.count("--save_heatmaps") == 1
    assert infer[infer.index("--mode") + 1] == "debug"
    assert infer[infer.index("--debug_study_id") + 1] == "4003253"
    assert report[0] == "report"


def test_a_bad_checkpoint_size_limit_stops_step_01b_before_any_download(project, monkeypatch):
    from lstv import download, slurm

    fetched = []
    monkeypatch.setattr(download, "download_model", lambda *a, **k: fetched.append(a))
    env = {"LSTV_MIN_CHECKPOINT_MB": "100MB"}
    with pytest.raises(SlurmError, match="LSTV_MIN_CHECKPOINT_MB must be a whole number"):
        slurm.download_model(settings_for(project), env)
    assert fetched == []
