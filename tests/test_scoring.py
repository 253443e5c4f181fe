"""A run's score (lstv.scoring): which reference it uses, and lstv score on a finished run."""

import csv
import json

import numpy as np
import pytest

from helpers import (
    SHA_A,
    SHA_B,
    normal_features,
    phantom_infer_config,
    rows_from,
    write_run,
)
from lstv.columns import SCORE_COLUMNS
from lstv.score import fit_reference
from lstv.score_drift import NO_ACQUISITION
from lstv.score_reference import check_checkpoint
from lstv.scoring import load_reference, rescore_run, resolve_reference


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


def test_embedded_reference_needs_no_checkpoint_check():
    ref = fit_reference(normal_features(np.random.default_rng(5), 20), SHA_A)
    setup = resolve_reference(None, SHA_B, {"lstv_reference": ref.to_dict()})
    assert setup.reference == ref
    assert setup.manifest["score_reference"]["source"] == "checkpoint"
    none = resolve_reference(None, SHA_B, {})
    assert none.reference is None and "no score reference" in none.manifest["score_note"]


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


@pytest.mark.slow  # over 10 s on the shared 2-core machine
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
    # the drift check ran (this phantom set is too small to test it: lstv.score_drift's tests do)
    drift = manifest["score_drift"]
    assert {k: drift[k] for k in ("drift", "n", "features", "feature_note")} == {
        "drift": None, "n": len(scored), "features": {}, "feature_note": "too few studies to test"
    }
    # a reference of 8 studies records no acquisition: that part says once it cannot run
    assert drift["verdict"] == "none" and drift["acquisition_drift"] is None
    assert drift["note"] == f"too few studies to test; {NO_ACQUISITION}"

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


# lstv score, killed (SIGKILL: nothing runs after it) right after its CSV took its new place.
KILLED_AFTER_THE_CSV = """
import os, sys
replace = os.replace
def replace_then_die(src, dst, *args, **kwargs):
    replace(src, dst, *args, **kwargs)
    if str(dst).endswith("lstv_uncertainty_metrics.csv"):
        os.kill(os.getpid(), 9)
os.replace = replace_then_die
from lstv.scoring import rescore_run
rescore_run(sys.argv[1], sys.argv[2])
"""


def test_score_killed_between_its_two_files_leaves_them_consistent(tmp_path):
    """17.8: killed after the CSV's rename, lstv score left the CSV scored by the new reference
    and run_manifest.json naming none; stale temporary files stayed in the run folder."""
    import subprocess
    import sys

    from lstv.atomic import file_sha256 as sha
    from lstv.rundir import RunDir

    rng = np.random.default_rng(3)
    csv_path = write_run(tmp_path / "run", rows_from(normal_features(rng, 30)))
    ref = fit_reference(normal_features(rng, 30), SHA_A, rule="max_abs_z")
    ref.save(tmp_path / "ref.json")
    stale = tmp_path / "run" / ".lstv_uncertainty_metrics.csv.k1ll3d.tmp"
    stale.write_text("half a CSV of a killed lstv score")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_THE_CSV, str(csv_path), str(tmp_path / "ref.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    # What any reader sees next: the CSV's score and the manifest's reference agree.
    manifest = RunDir(tmp_path / "run").read_manifest()
    with open(csv_path, newline="") as f:
        scored = [r["lstv_score"] for r in csv.DictReader(f)]
    assert all(scored)
    assert manifest.score_reference_sha256 == sha(tmp_path / "ref.json")
    rescore_run(csv_path, tmp_path / "ref.json")  # the next writer clears what was left
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")) == []
