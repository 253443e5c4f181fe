"""The sbatch scripts on a real single-node SLURM cluster (tests/slurm_cluster.py).

Phantom studies go through ``00_master_pipeline_no_download.sh`` (trial -> 3-task prod array ->
merge + report) exactly as a user submits it; the merged table must hold every selected study
once and agree with a single-process ``lstv infer``. A second run cancels one array task while it
works, reruns it, and merges again. Skips, saying why, where Slurm or munge cannot start.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster
from slurm_cluster import SlurmCluster, start_or_skip

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINT = REPO / "models" / "phantom_point_net.pth"
NUM_PARTS = 3
JOB_TIMEOUT = 300  # seconds for one pipeline on a 2-core CI machine, with a wide margin
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = time.monotonic()
    c = start_or_skip(tmp_path_factory.mktemp("slurm"))
    print(f"cluster up in {time.monotonic() - started:.1f}s")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Fourteen phantom studies, most held out (the ones the pipeline must select): four or
    five per shard, so a task can be caught with some of its studies done and some not."""
    from lstv.phantom import write_phantom_dataset

    return write_phantom_dataset(
        tmp_path_factory.mktemp("phantom"),
        n_studies=14,
        lstv_fraction=0.3,
        seed=11,
        valid_fraction=0.9,
        progress=False,
    )


def test_cluster_runs_a_gpu_job(cluster, tmp_path):
    """The helper's cluster schedules a --gres=gpu:1 job on its GPU-less node."""
    out = tmp_path / "hello.out"
    job = cluster.sbatch(
        [
            "--gres=gpu:1",
            "--mem=100M",
            f"--output={out}",
            "--wrap",
            "echo host=$(hostname) gpus=$CUDA_VISIBLE_DEVICES",
        ]
    )
    assert cluster.wait([job], timeout=60) == {job: "COMPLETED"}
    assert out.read_text().strip() == f"host={socket.gethostname()} gpus=0"


def test_helper_skips_without_slurm(monkeypatch, tmp_path):
    monkeypatch.setattr(slurm_cluster, "REQUIRED_BINARIES", ("slurmctld", "no-such-daemon-xyz"))
    with pytest.raises(pytest.skip.Exception, match="no-such-daemon-xyz"):
        slurm_cluster.start_or_skip(tmp_path)


@pytest.fixture(scope="module")
def checkpoint(request) -> Path:
    """The localizer the project ships, else a random-weight one of the same family."""
    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT
    return request.getfixturevalue("tiny_checkpoint")


