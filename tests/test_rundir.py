"""Tests for lstv.rundir: the run folder's files, manifest and lock."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os

import pytest

from lstv.atomic import write_csv_atomic
from lstv.errors import RunDirBusyError
from lstv.rundir import (
    COMMIT_JOURNAL,
    FAILURE_COLUMNS,
    FAILURES_CSV,
    LOCK_FILE,
    MANIFEST_JSON,
    METRICS_CSV,
    Manifest,
    RunDir,
)


def test_manifest_round_trips_and_keeps_unknown_keys(tmp_path):
    m = Manifest(mode="prod", num_parts=2, part_id=1, selected_study_ids=[3, 5], n_selected=2)
    path = m.to_json(tmp_path / "run_manifest.json")
    data = json.loads(path.read_text())
    data["added_by_a_newer_version"] = {"x": 1}
    path.write_text(json.dumps(data))
    back = Manifest.from_json(path)
    assert back.replace(extra={}) == m
    assert back.to_dict()["added_by_a_newer_version"] == {"x": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "valid"}, "mode must be one of trial, debug, prod, not 'valid'"),
        ({"status": "halfway"}, "status must be one of"),
        ({"num_parts": 2, "part_id": 2}, "impossible"),
        ({"n_completed": -1}, "no integer 'n_completed'"),
        *[({key: -1}, f"no integer '{key}'") for key in ("num_parts", "part_id", "n_failed")],
        *[({key: "3"}, f"no integer '{key}'") for key in ("n_selected", "n_completed")],
        ({"num_parts": 0, "part_id": 0}, "part 0 of 0 is impossible"),
        ({"image_size": 96, "unknown_to_this_version": 1}, None),
    ],
)
def test_manifest_refuses_impossible_values_naming_the_file(tmp_path, change, message):
    path = tmp_path / "run_manifest.json"
    path.write_text(json.dumps({**Manifest().to_dict(), **change}))
    if message is None:  # a key this version does not know is no reason to refuse
        Manifest.from_json(path)
        return
    with pytest.raises(ValueError, match=message) as err:
        Manifest.from_json(path)
    assert str(err.value).startswith(f"{path}")


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "not found"), ("{half", "is not valid JSON: "), ("[1, 2]", "is not a JSON object")],
)
def test_a_missing_or_broken_manifest_is_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "run_manifest.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        Manifest.from_json(path)
    assert str(err.value).startswith(f"{path} ")


def test_a_manifest_of_version_1_and_a_key_named_extra_read_back():
    """Files written before schema_version existed are version 1; a key named "extra" (from
    another version) is kept among the unknown keys, not taken for the field."""
    old = Manifest.from_dict({"mode": "prod", "extra": 5})
    assert old.schema_version == 1 and old.extra == {"extra": 5}
    assert Manifest.from_dict(Manifest().to_dict()).schema_version == 2


def test_the_manifest_text_holds_only_merged_runs_keys_for_merged_runs():
    plain = json.loads(Manifest(extra={"newer": 1, "mode": "prod"}).to_text())
    assert not {"shards", "n_heatmaps", "merged_at", "extra"} & set(plain)
    assert plain["newer"] == 1 and plain["mode"] == "trial"  # an unknown key never wins
    merged = json.loads(Manifest(shards=[{"part_id": 0}], n_heatmaps=3).to_text())
    assert merged["shards"] == [{"part_id": 0}] and merged["n_heatmaps"] == 3
    assert "merged_at" in merged


def test_the_manifest_text_is_indented_json_with_paths_as_text(tmp_path):
    text = Manifest(checkpoint={"path": tmp_path / "m.pth"}).to_text()
    assert text.startswith('{\n  "command": ""') and text.endswith("}\n")
    assert json.loads(text)["checkpoint"]["path"] == str(tmp_path / "m.pth")


def test_manifest_differences_name_the_settings():
    a = Manifest(image_size=160, tta=False, checkpoint={"sha256": "a"})
    b = a.replace(image_size=128, tta=True, checkpoint={"sha256": "b"})
    assert a.differences(b) == [
        "image_size: 160 vs 128",
        "tta: False vs True",
        "checkpoint_sha256: 'a' vs 'b'",
    ]
    assert a.differences(a.replace(n_completed=7, status="complete")) == []


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        RunDir(tmp_path / "f").create()


def _try_lock(path, queue):
    try:
        with RunDir(path).lock():
            queue.put("locked")
    except RunDirBusyError as exc:
        queue.put(str(exc))


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    run = RunDir(tmp_path / "out")
    queue = multiprocessing.get_context("fork").Queue()
    with run.lock():
        other = multiprocessing.get_context("fork").Process(
            target=_try_lock, args=(run.path, queue)
        )
        other.start()
        other.join(30)
        message = queue.get(timeout=5)
    assert "in use by another lstv run" in message and f"pid {os.getpid()}" in message
    with run.lock():  # released when the run ends
        pass


def test_failures_of_retried_studies_go_the_others_stay(tmp_path):
    run = RunDir(tmp_path)
    write_csv_atomic(
        run.failures_csv,
        FAILURE_COLUMNS,
        [{"study_id": "1", "stage": "read"}, {"study_id": "2", "stage": "read"}],
    )
    run.keep_failures_except({"1"})
    assert [r["study_id"] for r in run.read_failures()] == ["2"]


def test_a_manifest_with_nan_names_the_key_and_writes_nothing(tmp_path):
    manifest = Manifest(checkpoint={"config": {"val": {"l5_s1": float("nan")}}, "x": [1.0]})
    path = tmp_path / "run_manifest.json"
    with pytest.raises(ValueError, match=r"at checkpoint\.config\.val\.l5_s1$") as err:
        manifest.to_json(path)
    assert str(err.value).startswith(f"{path}: the manifest would hold NaN")
    with pytest.raises(ValueError, match=r"at thresholds\.seed, thresholds\.band\.1$"):
        Manifest(thresholds={"seed": math.inf, "band": [0.0, -math.inf]}).to_json(path)
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_takes_its_settings_from_the_inference_config():
    """Manifest's defaults are InferenceConfig's, and from_config copies what was given."""
    import dataclasses

    from lstv.config import InferenceConfig
    from lstv.rundir import CONFIG_SETTINGS

    defaults = {f.name: f.default for f in dataclasses.fields(Manifest)}
    config = InferenceConfig("in", "s.csv", "out", valid_ids=None, command="lstv infer ...")
    assert {k: defaults[k] for k in CONFIG_SETTINGS} == {
        k: getattr(config, k) for k in CONFIG_SETTINGS
    }
    given = InferenceConfig("in", "s.csv", "out", mode="prod", seed=7, image_size=96, tta=True)
    manifest = Manifest.from_config(given, status="complete")
    assert (manifest.mode, manifest.seed, manifest.image_size, manifest.tta) == (
        "prod",
        7,
        96,
        True,
    )
    assert manifest.command == "lstv infer" and manifest.valid_ids == "models/valid_id.npy"
    assert manifest.input_dir == "in" and manifest.series_csv == "s.csv"
    assert manifest.status == "complete"
    assert Manifest.from_config(config).valid_ids is None  # none given: none recorded


def test_only_csvs_with_rows_hold_results(tmp_path):
    from lstv.rundir import RunDir

    run = RunDir(tmp_path)
    run.metrics_appender(["study_id", "x"]).close()
    run.failures_appender().close()
    assert run.files_with_rows() == []
    with run.failures_appender() as failures:
        failures.write({"study_id": "1", "series_id": "", "stage": "read", "error": "gone"})
    assert run.files_with_rows() == [run.failures_csv]


def test_a_failed_manifest_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """The write itself fails (a full disk at fsync), not json.dumps before it: the manifest
    already there is untouched and no temporary file is left (temp + rename, not in place)."""
    import lstv.atomic

    path = Manifest(n_selected=3).to_json(tmp_path / "run_manifest.json")
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lstv.atomic.os, "fsync", full_disk)
    with pytest.raises(OSError, match="cannot write .*run_manifest.json: No space left"):
        RunDir(tmp_path).write_manifest(Manifest(n_selected=5, status="complete"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run_manifest.json"]


def test_files_replaced_together_take_their_place_and_leave_nothing_else(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_csv.write_text("old csv\n")
    run.replace_together(
        {
            run.metrics_csv: lambda f: f.write("study_id\r\n1\r\n"),
            run.manifest_json: lambda f: f.write('{"a": 1}\n'),
        }
    )
    assert run.metrics_csv.read_bytes() == b"study_id\r\n1\r\n"  # newline="": CSV text as given
    assert run.manifest_json.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_CSV, "run_manifest.json"]
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o644"}


def test_files_replaced_together_change_nothing_when_one_write_fails(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_csv.write_text("old csv\n")

    def fails(f):
        f.write("half")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        run.replace_together(
            {run.metrics_csv: lambda f: f.write("new"), run.manifest_json: fails}
        )
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_CSV]
    assert run.metrics_csv.read_text() == "old csv\n"


def _replace_and_die(path):
    """A replacement killed (no cleanup runs) while it writes its second file."""
    run = RunDir(path)

    def die(f):
        f.write('{"half": ')
        f.flush()
        os._exit(9)

    run.replace_together({run.metrics_csv: lambda f: f.write("new\n"), run.manifest_json: die})


def test_a_replacement_killed_before_its_journal_changes_nothing_and_is_cleared(
    tmp_path,
):
    """Its staged files are named as the run folder's temporaries, so the next run's lock
    removes them; the files it was replacing are as they were."""
    run = RunDir(tmp_path)
    run.metrics_csv.write_text("old\n")
    child = multiprocessing.get_context("fork").Process(target=_replace_and_die, args=(tmp_path,))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    staged = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert len(staged) == 2 and staged[0].startswith(f".{METRICS_CSV}.")
    assert staged[1].startswith(f".{MANIFEST_JSON}.")
    with run.lock():
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([METRICS_CSV, LOCK_FILE])
        assert run.metrics_csv.read_text() == "old\n"
        # the next run's replacement (in this process, where mutmut sees which tests call it)
        run.replace_together({run.metrics_csv: lambda f: f.write("new\n")})
    assert run.metrics_csv.read_text() == "new\n"


def test_a_failed_replacement_raises_its_own_error_when_a_staged_file_is_gone(tmp_path):
    run = RunDir(tmp_path)

    def gone_then_fails(f):
        for staged in tmp_path.glob("*.tmp"):
            staged.unlink()  # as another process's cleanup might
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        run.replace_together({run.metrics_csv: gone_then_fails})
    assert list(tmp_path.iterdir()) == []


def test_a_settle_beside_another_that_finished_first(tmp_path, monkeypatch):
    """Two readers settle at once: the other one moved the files and dropped the journal
    between this one's reading it and dropping it. Nothing is raised."""
    run = RunDir(tmp_path)
    staged = _stage(run, METRICS_CSV, "committed")
    journal = tmp_path / COMMIT_JOURNAL
    journal.write_text(json.dumps({"replace": [[staged, METRICS_CSV]]}))
    replace = os.replace

    def the_other_finishes_first(src, dst):
        replace(src, dst)
        journal.unlink()

    monkeypatch.setattr(os, "replace", the_other_finishes_first)
    run.settle()
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_CSV]


