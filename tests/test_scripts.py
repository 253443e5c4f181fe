"""Tests for slurm_scripts/ and docker/ as a user runs them: lint, layout, downloads without
credentials, the scripts' hand-over to ``lstv slurm`` (on a bare Python, into a container), and
that the Docker image and the Apptainer definition install the project's own requirements file.
The Python behind the scripts is tested alone in tests/test_slurm_module.py."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm_scripts"
SBATCH_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))
GPU_SCRIPTS = {"02_trial_inference.sh", "03_prod_inference.sh", "04_debug_single.sh"}
SECRET = "0123456789abcdef-not-a-real-kaggle-key"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment without SLURM, Kaggle or LSTV settings, with a fake HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "KAGGLE_", "LSTV_"))
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def run_script(name: str, env: dict[str, str], *args: str, timeout: float = 60):
    return subprocess.run(
        ["bash", str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=env.get("RUN_CWD", str(REPO)),
        timeout=timeout,
    )


def fake_tool(bin_dir: Path, name: str, body: str) -> Path:
    """An executable stand-in for an external program (kaggle, apptainer) that logs its call."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------------------ lint and layout
def test_every_script_is_found():
    names = {p.name for p in SBATCH_SCRIPTS}
    assert {
        "00_master_pipeline.sh",
        "00_master_pipeline_no_download.sh",
        "01_download_data.sh",
        "01b_download_model.sh",
        "02_trial_inference.sh",
        "03_prod_inference.sh",
        "03b_merge_report.sh",
        "04_debug_single.sh",
    } <= names


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_passes():
    files = [*sorted(SCRIPTS.glob("*.sh")), REPO / "docker" / "build_and_push.sh",
             REPO / "docker" / "build_buildah.sh"]
    result = subprocess.run(
        ["shellcheck", "-x", *map(str, files)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SBATCH_SCRIPTS, ids=lambda p: p.name)
def test_sbatch_header_and_strict_mode(script: Path):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    # sbatch stops reading #SBATCH at the first command: they must all come first.
    first_code = next(i for i, line in enumerate(lines[1:], 1) if line and not line.startswith("#"))
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert all(lines.index(d) < first_code for d in directives)
    assert lines[first_code] == "set -euo pipefail"
    options = dict(re.match(r"#SBATCH --([\w-]+)(?:=(.*))?", d).groups() for d in directives)
    assert options["output"] == "logs/%x_%A_%a.out"
    assert options["error"] == "logs/%x_%A_%a.err"
    for key in ("job-name", "time", "mem", "cpus-per-task"):
        assert options.get(key), f"{script.name} has no #SBATCH --{key}"
    if script.name in GPU_SCRIPTS:
        assert options["gres"] == "gpu:1"
        assert options["partition"] == "gpu"
    else:
        assert "gres" not in options


@pytest.mark.parametrize("script", SBATCH_SCRIPTS, ids=lambda p: p.name)
def test_script_is_a_header_and_one_call(script: Path):
    """The logic lives in src/lstv/slurm.py: a script finds the project and hands over."""
    code = [line for line in script.read_text().splitlines() if not line.startswith("#")]
    assert len(code) <= 6, code
    step = {
        "00_master_pipeline.sh": "master",
        "00_master_pipeline_no_download.sh": "master --skip_download",
        "01_download_data.sh": "download_data",
        "01b_download_model.sh": "download_model",
        "02_trial_inference.sh": "trial",
        "03_prod_inference.sh": "prod",
        "03b_merge_report.sh": "merge",
        "04_debug_single.sh": "debug",
    }[script.name]
    assert code[-1].endswith(f' -m lstv slurm {step} "$@"'), code[-1]
    from lstv.slurm import SCRIPTS as STEP_SCRIPTS

    assert STEP_SCRIPTS.get(step, script.name) == script.name


def test_readme_documents_every_setting():
    readme = (SCRIPTS / "README.md").read_text()
    used = set()
    readers = [*SCRIPTS.glob("*.sh"), REPO / "src/lstv/slurm.py", REPO / "src/lstv/download.py"]
    for path in readers:
        used |= set(re.findall(r"\bLSTV_[A-Z_]+\b", path.read_text()))
    assert {"LSTV_NUM_PARTS", "LSTV_CONTAINER", "LSTV_KAGGLE", "LSTV_HOST_PYTHON"} <= used
    missing = sorted(v for v in used if v not in readme)
    assert not missing, f"settings not documented in slurm_scripts/README.md: {missing}"


# ------------------------------------------------------------------------------ Docker
def test_dockerfile_installs_the_project_requirements():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    requirements = (REPO / "requirements.txt").read_text()

    copied = re.findall(r"^COPY\s+requirements\.txt\s+(\S+)", dockerfile, re.M)
    assert copied, "the Dockerfile does not copy the project's requirements.txt"
    installs = re.findall(r"pip install -r (\S+)", dockerfile)
    assert installs == copied, (installs, copied)
    assert re.search(r"pip install --no-deps /opt/lstv\b", dockerfile)
    assert "conda " not in dockerfile.replace("no conda", "")

    # Plain Debian (what tests/test_container.py makes by debootstrap): torch comes from
    # requirements.txt alone, and the build checks that the image holds only that one.
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.M).group(1)
    assert base == "docker.io/library/debian:bookworm-slim"
    assert "torch==" in dockerfile and "assert found == [pin]" in dockerfile
    for package in ("python-gdcm", "pylibjpeg"):
        assert re.search(rf"^{package}==", requirements, re.M), package


