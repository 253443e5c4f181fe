import json

import pytest

from lstv.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--output_dir", str(out), "--n_studies", "6", "--checkpoint",
                 str(tiny_checkpoint), "--device", "cpu", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "6 of 6 phantom studies analysed" in printed
    for name in ("lstv_uncertainty_metrics.csv", "failures.csv", "run_manifest.json",
                 "report.html", "audit_queue.csv", "evaluation/evaluation.json",
                 "evaluation/roc.png"):
        assert (out / name).is_file(), name
    for name in ("lstv_uncertainty_metrics.csv", "report.html", "audit_queue.csv",
                 "evaluation/evaluation.json"):
        assert str(out / name) in printed  # the demo says where its results are
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["validation_filter"] is True and manifest["n_completed"] == 6
    assert len(list((out / "heatmaps").glob("*.npz"))) == 6


def test_demo_without_checkpoint_says_where_it_comes_from(tmp_path, capsys):
    code = main(["demo", "--output_dir", str(tmp_path), "--checkpoint",
                 str(tmp_path / "absent.pth"), "--quiet"])
    assert code == 2
    assert "models/README.md" in capsys.readouterr().err