def _stage(run, name, text):
    staged = run.path / f".{name}.k1ll3d.tmp"
    staged.write_text(text)
    return staged.name


def test_a_replacement_stopped_after_its_journal_is_finished_by_the_next_reader(tmp_path):
    """Killed after the commit point: the journal names the staged files, the next reader of
    the manifest puts each in its place (the one already moved is skipped) and drops it."""
    run = RunDir(tmp_path)
    run.metrics_csv.write_text("scored\n")  # moved before the kill
    plan = [
        [".lstv_uncertainty_metrics.csv.gone.tmp", METRICS_CSV],
        [_stage(run, MANIFEST_JSON, json.dumps(Manifest(n_completed=4).to_dict())), MANIFEST_JSON],
    ]
    (tmp_path / COMMIT_JOURNAL).write_text(json.dumps({"replace": plan}))
    assert run.read_manifest().n_completed == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_CSV, MANIFEST_JSON]
    assert run.metrics_csv.read_text() == "scored\n"


@pytest.mark.parametrize(
    "journal",
    [
        "{not json",
        '{"other": []}',
        '{"replace": 3}',
        '{"replace": [["../.run_manifest.json.x.tmp", "run_manifest.json"]]}',
        '{"replace": [[".run_manifest.json.x.tmp", "sub/run_manifest.json"]]}',
        '{"replace": [["..", "run_manifest.json"]]}',
        '{"replace": [["", "run_manifest.json"]]}',
        '{"replace": [[".run_manifest.json.x.tmp"]]}',
        '{"replace": [7]}',
    ],
)
def test_a_journal_that_is_unreadable_or_leaves_the_folder_is_left_alone(
    tmp_path, journal, caplog
):
    run = RunDir(tmp_path)
    staged = _stage(run, MANIFEST_JSON, json.dumps(Manifest(n_completed=4).to_dict()))
    (tmp_path / COMMIT_JOURNAL).write_text(journal)
    run.settle()
    assert sorted(p.name for p in tmp_path.iterdir()) == [COMMIT_JOURNAL, staged]
    assert COMMIT_JOURNAL in caplog.text and "left as it is" in caplog.text


