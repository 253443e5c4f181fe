import csv
import json
import logging
import math

import numpy as np
import pytest

from helpers import phantom_infer_config
from lstv.calibrate import (
    FEATURES,
    SCORE_COLUMNS,
    Reference,
    calibrate,
    check_checkpoint,
    describe,
    embed_reference,
    feature_matrix,
    fit_reference,
    leave_one_out_scores,
    load_reference,
    required_columns,
    rescore_run,
    resolve_reference,
    robust_location_scale,
    score_rows,
)
from lstv.rundir import Manifest, RunDir

SHA_A = "a" * 64
SHA_B = "b" * 64


def normal_features(rng, n):
    """Raw features like a localizer's on normal studies: entropy ~9.6, small ratios."""
    cols = {
        "entropy": lambda: rng.normal(9.6, 0.02, n),
        "one_minus_confidence": lambda: np.exp(rng.normal(np.log(3e-4), 0.4, n)),
        "peak2": lambda: np.exp(rng.normal(np.log(0.04), 0.25, n)),
        "mass_out": lambda: np.exp(rng.normal(np.log(0.2), 0.15, n)),
        "top100_entropy": lambda: rng.normal(3.7, 0.04, n),
    }
    return np.column_stack([cols[name.split("_", 2)[2]]() for name in FEATURES])


def rows_from(raw, start_id=1000, **extra):
    rows = []
    for i, values in enumerate(raw):
        row = {"study_id": str(start_id + i), "series_id": str(7000 + i)}
        for name, v in zip(FEATURES, values, strict=True):
            level, feature = name[:5], name[6:]
            if feature == "one_minus_confidence":
                row[f"{level}_confidence"] = repr(float(1.0 - v))
            else:
                row[name] = repr(float(v))
        row[f"{FEATURES[0][:5]}_peak2_dx_mm"] = "0.0"
        row.update(extra)
        rows.append(row)
    return rows


def write_run(folder, rows, sha=SHA_A):
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(folder / "lstv_uncertainty_metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    manifest = Manifest(
        checkpoint={"path": "m.pth", "sha256": sha},
        status="complete",
        finished_at="2026-01-01T00:00:00+00:00",
        extra={"k": 1},  # a key of a newer version: the rewrite must keep it
    )
    RunDir(folder).write_manifest(manifest)
    return folder / "lstv_uncertainty_metrics.csv"


def test_robust_scale_falls_back_from_mad_to_iqr_std_and_one():
    assert robust_location_scale([1, 2, 3, 4, 100]) == (3.0, pytest.approx(1.4826), "mad")
    # more than half equal: MAD 0, IQR not
    centre, scale, rule = robust_location_scale([5, 5, 5, 5, 5, 9, 9, 9])
    assert (centre, rule) == (5.0, "iqr") and scale == pytest.approx(4 / 1.349)
    centre, scale, rule = robust_location_scale([5] * 9 + [8])
    assert rule == "std" and scale == pytest.approx(np.std([5] * 9 + [8], ddof=1))
    assert robust_location_scale([2.0, 2.0, np.nan]) == (2.0, 1.0, "one")
    with pytest.raises(ValueError, match="no finite"):
        robust_location_scale([np.nan])


def test_a_study_at_the_reference_median_scores_zero():
    raw = normal_features(np.random.default_rng(0), 41)
    ref = fit_reference(raw, SHA_A)
    median = np.median(raw, axis=0)  # 41 rows: the median is one of them, log or not
    score, driver, flag = ref.score(median[None])
    assert score[0] == pytest.approx(0.0, abs=1e-12)
    assert not flag[0]
    assert ref.n == 41 and ref.log_features == (
        "l4_l5_one_minus_confidence",
        "l4_l5_peak2",
        "l4_l5_mass_out",
        "l5_s1_one_minus_confidence",
        "l5_s1_peak2",
        "l5_s1_mass_out",
    )


def test_score_is_the_largest_two_sided_z_and_names_its_feature():
    raw = normal_features(np.random.default_rng(1), 60)
    ref = fit_reference(raw, SHA_A)
    study = np.median(raw, axis=0)
    j = FEATURES.index("l5_s1_entropy")
    study_low = study.copy()
    study_low[j] -= 10 * ref.scale["l5_s1_entropy"]  # entropy *falls*: still an outlier
    score, driver, flag = ref.score(study_low[None])
    assert score[0] == pytest.approx(10.0)
    assert driver == ["l5_s1_entropy"] and flag[0]
    k = FEATURES.index("l5_s1_peak2")
    study_peak = study.copy()
    study_peak[k] = 0.8
    z = (np.log(0.8 + 1e-4) - ref.centre["l5_s1_peak2"]) / ref.scale["l5_s1_peak2"]
    score, driver, _ = ref.score(study_peak[None])
    assert driver == ["l5_s1_peak2"] and score[0] == pytest.approx(z)


