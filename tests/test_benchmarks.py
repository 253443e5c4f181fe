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
def test_throughput_benchmark_prints_ratios(tiny_checkpoint):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--n_studies", "4",
         "--checkpoint", str(tiny_checkpoint), "--num_workers", "0"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio to floor" in proc.stdout and "forward cpu" in proc.stdout
