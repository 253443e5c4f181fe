"""Issue 9, run folder: nothing written is lost, a refused run changes nothing, one run owns
a folder, settings are checked up front, and a stopped or crashed run leaves a true manifest."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lstv.cli import main
from lstv.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]


def infer_args(data, out, checkpoint, *extra) -> list[str]:
    return [
        "infer",
        "--input_dir", str(data.images_dir),
        "--series_csv", str(data.series_csv),
        "--output_dir", str(out),
        "--checkpoint", str(checkpoint),
        "--valid_ids", str(data.valid_ids_path),
        "--mode", "prod",
        "--device", "cpu",
        "--num_workers", "0",
        "--quiet",
        *extra,
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def finished_run(tmp_path, phantom_dataset, tiny_checkpoint):
    """A finished run with one failure row (a study whose series folder is gone)."""
    out = tmp_path / "run"
    assert main(infer_args(phantom_dataset, out, tiny_checkpoint)) == 0
    RunDir(out).failures_appender().write(
        {"study_id": "123", "series_id": "4", "stage": "read", "error": "gone"}
    )
    return out


def test_report_on_the_audit_queue_keeps_the_reviewers_entries(finished_run, capsys):
    """9.1: the README's review loop used to wipe a radiologist's filled-in queue."""
    metrics = finished_run / "lstv_uncertainty_metrics.csv"
    report = finished_run / "report.html"
    assert main(["report", "--csv", str(metrics), "--output", str(report), "--quiet"]) == 0
    queue_path = finished_run / "audit_queue.csv"
    queue = rows(queue_path)
    reviewed = queue[0]["study_id"]
    queue[0].update(lstv="1", lstv_type="sacralization", reviewer="dr a", notes="TP fused")
    with open(queue_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(queue[0]))
        writer.writeheader()
        writer.writerows(queue)
    args = ["report", "--csv", str(metrics), "--output", str(report), "--quiet"]
    assert main([*args, "--labels", str(queue_path), "--audit_n", "1"]) == 0
    kept = {r["study_id"]: r for r in rows(queue_path)}
    assert kept[reviewed]["lstv_type"] == "sacralization"
    assert kept[reviewed]["reviewer"] == "dr a" and kept[reviewed]["notes"] == "TP fused"


def test_a_refused_rerun_changes_nothing(finished_run, phantom_dataset, tiny_checkpoint, capsys):
    """9.2 and 9.4: failure rows used to be pruned before the rerun was refused."""
    before = snapshot(finished_run)
    for extra in (["--image_size", "128"], ["--tta"], ["--flag_threshold", "3"]):
        code = main(infer_args(phantom_dataset, finished_run, tiny_checkpoint, *extra))
        assert code == 2
        assert "other settings" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_a_metrics_csv_of_another_version_is_refused_before_anything_is_written(
    finished_run, phantom_dataset, tiny_checkpoint, capsys
):
    metrics = finished_run / "lstv_uncertainty_metrics.csv"
    metrics.write_text("study_id,old_column\n1,2\n")
    before = snapshot(finished_run)
    assert main(infer_args(phantom_dataset, finished_run, tiny_checkpoint)) == 2
    assert "other columns" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_the_same_settings_resume_and_keep_the_other_failures(
    finished_run, phantom_dataset, tiny_checkpoint
):
    assert main(infer_args(phantom_dataset, finished_run, tiny_checkpoint)) == 0
    assert "123" in {r["study_id"] for r in rows(finished_run / "failures.csv")}


def test_report_output_may_not_overwrite_the_run_files(finished_run, capsys):
    """9.3: --output pointed at the metrics CSV or failures.csv replaced it with HTML."""
    metrics = finished_run / "lstv_uncertainty_metrics.csv"
    for target in (metrics, finished_run / "failures.csv", finished_run):
        before = snapshot(finished_run)
        assert main(["report", "--csv", str(metrics), "--output", str(target), "--quiet"]) == 2
        assert "error:" in capsys.readouterr().err
        assert snapshot(finished_run) == before


def test_phantom_into_a_folder_holding_a_dataset_is_refused(tmp_path, capsys):
    """9.3: lstv phantom overwrote the CSV and labels of a dataset already there."""
    args = ["phantom", "--output_dir", str(tmp_path / "p"), "--n_studies", "2", "--quiet"]
    assert main(args) == 0
    before = snapshot(tmp_path / "p")
    assert main([*args, "--seed", "5"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert snapshot(tmp_path / "p") == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--flag_threshold", "nan"], "finite"),
        (["--high_threshold", "inf"], "finite"),
        (["--image_size", "0"], "--image_size"),
        (["--batch_size", "0"], "--batch_size"),
        (["--num_parts", "2", "--part_id", "2"], "--part_id"),
    ],
)
def test_impossible_settings_are_refused_up_front(
    tmp_path, phantom_dataset, tiny_checkpoint, capsys, extra, message
):
    """9.7: NaN switched flagging off (and wrote invalid JSON); image_size 0 failed every study
    with exit 0."""
    out = tmp_path / "o"
    assert main(infer_args(phantom_dataset, out, tiny_checkpoint, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("ids", [np.array([], np.int64), np.array([1.5, 2.5], np.float32)])
def test_a_valid_id_file_that_matches_nothing_is_an_error(
    tmp_path, phantom_dataset, tiny_checkpoint, capsys, ids
):
    """9.7: float32 IDs or an empty array gave '0 of 0 studies' and exit 0."""
    path = tmp_path / "valid_id.npy"
    np.save(path, ids)
    args = infer_args(phantom_dataset, tmp_path / "o", tiny_checkpoint)
    args[args.index("--valid_ids") + 1] = str(path)
    assert main(args) == 2
    assert str(path) in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_a_clear_error(
    tmp_path, phantom_dataset, tiny_checkpoint, capsys
):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(infer_args(phantom_dataset, target, tiny_checkpoint)) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_merge_output_that_is_a_file_is_a_clear_error(finished_run, tmp_path, capsys):
    target = tmp_path / "merged"
    target.write_text("x")
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "part_000").symlink_to(finished_run)
    assert main(["merge", "--shards_dir", str(shards), "--output_dir", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_full_disk_while_the_manifest_is_written_keeps_the_old_one(finished_run, monkeypatch):
    import errno

    from lstv.rundir import Manifest

    run = RunDir(finished_run)
    before = run.manifest_json.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="cannot write .*run_manifest.json: No space left"):
        run.write_manifest(Manifest.from_json(run.manifest_json).replace(n_failed=9))
    assert run.manifest_json.read_bytes() == before
    assert not [p for p in finished_run.iterdir() if p.name.endswith(".tmp")]


def test_two_runs_on_one_folder_the_second_is_refused(tmp_path, phantom_dataset, tiny_checkpoint):
    """9.4: two processes on one folder wrote every study twice."""
    out = tmp_path / "o"
    with RunDir(out).lock():
        code = subprocess.run(
            [sys.executable, "-m", "lstv", *infer_args(phantom_dataset, out, tiny_checkpoint)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
    assert code.returncode == 2
    assert "in use by another lstv run" in code.stderr
    assert not (out / "lstv_uncertainty_metrics.csv").exists()


# lstv's own CLI, with each study taking 1.5 s to read, so the signal lands mid-run.
SLOW_READER_MAIN = """
import sys, time
import lstv.sample as sample
read = sample.SampleReader.__getitem__
sample.SampleReader.__getitem__ = lambda self, i: (time.sleep(1.5), read(self, i))[1]
from lstv.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.mark.slow
def test_sigterm_stops_cleanly_records_interrupted_and_stops_the_readers(
    tmp_path, phantom_dataset, tiny_checkpoint
):
    """9.10: a batch job's time limit sends SIGTERM; readers used to run on for a minute."""
    out = tmp_path / "o"
    args = infer_args(phantom_dataset, out, tiny_checkpoint, "--batch_size", "1")
    args[args.index("--num_workers") + 1] = "2"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_READER_MAIN, *args], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    manifest_path = out / "run_manifest.json"
    deadline = time.monotonic() + 120
    while not manifest_path.is_file() and time.monotonic() < deadline:  # the run has started
        time.sleep(0.2)
    readers = _children(proc.pid)
    assert readers, "the reader processes never started"
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "rerun the same command to resume" in err
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "interrupted" and manifest["finished_at"]
    time.sleep(1)
    assert not [p for p in readers if _alive(p)]
    # whatever was written is whole, and the same command resumes to the end
    assert main(infer_args(phantom_dataset, out, tiny_checkpoint)) == 0
    done = rows(out / "lstv_uncertainty_metrics.csv")
    failed = rows(out / "failures.csv")
    assert len(done) + len(failed) == len(np.load(phantom_dataset.valid_ids_path))
    assert len({r["study_id"] for r in done}) == len(done)


