"""The GPU path of ``lstv infer`` measured in one call (issue 10): a few minutes on a GPU node.

For the shipped phantom localizer and a random-weight resnet50d in the layout of hengck23's
checkpoint, on phantom studies written in parallel:

  decode floor          every study decoded by one reader process per core (wall seconds)
  lstv infer            the whole process on ``--device`` (AMP on CUDA) with one reader per
                        core; start-up (a one-study run) reported apart from the steady state,
                        studies/s = (N - 1) / (wall of the N-study run - wall of the 1-study run),
                        not reported (a note says why) when the N-study run is not at least
                        1.25 x the 1-study run: too few studies to leave start-up noise behind
                                                       target: steady state >= 0.8 x decode rate
  agreement             the same studies through ``lstv infer --device cpu``: max |diff| of each
                        metric column, and whether risk bands and flags are identical
  fidelity              the model input of every study bit-identical to the original's
                        whole-volume resize on this machine's OpenCV

It also runs on the CPU at test size, which is how the tests exercise it:

    python benchmarks/gpu_benchmark.py                       # CUDA, 288 studies
    python benchmarks/gpu_benchmark.py --device cpu --n_studies 4 --agreement_studies 2
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (  # noqa: E402 - the shared measurements of the CPU benchmark
    REPO,
    Phantoms,
    decode_pool,
    infer_command,
    parallel_decode,
    run_infer,
    write_phantoms,
)

STEADY_TARGET = 0.8
# The N-study run must outlast the one-study run by this share of it, else the difference is
# start-up noise and (N - 1) / difference is no rate (3 studies once gave "2e9 studies/s").
MIN_MARGINAL = 0.25
NON_METRIC_COLUMNS = {"study_id", "series_id", "series_description"}


def original_layout_checkpoint(path: Path) -> Path:
    """A random-weight resnet50d point net saved as hengck23's ``00002484.pth`` is laid out."""
    import torch

    from lstv.model import PointNet

    torch.manual_seed(0)
    torch.save({"state_dict": PointNet().state_dict(), "iteration": 2484, "epoch": 10}, path)
    return path


def read_rows(out: Path) -> dict[str, dict[str, str]]:
    from lstv.rundir import RunDir

    with open(RunDir(out).metrics_csv, newline="") as f:
        return {row["study_id"]: row for row in csv.DictReader(f)}