def test_taking_the_lock_settles_and_removes_only_this_folders_stale_temporaries(
    tmp_path, caplog
):
    """The files a stopped writer left are removed (and said, by name); what a committed
    replacement staged takes its place; other hidden files stay, and an entry that cannot be
    removed (a folder) is left without stopping the run."""
    caplog.set_level("INFO")
    run = RunDir(tmp_path)
    names = (METRICS_CSV, FAILURES_CSV, MANIFEST_JSON, COMMIT_JOURNAL)
    stale = [_stage(run, name, "half") for name in names]
    kept = [_stage(run, "notes.txt", "mine"), _stage(run, "report.html", "mine")]
    (tmp_path / f".{FAILURES_CSV}.adir.tmp").mkdir()
    committed = f".{METRICS_CSV}.c0mm1t.tmp"
    (tmp_path / committed).write_text("committed")
    (tmp_path / COMMIT_JOURNAL).write_text(json.dumps({"replace": [[committed, METRICS_CSV]]}))
    with run.lock():
        left = sorted(p.name for p in tmp_path.iterdir())
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} since 20")
    assert left == sorted([METRICS_CSV, LOCK_FILE, f".{FAILURES_CSV}.adir.tmp", *kept])
    assert run.metrics_csv.read_text() == "committed"
    assert all(any(name in m for m in caplog.messages) for name in stale)
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no holder named


