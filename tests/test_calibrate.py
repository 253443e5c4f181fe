"""lstv calibrate: a reference fitted on a run's labelled normal studies."""

import json
import logging

import numpy as np
import pytest

from helpers import SHA_A, normal_features, rows_from, write_run
from lstv.calibrate import calibrate
from lstv.score import FEATURES, score_rows


def labels_file(path, rows):
    path.write_text("study_id,lstv,lstv_type\n" + "".join(f"{s},{v},{t}\n" for s, v, t in rows))
    return path


# These runs carry the ten map features only: score v1, the leave-one-out maximum.
V1 = {"rule": "max_abs_z", "target_specificity": None}


def test_calibrate_fits_on_labelled_normals_only(tmp_path, caplog):
    rng = np.random.default_rng(9)
    normals = normal_features(rng, 40)
    odd = normal_features(rng, 5)
    odd[:, FEATURES.index("l5_s1_peak2")] = 0.9  # transitional-looking
    rows = rows_from(np.vstack([normals, odd]))
    csv_path = write_run(tmp_path / "run", rows)
    labels = labels_file(
        tmp_path / "labels.csv",
        [(r["study_id"], 0, "normal") for r in rows[:40]]
        + [(r["study_id"], 1, "lumbarization") for r in rows[40:]]
        + [("999", "", "")],  # an unreviewed audit-queue row
    )
    ref = calibrate(csv_path, tmp_path / "ref.json", labels_path=labels, **V1)
    assert ref.n == 40 and ref.checkpoint_sha256 == SHA_A
    assert "40 studies labelled normal" in ref.reference_studies
    assert json.loads((tmp_path / "ref.json").read_text())["n"] == 40
    scores = score_rows(rows, ref)
    assert all(s["lstv_score_flag"] for s in scores[40:])
    assert all(s["lstv_score_driver"] == "l5_s1_peak2" for s in scores[40:])
    with caplog.at_level(logging.WARNING):
        all_ref = calibrate(csv_path, tmp_path / "all.json", **V1)
    assert all_ref.n == 45 and "no --labels" in caplog.text
    with pytest.raises(ValueError, match="would be overwritten"):
        calibrate(csv_path, csv_path, **V1)
    none = labels_file(tmp_path / "none.csv", [(rows[0]["study_id"], 1, "sacralization")])
    with pytest.raises(ValueError, match="no study"):
        calibrate(csv_path, tmp_path / "x.json", labels_path=none, **V1)


def test_calibrate_needs_the_manifest_and_the_feature_columns(tmp_path):
    rows = rows_from(normal_features(np.random.default_rng(10), 10))
    csv_path = write_run(tmp_path / "run", rows)
    (tmp_path / "run" / "run_manifest.json").unlink()
    with pytest.raises(ValueError, match="run_manifest.json not found"):
        calibrate(csv_path, tmp_path / "r.json", **V1)
    for r in rows:
        del r["l5_s1_top100_entropy"]
    csv_path = write_run(tmp_path / "old", rows)
    with pytest.raises(ValueError, match="lacks the feature columns l5_s1_top100_entropy"):
        calibrate(csv_path, tmp_path / "r.json", **V1)


def test_duplicated_rows_count_once(tmp_path, caplog):
    """17.11: "reference of 5 studies" from 3 normal studies, two of them listed twice."""
    rows = rows_from(normal_features(np.random.default_rng(2), 3))
    csv_path = write_run(tmp_path / "run", rows + rows[:2])
    with caplog.at_level(logging.WARNING):
        ref = calibrate(csv_path, tmp_path / "ref.json", **V1)
    assert ref.n == 3
    assert "2 duplicate rows of the same studies, counted once" in caplog.text


def test_calibrate_on_an_unfinished_run_says_so(tmp_path, caplog):
    """17.12: calibrate ran on an interrupted run without a word (lstv score refuses one
    still running)."""
    from lstv.rundir import RunDir

    rows = rows_from(normal_features(np.random.default_rng(2), 6))
    csv_path = write_run(tmp_path / "run", rows)
    run = RunDir(tmp_path / "run")
    run.write_manifest(run.read_manifest().replace(status="interrupted", n_selected=10,
                                                   n_completed=6, finished_at=None))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        ref = calibrate(csv_path, tmp_path / "ref.json", **V1)
    assert "unfinished run" in caplog.text and "interrupted, 6 of 10 studies done" in caplog.text
    assert "unfinished run" in ref.reference_studies


def test_calibrate_records_the_acquisition_of_the_labelled_normals_only(tmp_path, caplog):
    from lstv.acquisition import DESCRIPTORS

    rng = np.random.default_rng(9)
    rows = rows_from(normal_features(rng, 45))
    for i, row in enumerate(rows):  # the 5 transitional ones were read by another scanner
        row.update(dict.fromkeys(DESCRIPTORS, ""))
        row["acq_noise"] = repr(0.05 + 0.001 * (i % 7) if i < 40 else 0.5)
    csv_path = write_run(tmp_path / "run", rows)
    labels = labels_file(
        tmp_path / "labels.csv",
        [(r["study_id"], 0, "normal") for r in rows[:40]]
        + [(r["study_id"], 1, "lumbarization") for r in rows[40:]],
    )
    ref = calibrate(csv_path, tmp_path / "ref.json", labels_path=labels, **V1)
    noise = np.array([0.05 + 0.001 * (i % 7) for i in range(40)])
    assert ref.acquisition == {
        "n": 40,
        "descriptors": {
            "acq_noise": {
                "centre": float(np.median(noise)),
                "spread": 1.4826 * float(np.median(np.abs(noise - np.median(noise)))),
                "n": 40,
            }
        },
    }
    assert json.loads((tmp_path / "ref.json").read_text())["acquisition"] == ref.acquisition
    # a run written before the acquisition columns: a reference without them, and a warning
    old = write_run(tmp_path / "old", rows_from(normal_features(rng, 20)))
    with caplog.at_level(logging.WARNING):
        assert calibrate(old, tmp_path / "old.json", **V1).acquisition == {}
    assert "has no acquisition columns" in caplog.text
    assert "acquisition" not in json.loads((tmp_path / "old.json").read_text())
