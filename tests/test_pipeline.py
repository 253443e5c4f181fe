"""End-to-end ``lstv infer`` on phantom studies with a random-weight resnet50d in the original
checkpoint layout: outputs, bad input, resume, shards, determinism."""

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import infer_args, read_rows
from lstv.atomic import file_sha256
from lstv.pipeline import InferenceConfig, run_inference
from lstv.results import SEED_COLUMNS


def config(data, out, checkpoint, **kw):
    base = dict(
        input_dir=data / "train_images",
        series_csv=data / "train_series_descriptions.csv",
        output_dir=out,
        checkpoint=checkpoint,
        valid_ids=data / "valid_id.npy",
        mode="prod",
        device="cpu",
        batch_size=3,
        num_workers=0,
        quiet=True,
    )
    base.update(kw)
    return InferenceConfig(**base)


@pytest.fixture
def damaged_dataset(tmp_path, phantom_dataset):
    """The phantom set with one study of each kind of bad input."""
    root = tmp_path / "data"
    shutil.copytree(phantom_dataset.root, root)
    images = root / "train_images"
    rows = read_rows(root / "train_series_descriptions.csv")
    t2 = [
        r
        for r in rows
        if "t2" in r["series_description"].lower() and "sagittal" in r["series_description"].lower()
    ]
    bad = {}

    def series_dir(r):
        return images / r["study_id"] / r["series_id"]

    r = t2[0]  # an unreadable file
    (sorted(series_dir(r).glob("*.dcm"))[0]).write_bytes(b"garbage, not DICOM")
    bad[r["study_id"]] = ("read", "not a readable DICOM")
    r = t2[1]  # the series folder is gone
    shutil.rmtree(series_dir(r))
    bad[r["study_id"]] = ("read", "series folder not found")
    r = t2[2]  # no pixel data
    f = sorted(series_dir(r).glob("*.dcm"))[0]
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f)
    bad[r["study_id"]] = ("read", "no pixel data")
    # a study with no sagittal T2 at all
    with open(root / "train_series_descriptions.csv", "a", newline="") as fh:
        fh.write("999000111,5,Axial T2\n")
    ids = np.load(root / "valid_id.npy")
    np.save(root / "valid_id.npy", np.append(ids, 999000111).astype(np.int64))
    bad["999000111"] = ("select", "no sagittal T2")
    return root, bad