@pytest.mark.parametrize(
    ("manifest", "locked", "said"),
    [
        (None, False, None),
        (Manifest(status="complete"), False, None),
        (Manifest(shards=[{}]), False, None),  # a merged run is whole by construction
        (Manifest(), False, "its process ended before it finished"),
        (Manifest(), True, "still in progress: another lstv run holds the folder"),
        (
            Manifest(status="interrupted", n_completed=6, n_selected=10),
            False,
            "interrupted, 6 of 10 studies done",
        ),
        (Manifest(status="failed", n_selected=3), True, "failed, 0 of 3 studies done"),
    ],
)
def test_an_unfinished_run_says_how_far_it_got(tmp_path, manifest, locked, said):
    run = RunDir(tmp_path)
    if manifest is not None:
        run.write_manifest(manifest)
    with run.lock() if locked else contextlib.nullcontext():
        text = run.unfinished()
    assert text == (None if said is None else f"an unfinished run ({said})")


def test_an_unreadable_manifest_is_no_unfinished_run_and_no_thresholds(tmp_path, caplog):
    run = RunDir(tmp_path)
    run.manifest_json.write_text("{half")
    assert run.unfinished() is None
    assert run.run_thresholds() is None
    assert "is not valid JSON" in caplog.text


def test_the_run_thresholds_are_the_manifests_or_none(tmp_path):
    run = RunDir(tmp_path)
    assert run.run_thresholds() is None
    run.write_manifest(Manifest(thresholds={}))
    assert run.run_thresholds() is None
    run.write_manifest(Manifest(thresholds={"seed": 5.0}))
    assert run.run_thresholds() == {"seed": 5.0}


