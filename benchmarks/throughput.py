"""Throughput of ``lstv infer`` against the DICOM decode floor, and GPU against CPU.

Prints ratios measured in one run on the same phantom studies:
  read / decode floor      series reading (sorting, normalising) vs bare pydicom decoding
  pipeline / decode floor  the whole ``lstv infer`` run vs bare decoding
  forward s/study          the point net alone, per device
plus the absolute seconds per study, for the record. Usage:

    python benchmarks/throughput.py --n_studies 24 [--checkpoint models/phantom_point_net.pth]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def decode_floor(tasks, images_dir: Path) -> float:
    """Seconds to dcmread and decode every file of every series, nothing else."""
    import pydicom

    start = time.perf_counter()
    for t in tasks:
        for f in t.series_dir(images_dir).glob("*.dcm"):
            pydicom.dcmread(f).pixel_array  # noqa: B018 - decoding is the work measured
    return time.perf_counter() - start


def read_time(tasks, images_dir: Path) -> float:
    from lstv.dicom import read_series

    start = time.perf_counter()
    for t in tasks:
        read_series(t.series_dir(images_dir))
    return time.perf_counter() - start


def forward_time(checkpoint: Path, device: str, n: int, batch_size: int) -> float:
    import torch

    from lstv.inference import load_predictor

    predictor, _ = load_predictor(checkpoint, device)
    images = np.random.default_rng(0).integers(0, 255, (batch_size, 160, 160), dtype=np.uint8)
    predictor(images)  # warm-up (cuDNN autotune, allocator)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    done = 0
    while done < n:
        predictor(images)
        done += batch_size
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / done


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_studies", type=int, default=24)
    parser.add_argument(
        "--checkpoint", type=Path, default=REPO / "models" / "phantom_point_net.pth"
    )
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from lstv.phantom import write_phantom_dataset
    from lstv.pipeline import InferenceConfig, run_inference
    from lstv.studies import read_series_table, sagittal_t2_tasks

    with tempfile.TemporaryDirectory() as tmp:
        data = write_phantom_dataset(
            Path(tmp) / "data", n_studies=args.n_studies, seed=99, valid_fraction=1.0
        )
        tasks = sagittal_t2_tasks(read_series_table(data.series_csv))
        floor = decode_floor(tasks, data.images_dir)
        read = read_time(tasks, data.images_dir)
        start = time.perf_counter()
        run_inference(
            InferenceConfig(
                input_dir=data.images_dir,
                series_csv=data.series_csv,
                output_dir=Path(tmp) / "out",
                checkpoint=args.checkpoint,
                valid_ids=data.valid_ids_path,
                mode="prod",
                device="cpu",
                num_workers=args.num_workers,
                batch_size=args.batch_size,
                quiet=True,
            )
        )
        pipeline = time.perf_counter() - start
    n = len(tasks)
    cpu_forward = forward_time(args.checkpoint, "cpu", 64, args.batch_size)
    print(
        f"{n} phantom studies, {torch.get_num_threads()} torch threads, "
        f"{args.num_workers} reader workers, checkpoint {args.checkpoint.name}"
    )
    print(f"decode floor        {floor / n:.3f} s/study")
    print(f"read_series         {read / n:.3f} s/study   ratio to floor {read / floor:.2f}")
    print(f"lstv infer (cpu)    {pipeline / n:.3f} s/study   ratio to floor {pipeline / floor:.2f}")
    print(f"forward cpu         {cpu_forward:.4f} s/study (batch {args.batch_size})")
    if torch.cuda.is_available():
        gpu_forward = forward_time(args.checkpoint, "cuda", 2048, args.batch_size)
        print(
            f"forward cuda (AMP)  {gpu_forward:.5f} s/study   "
            f"cpu/gpu ratio {cpu_forward / gpu_forward:.1f}"
        )


if __name__ == "__main__":
    main()
