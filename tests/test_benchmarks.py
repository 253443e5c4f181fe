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
         "--output_dir", str(tmp_path), "--reference_size", "12", "--shift"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "10 phantom studies" in out
    # today's score and v2 side by side, re-calibrated on the shifted scanner and not
    assert out.count("| today (v1) |") == 2 and out.count("| v2 |") == 2
    assert "without re-calibration" in out and out.count("Drift check") == 2
    assert (tmp_path / "reference_shifted" / "reference_mahalanobis.json").is_file()
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
         "--batch_size", "2", "--work_dir", str(tmp_path), "--breakdown", "--timeline",
         "--sizes", "3"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "3 phantom studies" in out
    for line in ("read / decode ratio", "infer / (decode + forward) ratio", "start-up",
                 "steady state", "steady state in CPU time", "uptime load average",
                 "steady state, median of repeats", "1 repeats interleaved, slope over 1/2/3",
                 "   2 studies: decode floor",
                 "per-study cost of each stage", "metrics + shape", "sort + geometry",
                 "torch._dynamo imported: False", "timeline of lstv infer on 1 studies",
                 "s  lstv infer starts", "s  0 reader processes started",
                 "s  model loaded; 0 of 1 studies read ahead",
                 "s  forward pass of 1 studies done", "s  batch of 1 written",
                 "s  outputs written", "s  process gone", "launch -> model loaded"):
        assert line in out
    steps = [float(line.split()[0]) for line in out.split("timeline of")[1].splitlines()[1:8]]
    assert steps == sorted(steps) and steps[0] > 0  # seconds after the launch, in order
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
    assert "risk bands and flags identical" in proc.stdout
    summary = json.loads(result.read_text())
    assert summary["n_studies"] == 3 and summary["fidelity_bit_identical"] == [3, 3]
    names = [r["checkpoint"] for r in summary["checkpoints"]]
    assert names == ["shipped localizer", "resnet50d random"]
    for r in summary["checkpoints"]:
        assert r["startup_s"] > 0
        # 3 studies may not outlast the start-up run: then no rate, and the output says why
        if r["steady_studies_per_s"] is None:
            assert r["steady_note"] in proc.stdout and r["steady_over_decode"] is None
        else:
            assert r["steady_studies_per_s"] > 0 and "x decode rate" in proc.stdout
        assert r["differing_labels"] == []
        # The same device twice: the same numbers.
        assert r["max_abs_diff"] and max(r["max_abs_diff"].values()) == 0.0
    assert list(work.iterdir()) == []


def test_throughput_headline_is_the_median_of_repeats_over_interleaved_runs():
    """One slow lstv infer run moves the best-timings ratio and its own repeat's, not the
    median of the repeats'; the slope over three set sizes is the marginal cost; the repeats
    alternate their order so drift meets both ends."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from throughput import Repeat, best, median_of_repeats, schedule, set_sizes, slope

    n = (48, 96, 144)
    assert set_sizes(144) == (48, 144) and set_sizes(144, 3) == n and set_sizes(3, 3) == (1, 2, 3)
    assert slope(n, [1.0 + 0.05 * k for k in n]) == pytest.approx(0.05)
    assert slope((48, 144), (3.0, 9.0)) == pytest.approx(6.0 / 96)

    def repeat(floor_per_study, infer_per_study, slow=0.0):
        floors = tuple(floor_per_study * k for k in n)
        infer = tuple(2.0 + infer_per_study * k + (slow if k == 144 else 0.0) for k in n)
        cpu = tuple(2 * v for v in floors)
        return Repeat(
            decode=tuple(f / 3 for f in floors), forward=tuple(2 * f / 3 for f in floors),
            infer=infer, decode_cpu=tuple(c / 3 for c in cpu),
            forward_cpu=tuple(2 * c / 3 for c in cpu), infer_cpu=tuple(1.05 * c for c in cpu),
        )  # fmt: skip

    # The machine got 10% faster during the third repeat, whose large infer run was also slow.
    repeats = [repeat(0.050, 0.0525), repeat(0.050, 0.053), repeat(0.045, 0.047, slow=3.0)]
    m = median_of_repeats(repeats, n)
    assert m["ratio"] == pytest.approx(1.06) and m["cpu_ratio"] == pytest.approx(1.05)
    assert m["startup"] == pytest.approx(2.0)
    assert (m["infer"], m["floor"]) == (pytest.approx(0.053), pytest.approx(0.050))  # repeat 2
    two = median_of_repeats(repeats[:2], n)
    assert two["ratio"] == pytest.approx(1.055) and two["infer"] == pytest.approx(0.05275)
    assert best(repeats).steady(n) > 1.2  # the fast floors of one repeat, the infer of another
    assert repeats[2].steady(n) > 1.4
    assert schedule(0, 2) == [(0, "floor"), (0, "infer"), (1, "floor"), (1, "infer")]
    assert schedule(1, 2) == [(1, "infer"), (1, "floor"), (0, "infer"), (0, "floor")]
    every_run = sorted((k, part) for k in range(3) for part in ("floor", "infer"))
    assert all(sorted(schedule(r, 3)) == every_run for r in range(4))


def test_gpu_benchmark_reports_no_steady_state_within_start_up_noise():
    """A 3-study run as long as the one-study run once printed "2e9 studies/s"."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_benchmark import MIN_MARGINAL, steady_state

    rate, note = steady_state(3, wall=6.0, startup=6.1)
    assert rate is None and note.startswith("no steady state") and "--n_studies" in note
    assert steady_state(3, wall=6.0 * (1 + MIN_MARGINAL) - 0.01, startup=6.0)[0] is None
    assert steady_state(1, wall=20.0, startup=6.0)[0] is None
    rate, note = steady_state(288, wall=20.0, startup=10.0)
    assert rate == pytest.approx(28.7) and note == ""