def test_threshold_is_the_leave_one_out_maximum_or_a_quantile():
    raw = normal_features(np.random.default_rng(2), 50)
    ref = fit_reference(raw, SHA_A)
    loo = leave_one_out_scores(ref.transform(raw))
    assert ref.threshold == pytest.approx(loo.max())
    assert "leave-one-out maximum" in ref.threshold_rule
    # every reference study is scored against all 50 here, so none exceeds its LOO max
    assert not ref.score(raw)[2].any()
    q = fit_reference(raw, SHA_A, target_specificity=0.9)
    assert q.threshold == pytest.approx(np.quantile(loo, 0.9))
    assert q.threshold < ref.threshold and "0.9" in q.threshold_rule
    with pytest.raises(ValueError, match="specificity"):
        fit_reference(raw, SHA_A, target_specificity=1.5)
    with pytest.raises(ValueError, match="at least 3"):
        fit_reference(raw[:2], SHA_A)


def test_serve_refuses_a_reference_of_another_checkpoint(tmp_path, tiny_checkpoint, capsys):
    from lstv.cli import main

    path = fit_reference(normal_features(np.random.default_rng(3), 30), SHA_A).save(
        tmp_path / "ref.json"
    )
    args = ["serve", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert main([*args, "--reference", str(path), "--port", "0"]) == 2
    assert SHA_A in capsys.readouterr().err


def test_reference_from_another_checkpoint_is_refused(tmp_path):
    raw = normal_features(np.random.default_rng(3), 30)
    path = fit_reference(raw, SHA_A).save(tmp_path / "ref.json")
    ref = load_reference(path)
    check_checkpoint(ref, SHA_A, "reference")
    with pytest.raises(ValueError) as err:
        check_checkpoint(ref, SHA_B, f"reference {path}")
    assert SHA_A in str(err.value) and SHA_B in str(err.value)
    with pytest.raises(ValueError, match=SHA_B):
        resolve_reference(path, SHA_B, {})


def test_json_round_trip_and_bad_files(tmp_path):
    raw = normal_features(np.random.default_rng(4), 25)
    ref = fit_reference(raw, SHA_A, reference_studies="25 test studies", extra={"labels": "x"})
    data = json.loads(ref.save(tmp_path / "r.json").read_text())
    assert data["format"] == "lstv-score-reference" and data["checkpoint_sha256"] == SHA_A
    assert data["n"] == 25 and data["features"] == list(FEATURES)
    assert data["threshold_rule"] and data["created_at"] and data["lstv_version"]
    again = load_reference(tmp_path / "r.json")
    assert again == ref
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an LSTV score reference"):
        load_reference(tmp_path / "bad.json")
    broken = dict(data, scale={**data["scale"], "l5_s1_peak2": 0})
    (tmp_path / "zero.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="positive scale"):
        load_reference(tmp_path / "zero.json")
    with pytest.raises(FileNotFoundError):
        load_reference(tmp_path / "missing.json")


def test_embedded_reference_needs_no_checkpoint_check():
    ref = fit_reference(normal_features(np.random.default_rng(5), 20), SHA_A)
    setup = resolve_reference(None, SHA_B, {"lstv_reference": ref.to_dict()})
    assert setup.reference == ref
    assert setup.manifest["score_reference"]["source"] == "checkpoint"
    none = resolve_reference(None, SHA_B, {})
    assert none.reference is None and "no score reference" in none.manifest["score_note"]


def test_feature_matrix_reads_text_and_empty_cells():
    rows = rows_from(normal_features(np.random.default_rng(6), 2))
    rows[1]["l5_s1_peak2"] = ""
    x = feature_matrix(rows)
    assert x.shape == (2, len(FEATURES)) and np.isnan(x[1, FEATURES.index("l5_s1_peak2")])
    assert x[0, FEATURES.index("l4_l5_one_minus_confidence")] == pytest.approx(
        1 - float(rows[0]["l4_l5_confidence"])
    )
    del rows[0]["l4_l5_mass_out"]
    with pytest.raises(ValueError, match="l4_l5_mass_out"):
        feature_matrix(rows, source="run.csv")
    assert "l5_s1_confidence" in required_columns() and "l5_s1_one_minus_confidence" not in (
        required_columns()
    )


def test_describe_says_where_the_second_peak_is():
    raw = normal_features(np.random.default_rng(7), 30)
    ref = fit_reference(raw, SHA_A)
    row = {"l5_s1_peak2_dx_mm": "1.5", "l5_s1_peak2_dy_mm": "23.2"}
    text = describe("l5_s1_peak2", 0.81, 9.4, ref, row)
    assert text.startswith("L5/S1 map has a second peak 23 mm below the first (0.81 of the peak")
    assert text.endswith("z = +9.4")
    assert "above" in describe(
        "l4_l5_peak2", 0.5, 3.0, ref, {"l4_l5_peak2_dx_mm": "2", "l4_l5_peak2_dy_mm": "-30"}
    )
    assert "more concentrated" in describe("l5_s1_entropy", 9.3, -12.0, ref)
    assert "peak probability lower" in describe("l5_s1_one_minus_confidence", 0.6, 8.0, ref)


def test_score_rows_leave_rows_without_features_empty():
    raw = normal_features(np.random.default_rng(8), 30)
    ref = fit_reference(raw, SHA_A)
    rows = rows_from(raw[:2])
    for name in FEATURES:
        col = name.replace("one_minus_confidence", "confidence")
        rows[1][col] = ""
    out = score_rows(rows, ref)
    assert set(out[0]) == set(SCORE_COLUMNS) and out[0]["lstv_score"] != ""
    assert out[1] == dict.fromkeys(SCORE_COLUMNS, "")


def labels_file(path, rows):
    path.write_text("study_id,lstv,lstv_type\n" + "".join(f"{s},{v},{t}\n" for s, v, t in rows))
    return path


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
    ref = calibrate(csv_path, tmp_path / "ref.json", labels_path=labels)
    assert ref.n == 40 and ref.checkpoint_sha256 == SHA_A
    assert "40 studies labelled normal" in ref.reference_studies
    assert json.loads((tmp_path / "ref.json").read_text())["n"] == 40
    scores = score_rows(rows, ref)
    assert all(s["lstv_score_flag"] for s in scores[40:])
    assert all(s["lstv_score_driver"] == "l5_s1_peak2" for s in scores[40:])
    with caplog.at_level(logging.WARNING):
        all_ref = calibrate(csv_path, tmp_path / "all.json")
    assert all_ref.n == 45 and "no --labels" in caplog.text
    with pytest.raises(ValueError, match="would be overwritten"):
        calibrate(csv_path, csv_path)
    none = labels_file(tmp_path / "none.csv", [(rows[0]["study_id"], 1, "sacralization")])
    with pytest.raises(ValueError, match="no study"):
        calibrate(csv_path, tmp_path / "x.json", labels_path=none)


def test_calibrate_needs_the_manifest_and_the_feature_columns(tmp_path):
    rows = rows_from(normal_features(np.random.default_rng(10), 10))
    csv_path = write_run(tmp_path / "run", rows)
    (tmp_path / "run" / "run_manifest.json").unlink()
    with pytest.raises(ValueError, match="run_manifest.json not found"):
        calibrate(csv_path, tmp_path / "r.json")
    for r in rows:
        del r["l5_s1_top100_entropy"]
    csv_path = write_run(tmp_path / "old", rows)
    with pytest.raises(ValueError, match="lacks the feature columns l5_s1_top100_entropy"):
        calibrate(csv_path, tmp_path / "r.json")


def test_score_rewrites_only_the_score_columns(tmp_path):
    rng = np.random.default_rng(11)
    raw = normal_features(rng, 30)
    rows = rows_from(raw, notes='said "fine", twice')
    rows[3]["l5_s1_peak2"] = "0.95"
    csv_path = write_run(tmp_path / "run", rows)
    ref_path = fit_reference(raw, SHA_A).save(tmp_path / "ref.json")
    before = csv_path.read_text()
    result = rescore_run(csv_path, ref_path)
    assert result["n_rows"] == 30 and result["n_scored"] == 30 and result["n_flagged"] >= 1
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header, after = reader.fieldnames, list(reader)
    assert header == list(rows[0]) + list(SCORE_COLUMNS)
    for old, new in zip(rows, after, strict=True):
        assert {k: new[k] for k in old} == old  # every other cell, text for text
    assert after[3]["lstv_score_flag"] == "True" and after[3]["lstv_score_driver"] == "l5_s1_peak2"
    manifest = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    assert manifest["score_reference"]["checkpoint_sha256"] == SHA_A and manifest["k"] == 1
    # scoring again with the same reference gives the same file
    once = csv_path.read_text()
    rescore_run(csv_path, ref_path)
    assert csv_path.read_text() == once != before
    # another checkpoint's reference: refused, nothing changed
    other = fit_reference(raw, SHA_B).save(tmp_path / "other.json")
    with pytest.raises(ValueError, match=SHA_B):
        rescore_run(csv_path, other)
    assert csv_path.read_text() == once
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_reference_scales_are_finite_and_positive():
    raw = normal_features(np.random.default_rng(12), 20)
    ref = fit_reference(raw, SHA_A)
    assert all(math.isfinite(ref.centre[f]) and ref.scale[f] > 0 for f in FEATURES)
    assert isinstance(ref, Reference)


def test_infer_with_a_reference_scores_as_lstv_score_does(
    tmp_path, phantom_dataset, tiny_checkpoint
):
    """infer (no reference) -> calibrate -> infer --reference equals lstv score on the first run;
    a reference of another checkpoint is refused before anything is written."""
    from lstv.cli import main
    from lstv.pipeline import run_inference

    def config(out, **kw):
        return phantom_infer_config(phantom_dataset, out, tiny_checkpoint, **kw)

    def read(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    run_inference(config(tmp_path / "plain"))
    plain_csv = tmp_path / "plain" / "lstv_uncertainty_metrics.csv"
    plain = read(plain_csv)
    assert plain and all(r[c] == "" for r in plain for c in SCORE_COLUMNS)
    assert all(r["l5_s1_top100_entropy"] != "" for r in plain)
    manifest = json.loads((tmp_path / "plain" / "run_manifest.json").read_text())
    assert manifest["score_reference"] is None and "no score reference" in manifest["score_note"]

    ref = tmp_path / "ref.json"
    assert main(["calibrate", "--csv", str(plain_csv), "--output", str(ref), "--quiet"]) == 0
    run_inference(config(tmp_path / "scored", reference=ref))
    scored = read(tmp_path / "scored" / "lstv_uncertainty_metrics.csv")
    manifest = json.loads((tmp_path / "scored" / "run_manifest.json").read_text())
    assert manifest["score_reference"]["path"] == str(ref)

    assert main(["score", "--csv", str(plain_csv), "--reference", str(ref), "--quiet"]) == 0
    rescored = read(plain_csv)
    for a, b in zip(scored, rescored, strict=True):
        assert a["study_id"] == b["study_id"] and a["lstv_score"] != ""
        assert {c: a[c] for c in SCORE_COLUMNS} == {c: b[c] for c in SCORE_COLUMNS}
        assert a["lstv_flag"] == b["lstv_flag"] and a["risk_level"] == b["risk_level"]

    data = json.loads(ref.read_text())
    data["checkpoint_sha256"] = SHA_B
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=SHA_B):
        run_inference(config(tmp_path / "refused", reference=other))
    assert not (tmp_path / "refused" / "lstv_uncertainty_metrics.csv").exists()


def test_a_reference_embedded_in_a_checkpoint_travels_with_it(tmp_path):
    import torch

    from lstv.model import PointNet, file_sha256, read_checkpoint, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(PointNet("resnet10t"), tmp_path / "c.pth", iteration=0, epoch=0)
    raw = normal_features(np.random.default_rng(13), 20)
    ref_path = fit_reference(raw, file_sha256(ckpt)).save(tmp_path / "ref.json")
    out = embed_reference(ckpt, ref_path, tmp_path / "with_ref.pth")
    obj = read_checkpoint(out)
    assert obj["config"]["lstv_reference"]["n"] == 20
    before = read_checkpoint(ckpt)["state_dict"]
    for k, v in obj["state_dict"].items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])
    # lstv score --reference CHECKPOINT: the embedded reference, checked against that file
    embedded = load_reference(out)
    assert embedded.checkpoint_sha256 == file_sha256(out) and embedded.n == 20
    other = fit_reference(raw, SHA_B).save(tmp_path / "other.json")
    with pytest.raises(ValueError, match=SHA_B):
        embed_reference(ckpt, other, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="overwritten"):
        embed_reference(ckpt, ref_path, ckpt)