def test_infer_writes_every_output_and_records_failures(
    tmp_path, damaged_dataset, original_layout_checkpoint
):
    data, bad = damaged_dataset
    out = tmp_path / "out"
    summary = run_inference(config(data, out, original_layout_checkpoint, save_heatmaps=True))
    n_selected = len(np.load(data / "valid_id.npy"))
    assert summary.n_selected == n_selected
    assert summary.n_failed == len(bad)
    assert summary.n_completed == n_selected - len(bad)

    rows = read_rows(out / "lstv_uncertainty_metrics.csv")
    with open(out / "lstv_uncertainty_metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[: len(SEED_COLUMNS)] == SEED_COLUMNS
    flag_at = header.index("lstv_flag")  # the round-1 columns in their order; more may follow
    assert header[flag_at - 1 : flag_at + 2] == ["image_width", "lstv_flag", "risk_level"]
    assert {r["study_id"] for r in rows}.isdisjoint(bad)
    for r in rows:
        entropy = float(r["l5_s1_entropy"])
        assert 0 < entropy <= np.log(160 * 160) + 1e-9
        assert r["lstv_flag"] == str(entropy > 5.0)
        assert 0 < float(r["l5_s1_confidence"]) <= 1

    failures = {r["study_id"]: r for r in read_rows(out / "failures.csv")}
    assert set(failures) == set(bad)
    for study, (stage, reason) in bad.items():
        assert failures[study]["stage"] == stage
        assert reason in failures[study]["error"]

    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["checkpoint"]["sha256"] == file_sha256(original_layout_checkpoint)
    assert manifest["checkpoint"]["config"]["encoder"] == "resnet50d"
    assert manifest["validation_filter"] is True
    assert manifest["status"] == "complete"
    assert (manifest["n_selected"], manifest["n_completed"], manifest["n_failed"]) == (
        n_selected,
        n_selected - len(bad),
        len(bad),
    )
    assert manifest["thresholds"] == {
        "flag_entropy": 5.0,
        "high_entropy": 5.5,
        "medium_entropy": 4.0,
    }
    assert manifest["device"] == "cpu"

    for r in rows:
        with np.load(out / "heatmaps" / f"{r['study_id']}.npz") as z:
            assert z["probs"].shape == (6, 160, 160)
            assert np.allclose(z["probs"].sum(0), 1, atol=1e-4)
            assert z["image"].dtype == np.uint8
            assert int(z["slice_index"]) == int(r["slice_index"])

    # A second run of the same command does nothing new and keeps one verdict per study.
    again = run_inference(config(data, out, original_layout_checkpoint, save_heatmaps=True))
    assert again.n_skipped == n_selected - len(bad)
    assert read_rows(out / "lstv_uncertainty_metrics.csv") == rows
    assert len(read_rows(out / "failures.csv")) == len(bad)


def test_interrupted_run_resumes_without_duplicates(tmp_path, phantom_dataset, tiny_checkpoint):
    out = tmp_path / "out"
    data = phantom_dataset.root
    full = run_inference(config(data, out, tiny_checkpoint))
    csv_path = out / "lstv_uncertainty_metrics.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    # Keep the header and two rows, and half of a third: a kill in the middle of a write.
    csv_path.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    resumed = run_inference(config(data, out, tiny_checkpoint))
    assert resumed.n_skipped == 2
    rows = read_rows(csv_path)
    assert sorted(r["study_id"] for r in rows) == sorted(r.split(",")[0] for r in lines[1:])
    assert len(rows) == full.n_completed


def test_a_resume_counts_only_the_studies_it_selects(tmp_path, phantom_dataset, tiny_checkpoint):
    """A series CSV that lost an already-done study, and a metrics CSV that lost another's row:
    the resumed run redoes the second, and counts as completed only studies it selected (the
    row of the dropped one stays, unchanged, but is not this run's).

    Mutant ``run.n_completed = len(done)`` (the metrics CSV's studies, not this selection's):
    fails (8 completed of 7 selected); without it: passes. Not equivalent: the resume checks
    compare the settings that change results, and the selected studies are not among them."""
    data = tmp_path / "data"
    shutil.copytree(phantom_dataset.root, data)
    out = tmp_path / "out"
    first = run_inference(config(data, out, tiny_checkpoint))
    assert first.n_completed == first.n_selected == 8
    csv_path = out / "lstv_uncertainty_metrics.csv"
    rows = read_rows(csv_path)
    lost, redo = rows[0]["study_id"], rows[1]["study_id"]
    series_csv = data / "train_series_descriptions.csv"
    lines = series_csv.read_text().splitlines(keepends=True)
    series_csv.write_text("".join(lines[:1] + [x for x in lines[1:] if x.split(",")[0] != lost]))
    text = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(x for x in text if x.split(",")[0] != redo))

    resumed = run_inference(config(data, out, tiny_checkpoint))
    assert (resumed.n_selected, resumed.n_skipped, resumed.n_completed) == (7, 6, 7)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert (manifest["n_selected"], manifest["n_completed"], manifest["n_failed"]) == (7, 7, 0)
    assert sorted(r["study_id"] for r in read_rows(csv_path)) == sorted(r["study_id"] for r in rows)


def test_cpu_runs_are_deterministic_and_shards_add_up(tmp_path, phantom_dataset, tiny_checkpoint):
    data = phantom_dataset.root
    a = read_rows(
        run_inference(config(data, tmp_path / "a", tiny_checkpoint)).output_dir
        / "lstv_uncertainty_metrics.csv"
    )
    b = read_rows(
        run_inference(
            config(data, tmp_path / "b", tiny_checkpoint, num_workers=2, batch_size=5)
        ).output_dir
        / "lstv_uncertainty_metrics.csv"
    )
    assert a == b
    shard_rows = []
    for part in range(3):
        out = tmp_path / f"part_{part}"
        run_inference(config(data, out, tiny_checkpoint, num_parts=3, part_id=part))
        shard_rows += read_rows(out / "lstv_uncertainty_metrics.csv")
    assert sorted(shard_rows, key=lambda r: r["study_id"]) == sorted(a, key=lambda r: r["study_id"])


def test_rows_do_not_depend_on_how_far_the_readers_read_ahead(
    tmp_path, phantom_dataset, tiny_checkpoint, monkeypatch
):
    """Issue 22 let the readers read 32 studies ahead (was 8): the metrics CSV is the same
    whether they read all 8 studies ahead at once or one at a time."""
    from lstv.sample import SampleStream

    data = phantom_dataset.root
    rows = []
    for ahead in (SampleStream.READ_AHEAD, 1):
        monkeypatch.setattr(SampleStream, "READ_AHEAD", ahead)
        out = tmp_path / f"ahead{ahead}"
        run_inference(config(data, out, tiny_checkpoint, num_workers=2, batch_size=3))
        rows.append(read_rows(out / "lstv_uncertainty_metrics.csv"))
    assert rows[0] == rows[1] and len(rows[0]) == 8


