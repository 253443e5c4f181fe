"""Throughput of ``lstv infer`` against its floors, as ratios measured in one run (issue 10).

On the same phantom studies, each measurement repeated and the fastest repeat kept (the
measurements of a repeat run back to back, so a busy machine slows numerator and denominator
alike):

  read_series / decode       series reading (order, normalise) vs bare pydicom decoding of the
                             same files, one process                          target <= 1.3
  lstv infer / floor         the whole ``lstv infer`` process (start-up included) vs the parallel
                             decode floor (the same number of reader processes) plus the bare
                             forward floor of the same checkpoint             target <= 1.15

plus the start-up of ``lstv infer`` (a one-study run) and the absolute seconds. Usage:

    python benchmarks/throughput.py --n_studies 96 --num_workers 2 \\
        [--checkpoint models/phantom_point_net.pth] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstv.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
READ_TARGET = 1.3
INFER_TARGET = 1.15


@dataclass(frozen=True)
class Phantoms:
    images_dir: Path
    series_csv: Path
    valid_ids: Path
    sources: list  # what read_series reads, per study, in selection order

    def files(self, i: int) -> list[Path]:
        source = self.sources[i]
        return sorted(source.glob("*.dcm")) if isinstance(source, Path) else list(source)


def write_phantoms(root: Path, n_studies: int, workers: int, seed: int = 99) -> Phantoms:
    """``n_studies`` phantom studies, all held out, written by ``workers`` processes."""
    from lstv.phantom import write_phantom_dataset
    from lstv.studies import study_tasks

    data = write_phantom_dataset(
        root, n_studies=n_studies, seed=seed, valid_fraction=1.0, workers=workers
    )
    tasks = study_tasks(data.series_csv)
    return Phantoms(
        data.images_dir,
        data.series_csv,
        data.valid_ids_path,
        [t.series_source(data.images_dir) for t in tasks],
    )


def decode(files: list[Path]) -> None:
    """The floor of reading: dcmread and decode each file, nothing else."""
    import pydicom

    for f in files:
        pydicom.dcmread(f).pixel_array  # noqa: B018 - decoding is the work measured


def read_vs_decode(data: Phantoms, repeats: int) -> tuple[float, float]:
    """Seconds for all studies (each study's fastest repeat): bare decode, and read_series.
    The two alternate study by study, so both see the same file cache and machine load."""
    from lstv.dicom import read_series

    best_decode = [np.inf] * len(data.sources)
    best_read = [np.inf] * len(data.sources)
    for _ in range(repeats):
        for i, source in enumerate(data.sources):
            files = data.files(i)
            start = time.perf_counter()
            decode(files)
            middle = time.perf_counter()
            read_series(source)
            end = time.perf_counter()
            best_decode[i] = min(best_decode[i], middle - start)
            best_read[i] = min(best_read[i], end - middle)
    return float(sum(best_decode)), float(sum(best_read))


@contextlib.contextmanager
def decode_pool(workers: int):
    """``workers`` forked processes, started and warmed up before anything is timed."""
    import multiprocessing

    import pydicom  # noqa: F401 - imported once here, inherited by the forked readers

    with multiprocessing.get_context("fork").Pool(max(1, workers)) as pool:
        pool.map(abs, range(workers * 4))
        yield pool


def parallel_decode(pool, data: Phantoms) -> float:
    """Wall seconds for ``pool`` to decode every study (one task per study)."""
    jobs = [data.files(i) for i in range(len(data.sources))]
    start = time.perf_counter()
    pool.map(decode, jobs, chunksize=1)
    return time.perf_counter() - start


def model_inputs(data: Phantoms, image_size: int = 160) -> np.ndarray:
    """The studies' real (N, S, S) model inputs."""
    from lstv.dicom import read_series
    from lstv.inference import model_input

    return np.stack([model_input(read_series(s).volume, image_size) for s in data.sources])


def forward(predictor, images: np.ndarray, batch_size: int) -> float:
    """Seconds to run the point net over ``images`` in batches (maps back on the host)."""
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        predictor(images[i : i + batch_size])
    return time.perf_counter() - start


def infer_command(data: Phantoms, checkpoint: Path, out: Path, device: str, workers: int,
                  batch: int, *extra: str) -> list[str]:  # fmt: skip
    """``lstv infer`` over the phantoms as a command line (prod mode unless ``extra``)."""
    return [
        sys.executable, "-m", "lstv", "infer",
        "--input_dir", str(data.images_dir),
        "--series_csv", str(data.series_csv),
        "--valid_ids", str(data.valid_ids),
        "--output_dir", str(out),
        "--checkpoint", str(checkpoint),
        "--device", device,
        "--num_workers", str(workers),
        "--batch_size", str(batch),
        "--quiet",
        *(extra or ("--mode", "prod")),
    ]  # fmt: skip


def run_infer(command: list[str], expected_rows: int, out: Path) -> float:
    """Wall seconds of one ``lstv infer`` process; an error unless it wrote every row."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=_env())
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"lstv infer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = RunDir(out).metrics_csv.read_text().count("\n") - 1
    if rows != expected_rows:
        raise RuntimeError(f"lstv infer wrote {rows} rows, expected {expected_rows}")
    return elapsed


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    return env


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_studies", type=int, default=96)
    parser.add_argument(
        "--checkpoint", type=Path, default=REPO / "models" / "phantom_point_net.pth"
    )
    parser.add_argument("--num_workers", type=int, default=2, help="reader processes")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--work_dir", type=Path, default=None, help="where to write phantoms (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from lstv.inference import load_predictor

    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        data = write_phantoms(tmp / "data", args.n_studies, max(1, os.cpu_count() or 1))
        write_s = time.perf_counter() - start
        n = len(data.sources)
        decode_s, read_s = read_vs_decode(data, args.repeats)
        predictor, _ = load_predictor(args.checkpoint, args.device)
        images = model_inputs(data)
        forward(predictor, images[: args.batch_size], args.batch_size)  # warm-up
        floors, forwards, infers = [], [], []
        settings = (args.device, args.num_workers, args.batch_size)
        with decode_pool(args.num_workers) as pool:
            for r in range(args.repeats):
                floors.append(parallel_decode(pool, data))
                forwards.append(forward(predictor, images, args.batch_size))
                out = tmp / f"out{r}"
                command = infer_command(data, args.checkpoint, out, *settings)
                infers.append(run_infer(command, n, out))
        out = tmp / "one"
        one = infer_command(data, args.checkpoint, out, *settings, "--mode", "debug")
        startup_s = run_infer(one, 1, out)
    floor_s, forward_s, infer_s = min(floors), min(forwards), min(infers)
    read_ratio = read_s / decode_s
    infer_ratio = infer_s / (floor_s + forward_s)
    print(
        f"{n} phantom studies (written in {write_s:.1f} s), checkpoint {args.checkpoint.name}, "
        f"device {args.device}, {args.num_workers} reader processes, batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
        f"best of {args.repeats}"
    )
    print(f"decode floor, 1 process      {decode_s / n * 1e3:7.1f} ms/study")
    print(
        f"read_series, 1 process       {read_s / n * 1e3:7.1f} ms/study   "
        f"read / decode ratio {read_ratio:.2f} (target <= {READ_TARGET})"
    )
    print(f"decode floor, {args.num_workers} processes   {floor_s:7.2f} s")
    print(f"forward floor                {forward_s:7.2f} s   ({forward_s / n * 1e3:.1f} ms/study)")
    print(
        f"lstv infer, whole process    {infer_s:7.2f} s   "
        f"infer / (decode + forward) ratio {infer_ratio:.2f} (target <= {INFER_TARGET})"
    )
    print(f"lstv infer start-up          {startup_s:7.2f} s   (a one-study run)")
    steady = max(infer_s - startup_s, 1e-9) / (floor_s + forward_s)
    print(f"steady state, start-up off   ratio {steady:.2f}   ((infer - start-up) / floor)")


if __name__ == "__main__":
    main()