class KillingReader:
    """Reads like lstv's reader, but the process reading ``victim`` is SIGKILLed."""

    def __init__(self, tasks, images_dir, image_size, victim):
        from lstv.sample import SampleReader

        self.reader = SampleReader(tasks, images_dir, image_size)
        self.tasks, self.victim = tasks, victim

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        if self.tasks[i].study_id == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.reader[i]


def test_sigterm_while_starting_writes_nothing(tmp_path, phantom_dataset, tiny_checkpoint):
    """A job cancelled while the model loads: readers stop, nothing is written, exit 143."""
    out = tmp_path / "o"
    args = infer_args(phantom_dataset, out, tiny_checkpoint)
    args[args.index("--num_workers") + 1] = "2"
    code = STOP_AT_MODEL_LOAD + f"sys.exit(main({args!r}))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lstv.lock"]


# lstv's own CLI, with a SIGTERM arriving while the model loads.
STOP_AT_MODEL_LOAD = """
import os, signal, sys
import lstv.inference as inference
load = inference.load_predictor
def load_and_stop(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return load(*args, **kwargs)
inference.load_predictor = load_and_stop
from lstv.cli import main
"""


@pytest.mark.slow
def test_a_killed_reader_fails_only_its_study(tmp_path, phantom_dataset, tiny_checkpoint):
    """9.10: one reader killed (as the OOM killer would) aborted the batch with a traceback."""
    from lstv.sample import iter_samples
    from lstv.studies import study_tasks

    tasks = [t for t in study_tasks(phantom_dataset.series_csv) if t.series_id is not None]
    victim = tasks[2].study_id
    items = list(iter_samples(KillingReader(tasks, phantom_dataset.images_dir, 160, victim), 2))
    assert [i.task.study_id for i in items] == [t.study_id for t in tasks]
    failed = [i for i in items if not hasattr(i, "image")]
    assert [f.task.study_id for f in failed] == [victim]
    assert "reader process died" in failed[0].error