def test_is_locked_only_while_a_run_holds_the_folder(tmp_path):
    run = RunDir(tmp_path / "out")
    assert not run.is_locked() and not run.path.exists()  # asking creates nothing
    with run.lock():
        assert run.is_locked()
    assert not run.is_locked()
    with run.lock():  # is_locked released its shared lock: the folder can be taken again
        pass


def test_completed_studies_are_those_with_a_whole_row(tmp_path):
    run = RunDir(tmp_path)
    assert run.completed_study_ids() == set()  # no CSV yet
    run.metrics_csv.write_text("study_id,x\n7,1\n8\n9,1,extra\n,1\n10,\n")
    assert run.completed_study_ids() == {"7", "10"}  # 8 short, 9 too long, one with no ID


def test_failures_with_other_columns_are_refused_naming_the_file(tmp_path):
    run = RunDir(tmp_path)
    run.failures_csv.write_text("study_id,error\n1,gone\n")
    with pytest.raises(ValueError, match=r"failures\.csv columns \['study_id', 'error'\] != "):
        run.read_failures()
    with pytest.raises(ValueError, match="failures.csv columns"):
        run.keep_failures_except({"1"})


def test_keeping_failures_writes_only_when_a_row_goes(tmp_path):
    run = RunDir(tmp_path)
    run.keep_failures_except({"1"})
    assert not run.failures_csv.exists()  # nothing to keep: no file made
    with run.failures_appender() as failures:
        failures.write({"study_id": "2", "series_id": "", "stage": "read", "error": "gone"})
    inode = run.failures_csv.stat().st_ino
    run.keep_failures_except({"1"})
    assert run.failures_csv.stat().st_ino == inode  # not rewritten
    run.keep_failures_except({"2"})
    assert run.failures_csv.is_file() and run.read_failures() == []


def test_the_run_folder_is_made_with_its_parents_or_refused_clearly(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "a" / "b" / "out")
    run.create()
    assert run.path.is_dir() and repr(run) == f"RunDir('{run.path}')"
    assert run.heatmap(7) == run.path / "heatmaps" / "7.npz"
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"^cannot create --output_dir .*f/out: Not a directory"):
        RunDir(tmp_path / "f" / "out").create()
    # root may write anywhere, so the check of the folder's permissions is faked: it must ask
    # for writing (and entering), not only for existence
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    with pytest.raises(ValueError, match=f"^--output_dir {run.path} is not writable$"):
        run.create()


def test_csvs_with_rows_are_found_whatever_else_is_there(tmp_path):
    """An empty file, a failures CSV without a metrics CSV, bytes that are not UTF-8 (a row
    still), a field the csv module refuses (unreadable is not empty)."""
    run = RunDir(tmp_path)
    run.metrics_csv.write_bytes(b"")
    run.failures_csv.write_bytes(b"study_id\n")
    assert run.files_with_rows() == []
    run.metrics_csv.unlink()
    run.failures_csv.write_bytes(b"study_id,error\n1,caf\xe9\n")
    assert run.files_with_rows() == [run.failures_csv]
    run.metrics_csv.write_bytes(b"study_id\n" + b"1" * (csv.field_size_limit() + 1) + b"\n")
    assert run.files_with_rows() == [run.metrics_csv, run.failures_csv]


def test_timestamps_are_utc():
    import datetime as dt

    from lstv.rundir import utc_now

    stamp = dt.datetime.fromisoformat(utc_now())
    assert stamp.utcoffset() == dt.timedelta(0)
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - stamp).total_seconds()) < 60