def test_trial_and_debug_modes(tmp_path, phantom_dataset, tiny_checkpoint):
    data = phantom_dataset.root
    trial = run_inference(config(data, tmp_path / "t", tiny_checkpoint, mode="trial", n_trial=3))
    assert trial.n_selected == 3
    study = phantom_dataset.study_ids[0]
    debug = run_inference(
        config(
            data,
            tmp_path / "d",
            tiny_checkpoint,
            mode="debug",
            debug_study_id=study,
            visualize=True,
        )
    )
    assert debug.n_selected == 1
    pngs = sorted(p.name for p in (tmp_path / "d" / "visualizations").glob("*.png"))
    assert pngs == [f"{study}_heatmaps.png", f"{study}_metrics.png"]
    assert (tmp_path / "d" / "heatmaps" / f"{study}.npz").is_file()


def test_without_valid_ids_everything_runs_and_the_manifest_says_so(
    tmp_path, phantom_dataset, tiny_checkpoint, caplog
):
    summary = run_inference(
        config(
            phantom_dataset.root, tmp_path / "o", tiny_checkpoint, valid_ids=tmp_path / "absent.npy"
        )
    )
    assert summary.validation_filter is False
    assert summary.n_selected == len(phantom_dataset.study_ids)
    manifest = json.loads((tmp_path / "o" / "run_manifest.json").read_text())
    assert manifest["validation_filter"] is False
    assert "VALIDATION FILTER OFF" in caplog.text


def test_tta_adds_mutual_information(tmp_path, phantom_dataset, tiny_checkpoint):
    out = tmp_path / "tta"
    run_inference(
        config(phantom_dataset.root, out, tiny_checkpoint, mode="trial", n_trial=2, tta=True)
    )
    for r in read_rows(out / "lstv_uncertainty_metrics.csv"):
        assert float(r["l5_s1_tta_mi"]) >= 0


def test_memory_does_not_grow_with_the_number_of_studies(
    tmp_path, phantom_dataset, tiny_checkpoint
):
    """The same series copied into 2 and into 24 studies: the peak of Python and numpy memory
    (tracemalloc) must stay the same, since nothing per study is kept after it is written.
    Keeping only each study's maps (0.6 MB) would add about a third to the peak."""
    import tracemalloc

    from lstv.studies import read_series_table, sagittal_t2_tasks

    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    source = task.series_dir(phantom_dataset.images_dir)

    def peak_for(n: int) -> int:
        root = tmp_path / f"n{n}"
        lines = ["study_id,series_id,series_description"]
        for i in range(n):
            shutil.copytree(source, root / "train_images" / str(1000 + i) / "7")
            lines.append(f"{1000 + i},7,Sagittal T2/STIR")
        (root / "train_series_descriptions.csv").write_text("\n".join(lines) + "\n")
        tracemalloc.start()
        run_inference(
            config(
                root,
                root / "out",
                tiny_checkpoint,
                valid_ids=None,
                batch_size=2,
                save_heatmaps=True,
            )
        )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    small, large = peak_for(2), peak_for(24)
    assert large < 1.1 * small, (small, large)


def test_bands_come_from_the_checkpoint_unless_given(tmp_path, phantom_dataset):
    import torch

    from lstv.cli import main
    from lstv.model import PointNet, save_checkpoint

    torch.manual_seed(0)
    bands = {"flag_entropy": 9.9, "high_entropy": 10.0, "medium_entropy": 9.8}
    ckpt = save_checkpoint(
        PointNet("resnet10t"), tmp_path / "c.pth", extra_config={"risk_thresholds": bands}
    )
    data = phantom_dataset.root
    run_inference(config(data, tmp_path / "a", ckpt, mode="trial", n_trial=2))
    manifest = json.loads((tmp_path / "a" / "run_manifest.json").read_text())
    assert manifest["thresholds"] == bands
    assert manifest["thresholds_source"] == "checkpoint config"
    run_inference(
        config(
            data,
            tmp_path / "b",
            ckpt,
            mode="trial",
            n_trial=2,
            threshold_overrides={"high_entropy": 10.1, "flag_entropy": None},
        )
    )
    manifest = json.loads((tmp_path / "b" / "run_manifest.json").read_text())
    assert manifest["thresholds"] == {**bands, "high_entropy": 10.1}
    assert manifest["thresholds_source"].endswith("command line: high_entropy")
    # lstv report uses the run's bands unless told otherwise
    assert (
        main(
            [
                "report",
                "--csv",
                str(tmp_path / "a" / "lstv_uncertainty_metrics.csv"),
                "--output",
                str(tmp_path / "a" / "r.html"),
                "--quiet",
            ]
        )
        == 0
    )
    html = (tmp_path / "a" / "r.html").read_text()
    assert '<span class="mono" id="thr-high">10.0</span>' in html
    assert '<span class="mono" id="thr-medium">9.8</span>' in html
    assert "The run itself used" not in html  # the report agrees with the run
    queue = read_rows(tmp_path / "a" / "audit_queue.csv")
    rows = {r["study_id"]: r for r in read_rows(tmp_path / "a" / "lstv_uncertainty_metrics.csv")}
    assert all(q["risk_level"] == rows[q["study_id"]]["risk_level"] for q in queue)


