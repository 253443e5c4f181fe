"""Tests for lstv.rundir: the run folder's files, manifest and lock."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from lstv.atomic import write_csv_atomic
from lstv.errors import RunDirBusyError
from lstv.rundir import FAILURE_COLUMNS, Manifest, RunDir


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