def test_score_reference_size_benchmark(tmp_path):
    """Calibration normals and a labelled test set of the same checkpoint, made by hand."""
    import csv
    import json

    import numpy as np

    from lstv.score import FEATURES

    rng = np.random.default_rng(0)

    def write_run(folder, n, shift_peak2=()):
        folder.mkdir()
        cols = ["study_id", "series_id"]
        for name in FEATURES:
            cols.append(name.replace("one_minus_confidence", "confidence"))
        rows = []
        for i in range(n):
            row = {"study_id": str(100 + i), "series_id": "1"}
            for name in FEATURES:
                feature = name[6:]
                v = {
                    "entropy": rng.normal(8.0, 0.1),
                    "one_minus_confidence": float(np.exp(rng.normal(-7, 1))),
                    "peak2": 0.9 if i in shift_peak2 and name.startswith("l5_s1") else float(
                        np.exp(rng.normal(-3.5, 0.3))
                    ),
                    "mass_out": float(np.exp(rng.normal(-2.5, 0.2))),
                    "top100_entropy": rng.normal(4.0, 0.1),
                }[feature]
                col = name.replace("one_minus_confidence", "confidence")
                row[col] = 1 - v if feature == "one_minus_confidence" else v
            rows.append(row)
        with open(folder / "lstv_uncertainty_metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            writer.writerows(rows)
        (folder / "run_manifest.json").write_text(json.dumps({"checkpoint": {"sha256": "c" * 64}}))
        return folder / "lstv_uncertainty_metrics.csv", rows

    cal, _ = write_run(tmp_path / "cal", 60)
    test, rows = write_run(tmp_path / "test", 40, shift_peak2=range(30, 40))
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        f.write("study_id,lstv,lstv_type,pfirrmann_l4_l5,pfirrmann_l5_s1\n")
        for i, r in enumerate(rows):
            kind = "normal" if i < 30 else ("sacralization" if i < 35 else "lumbarization")
            f.write(f"{r['study_id']},{int(i >= 30)},{kind},{4 if i % 2 else 2},2\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "score_reference_size.py"),
         "--calibration_csv", str(cal), "--test_csv", str(test), "--test_labels", str(labels),
         "--sizes", "20", "40", "--repeats", "5", "--n_bootstrap", "50"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "calibration pool 60 normal studies" in out and "degenerated 15" in out
    assert "| all 60 |" in out and "| 20 (5 draws) |" in out and "| 40 (5 draws) |" in out
    # a second L5/S1 peak of 0.9 is far outside these normals: every LSTV study is flagged
    assert "100.0% (5/5) | 100.0% (5/5) |" in out


@pytest.mark.slow
def test_phantom_cues_prints_each_subtype():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "phantom_cues.py"), "--n", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for subtype in ("normal", "sacralization_complete", "lumbarization_full"):
        assert f"| {subtype} |" in proc.stdout


@pytest.mark.slow
def test_acquisition_drift_benchmark_tells_a_shifted_set_from_a_like_one(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "acquisition_drift.py"), "--n_studies", "30",
         "--reference_size", "30", "--like_seeds", "9001", "--like_fractions", "1.0",
         "--shifted_seeds", "9101", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| 9001 | default | 100% | silent |" in out  # every study transitional
    shifted = next(line for line in out.splitlines() if line.startswith("| 9101 |"))
    assert shifted.startswith("| 9101 | shifted | 30% | acquisition drift (")
    assert "acq_sharpness" in shifted.split(")")[0]  # what the coarser resolution moves
    assert "Like sets silent: 1 of 1; shifted sets fired: 1 of 1" in out