# lstv's own CLI, with every study taking ten minutes to read (a hostile or huge series).
STUCK_READER_MAIN = """
import sys, time
import lstv.sample as sample
read = sample.read_sample
def stuck(*args):
    time.sleep(600)
    return read(*args)
sample.read_sample = stuck
from lstv.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigterm_ends_a_study_in_flight_within_seconds(
    tmp_path, phantom_dataset, tiny_checkpoint, workers
):
    """17.1: SIGTERM logged "stopping after the study in flight" and waited for it (minutes)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    args = infer_args(phantom_dataset, out, tiny_checkpoint, num_workers=workers)
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_READER_MAIN, *args], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "run_manifest.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - sent < 10
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert json.loads((out / "run_manifest.json").read_text())["status"] == "interrupted"


def test_a_checkpoint_config_with_nan_is_recorded_as_null(tmp_path, phantom_dataset, caplog):
    """An older `lstv train` stored NaN for a level it never found; such a checkpoint runs and
    its config is recorded, the NaN as null, with a warning naming the key."""
    import torch

    from lstv.model import PointNet, save_checkpoint

    torch.manual_seed(0)
    errors = {"l4_l5": 1.5, "l5_s1": float("nan")}
    ckpt = save_checkpoint(
        PointNet("resnet10t"), tmp_path / "c.pth", extra_config={"val_median_error_mm": errors}
    )
    out = tmp_path / "run"
    run_inference(config(phantom_dataset.root, out, ckpt, mode="trial", n_trial=1))
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["checkpoint"]["config"]["val_median_error_mm"] == {"l4_l5": 1.5, "l5_s1": None}
    assert "val_median_error_mm.l5_s1" in caplog.text


def test_a_manifest_json_cannot_hold_is_refused_before_any_file(
    tmp_path, phantom_dataset, tiny_checkpoint, monkeypatch
):
    """A refused run leaves no header-only metrics CSV, so the same command can run again."""
    import lstv.pipeline

    made = lstv.pipeline.new_manifest

    def with_nan(*args, **kwargs):
        return made(*args, **kwargs).replace(extra={"odd": {"figure": float("inf")}})

    monkeypatch.setattr(lstv.pipeline, "new_manifest", with_nan)
    out = tmp_path / "run"
    run = config(phantom_dataset.root, out, tiny_checkpoint, mode="trial", n_trial=1)
    with pytest.raises(ValueError, match=r"odd\.figure"):
        run_inference(run)
    assert not any(p.suffix in (".csv", ".json") for p in out.iterdir())
    monkeypatch.setattr(lstv.pipeline, "new_manifest", made)
    assert run_inference(run).n_completed == 1