def pipeline_env(studies, checkpoint: Path, out: Path, logs: Path, **extra: str) -> dict:
    """Settings a user would export: data, model, outputs, small resources for a 2-CPU node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LSTV_", "KAGGLE_"))}
    env.update(
        LSTV_DATA_DIR=str(studies.root),
        LSTV_INPUT_DIR=str(studies.images_dir),
        LSTV_SERIES_CSV=str(studies.series_csv),
        LSTV_VALID_IDS=str(studies.valid_ids_path),
        LSTV_CHECKPOINT=str(checkpoint),
        LSTV_OUTPUT_DIR=str(out),
        LSTV_LOG_DIR=str(logs),
        LSTV_PYTHON=sys.executable,
        LSTV_DEVICE="cpu",
        LSTV_NUM_WORKERS="0",
        LSTV_BATCH_SIZE="4",
        LSTV_N_TRIAL="3",
        LSTV_NUM_PARTS=str(NUM_PARTS),
        LSTV_CPUS="1",
        LSTV_MEM="1500M",
        LSTV_TIME="00:15:00",
        # Two cores for everything: keep each job's torch to one thread.
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    if (REPO / "lstv.sif").exists():
        # A developer's image would pull the run into the container, where outputs in /tmp
        # are refused; here the host is under test.
        env["LSTV_USE_CONTAINER"] = "0"
    env.update(extra)
    return env


def submit(cluster: SlurmCluster, script: str, env: dict, cwd: Path) -> list[str]:
    """Run a submitting script with bash, as on a login node; return the job IDs it prints."""
    result = cluster.run(
        ["bash", str(REPO / "slurm_scripts" / script)], env=env, cwd=cwd, check=False
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("job ids:")]
    assert lines, f"{script} printed no job ids:\n{result.stdout}\n{result.stderr}"
    return lines[-1].split(":", 1)[1].split()


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def assert_same_metrics(merged: Path, single: Path) -> int:
    """Same columns, same studies, every value equal (numbers within TOLERANCE)."""
    cols_m, rows_m = read_csv(merged)
    cols_s, rows_s = read_csv(single)
    assert cols_m == cols_s
    assert [r["study_id"] for r in rows_m] == [r["study_id"] for r in rows_s]
    compared = 0
    for a, b in zip(rows_m, rows_s, strict=True):
        for col in cols_m:
            try:
                x, y = float(a[col]), float(b[col])
            except ValueError:
                assert a[col] == b[col], (a["study_id"], col, a[col], b[col])
                continue
            assert abs(x - y) <= TOLERANCE, (a["study_id"], col, x, y)
            compared += 1
    return compared


@pytest.fixture(scope="module")
def single_process(studies, checkpoint, tmp_path_factory) -> Path:
    """The reference: one ``lstv infer`` over all studies, no sharding, no Slurm."""
    out = tmp_path_factory.mktemp("single")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lstv",
            "infer",
            "--quiet",
            "--input_dir",
            str(studies.images_dir),
            "--series_csv",
            str(studies.series_csv),
            "--valid_ids",
            str(studies.valid_ids_path),
            "--checkpoint",
            str(checkpoint),
            "--mode",
            "prod",
            "--device",
            "cpu",
            "--num_workers",
            "0",
            "--batch_size",
            "4",
            "--output_dir",
            str(out),
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=REPO,
        timeout=JOB_TIMEOUT,
    )
    return out / "lstv_uncertainty_metrics.csv"


def selected_ids(studies) -> list[str]:
    """Held-out studies that have a sagittal T2 series: what the pipeline must cover."""
    with open(studies.series_csv, newline="") as f:
        with_t2 = {
            int(r["study_id"])
            for r in csv.DictReader(f)
            if "sagittal t2" in r["series_description"].lower()
        }
    return [str(s) for s in sorted(set(studies.valid_ids) & with_t2)]


def test_master_pipeline_on_a_cluster(cluster, studies, checkpoint, single_process, tmp_path):
    started = time.monotonic()
    out, logs = tmp_path / "output", tmp_path / "logs"
    elsewhere = tmp_path / "elsewhere"  # submitted from outside the project
    elsewhere.mkdir()
    env = pipeline_env(studies, checkpoint, out, logs)
    trial_id, array_id, merge_id = submit(
        cluster, "00_master_pipeline_no_download.sh", env, elsewhere
    )

    states = cluster.wait([trial_id, array_id, merge_id], timeout=JOB_TIMEOUT)
    expected = {
        trial_id: "COMPLETED",
        merge_id: "COMPLETED",
        **{f"{array_id}_{i}": "COMPLETED" for i in range(NUM_PARTS)},
    }
    assert states == expected, _logs_of(logs)

    # The chain held: each step started after the one it depends on ended.
    records = cluster.job_records([trial_id, array_id, merge_id])
    trial, merge = records[trial_id], records[merge_id]
    tasks = [records[f"{array_id}_{i}"] for i in range(NUM_PARTS)]
    assert all(t["StartTime"] >= trial["EndTime"] for t in tasks)
    assert merge["StartTime"] >= max(t["EndTime"] for t in tasks)
    assert all(t["TresPerNode"] == "gres:gpu:1" for t in tasks)  # each task held "a GPU"

    # Every selected study exactly once, equal to the single-process run.
    merged = out / "prod" / "lstv_uncertainty_metrics.csv"
    _, rows = read_csv(merged)
    ids = [r["study_id"] for r in rows]
    assert ids == selected_ids(studies)
    assert len(ids) == len(set(ids)) >= NUM_PARTS
    assert assert_same_metrics(merged, single_process) > 0

    manifest = json.loads((out / "prod" / "run_manifest.json").read_text())
    assert manifest["num_parts"] == NUM_PARTS
    assert [s["part_id"] for s in manifest["shards"]] == list(range(NUM_PARTS))
    assert sum(s["n_completed"] for s in manifest["shards"]) == len(ids)
    for part in range(NUM_PARTS):
        shard = json.loads(
            (out / "prod" / "shards" / f"part_{part:03d}" / "run_manifest.json").read_text()
        )
        assert (shard["num_parts"], shard["part_id"], shard["status"]) == (
            NUM_PARTS,
            part,
            "complete",
        )
    report = out / "prod" / "report.html"
    assert report.is_file() and report.stat().st_size > 1000
    assert len(list((out / "prod" / "heatmaps").glob("*.npz"))) == len(ids)

    _, trial_rows = read_csv(out / "trial" / "lstv_uncertainty_metrics.csv")
    assert len(trial_rows) == 3
    assert (out / "trial" / "report.html").is_file()

    # Logs where the submitter put them, named %x_%A_%a, saying where lstv ran.
    for part in range(NUM_PARTS):
        err = (logs / f"lstv_prod_{array_id}_{part}.err").read_text()
        assert f"shard {part} of {NUM_PARTS}" in err
        assert "on the host (" in err
        if not (REPO / "lstv.sif").exists():
            assert f"on the host (no container image at {REPO}/lstv.sif)" in err
    print(f"pipeline on the cluster: {time.monotonic() - started:.1f}s, {len(ids)} studies")


def test_cancelled_task_is_rerun_and_merged_once(
    cluster, studies, checkpoint, single_process, tmp_path
):
    started = time.monotonic()
    out, logs = tmp_path / "output", tmp_path / "logs"
    # One study per batch: rows land one by one, so the task can be caught half way.
    env = pipeline_env(studies, checkpoint, out, logs, LSTV_BATCH_SIZE="1")
    array_id, merge_id = submit(cluster, "03_prod_inference.sh", env, REPO)
    victim = 1
    shard = out / "prod" / "shards" / f"part_{victim:03d}"

    # Wait for the victim's first row, then cancel it while it still works.
    deadline = time.monotonic() + JOB_TIMEOUT
    while _rows_in(shard) < 1:
        assert time.monotonic() < deadline, _logs_of(logs)
        time.sleep(0.01)
    cluster.run(["scancel", f"{array_id}_{victim}"])
    states = cluster.wait([array_id, merge_id], timeout=JOB_TIMEOUT)
    assert states[f"{array_id}_{victim}"] == "CANCELLED", states
    assert states[merge_id] == "DEPENDENCY_FAILED", states
    done_before = _rows_in(shard)
    status = json.loads((shard / "run_manifest.json").read_text())["status"]
    n_part = len(selected_ids(studies)[victim::NUM_PARTS])
    assert status != "complete" and 1 <= done_before < n_part, (status, done_before, n_part)

    # The user's fix (slurm_scripts/README.md): drop the stuck merge, rerun the one task.
    cluster.run(["scancel", merge_id])
    rerun_id, merge2_id = submit(
        cluster, "03_prod_inference.sh", {**env, "LSTV_ARRAY_INDICES": str(victim)}, REPO
    )
    states = cluster.wait([rerun_id, merge2_id], timeout=JOB_TIMEOUT)
    assert states == {f"{rerun_id}_{victim}": "COMPLETED", merge2_id: "COMPLETED"}, _logs_of(logs)

    # It resumed: the studies already written were not run again.
    err = (logs / f"lstv_prod_{rerun_id}_{victim}.err").read_text()
    assert f"{done_before} already done, {n_part - done_before} to run" in err

    merged = out / "prod" / "lstv_uncertainty_metrics.csv"
    _, rows = read_csv(merged)
    ids = [r["study_id"] for r in rows]
    assert ids == selected_ids(studies)
    assert len(set(ids)) == len(ids)
    assert assert_same_metrics(merged, single_process) > 0
    print(
        f"cancel + rerun on the cluster: {time.monotonic() - started:.1f}s "
        f"(task {victim} cancelled after {done_before} of {n_part} studies)"
    )


def test_direct_sbatch_from_another_folder(cluster, studies, checkpoint, tmp_path):
    """``sbatch slurm_scripts/04_debug_single.sh ID`` from elsewhere: Slurm runs a spool copy of
    the script, which must still find the project (no LSTV_PROJECT_DIR given)."""
    out, logs = tmp_path / "output", tmp_path / "logs"
    logs.mkdir()
    env = pipeline_env(studies, checkpoint, out, logs)
    study = selected_ids(studies)[0]
    job = cluster.sbatch(
        [
            "--cpus-per-task=1",
            "--mem=1500M",
            f"--output={logs}/%x_%A_%a.out",
            f"--error={logs}/%x_%A_%a.err",
            str(REPO / "slurm_scripts" / "04_debug_single.sh"),
            study,
        ],
        cwd=tmp_path,
        env=env,
    )
    states = cluster.wait([job], timeout=JOB_TIMEOUT)
    assert states == {job: "COMPLETED"}, _logs_of(logs)
    err = (logs / f"lstv_debug_{job}_4294967294.err").read_text()
    assert f", project {REPO}\n" in err
    _, rows = read_csv(out / "debug" / study / "lstv_uncertainty_metrics.csv")
    assert [r["study_id"] for r in rows] == [study]
    figures = list((out / "debug" / study / "visualizations").rglob("*.png"))
    assert figures, sorted(p.name for p in (out / "debug" / study).rglob("*"))
    assert (out / "debug" / study / "heatmaps" / f"{study}.npz").is_file()


def _rows_in(shard: Path) -> int:
    path = shard / "lstv_uncertainty_metrics.csv"
    if not path.is_file():
        return 0
    return max(0, sum(1 for line in path.read_text().splitlines() if line.strip()) - 1)


def _logs_of(logs: Path) -> str:
    """Job logs, for the message of a failed assertion."""
    if not logs.is_dir():
        return "(no logs)"
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.iterdir())
    )


@pytest.mark.container
def test_trial_job_runs_lstv_in_the_image(cluster, studies, checkpoint, single_process, tmp_path):
    """The scripts' container branch for real: ``sbatch 02_trial_inference.sh`` with an image
    and ``singularity`` on PATH (here the built OCI image, run by buildah through
    tests/buildah_exec.sh), so lstv infer and report run inside the image on the cluster."""
    import container_image

    container_image.image_or_skip(pytest)
    image_file = tmp_path / "lstv.sif"  # what lstv slurm sees as the image: the OCI image's name
    image_file.write_text(container_image.IMAGE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "singularity").symlink_to(REPO / "tests" / "buildah_exec.sh")
    logs = tmp_path / "logs"
    logs.mkdir()
    # The container writes only into the project (bound at /work): a folder of its own there.
    out = REPO / "data" / "output" / f"test-container-{os.getpid()}"
    env = pipeline_env(
        studies, checkpoint, out, logs,
        LSTV_CONTAINER=str(image_file),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    env.pop("LSTV_USE_CONTAINER", None)
    env.pop("LSTV_PYTHON", None)  # the image's python, not the host's
    try:
        job = cluster.sbatch(
            [
                "--cpus-per-task=1",
                "--mem=3G",
                f"--output={logs}/%x_%A_%a.out",
                f"--error={logs}/%x_%A_%a.err",
                str(REPO / "slurm_scripts" / "02_trial_inference.sh"),
            ],
            cwd=tmp_path,
            env=env,
        )
        states = cluster.wait([job], timeout=JOB_TIMEOUT)
        assert states == {job: "COMPLETED"}, _logs_of(logs)
        err = (logs / f"lstv_trial_{job}_4294967294.err").read_text()
        runs = [line.split(": python -m lstv ", 1) for line in err.splitlines()
                if ": python -m lstv " in line]
        assert [(where[-len(f"in the container (singularity, image {image_file})"):],
                 command.split()[0]) for where, command in runs] == [
            (f"in the container (singularity, image {image_file})", "infer"),
            (f"in the container (singularity, image {image_file})", "report"),
        ], err
        # The image's rows equal the host's single-process rows of the same studies.
        _, trial = read_csv(out / "trial" / "lstv_uncertainty_metrics.csv")
        cols, host = read_csv(single_process)
        host_by_id = {r["study_id"]: r for r in host}
        assert len(trial) == 3
        compared = 0
        for row in trial:
            reference = host_by_id[row["study_id"]]
            for col in cols:
                try:
                    x, y = float(row[col]), float(reference[col])
                except ValueError:
                    assert row[col] == reference[col], (row["study_id"], col)
                    continue
                assert abs(x - y) <= TOLERANCE or (x != x and y != y), (row["study_id"], col, x, y)
                compared += 1
        assert compared > 100
        assert (out / "trial" / "report.html").stat().st_size > 1000
    finally:
        shutil.rmtree(out, ignore_errors=True)
