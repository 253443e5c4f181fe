"""Tests for lstv.rundir: the run folder's files, manifest and lock."""

from __future__ import annotations

import json
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
        ({"mode": "valid"}, "mode must be one of"),
        ({"status": "halfway"}, "status must be one of"),
        ({"num_parts": 2, "part_id": 2}, "impossible"),
        ({"n_completed": -1}, "no integer 'n_completed'"),
    ],
)
def test_manifest_refuses_impossible_values_naming_the_file(tmp_path, change, message):
    path = tmp_path / "run_manifest.json"
    path.write_text(json.dumps({**Manifest().to_dict(), **change}))
    with pytest.raises(ValueError, match=message) as err:
        Manifest.from_json(path)
    assert str(path) in str(err.value)


def test_manifest_differences_name_the_settings():
    a = Manifest(image_size=160, tta=False, checkpoint={"sha256": "a"})
    b = a.replace(image_size=128, tta=True, checkpoint={"sha256": "b"})
    text = "; ".join(a.differences(b))
    assert "image_size: 160 vs 128" in text and "tta" in text and "checkpoint_sha256" in text
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
    with pytest.raises(ValueError, match=r"at checkpoint\.config\.val\.l5_s1$"):
        manifest.to_json(tmp_path / "run_manifest.json")
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
    assert manifest.input_dir == "in" and manifest.status == "complete"


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


def test_taking_the_lock_settles_and_removes_only_this_folders_stale_temporaries(tmp_path):
    run = RunDir(tmp_path)
    stale = [_stage(run, name, "half") for name in (METRICS_CSV, FAILURES_CSV, MANIFEST_JSON)]
    kept = [_stage(run, "notes.txt", "mine"), _stage(run, "report.html", "mine")]
    plan = [[_stage(run, "lstv_uncertainty_metrics.csv", "new"), METRICS_CSV]]
    plan[0][0] = plan[0][0].replace("k1ll3d", "c0mm1t")
    (tmp_path / plan[0][0]).write_text("committed")
    (tmp_path / COMMIT_JOURNAL).write_text(json.dumps({"replace": plan}))
    with run.lock():
        left = sorted(p.name for p in tmp_path.iterdir())
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} since 20")
    assert left == sorted([METRICS_CSV, LOCK_FILE, *kept]) and not set(stale) & set(left)
    assert run.metrics_csv.read_text() == "committed"
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no holder named