def test_a_run_that_wrote_no_row_resumes(tmp_path, phantom_dataset, tiny_checkpoint, monkeypatch):
    """17.9: a full disk at the start left a header-only CSV and no manifest, and the same
    command was then refused ("holds results but no run_manifest.json")."""
    import errno

    import lstv.rundir
    from helpers import phantom_infer_config
    from lstv.results import METRIC_COLUMNS

    out = tmp_path / "run"
    write = lstv.rundir.write_text_atomic

    def full_disk(path, text):
        if str(path).endswith("run_manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, text)

    monkeypatch.setattr(lstv.rundir, "write_text_atomic", full_disk)
    cfg = phantom_infer_config(phantom_dataset, out, tiny_checkpoint)
    with pytest.raises(OSError, match="run_manifest.json"):
        run_inference(cfg)
    monkeypatch.setattr(lstv.rundir, "write_text_atomic", write)
    # What an earlier version left there: CSVs with a header and no row, and no manifest.
    (out / "failures.csv").write_text("study_id,series_id,stage,error\n")
    with open(out / "lstv_uncertainty_metrics.csv", "w", newline="") as f:
        csv.writer(f).writerow(METRIC_COLUMNS)
    summary = run_inference(cfg)
    assert summary.n_completed + summary.n_failed == summary.n_selected > 0


def test_a_run_whose_every_study_failed_is_not_drift_checked(
    tmp_path, phantom_dataset, tiny_checkpoint, capsys
):
    """With a reference and no study read (every series folder missing), the run is complete
    with its failures: the drift check has no row to test. It exited 2 with "the metrics CSV
    has a header but no rows" (found by test_infer_accounts_for_every_study)."""
    from helpers import normal_features
    from lstv.cli import main
    from lstv.model import file_sha256
    from lstv.score import fit_reference

    ref = fit_reference(normal_features(np.random.default_rng(1), 25), file_sha256(tiny_checkpoint))
    ref.save(tmp_path / "ref.json")
    (tmp_path / "empty").mkdir()
    data = SimpleNamespace(
        images_dir=tmp_path / "empty",
        series_csv=phantom_dataset.series_csv,
        valid_ids_path=phantom_dataset.valid_ids_path,
    )
    out = tmp_path / "run"
    code = main(infer_args(data, out, tiny_checkpoint, "--reference", str(tmp_path / "ref.json")))
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n_completed"] == 0
    assert manifest["n_failed"] > 0 and manifest["score_drift"] is None
    assert len(read_rows(out / "failures.csv")) == manifest["n_failed"]


def test_infer_refuses_a_bad_reference_before_any_work(
    tmp_path, phantom_dataset, tiny_checkpoint, capsys
):
    """17.3: ``lstv infer --reference`` with threshold "5.0" printed "0 of 4 studies done,
    4 failed" and exited 0."""
    from helpers import normal_features
    from lstv.cli import main
    from lstv.model import file_sha256
    from lstv.score import fit_reference

    ref = fit_reference(normal_features(np.random.default_rng(1), 25), file_sha256(tiny_checkpoint))
    data = json.loads(ref.save(tmp_path / "ref.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps(dict(data, threshold="5.0")))
    out = tmp_path / "run"
    code = main(
        infer_args(phantom_dataset, out, tiny_checkpoint, "--reference", str(tmp_path / "bad.json"))
    )
    assert code == 2
    assert "bad.json: field 'threshold'" in capsys.readouterr().err
    assert not out.exists()  # before any work: not even the output folder
    # Fitted on another checkpoint (found by the property test: the folder was made first).
    (tmp_path / "other.json").write_text(json.dumps(dict(data, checkpoint_sha256="5.0")))
    other = str(tmp_path / "other.json")
    code = main(infer_args(phantom_dataset, out, tiny_checkpoint, "--reference", other))
    assert code == 2
    assert "other.json was fitted on checkpoint SHA-256 5.0" in capsys.readouterr().err
    assert not out.exists()


def test_infer_with_a_reference_hashes_the_checkpoint_once(
    tmp_path, phantom_dataset, tiny_checkpoint, monkeypatch
):
    """The reference's early check hashes the checkpoint and the load takes that digest: the
    real checkpoint is ~100 MB, so a second hash was start-up on real data (issue 22)."""
    from helpers import normal_features
    from lstv import atomic, model, pipeline
    from lstv.score import fit_reference

    digest = atomic.file_sha256(tiny_checkpoint)
    fit_reference(normal_features(np.random.default_rng(1), 25), digest).save(tmp_path / "r.json")
    hashed = []

    def counting_sha256(path):
        hashed.append(Path(path).resolve())
        return atomic.file_sha256(path)

    monkeypatch.setattr(pipeline, "file_sha256", counting_sha256)
    monkeypatch.setattr(model, "file_sha256", counting_sha256)
    cfg = config(
        phantom_dataset.root, tmp_path / "out", tiny_checkpoint, reference=tmp_path / "r.json"
    )
    summary = run_inference(cfg)
    assert summary.n_completed > 0
    assert hashed.count(Path(tiny_checkpoint).resolve()) == 1
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert manifest["checkpoint"]["sha256"] == digest


# -------------------- property infer
# Issue 9, property: whatever is wrong with the DICOM headers, the series CSV, the paths of an
# ``lstv index`` CSV or a ``--reference`` (issue 17), ``lstv infer`` exits 0 or 2 with a one-line
# error, accounts for every selected study exactly once (a metrics row or a failure row at reading
# or selection, never a study failed by a bad reference), prints no traceback, never hangs on a
# FIFO and writes nothing outside its output folder.


REPO = Path(__file__).resolve().parents[1]


CHECKPOINT = REPO / "models" / "phantom_point_net.pth"


N_STUDIES = 3


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHECKPOINT.is_file(), reason="models/phantom_point_net.pth missing"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small phantom dataset, written once: (root, series files per study)."""
    from lstv.phantom import write_phantom_dataset

    ds = write_phantom_dataset(
        tmp_path_factory.mktemp("property_phantom"),
        n_studies=N_STUDIES,
        lstv_fraction=0.34,
        seed=3,
        valid_fraction=1.0,
    )
    return ds


@pytest.fixture(scope="module")
def index_csv(dataset, tmp_path_factory) -> Path:
    """An ``lstv index`` CSV of the dataset's images (paths relative to the images folder)."""
    from lstv.index import build_index

    out = tmp_path_factory.mktemp("property_index") / "index.csv"
    build_index(dataset.images_dir, out, num_workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def reference_json(tmp_path_factory) -> dict:
    """A valid score reference of the checkpoint, as JSON data (a reference's fields)."""
    import numpy as np

    from helpers import normal_features
    from lstv.atomic import file_sha256
    from lstv.score import fit_reference

    raw = normal_features(np.random.default_rng(0), 25)
    ref = fit_reference(raw, file_sha256(CHECKPOINT), rule="max_abs_z")
    path = ref.save(tmp_path_factory.mktemp("property_ref") / "reference.json")
    return json.loads(path.read_text())


FLOATS = st.sampled_from([0.0, -1.0, 1e-9, 1e9, float("nan"), float("inf"), 0.7, 120.5])


TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian (the file stays explicit)
    "1.2.840.10008.1.2.2",  # big endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline, pixels not compressed
    "1.2.840.10008.1.2.5",  # RLE, pixels not compressed
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.3.4.5",  # unknown
]


header_edit = st.one_of(
    st.tuples(st.just("ImagePositionPatient"), st.lists(FLOATS, min_size=3, max_size=3)),
    st.tuples(st.just("ImagePositionPatient"), st.just("same")),
    st.tuples(st.just("PixelSpacing"), st.lists(FLOATS, min_size=2, max_size=2)),
    st.tuples(st.just("ImageOrientationPatient"), st.lists(FLOATS, min_size=6, max_size=6)),
    st.tuples(
        st.just("ImageOrientationPatient"),
        st.sampled_from([[0, 1, 0, 0, 0, -1], [0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]]),
    ),
    st.tuples(st.sampled_from(["Rows", "Columns"]), st.sampled_from([0, 1, 479, 60000])),
    st.tuples(st.just("NumberOfFrames"), st.sampled_from([0, 2, 60000])),
    st.tuples(st.just("BitsAllocated"), st.sampled_from([0, 1, 8, 32])),
    st.tuples(st.just("SamplesPerPixel"), st.sampled_from([0, 3])),
    st.tuples(st.just("TransferSyntaxUID"), st.sampled_from(TRANSFER_SYNTAXES)),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("delete"), st.just(None)),
)


# (which study, which file of its series (a fraction of the count), every file or just one, edit)
dicom_mutation = st.tuples(
    st.integers(0, N_STUDIES - 1), st.floats(0, 0.999), st.booleans(), header_edit
)


csv_mutation = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 50)),
    st.tuples(st.just("duplicate"), st.integers(0, 50)),
    st.tuples(st.just("describe"), st.sampled_from(["Axial T2", "", "SAGITTAL t2 ☃", "x" * 300])),
    st.tuples(st.just("study_id"), st.sampled_from(["4773_9259", "１２３", "", "12.5", "-4"])),
    st.tuples(st.just("series_id"), st.sampled_from(["999", "0", "abc"])),
    st.tuples(st.just("bom"), st.none()),
    st.tuples(st.just("huge_field"), st.none()),
)


