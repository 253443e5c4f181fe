"""The benchmarks run end to end at a small N (the full runs are documented in the README)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_phantom_auc_benchmark_small(tiny_checkpoint, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "phantom_auc.py"), "--n_studies", "10",
         "--checkpoint", str(tiny_checkpoint), "--n_bootstrap", "50",
         "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "10 phantom studies" in out
    for score in ("l5_s1_entropy", "l4_l5_entropy", "l5_s1_one_minus_confidence",
                  "l5_s1_spatial_entropy"):
        assert f"| {score} |" in out
    assert "| l5_s1 |" in out  # localisation table
    assert (tmp_path / "evaluation" / "evaluation.json").is_file()


@pytest.mark.slow
def test_throughput_benchmark_prints_ratios(tiny_checkpoint, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--n_studies", "3",
         "--checkpoint", str(tiny_checkpoint), "--num_workers", "1", "--repeats", "1",
         "--batch_size", "2", "--work_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "3 phantom studies" in out
    for line in ("read / decode ratio", "infer / (decode + forward) ratio", "start-up"):
        assert line in out
    assert list(tmp_path.iterdir()) == []  # phantoms and runs cleaned up


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu_at_test_size(tiny_checkpoint, tmp_path):
    import json

    result = tmp_path / "gpu.json"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_benchmark.py"), "--device", "cpu",
         "--n_studies", "3", "--workers", "2", "--agreement_studies", "2", "--repeats", "1",
         "--batch_size", "2", "--checkpoint", str(tiny_checkpoint), "--json", str(result),
         "--work_dir", str(work)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "x decode rate" in proc.stdout and "risk bands and flags identical" in proc.stdout
    summary = json.loads(result.read_text())
    assert summary["n_studies"] == 3 and summary["fidelity_bit_identical"] == [3, 3]
    names = [r["checkpoint"] for r in summary["checkpoints"]]
    assert names == ["shipped localizer", "resnet50d random"]
    for r in summary["checkpoints"]:
        assert r["steady_studies_per_s"] > 0 and r["startup_s"] > 0
        assert r["differing_labels"] == []
        # The same device twice: the same numbers.
        assert r["max_abs_diff"] and max(r["max_abs_diff"].values()) == 0.0
    assert list(work.iterdir()) == []
