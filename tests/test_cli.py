import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import infer_args
from lstv.cli import main
from lstv.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


def test_help_is_instant_and_does_not_import_torch():
    code = (
        "import sys, time; t=time.perf_counter(); from lstv.cli import build_parser; "
        "build_parser().format_help(); print(time.perf_counter()-t, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lstv", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 2.0


def test_missing_checkpoint_exits_2_with_instructions(tmp_path, phantom_dataset, capsys):
    code = main(infer_args(phantom_dataset, tmp_path / "o", tmp_path / "absent.pth"))
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoint not found" in err and "01b_download_model.sh" in err
    assert not (tmp_path / "o" / "lstv_uncertainty_metrics.csv").exists()


def test_missing_input_dir_and_malformed_csv_fail_at_once(tmp_path, tiny_checkpoint, capsys):
    bad_csv = tmp_path / "s.csv"
    bad_csv.write_text("study,series\n1,2\n")
    (tmp_path / "images").mkdir()
    common = ["--output_dir", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint), "--quiet"]
    assert (
        main(
            ["infer", "--input_dir", str(tmp_path / "nope"), "--series_csv", str(bad_csv), *common]
        )
        == 2
    )
    assert "--input_dir not found" in capsys.readouterr().err
    assert (
        main(
            [
                "infer",
                "--input_dir",
                str(tmp_path / "images"),
                "--series_csv",
                str(bad_csv),
                *common,
            ]
        )
        == 2
    )
    assert "missing column(s) study_id, series_id" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_command_runs_a_trial(tmp_path, phantom_dataset, tiny_checkpoint):
    out = tmp_path / "trial"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "src" / "inference.py"),
            "--input_dir",
            str(phantom_dataset.images_dir),
            "--series_csv",
            str(phantom_dataset.series_csv),
            "--output_dir",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--valid_ids",
            str(phantom_dataset.valid_ids_path),
            "--mode",
            "trial",
            "--n_trial",
            "2",
            "--device",
            "cpu",
            "--num_workers",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 studies done" in proc.stdout
    assert len((out / "lstv_uncertainty_metrics.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_seed_command_records_the_infer_command_it_ran(tmp_path, phantom_dataset, tiny_checkpoint):
    """Regression (issue 8): a run started as ``python src/inference.py`` was recorded as
    ``lstv --input_dir ...``, without ``infer``, because sys.argv was read instead of argv."""
    out = tmp_path / "trial"
    flags = [
        "--input_dir", str(phantom_dataset.images_dir),
        "--series_csv", str(phantom_dataset.series_csv),
        "--output_dir", str(out),
        "--checkpoint", str(tiny_checkpoint),
        "--valid_ids", str(phantom_dataset.valid_ids_path),
        "--n_trial", "1", "--device", "cpu", "--num_workers", "0", "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / "inference.py"), *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["command"] == shlex.join(["lstv", "infer", *flags])


def test_cli_defaults_come_from_the_config_dataclasses():
    """One source of defaults: the flags of infer, train, demo and serve read them."""
    from lstv.cli import build_parser
    from lstv.config import DemoConfig, InferenceConfig, ServeConfig, TrainConfig

    sub = build_parser()._subparsers._group_actions[0].choices
    for command, config in (
        ("infer", InferenceConfig),
        ("train", TrainConfig),
        ("demo", DemoConfig),
        ("serve", ServeConfig),
    ):
        for action in sub[command]._actions:
            field = config.__dataclass_fields__.get(action.dest)
            if field is None or action.required:
                continue
            assert action.default == field.default, (command, action.dest)


def test_every_command_s_flags_come_from_its_config_class():
    """One home for settings: each command's flags are its config's fields (lstv.config), and
    cli.py holds no default of its own."""
    import ast
    import dataclasses

    from lstv.cli import COMMANDS, PACKAGE_DIR, build_parser
    from lstv.config import COMMAND_CONFIGS

    assert set(COMMANDS) == set(COMMAND_CONFIGS)
    sub = build_parser()._subparsers._group_actions[0].choices
    for command, config in COMMAND_CONFIGS.items():
        fields = {}
        for f in dataclasses.fields(config):
            if f.type == "ThresholdOverrides":
                fields |= {g.name: g for g in dataclasses.fields(config_of_thresholds())}
            elif f.metadata.get("cli", True):
                fields[f.name] = f
        dests = {a.dest for a in sub[command]._actions} - {"help", "quiet", "verbose"}
        assert dests == set(fields), command
        for a in sub[command]._actions:
            f = fields.get(a.dest)
            if f is None:
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            assert a.required == required, (command, a.dest)
            if not required and not a.required:
                assert a.default == f.default or a.const is True, (command, a.dest)
    tree = ast.parse((PACKAGE_DIR / "cli.py").read_text())
    literal_defaults = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword)
        and node.arg == "default"
        and isinstance(node.value, ast.Constant)
    ]
    assert not literal_defaults, f"cli.py sets defaults itself at lines {literal_defaults}"


def test_every_flag_of_every_command_says_what_it_is(capsys):
    """A flag's help comes from its config field (lstv.config.flag); each has one, and a default
    is shown with it. ``lstv train --help`` once listed --encoder, --steps ... bare."""
    from lstv.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    bare = [
        f"{command} {a.option_strings or a.dest}"
        for command, parser in sub.items()
        for a in parser._actions
        if not a.help
    ]
    assert bare == []
    for parser in sub.values():
        parser.print_help()  # every help text formats (a stray % would raise here)
    steps = next(a for a in sub["train"]._actions if a.dest == "steps")
    assert "default" in steps.help and sub["train"].format_help().count("(default: 400)") == 1


def config_of_thresholds():
    from lstv.config import ThresholdOverrides

    return ThresholdOverrides


def test_a_bug_exits_1_with_its_traceback_and_a_user_mistake_exits_2(
    tmp_path, monkeypatch, capsys, caplog
):
    import numpy as np

    import lstv.scoring
    from lstv.cli import main
    from lstv.errors import UsageError

    args = ["score", "--csv", str(tmp_path / "m.csv"), "--reference", str(tmp_path / "r.json")]

    def broken(*_):
        return np.zeros(2) + np.zeros(3)  # numpy's ValueError: a bug, not the user's input

    monkeypatch.setattr(lstv.scoring, "rescore_run", broken)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "internal error (ValueError" in err and "bug in lstv" in err
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ValueError]  # traceback

    def refused(*_):
        raise UsageError("--reference x is not a reference")

    monkeypatch.setattr(lstv.scoring, "rescore_run", refused)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --reference x is not a reference"

    def invariant(*_):
        from lstv.score_features import split_feature

        return split_feature("not_a_feature")  # a plain ValueError raised inside lstv: a bug

    monkeypatch.setattr(lstv.scoring, "rescore_run", invariant)
    assert main(args) == 1
    assert "internal error (ValueError" in capsys.readouterr().err
    monkeypatch.undo()
    # the user's mistake as lstv's own checks find it: exit 2, one line
    (tmp_path / "m.csv").write_text("study_id\n1\n")
    (tmp_path / "r.json").write_text("{}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


# -------------------- run folder
# Issue 9, run folder: nothing written is lost, a refused run changes nothing, one run owns a
# folder, settings are checked up front, and a stopped or crashed run leaves a true manifest.


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


@pytest.mark.slow  # over 10 s on the shared 2-core machine
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


def _lstv_process(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as run
    env["PYTHONPATH"] = str(REPO / "src")
    return subprocess.run(
        [sys.executable, "-m", "lstv", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow  # 14.8 s in the fast suite on the shared 2-core machine (load 7)
def test_the_command_ends_without_teardown_and_loses_nothing(tmp_path, phantom_dataset,
                                                             tiny_checkpoint):  # fmt: skip
    """``lstv`` as a process (cli.run) skips the interpreter's teardown once torch is loaded:
    the exit code, the streams and every output are still whole."""
    out = tmp_path / "o"
    args = infer_args(phantom_dataset, out, tiny_checkpoint, num_workers=2)
    proc = _lstv_process(*args, "--mode", "trial", "--n_trial", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 of 3 studies done" in proc.stdout  # a pipe's buffer, flushed before the end
    run = RunDir(out)
    assert run.metrics_csv.read_text().count("\n") == 4
    assert run.read_manifest().status == "complete"
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    proc = _lstv_process(*infer_args(phantom_dataset, tmp_path / "p", broken))
    assert proc.returncode == 2 and "error:" in proc.stderr  # after torch was imported
    proc = _lstv_process("--version")  # no torch: the ordinary exit
    assert proc.returncode == 0 and proc.stdout.startswith("lstv ")


# lstv as a process whose log goes through a buffering handler (records reach the file only
# when logging shuts down), with an exit handler registered while the command runs.
BUFFERED_LOG_MAIN = """
import atexit, logging, logging.handlers, sys
from pathlib import Path
log_file, marker = Path(sys.argv[1]), Path(sys.argv[2])
target = logging.FileHandler(log_file)
target.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(logging.handlers.MemoryHandler(10_000, logging.CRITICAL, target))
logging.getLogger().setLevel(logging.INFO)
import lstv.cli as cli
command = cli.main
def main_registering_a_handler():
    atexit.register(marker.write_text, "ran")  # as a temporary folder or a pool would
    return command()
cli.main = main_registering_a_handler
sys.argv = ["lstv", *sys.argv[3:]]
cli.run()
"""


@pytest.mark.slow  # a process that imports torch: ~10 s on the shared 2-core machine
def test_the_fast_exit_leaves_the_log_file_whole(tmp_path, phantom_dataset, tiny_checkpoint):
    """cli.run ends without the interpreter's teardown, through public means only (an exit
    handler registered first, so it runs last): exit handlers registered during the command
    still run, and a log handler that writes only when logging shuts down has written every
    record; stdout to a file (block-buffered) is whole too."""
    log_file, marker, out = tmp_path / "lstv.log", tmp_path / "marker", tmp_path / "o"
    args = infer_args(phantom_dataset, out, tiny_checkpoint, num_workers=2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(REPO / "src")
    with open(tmp_path / "stdout", "w") as stdout:
        proc = subprocess.run(
            [sys.executable, "-c", BUFFERED_LOG_MAIN, str(log_file), str(marker), *args,
             "--mode", "trial", "--n_trial", "3"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=600,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 of 3 studies done" in (tmp_path / "stdout").read_text()
    assert marker.read_text() == "ran"
    lines = log_file.read_text().splitlines()
    assert any(line.startswith("INFO lstv.model: loaded ") for line in lines), lines
    assert any(line.startswith("INFO lstv.pipeline: 3 studies selected") for line in lines)
    assert RunDir(out).read_manifest().status == "complete"