# (which row of the index, how its path is changed)
index_mutation = st.tuples(
    st.integers(0, 50),
    st.sampled_from(["outside", "absolute", "fifo", "semicolon", "missing", "folder_file"])
    | st.sampled_from(["[", "[]", '["a"', ";;;", "\n", "é/x", "../../etc/passwd", "/dev/zero"]),
)


REFERENCE_FIELDS = [
    "threshold", "log_offset", "features", "log_features", "centre.l5_s1_peak2",
    "scale.l5_s1_peak2", "n", "format", "checkpoint_sha256", "target_specificity", "rule",
]  # fmt: skip


REFERENCE_VALUES = [
    "5.0", 10**400, -5, 0, 1e-320, 7.5, None, True, [], {}, "x",
    float("nan"), float("inf"), ["l5_s1_peak2"], ["l5_s1_nonsense"],
]  # fmt: skip


# None: no --reference; "deep": 100,000 nested brackets; else (field, value)
reference_mutation = st.one_of(
    st.none(),
    st.just("deep"),
    st.just("valid"),
    st.tuples(st.sampled_from(REFERENCE_FIELDS), st.sampled_from(REFERENCE_VALUES)),
)


# Edits that leave a reference valid: every other edit must be refused with exit 2.
GOOD_EDITS = [
    ("threshold", 7.5), ("threshold", 0), ("threshold", 1e-320),
    ("log_offset", 7.5), ("log_offset", 1e-320),
    ("centre.l5_s1_peak2", 7.5), ("centre.l5_s1_peak2", -5), ("centre.l5_s1_peak2", 0),
    ("centre.l5_s1_peak2", 1e-320), ("scale.l5_s1_peak2", 7.5),
    ("target_specificity", None), ("log_features", []), ("log_features", ["l5_s1_peak2"]),
]  # fmt: skip