def test_docker_context_keeps_data_and_secrets_out():
    lines = [
        line.strip()
        for line in (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is excluded first, then only what the Dockerfile copies is let back in.
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"requirements.txt", "pyproject.toml", "README.md", "src"}
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", (REPO / "docker" / "Dockerfile").read_text(), re.M)
    assert {p for group in copied for p in group.split()} == allowed


def definition_sections(text: str) -> dict[str, list[str]]:
    """The ``%section`` bodies of an Apptainer definition file, without blanks and comments."""
    sections: dict[str, list[str]] = {}
    name = "header"
    for line in text.splitlines():
        if line.startswith("%"):
            name = line[1:].split()[0]
            sections.setdefault(name, [])
        elif line.strip() and not line.lstrip().startswith("#"):
            sections.setdefault(name, []).append(line.strip())
    return sections


def test_apptainer_definition_converts_the_dockerfile_image():
    """The .sif is the Dockerfile's image as it is: bootstrapped from its archive, nothing
    installed on top, so what tests/test_container.py ran is what the cluster runs."""
    text = (REPO / "docker" / "lstv.def").read_text()
    sections = definition_sections(text)
    header = dict(line.split(":", 1) for line in sections["header"])
    assert {k: v.strip() for k, v in header.items()} == {
        "Bootstrap": "docker-archive",
        "From": "lstv-image.tar",
    }
    assert set(sections) == {"header", "runscript", "test", "labels"}  # no %post, no %files
    assert sections["runscript"] == ['exec lstv "$@"']
    assert sections["test"] == ["lstv --version"]
    # The commands that make the archive, for Docker and for buildah.
    assert "docker save lstv-uncertainty-detection:0.1.0 -o lstv-image.tar" in text
    assert "docker-archive:lstv-image.tar" in text
    assert "/lstv-image.tar" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_apptainer_definition_scripts_pass_shellcheck(tmp_path):
    sections = definition_sections((REPO / "docker" / "lstv.def").read_text())
    for name in ("runscript", "test"):
        script = tmp_path / f"{name}.sh"
        script.write_text("#!/bin/sh\n" + "\n".join(sections[name]) + "\n")
        result = subprocess.run(
            ["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"%{name}:\n{result.stdout}"


# ------------------------------------------------------------------------------ downloads
@pytest.mark.parametrize("script", ["01_download_data.sh", "01b_download_model.sh"])
def test_download_without_credentials_stops_with_instructions(script, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(
        home,
        LSTV_DATA_DIR=str(tmp_path / "raw"),
        LSTV_CHECKPOINT=str(tmp_path / "models" / "point_net_checkpoint.pth"),
        LSTV_VALID_IDS=str(tmp_path / "models" / "valid_id.npy"),
    )
    result = run_script(script, env, timeout=30)
    assert result.returncode != 0
    assert f"no Kaggle API token at {home}/.kaggle/kaggle.json" in result.stderr
    assert "Create New Token" in result.stderr
    assert "chmod 600 ~/.kaggle/kaggle.json" in result.stderr
    # Stopped before touching anything.
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("script", ["01_download_data.sh", "01b_download_model.sh"])
def test_download_never_prints_or_copies_the_token(script, tmp_path):
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    token = home / ".kaggle" / "kaggle.json"
    token.write_text(json.dumps({"username": "tester", "key": SECRET}))
    token.chmod(0o644)  # readable by others: the script must warn, still without showing it
    calls = tmp_path / "kaggle_calls.txt"
    # The Kaggle CLI refuses, as it does before the competition rules are accepted.
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "kaggle", f'echo "$*" >>{calls}\necho "403 - Forbidden" >&2\nexit 1\n')
    work = tmp_path / "project_data"
    env = clean_env(
        home,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        LSTV_DATA_DIR=str(work / "raw"),
        LSTV_CHECKPOINT=str(work / "models" / "point_net_checkpoint.pth"),
        LSTV_VALID_IDS=str(work / "models" / "valid_id.npy"),
    )
    result = run_script(script, env, timeout=30)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert SECRET not in output
    assert "403 - Forbidden" in output
    assert f"{token} is readable by other users" in output
    if script == "01_download_data.sh":
        assert "rules" in output
        assert calls.read_text().split() == [
            "competitions",
            "download",
            "-c",
            "rsna-2024-lumbar-spine-degenerative-classification",
            "-p",
            str(work / "raw"),
        ]
    else:
        assert calls.read_text().split()[:4] == [
            "datasets",
            "download",
            "-d",
            "hengck23/rsna2024-demo-workflow",
        ]
    assert SECRET not in calls.read_text()
    for path in work.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


def test_download_data_is_skipped_when_complete(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / ".download_complete").write_text("2026-01-01T00:00:00Z\n")
    # No token, no Kaggle CLI: a finished download needs neither.
    env = clean_env(tmp_path, LSTV_DATA_DIR=str(raw))
    result = run_script("01_download_data.sh", env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stderr


# A stand-in for the Kaggle CLI: serves files from $FAKE_KAGGLE_FILES the way the real one
# lays them out (competition -> NAME.zip; dataset file -> FILE, or FILE.zip when large).
FAKE_KAGGLE = r"""
echo "$*" >>"$FAKE_KAGGLE_CALLS"
kind=$1; shift 2
while [[ $# -gt 0 ]]; do
  case $1 in
    -c | -d) name=$2; shift 2 ;;
    -f) file=$2; shift 2 ;;
    -p) dest=$2; shift 2 ;;
    *) shift ;;
  esac
done
mkdir -p "$dest"
if [[ $kind == competitions ]]; then
  cp "$FAKE_KAGGLE_FILES/competition.zip" "$dest/$name.zip"
elif [[ -f "$FAKE_KAGGLE_FILES/$file.zip" ]]; then
  cp "$FAKE_KAGGLE_FILES/$file.zip" "$dest/"
else
  cp "$FAKE_KAGGLE_FILES/$file" "$dest/"
fi
"""


def kaggle_env(tmp_path: Path, files: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True, exist_ok=True)
    token = home / ".kaggle" / "kaggle.json"
    token.write_text(json.dumps({"username": "tester", "key": SECRET}))
    token.chmod(0o600)
    fake_tool(tmp_path / "bin", "kaggle", FAKE_KAGGLE)
    return clean_env(
        home,
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        FAKE_KAGGLE_FILES=str(files),
        FAKE_KAGGLE_CALLS=str(tmp_path / "calls.txt"),
        LSTV_PYTHON=sys.executable,
        LSTV_USE_CONTAINER="0",
        **extra,
    )


def test_download_data_unpacks_checks_and_resumes(phantom_dataset, tmp_path):
    files = tmp_path / "served"
    files.mkdir()
    root = phantom_dataset.root
    members = sorted(p for p in root.rglob("*") if p.is_file())
    with zipfile.ZipFile(files / "competition.zip", "w") as zf:
        for p in members:
            zf.write(p, p.relative_to(root).as_posix())
    raw = tmp_path / "raw"
    # An earlier run that stopped half way: some files unpacked, one of them cut short.
    done = [p for p in members if p.suffix == ".dcm"][:5]
    for p in done:
        target = raw / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    truncated = raw / done[-1].relative_to(root)
    truncated.write_bytes(truncated.read_bytes()[:100])
    env = kaggle_env(tmp_path, files, LSTV_DATA_DIR=str(raw))

    result = run_script("01_download_data.sh", env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"extracted {len(members) - 4} files, 4 already there" in result.stderr
    n_series = len(read_series(phantom_dataset.series_csv))
    assert f"{len(phantom_dataset.study_ids)} studies, {n_series} series: complete" in result.stderr
    for p in members:
        assert (raw / p.relative_to(root)).read_bytes() == p.read_bytes()
    assert (raw / ".download_complete").is_file()
    assert not (raw / "rsna-2024-lumbar-spine-degenerative-classification.zip").exists()
    assert SECRET not in result.stdout + result.stderr

    # Run again: nothing is fetched.
    again = run_script("01_download_data.sh", env, timeout=30)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 1


def test_download_data_refuses_an_incomplete_set(phantom_dataset, tmp_path):
    files = tmp_path / "served"
    files.mkdir()
    root = phantom_dataset.root
    first = read_series(phantom_dataset.series_csv)[0]
    lost = phantom_dataset.images_dir / first["study_id"] / first["series_id"]
    with zipfile.ZipFile(files / "competition.zip", "w") as zf:
        for p in sorted(root.rglob("*")):
            # The archive lacks the images of one series.
            if p.is_file() and lost not in p.parents:
                zf.write(p, p.relative_to(root).as_posix())
    raw = tmp_path / "raw"
    result = run_script("01_download_data.sh", kaggle_env(tmp_path, files, LSTV_DATA_DIR=str(raw)))
    assert result.returncode != 0
    assert "series have no images" in result.stdout + result.stderr
    assert not (raw / ".download_complete").exists()


def read_series(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_download_model_checks_and_installs(original_layout_checkpoint, tmp_path):
    files = tmp_path / "served"
    files.mkdir()
    # Large single files come zipped from Kaggle.
    with zipfile.ZipFile(files / "00002484.pth.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.write(original_layout_checkpoint, "00002484.pth")
    ids = np.array([4003253, 4646740, 7143189], dtype=np.int64)
    np.save(files / "valid_id.npy", ids)
    models = tmp_path / "models"
    env = kaggle_env(
        tmp_path,
        files,
        LSTV_CHECKPOINT=str(models / "point_net_checkpoint.pth"),
        LSTV_VALID_IDS=str(models / "valid_id.npy"),
    )
    result = run_script("01b_download_model.sh", env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "load strictly into PointNet(resnet50d), iteration 2484" in result.stdout
    assert "valid ids ok: 3 study IDs (4003253..7143189)" in result.stdout
    assert (
        models / "point_net_checkpoint.pth"
    ).read_bytes() == original_layout_checkpoint.read_bytes()
    assert np.array_equal(np.load(models / "valid_id.npy"), ids)
    assert not (models / ".download").exists()

    again = run_script("01b_download_model.sh", env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already in place and valid" in again.stderr
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 2


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_download_model_rejects_a_checkpoint_that_is_not_the_localizer(tiny_checkpoint, tmp_path):
    files = tmp_path / "served"
    files.mkdir()
    shutil.copy(tiny_checkpoint, files / "00002484.pth")
    np.save(files / "valid_id.npy", np.array([1, 2], dtype=np.int64))
    models = tmp_path / "models"
    base = dict(
        LSTV_CHECKPOINT=str(models / "point_net_checkpoint.pth"),
        LSTV_VALID_IDS=str(models / "valid_id.npy"),
    )
    # Too small to be the 130 MB original.
    result = run_script("01b_download_model.sh", kaggle_env(tmp_path, files, **base))
    assert result.returncode != 0
    assert "expected about 130 MB" in result.stderr
    # Size check off: the strict load into the resnet50d point net still refuses it.
    result = run_script(
        "01b_download_model.sh",
        kaggle_env(tmp_path, files, LSTV_MIN_CHECKPOINT_MB="0", **base),
        timeout=300,
    )
    assert result.returncode != 0
    assert "does not match PointNet(encoder='resnet50d')" in result.stdout + result.stderr
    assert not (models / "point_net_checkpoint.pth").exists()
    assert not list((models / ".download").glob("*"))


# ------------------------------------------------------------------------------ argument checks
def test_debug_needs_a_study_id(tmp_path):
    result = run_script("04_debug_single.sh", clean_env(tmp_path), timeout=30)
    assert result.returncode != 0
    assert "usage: sbatch slurm_scripts/04_debug_single.sh <study_id>" in result.stderr


def test_prod_task_outside_the_split_is_refused_by_lstv(phantom_dataset, tiny_checkpoint, tmp_path):
    # Task 3 of a 3-part split: the script passes it on, and lstv's own shard check refuses
    # it before anything is written.
    env = clean_env(
        tmp_path,
        SLURM_JOB_ID="7",
        SLURM_ARRAY_TASK_ID="3",
        SLURM_ARRAY_TASK_COUNT="2",
        LSTV_NUM_PARTS="3",
        LSTV_PYTHON=sys.executable,
        LSTV_USE_CONTAINER="0",
        LSTV_INPUT_DIR=str(phantom_dataset.images_dir),
        LSTV_SERIES_CSV=str(phantom_dataset.series_csv),
        LSTV_VALID_IDS=str(phantom_dataset.valid_ids_path),
        LSTV_CHECKPOINT=str(tiny_checkpoint),
        LSTV_OUTPUT_DIR=str(tmp_path / "out"),
        LSTV_DEVICE="cpu",
    )
    result = run_script("03_prod_inference.sh", env, timeout=120)
    assert result.returncode != 0
    # lstv's message (the CLI's or studies.shard's), not one of the script's own.
    assert re.search(r"^error: .*part.*\b3\b", result.stderr, re.M), result.stderr
    assert "lstv infer failed" in result.stderr
    assert not (tmp_path / "out" / "prod" / "shards" / "part_003" / "run_manifest.json").exists()


def test_master_without_sbatch_says_so(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):  # what the script needs before Python; no sbatch
        (bin_dir / tool).symlink_to(shutil.which(tool))
    models = tmp_path / "models"
    models.mkdir()
    (models / "ckpt.pth").write_bytes(b"x")
    data = tmp_path / "raw"
    (data / "train_images").mkdir(parents=True)
    (data / "train_series_descriptions.csv").write_text("study_id,series_id,series_description\n")
    env = clean_env(
        tmp_path,
        PATH=str(bin_dir),
        LSTV_HOST_PYTHON=sys.executable,
        LSTV_DATA_DIR=str(data),
        LSTV_CHECKPOINT=str(models / "ckpt.pth"),
        LSTV_VALID_IDS="",
    )
    result = run_script("00_master_pipeline_no_download.sh", env, timeout=30)
    assert result.returncode != 0
    assert "sbatch not found" in result.stderr


# ------------------------------------------------------------------------------ hand-over to Python
def test_scripts_need_only_a_plain_python(tmp_path):
    """The login node's python3 runs `lstv slurm` from the project's src/ with the standard
    library alone (-S: no site-packages; lstv's dependencies may live in the image only)."""
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "sbatch_calls.txt"
    # sbatch --parsable on a federated cluster prints ID;CLUSTER.
    fake_tool(bin_dir, "sbatch", f'echo "$*" >>{calls}\necho "$((500 + $(wc -l <{calls})));c1"\n')
    bare = fake_tool(bin_dir, "python-bare", f'exec {sys.executable} -S "$@"\n')
    env = clean_env(
        tmp_path,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        LSTV_HOST_PYTHON=str(bare),
        LSTV_NUM_PARTS="3",
        LSTV_LOG_DIR=str(tmp_path / "logs"),
        RUN_CWD=str(tmp_path),  # submitted from outside the project
    )
    result = run_script("03_prod_inference.sh", env)
    assert result.returncode == 0, result.stderr
    assert "job ids: 501 502" in result.stdout
    array, merge = calls.read_text().splitlines()
    assert f"--chdir {REPO} " in array and "--array 0-2" in array
    assert array.endswith(f"{SCRIPTS}/03_prod_inference.sh")
    assert "--dependency afterok:501" in merge and merge.endswith("03b_merge_report.sh")


def test_trial_runs_lstv_in_the_container(tmp_path):
    image = tmp_path / "lstv.sif"
    image.write_bytes(b"not really an image")
    calls = tmp_path / "apptainer_calls.txt"
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "apptainer", f'printf "%s\\n" "$@" >>{calls}\necho ---- >>{calls}\n')
    data = tmp_path / "scratch"  # data outside the project
    (data / "train_images").mkdir(parents=True)
    (data / "train_series_descriptions.csv").write_text("study_id,series_id,series_description\n")
    (data / "ckpt.pth").write_bytes(b"x")
    env = clean_env(
        tmp_path,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        LSTV_CONTAINER=str(image),
        LSTV_DATA_DIR=str(data),
        LSTV_CHECKPOINT=str(data / "ckpt.pth"),
        LSTV_VALID_IDS="",
    )
    result = run_script("02_trial_inference.sh", env)
    assert result.returncode == 0, result.stderr
    assert f"in the container (apptainer, image {image}): python -m lstv infer" in result.stderr
    infer, report = (call.splitlines() for call in calls.read_text().split("----\n")[:2])
    assert infer[:4] == ["exec", "--nv", "--bind", f"{REPO}:/work"]
    assert ["--bind", f"{data}/train_images:{data}/train_images:ro"] == infer[4:6]
    assert infer[infer.index("--pwd") + 1] == "/work"
    assert infer[infer.index(str(image)) :][:5] == [str(image), "python", "-m", "lstv", "infer"]
    assert infer[infer.index("--output_dir") + 1] == "/work/data/output/trial"
    assert report[-7:] == [
        *("report", "--csv", "/work/data/output/trial/lstv_uncertainty_metrics.csv"),
        *("--output", "/work/data/output/trial/report.html", "--data_dir", f"{data}/train_images"),
    ]