def agreement(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> dict:
    """Max |a - b| per numeric column, and the non-numeric columns that differ anywhere."""
    if a.keys() != b.keys():
        raise RuntimeError(f"the runs differ in studies: {sorted(a.keys() ^ b.keys())[:5]}")
    max_diff: dict[str, float] = {}
    differing: set[str] = set()
    for study, row in a.items():
        for column, value in row.items():
            other = b[study][column]
            if column in NON_METRIC_COLUMNS:
                continue
            try:
                x, y = float(value), float(other)
            except ValueError:
                if value != other:
                    differing.add(column)
                continue
            if np.isnan(x) and np.isnan(y):
                continue
            max_diff[column] = max(max_diff.get(column, 0.0), abs(x - y))
    return {"max_abs_diff": max_diff, "differing_labels": sorted(differing)}


def per_metric(max_abs_diff: dict[str, float]) -> dict[str, float]:
    """Column maxima grouped by metric, over the levels (``l5_s1_entropy`` -> ``entropy``)."""
    from lstv.levels import LEVEL_KEYS

    grouped: dict[str, float] = {}
    for column, value in max_abs_diff.items():
        level = next((k for k in LEVEL_KEYS if column.startswith(k + "_")), None)
        metric = column[len(level) + 1 :] if level else column
        grouped[metric] = max(grouped.get(metric, 0.0), value)
    return grouped


def fidelity(data: Phantoms) -> tuple[int, int]:
    """How many studies' model inputs equal the original's whole-volume resize, of how many."""
    import cv2

    from lstv.dicom import read_series
    from lstv.inference import model_input

    same = 0
    for source in data.sources:
        volume = read_series(source).volume
        whole = cv2.resize(volume.transpose(1, 2, 0), (160, 160), interpolation=cv2.INTER_LINEAR)
        original = whole.reshape(160, 160, -1).transpose(2, 0, 1)[len(volume) // 2]
        same += bool(np.array_equal(model_input(volume, 160), original))
    return same, len(data.sources)


def steady_state(n: int, wall: float, startup: float) -> tuple[float | None, str]:
    """Studies per second once started, (n - 1) / (wall - startup), or None and why not when
    the n-study run did not outlast the one-study run by MIN_MARGINAL of it."""
    marginal = wall - startup
    if n < 2 or marginal < MIN_MARGINAL * startup:
        return None, (
            f"no steady state: the {n}-study run ({wall:.1f} s) did not outlast the one-study "
            f"start-up run ({startup:.1f} s) by {MIN_MARGINAL:.0%} of it; use more studies "
            "(--n_studies)"
        )
    return (n - 1) / marginal, ""


def measure_checkpoint(name, checkpoint, data, args, tmp: Path, decode_rate: float) -> dict:
    n = len(data.sources)
    one, full = tmp / f"{name}-one", tmp / f"{name}-full"
    on_device = (args.device, args.workers, args.batch_size)
    startup, _ = run_infer(
        infer_command(data, checkpoint, one, *on_device, "--mode", "debug"), 1, one
    )
    wall, _ = run_infer(infer_command(data, checkpoint, full, *on_device), n, full)
    steady, note = steady_state(n, wall, startup)
    m = min(args.agreement_studies, n)
    cpu = tmp / f"{name}-cpu"
    on_cpu = ("cpu", args.workers, args.batch_size)
    extra = ("--mode", "trial", "--n_trial", str(m), "--seed", "0")
    run_infer(infer_command(data, checkpoint, cpu, *on_cpu, *extra), m, cpu)
    dev = tmp / f"{name}-{args.device}-subset"
    run_infer(infer_command(data, checkpoint, dev, *on_device, *extra), m, dev)
    return {
        "checkpoint": name,
        "startup_s": startup,
        "wall_s": wall,
        "steady_studies_per_s": steady,
        "steady_over_decode": None if steady is None else steady / decode_rate,
        "steady_note": note,
        "agreement_studies": m,
        **agreement(read_rows(cpu), read_rows(dev)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--n_studies", type=int, default=288)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="readers")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="decode floor repeats (best)")
    parser.add_argument("--agreement_studies", type=int, default=64)
    parser.add_argument(
        "--checkpoint", type=Path, default=REPO / "models" / "phantom_point_net.pth"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--work_dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu for a dry run)")
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        data = write_phantoms(tmp / "data", args.n_studies, args.workers)
        write_s = time.perf_counter() - start
        n = len(data.sources)
        with decode_pool(args.workers) as pool:
            floor = min(parallel_decode(pool, data)[0] for _ in range(args.repeats))
        decode_rate = n / floor
        same, total = fidelity(data)
        random50 = original_layout_checkpoint(tmp / "00002484.pth")
        checkpoints = (("shipped localizer", args.checkpoint), ("resnet50d random", random50))
        results = [
            measure_checkpoint(name, path, data, args, tmp, decode_rate)
            for name, path in checkpoints
        ]
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    summary = {
        "device": device,
        "amp": args.device == "cuda",
        "cores": os.cpu_count(),
        "readers": args.workers,
        "n_studies": n,
        "phantoms_written_s": write_s,
        "decode_floor_s": floor,
        "decode_studies_per_s": decode_rate,
        "fidelity_bit_identical": [same, total],
        "checkpoints": results,
    }
    print(
        f"{n} phantom studies written in {write_s:.1f} s; device {device}"
        f"{' (AMP fp16)' if summary['amp'] else ''}; {args.workers} readers on "
        f"{os.cpu_count()} cores; batch {args.batch_size}"
    )
    print(f"decode floor ({args.workers} readers)   {floor:.2f} s = {decode_rate:.1f} studies/s")
    print(f"fidelity: model input = original's whole-volume resize for {same}/{total} studies")
    for r in results:
        steady = r["steady_note"] or (
            f"steady state {r['steady_studies_per_s']:.1f} studies/s = "
            f"{r['steady_over_decode']:.2f} x decode rate (target >= {STEADY_TARGET})"
        )
        print(
            f"{r['checkpoint']}: start-up {r['startup_s']:.1f} s, whole run {r['wall_s']:.1f} s, "
            + steady
        )
        bands = "identical" if not r["differing_labels"] else f"DIFFER in {r['differing_labels']}"
        print(
            f"  {args.device} vs cpu on {r['agreement_studies']} studies: risk bands and flags "
            f"{bands}; max |diff| per metric (over levels): "
            + ", ".join(f"{k} {v:.1e}" for k, v in per_metric(r["max_abs_diff"]).items())
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