def apply_index_mutation(images: Path, path: Path, mutation) -> None:
    from lstv.studies import join_paths, split_paths

    row_number, kind = mutation
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    row = rows[row_number % len(rows)]
    # an earlier mutation may have left a cell with no path in it (";;;"): keep it as the name
    first = (split_paths(row["path"]) or [row["path"]])[0]
    if kind == "outside":
        row["path"] = "../" + images.name + "/../" + first
    elif kind == "absolute":
        row["path"] = str(images / first)
    elif kind == "fifo":
        fifo = images / f"pipe{row_number}"
        if not fifo.exists():
            os.mkfifo(fifo)
        row["path"] = fifo.name
    elif kind == "semicolon":  # a legal name with the old separator in it
        renamed = images / (first + ";v2")
        if (images / first).is_dir() and not renamed.exists():
            (images / first).rename(renamed)
            for other in rows:  # the series that lived there moved with it
                if split_paths(other["path"]) == [first]:
                    other["path"] = join_paths([first + ";v2"])
    elif kind == "missing":
        row["path"] = first + "/gone"
    elif kind == "folder_file":  # a folder listed as one of two files
        row["path"] = join_paths([first, first])
    else:
        row["path"] = kind
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_reference(data: dict, path: Path, mutation) -> None:
    if mutation == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
        return
    data = json.loads(json.dumps(data))
    if isinstance(mutation, tuple):
        field, value = mutation
        *parents, last = field.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
    path.write_text(json.dumps(data))


