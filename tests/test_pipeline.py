"""End-to-end ``lstv infer`` on phantom studies with a random-weight resnet50d in the original
checkpoint layout: outputs, bad input, resume, shards, determinism."""

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest

from lstv.pipeline import InferenceConfig, run_inference
from lstv.results import SEED_COLUMNS
from lstv.rundir import file_sha256


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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
    args = [
        "infer",
        "--input_dir", str(phantom_dataset.images_dir),
        "--series_csv", str(phantom_dataset.series_csv),
        "--output_dir", str(out),
        "--checkpoint", str(tiny_checkpoint),
        "--valid_ids", str(phantom_dataset.valid_ids_path),
        "--mode", "prod", "--device", "cpu", "--quiet", "--num_workers", workers,
    ]  # fmt: skip
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
    code = main([
        "infer",
        "--input_dir", str(phantom_dataset.images_dir),
        "--series_csv", str(phantom_dataset.series_csv),
        "--output_dir", str(out),
        "--checkpoint", str(tiny_checkpoint),
        "--valid_ids", str(phantom_dataset.valid_ids_path),
        "--reference", str(tmp_path / "bad.json"),
        "--mode", "prod", "--device", "cpu", "--num_workers", "0", "--quiet",
    ])  # fmt: skip
    assert code == 2
    assert "bad.json: field 'threshold'" in capsys.readouterr().err
    assert not out.exists()  # before any work: not even the output folder