def apply_dicom_mutation(images: Path, study_dirs: list[Path], mutation) -> None:
    study, where, every, (attr, value) = mutation
    files = sorted((images / study_dirs[study]).rglob("*.dcm"))
    if not files:  # every file deleted by an earlier mutation
        return
    chosen = files if every else [files[int(where * len(files))]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on invalid values: they are the point
        for f in chosen:
            if not f.exists():
                continue
            if attr == "delete":
                f.unlink()
            elif attr == "truncate":
                data = f.read_bytes()
                f.write_bytes(data[: int(len(data) * value)])
            else:
                try:
                    ds = pydicom.dcmread(f)
                except Exception:  # already truncated by an earlier mutation
                    continue
                if attr == "TransferSyntaxUID":
                    ds.file_meta.TransferSyntaxUID = value
                elif value == "same":
                    ds.ImagePositionPatient = [1.5, -2.5, 3.5]
                else:
                    setattr(ds, attr, value)
                try:
                    ds.save_as(f, enforce_file_format=False)
                except Exception:  # pydicom cannot write this value: the file stays as it was
                    continue


def apply_csv_mutation(path: Path, mutation) -> None:
    kind, value = mutation
    default_limit = csv.field_size_limit(2**31 - 1)  # an earlier mutation may be a huge field
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    finally:
        csv.field_size_limit(default_limit)  # the code under test must see the default
    header, body = rows[0], rows[1:]
    i = (value if isinstance(value, int) else 0) % len(body)
    if kind == "drop":
        del body[i]
    elif kind == "duplicate":
        body.insert(i, list(body[i]))
    elif kind == "describe":
        body[0][2] = value
    elif kind == "study_id":
        body[-1][0] = value
    elif kind == "series_id":
        body[0][1] = value
    elif kind == "huge_field":
        body[0][2] = "Sagittal T2 " + "x" * (csv.field_size_limit() + 1)
    encoding = "utf-8-sig" if kind == "bom" else "utf-8"
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows([header, *body])


def snapshot(folder: Path, skip: Path) -> dict[str, str]:
    """Path -> SHA-256 of every file under ``folder`` except under ``skip``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record):
        self.texts.append(self.format(record) if record.exc_info else record.getMessage())


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    dicom_mutations=st.lists(dicom_mutation, max_size=3),
    csv_mutations=st.lists(csv_mutation, max_size=2),
    index_mutations=st.none() | st.lists(index_mutation, max_size=3),
    reference=reference_mutation,
)
# found by Hypothesis: a cell emptied of paths, then mutated again
@example(dicom_mutations=[], csv_mutations=[], index_mutations=[(0, ";;;"), (0, "outside")],
         reference=None)  # fmt: skip
def test_infer_accounts_for_every_study(
    dataset, index_csv, reference_json, dicom_mutations, csv_mutations, index_mutations, reference
):
    from lstv.cli import main

    work = Path(tempfile.mkdtemp(prefix="lstv-property-"))
    try:
        images = shutil.copytree(dataset.images_dir, work / "train_images")
        valid_ids = Path(shutil.copy(dataset.valid_ids_path, work / "valid_id.npy"))
        study_dirs = sorted(p.relative_to(images) for p in images.iterdir())
        for m in dicom_mutations:
            apply_dicom_mutation(images, study_dirs, m)
        if index_mutations is None:  # the RSNA series CSV
            series_csv = Path(shutil.copy(dataset.series_csv, work / "series.csv"))
            # Whole-file changes last: the next mutation's csv.reader would refuse a huge field.
            for m in sorted(csv_mutations, key=lambda m: m[0] in ("huge_field", "bom")):
                apply_csv_mutation(series_csv, m)
        else:  # an lstv index of the same images, its paths changed
            series_csv = Path(shutil.copy(index_csv, work / "series.csv"))
            for m in index_mutations:
                apply_index_mutation(images, series_csv, m)
        extra = []
        if reference is not None:
            write_reference(reference_json, work / "reference.json", reference)
            extra = ["--reference", str(work / "reference.json")]
        out = work / "out"
        before = snapshot(work, out)

        records = _Records()
        root = logging.getLogger()
        root.addHandler(records)
        stderr, stdout = io.StringIO(), io.StringIO()
        cwd = Path.cwd()
        os.chdir(work)  # a stray relative write would land here and be seen
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                data = SimpleNamespace(
                    images_dir=images, series_csv=series_csv, valid_ids_path=valid_ids
                )
                code = main(infer_args(data, out, CHECKPOINT, "--batch_size", "2", *extra))
        finally:
            os.chdir(cwd)
            root.removeHandler(records)

        err = stderr.getvalue()
        logged = "\n".join(records.texts)
        assert "Traceback" not in err and "Traceback" not in logged, err + logged
        assert code in (0, 2), (code, err)
        assert snapshot(work, out) == before, "files outside the output folder changed"
        if code == 2:
            assert err.startswith("error: ") and err.count("\n") == 1, err
            named = (str(series_csv), "series", "valid", "reference.json")
            assert any(n in err for n in named), err
            if "reference.json" in err:  # refused before any work: not even the folder
                assert not out.exists()
            return
        if reference not in (None, "valid"):  # a bad reference is refused; a good one scores
            field, value = reference
            assert (field, value) in GOOD_EDITS, (reference, err)
        manifest = json.loads((out / "run_manifest.json").read_text())
        selected = [str(s) for s in manifest["selected_study_ids"]]
        seen = [r["study_id"] for r in read_rows(out / "lstv_uncertainty_metrics.csv")]
        seen += [r["study_id"] for r in read_rows(out / "failures.csv")]
        assert sorted(seen) == sorted(selected), (seen, selected)
        assert len(set(seen)) == len(seen)
        for row in read_rows(out / "lstv_uncertainty_metrics.csv"):
            assert row["risk_level"] in ("High", "Medium", "Low")
            if reference is not None:
                assert row["lstv_score"] != "" or row["lstv_score_driver"] == ""
        # A study fails at reading or selection, never at scoring (a reference was checked).
        assert {r["stage"] for r in read_rows(out / "failures.csv")} <= {"read", "select"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
