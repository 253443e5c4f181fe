"""Throughput of ``lstv infer`` against its floors, as ratios measured in one run (issues 10, 22).

On the same phantom studies, each measurement repeated:

  read / decode              a reader's work for one study (lstv.sample.read_sample: decode,
                             checks, order, normalise, model input) vs bare pydicom decoding of
                             the same files, one process (each study's fastest repeat)
                                                                              target <= 1.3
  steady state               the marginal cost of a study: ``lstv infer`` on sets of N/3 and N
                             studies (``--sizes 3`` adds 2N/3), the slope of its wall time over
                             the set size against the same slope of the floors (parallel decode
                             with the same number of reader processes + the bare forward pass of
                             the same checkpoint)                             target <= 1.10
  start-up                   infer(N/3) minus N/3 studies at the marginal cost: what a run
                             costs before its first study                     target <= 3.0 s

The headline ("steady state, median of repeats") is the median over repeats of each repeat's
own ratio, in wall-clock and in CPU time (beside the median repeat's ms/study), with the median
start-up: a repeat's floors and infer
runs follow each other, so a load that slows one slows the other, and one slow repeat in three
moves the median by no more than the other two differ. The repeats are interleaved: even ones
go from the smallest set up, floors before infer, odd ones from the largest down, infer before
floors, so a load that grows or falls during a run hits both sides alike. The lines before it
give the same ratios from each timing's fastest repeat (whose bests may come from different
repeats: one slow repeat's infer with another's floors moves them by more than the margin), and
each repeat's ratio.

Also printed: the whole-process ratio of the N-study run, and the steady state in CPU seconds
(the CPU time of ``lstv infer`` and its readers against the floors' CPU time, per marginal
study): on a machine other work loads, wall-clock ratios measure the load as much as the
pipeline, CPU time much less. ``lstv infer`` runs with ``--parasagittal 0`` where it has that
flag: the centre-slice pipeline is measured. ``--breakdown`` adds the per-study cost of each
stage of the pipeline, measured one stage at a time in this process (decode, sort and geometry,
normalise, model input, forward, metrics and shape features, CSV and fsync, inter-process
transfer) and the start-up's imports. ``--timeline`` runs ``lstv infer`` once more on the small
set with ``--verbose`` and prints when each step of its start-up and end happened (its
"timeline:" debug lines: readers started, model loaded and how many studies were read by then,
each batch's forward pass and write, outputs written, process gone) and the CPU seconds of the
main process and of its readers in each phase, with the core-seconds left idle. Usage:

    python benchmarks/throughput.py --n_studies 144 --num_workers 2 \\
        [--checkpoint models/phantom_point_net.pth] [--repeats 3] [--sizes 2] [--breakdown]
        [--timeline]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lstv.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
READ_TARGET = 1.3
INFER_TARGET = 1.15
STEADY_TARGET = 1.10
STARTUP_TARGET = 3.0


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


def decode(files: list[Path]) -> float:
    """The floor of reading: dcmread and decode each file, nothing else; the CPU seconds it
    took this process."""
    import pydicom

    start = time.process_time()
    for f in files:
        pydicom.dcmread(f).pixel_array  # noqa: B018 - decoding is the work measured
    return time.process_time() - start


def read_vs_decode(data: Phantoms, repeats: int) -> tuple[float, float]:
    """Seconds for all studies (each study's fastest repeat): bare decode, and what a reader
    process does for a study (read_sample). The two alternate study by study, so both see the
    same file cache and machine load."""
    from lstv.sample import read_sample
    from lstv.studies import study_tasks

    tasks = study_tasks(data.series_csv)
    best_decode = [np.inf] * len(data.sources)
    best_read = [np.inf] * len(data.sources)
    for _ in range(repeats):
        for i in range(len(data.sources)):
            files = data.files(i)
            start = time.perf_counter()
            decode(files)
            middle = time.perf_counter()
            read_sample(tasks[i], data.images_dir, 160)
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


def parallel_decode(pool, data: Phantoms) -> tuple[float, float]:
    """Wall seconds for ``pool`` to decode every study (one task per study), and the CPU
    seconds its processes spent."""
    jobs = [data.files(i) for i in range(len(data.sources))]
    start = time.perf_counter()
    cpu = pool.map(decode, jobs, chunksize=1)
    return time.perf_counter() - start, float(sum(cpu))


def model_inputs(data: Phantoms, image_size: int = 160) -> np.ndarray:
    """The studies' real (N, S, S) model inputs (the centre slices)."""
    from lstv.dicom import read_series
    from lstv.inference import model_input

    return np.stack([model_input(read_series(s).volume, image_size) for s in data.sources])


def forward(predictor, images: np.ndarray, batch_size: int) -> float:
    """Seconds to run the point net over ``images`` in batches (maps back on the host)."""
    return timed_forward(predictor, images, batch_size)[0]


def timed_forward(predictor, images: np.ndarray, batch_size: int) -> tuple[float, float]:
    """:func:`forward`'s wall seconds, and the CPU seconds of this process (torch's threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(images), batch_size):
        predictor(images[i : i + batch_size])
    return time.perf_counter() - start, time.process_time() - cpu


def parasagittal_off() -> tuple[str, ...]:
    """``--parasagittal 0`` where ``lstv infer`` has the flag (issue 18 adds it, with slices
    beside the centre one by default): the centre-slice pipeline is what is measured."""
    from lstv.config import InferenceConfig

    fields = getattr(InferenceConfig, "__dataclass_fields__", {})
    return ("--parasagittal", "0") if "parasagittal" in fields else ()


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
        *parasagittal_off(),
        *(extra or ("--mode", "prod")),
    ]  # fmt: skip


def run_infer(command: list[str], expected_rows: int, out: Path) -> tuple[float, float]:
    """Wall seconds of one ``lstv infer`` process, and the CPU seconds of it and its reader
    processes; an error unless it wrote every row."""
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(command, capture_output=True, text=True, env=_env())
    elapsed, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"lstv infer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = RunDir(out).metrics_csv.read_text().count("\n") - 1
    if rows != expected_rows:
        raise RuntimeError(f"lstv infer wrote {rows} rows, expected {expected_rows}")
    return elapsed, cpu


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    return env


def subset(data: Phantoms, n: int, root: Path) -> Phantoms:
    """The first ``n`` studies of ``data`` (same files), with their own series CSV and IDs."""
    ids = {str(t) for t in np.load(data.valid_ids)}
    with open(data.series_csv, newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames
    order = list(dict.fromkeys(r["study_id"] for r in rows if r["study_id"] in ids))[:n]
    root.mkdir(parents=True, exist_ok=True)
    series_csv, valid_ids = root / "series.csv", root / "valid_id.npy"
    with open(series_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(r for r in rows if r["study_id"] in set(order))
    np.save(valid_ids, np.array([int(i) for i in order]))
    return replace(data, series_csv=series_csv, valid_ids=valid_ids, sources=data.sources[:n])


def slope(n, y) -> float:
    """The least-squares slope of ``y`` over ``n`` (for two sizes, the difference quotient)."""
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    dn = n - n.mean()
    return float(dn @ (y - y.mean()) / (dn @ dn))


@dataclass(frozen=True)
class Repeat:
    """One repeat's seconds on each set, smallest first: decode floor, forward floor, infer;
    wall-clock, then CPU."""

    decode: tuple[float, ...]
    forward: tuple[float, ...]
    infer: tuple[float, ...]
    decode_cpu: tuple[float, ...] = (0.0, 0.0)
    forward_cpu: tuple[float, ...] = (0.0, 0.0)
    infer_cpu: tuple[float, ...] = (0.0, 0.0)

    def per_study(self, n: tuple[int, ...]) -> tuple[float, float]:
        """Wall seconds per marginal study (the slope over the set sizes): lstv infer, and
        the floors."""
        floor = [d + f for d, f in zip(self.decode, self.forward, strict=True)]
        return slope(n, self.infer), slope(n, floor)

    def steady(self, n: tuple[int, ...]) -> float:
        infer, floor = self.per_study(n)
        return infer / floor

    def steady_cpu(self, n: tuple[int, ...]) -> tuple[float, float]:
        """CPU seconds per marginal study: lstv infer (with its readers), and the floors."""
        floor = [d + f for d, f in zip(self.decode_cpu, self.forward_cpu, strict=True)]
        return slope(n, self.infer_cpu), slope(n, floor)

    def startup(self, n: tuple[int, ...]) -> float:
        return self.infer[0] - n[0] * slope(n, self.infer)


def best(repeats: list[Repeat]) -> Repeat:
    """Each measurement's fastest repeat."""
    return Repeat(
        *(
            tuple(min(column) for column in zip(*(getattr(r, name) for r in repeats), strict=True))
            for name in ("decode", "forward", "infer", "decode_cpu", "forward_cpu", "infer_cpu")
        )
    )


def median_of_repeats(repeats: list[Repeat], n: tuple[int, ...]) -> dict[str, float]:
    """The headline: the median over repeats of each repeat's own ratio (its floors and its
    infer runs measured minutes apart at most, so a load that slows a repeat slows both), in
    wall-clock and CPU time, with the per-study costs of the median repeat (the mean of the two
    middle ones for an even count) and the median start-up. One slow repeat in three moves it
    by at most the spread of the others."""

    def middle(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
        ratios = np.array([i / f for i, f in pairs])
        mid = np.argsort(ratios, kind="stable")[(len(pairs) - 1) // 2 : len(pairs) // 2 + 1]
        return (
            float(np.median(ratios)),
            float(np.mean([pairs[k][0] for k in mid])),
            float(np.mean([pairs[k][1] for k in mid])),
        )

    ratio, infer, floor = middle([r.per_study(n) for r in repeats])
    cpu_ratio, infer_cpu, floor_cpu = middle([r.steady_cpu(n) for r in repeats])
    return {
        "ratio": ratio,
        "infer": infer,
        "floor": floor,
        "cpu_ratio": cpu_ratio,
        "infer_cpu": infer_cpu,
        "floor_cpu": floor_cpu,
        "startup": float(np.median([r.startup(n) for r in repeats])),
    }


def schedule(repeat: int, n_sets: int) -> list[tuple[int, str]]:
    """The order of one repeat's runs, (set index, "floor" or "infer"): even repeats go from
    the smallest set up, each set's floors before its infer run, odd repeats from the largest
    down, infer first, so a load that grows or falls during a repeat hits small and large,
    floors and infer, alike over two repeats."""
    sets = range(n_sets) if repeat % 2 == 0 else reversed(range(n_sets))
    parts = ("floor", "infer") if repeat % 2 == 0 else ("infer", "floor")
    return [(k, part) for k in sets for part in parts]


def set_sizes(n_large: int, sizes: int = 2) -> tuple[int, ...]:
    """``sizes`` set sizes evenly spaced from N/3 to N (2: N/3 and N; 3: N/3, 2N/3, N),
    rounded down, at least 1, distinct."""
    return tuple(sorted({max(1, int(x)) for x in np.linspace(n_large / 3, n_large, sizes)}))


def breakdown(data: Phantoms, predictor, batch_size: int, reference, out: Path) -> dict:
    """Milliseconds per study of each stage, one stage at a time in this process (the decode
    and the reading stages single-threaded, the forward pass on torch's threads)."""
    import pydicom

    from lstv.csv_files import CsvAppender
    from lstv.dicom import read_slices
    from lstv.inference import centre_input
    from lstv.results import METRIC_COLUMNS, StudyResult, metrics_row
    from lstv.sample import read_sample
    from lstv.studies import study_tasks
    from lstv.uncertainty import resolve_thresholds

    n = len(data.sources)
    tasks = study_tasks(data.series_csv)[:n]
    t = dict.fromkeys(
        ("decode", "read_slices", "normalise", "model input", "forward", "metrics + shape",
         "CSV + fsync", "transfer"), 0.0)  # fmt: skip
    samples = []
    # The stages of lstv.sample.read_sample, as a reader process runs them.
    for i, source in enumerate(data.sources):
        files = data.files(i)
        start = time.perf_counter()
        [pydicom.dcmread(f).pixel_array for f in files]
        t["decode"] += time.perf_counter() - start
        start = time.perf_counter()
        ordered = read_slices(source)
        t["read_slices"] += time.perf_counter() - start
        start = time.perf_counter()
        # As read_sample with --parasagittal 0: the centre alone becomes 8-bit.
        centre = len(ordered.planes) // 2
        volume = ordered.volume(slice(centre, centre + 1))
        t["normalise"] += time.perf_counter() - start
        start = time.perf_counter()
        centre_input(volume[0], len(ordered.planes), 160)
        t["model input"] += time.perf_counter() - start
        sample = read_sample(tasks[i], data.images_dir, 160)
        start = time.perf_counter()
        pickle.loads(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
        t["transfer"] += time.perf_counter() - start
        samples.append(sample)
    images = np.stack([s.image for s in samples])
    forward(predictor, images[:batch_size], batch_size)  # warm-up
    probs = []
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        probs.extend(predictor(images[i : i + batch_size]))
    t["forward"] = time.perf_counter() - start
    rows = []
    thresholds = resolve_thresholds()
    start = time.perf_counter()
    for sample, p in zip(samples, probs, strict=True):
        result = StudyResult.from_maps(
            p, sample.slice_shape, sample.pixel_spacing, reference, None, "this run"
        )
        rows.append(metrics_row(result, sample, thresholds))
    t["metrics + shape"] = time.perf_counter() - start
    start = time.perf_counter()
    with CsvAppender(out, METRIC_COLUMNS) as appender:
        for i, row in enumerate(rows):
            appender.write(row, sync=False)
            if (i + 1) % batch_size == 0 or i + 1 == n:
                appender.sync()
    t["CSV + fsync"] = time.perf_counter() - start
    # read_slices = decode + headers, checks and ordering: the second by difference.
    t["sort + geometry"] = t.pop("read_slices") - t["decode"]
    ms = {k: v / n * 1e3 for k, v in t.items()}
    ms["pickled sample, kB"] = len(pickle.dumps(samples[0])) / 1e3
    return ms


STARTUP_PROBE = """
import time
t0 = time.perf_counter()
import lstv.pipeline, lstv.cli
t1 = time.perf_counter()
import torch
t2 = time.perf_counter()
import lstv.model
t3 = time.perf_counter()
from lstv.inference import load_predictor
load_predictor({checkpoint!r}, "cpu")
t4 = time.perf_counter()
import sys
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, "torch._dynamo" in sys.modules,
      "torchvision" in sys.modules)
"""


def startup_parts(checkpoint: Path) -> str:
    """Seconds of the start-up's parts in a fresh interpreter: lstv's own imports, torch, the
    model definitions (timm), loading the checkpoint."""
    out = subprocess.run(
        [sys.executable, "-c", STARTUP_PROBE.format(checkpoint=str(checkpoint))],
        capture_output=True, text=True, env=_env(), check=True,
    ).stdout.split()  # fmt: skip
    lstv_s, torch_s, timm_s, load_s = map(float, out[:4])
    return (
        f"lstv + pipeline imports {lstv_s:.2f} s, torch {torch_s:.2f} s, model definitions "
        f"(timm) {timm_s:.2f} s, checkpoint {load_s:.2f} s; torch._dynamo imported: {out[4]}, "
        f"torchvision imported: {out[5]}"
    )


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _log_seconds(line: str) -> float | None:
    """The wall-clock time of a log line of lstv's format (``%(asctime)s ...``), or None."""
    from datetime import datetime

    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def timeline(command: list[str]) -> list[str]:
    """One ``lstv infer`` run (``command`` without ``--quiet``, with ``--verbose``): when each
    step of its start-up and end happened, from its "timeline:" debug lines, seconds after the
    launch; and the CPU seconds of the main process and of its readers in each phase, sampled
    from /proc every 20 ms (where there is none, only the steps). A core idle in a phase is
    the phase's wall time times the cores, less that CPU time: on an idle machine only."""
    import threading

    usage: dict[int, float] = {}  # pid -> CPU seconds, the last seen
    marks: list[tuple[float, float, float]] = []  # (wall, main CPU, readers' CPU), each sample
    start = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_env())  # fmt: skip

    def sample() -> None:
        while proc.poll() is None:
            for pid in (proc.pid, *_children(proc.pid)):
                cpu = _cpu_seconds(pid)
                if cpu is not None:
                    usage[pid] = cpu
            main_cpu = usage.get(proc.pid, 0.0)
            marks.append((time.time(), main_cpu, sum(usage.values()) - main_cpu))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    log = proc.communicate()[1]
    end = time.time()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"lstv infer failed ({proc.returncode}):\n{log[-3000:]}")
    steps = [(t - start, line.split("timeline: ", 1)[1]) for line in log.splitlines()
             if "timeline: " in line and (t := _log_seconds(line)) is not None]  # fmt: skip
    steps.append((end - start, "process gone"))
    lines = [f"{t:7.2f} s  {what}" for t, what in steps]

    def cpu_at(t: float) -> tuple[float, float]:
        before = [m for m in marks if m[0] - start <= t]
        return before[-1][1:] if before else (0.0, 0.0)

    loaded = next((t for t, what in steps if what.startswith("model loaded")), None)
    written = next((t for t, what in reversed(steps) if what.startswith("batch of")), None)
    if marks and loaded is not None and written is not None:
        cores = os.cpu_count() or 1
        lines.append("CPU by phase (main process, readers; core-seconds idle, on an idle machine):")
        edges = [("launch -> model loaded", 0.0, loaded),
                 ("model loaded -> last batch written", loaded, written),
                 ("last batch written -> process gone", written, end - start)]  # fmt: skip
        for name, a, b in edges:
            (m0, r0), (m1, r1) = cpu_at(a), cpu_at(b)
            main_cpu, readers_cpu = max(0.0, m1 - m0), max(0.0, r1 - r0)
            idle = max(0.0, cores * (b - a) - main_cpu - readers_cpu)
            lines.append(
                f"  {name:<36} {b - a:6.2f} s wall: main {main_cpu:5.2f}, readers "
                f"{readers_cpu:5.2f} CPU s; {idle:5.2f} core-s idle"
            )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_studies", type=int, default=144, help="the large set")
    parser.add_argument(
        "--checkpoint", type=Path, default=REPO / "models" / "phantom_point_net.pth"
    )
    parser.add_argument("--num_workers", type=int, default=2, help="reader processes")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sizes",
        type=int,
        default=2,
        help="set sizes from N/3 to N (2: N/3 and N; 3 adds 2N/3): the marginal cost is the "
        "least-squares slope over them",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--breakdown", action="store_true", help="per-stage cost per study")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="one more lstv infer on the small set, with its start-up's steps and CPU by phase",
    )
    parser.add_argument(
        "--work_dir", type=Path, default=None, help="where to write phantoms (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.sizes < 2 or len(set_sizes(args.n_studies, args.sizes)) < 2:
        parser.error("--sizes must be at least 2, and --n_studies large enough for that many")
    logging.basicConfig(level=logging.WARNING)

    import torch

    from lstv.inference import load_predictor

    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        large = write_phantoms(tmp / "data", args.n_studies, max(1, os.cpu_count() or 1))
        write_s = time.perf_counter() - start
        n_large = len(large.sources)
        n = set_sizes(n_large, args.sizes)
        sets = [subset(large, k, tmp / f"set{k}") for k in n[:-1]] + [large]
        decode_s, read_s = read_vs_decode(large, args.repeats)
        predictor, info = load_predictor(args.checkpoint, args.device)
        images = model_inputs(large)
        forward(predictor, images[: args.batch_size], args.batch_size)  # warm-up
        settings = (args.device, args.num_workers, args.batch_size)
        repeats = []
        with decode_pool(args.num_workers) as pool:
            for r in range(args.repeats):
                measured: dict[str, dict[int, tuple[float, float]]] = {
                    "decode": {}, "forward": {}, "infer": {}
                }  # fmt: skip
                for k, part in schedule(r, len(n)):
                    if part == "floor":
                        measured["decode"][k] = parallel_decode(pool, sets[k])
                        measured["forward"][k] = timed_forward(
                            predictor, images[: n[k]], args.batch_size
                        )
                    else:
                        out = tmp / f"out{r}_{k}"
                        command = infer_command(sets[k], args.checkpoint, out, *settings)
                        measured["infer"][k] = run_infer(command, n[k], out)
                fields = {}
                for name, by_set in measured.items():
                    fields[name] = tuple(by_set[k][0] for k in range(len(n)))
                    fields[f"{name}_cpu"] = tuple(by_set[k][1] for k in range(len(n)))
                repeats.append(Repeat(**fields))
        b = best(repeats)
        report(args, n, b, repeats, read_s, decode_s, write_s, torch.get_num_threads())
        if args.breakdown:
            from lstv.scoring import resolve_reference

            reference = resolve_reference(None, info.sha256, info.config).reference
            parts = breakdown(large, predictor, args.batch_size, reference, tmp / "rows.csv")
            print("per-study cost of each stage, one at a time (ms/study):")
            for name, value in parts.items():
                print(f"  {name:<20} {value:8.2f}")
            print("start-up parts: " + startup_parts(args.checkpoint), flush=True)
        if args.timeline:
            out = tmp / "timeline"
            command = infer_command(sets[0], args.checkpoint, out, *settings)
            command = [c for c in command if c != "--quiet"] + ["--verbose"]
            print(f"timeline of lstv infer on {n[0]} studies (seconds after its launch; "
                  f"load average {os.getloadavg()[0]:.1f}):")  # fmt: skip
            for line in timeline(command):
                print("  " + line, flush=True)


def report(args, n, b: Repeat, repeats, read_s, decode_s, write_s, threads) -> None:
    n_large = n[-1]
    read_ratio = read_s / decode_s
    infer_ratio = b.infer[-1] / (b.decode[-1] + b.forward[-1])
    print(
        f"{n_large} phantom studies (written in {write_s:.1f} s), checkpoint "
        f"{args.checkpoint.name}, device {args.device}, {args.num_workers} reader processes, "
        f"batch {args.batch_size}, {threads} torch threads, {os.cpu_count()} "
        f"cores, best of {args.repeats}; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"decode floor, 1 process      {decode_s / n_large * 1e3:7.1f} ms/study")
    print(
        f"read_sample, 1 process       {read_s / n_large * 1e3:7.1f} ms/study   "
        f"read / decode ratio {read_ratio:.2f} (target <= {READ_TARGET})"
    )
    for k in range(len(n)):
        print(
            f"{n[k]:4d} studies: decode floor ({args.num_workers} processes) {b.decode[k]:6.2f} s, "
            f"forward floor {b.forward[k]:6.2f} s, lstv infer {b.infer[k]:6.2f} s"
        )
    print(
        f"lstv infer, whole process    {b.infer[-1]:7.2f} s   "
        f"infer / (decode + forward) ratio {infer_ratio:.2f} (target <= {INFER_TARGET})"
    )
    per_study, floor_per_study = b.per_study(n)
    print(
        f"steady state                 {per_study * 1e3:7.1f} ms/study vs floors "
        f"{floor_per_study * 1e3:.1f} ms/study: ratio {b.steady(n):.2f} "
        f"(target <= {STEADY_TARGET}); per repeat "
        + ", ".join(f"{r.steady(n):.2f}" for r in repeats)
    )
    print(
        f"lstv infer start-up          {b.startup(n):7.2f} s   (target <= {STARTUP_TARGET} s); "
        "per repeat " + ", ".join(f"{r.startup(n):.2f}" for r in repeats),
    )
    infer_cpu, floor_cpu = b.steady_cpu(n)
    print(
        f"steady state in CPU time     {infer_cpu * 1e3:7.1f} CPU ms/study vs floors "
        f"{floor_cpu * 1e3:.1f}: ratio {infer_cpu / floor_cpu:.2f}; per repeat "
        + ", ".join(f"{i / f:.2f}" for i, f in (r.steady_cpu(n) for r in repeats))
        + f"; uptime load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )
    m = median_of_repeats(repeats, n)
    sizes = "/".join(str(k) for k in n)
    print(
        f"steady state, median of repeats {m['infer'] * 1e3:5.1f} ms/study vs floors "
        f"{m['floor'] * 1e3:.1f} ms/study: ratio {m['ratio']:.2f} (target <= "
        f"{STEADY_TARGET}); in CPU time {m['infer_cpu'] * 1e3:.1f} vs "
        f"{m['floor_cpu'] * 1e3:.1f} CPU ms/study: ratio {m['cpu_ratio']:.2f}; start-up "
        f"{m['startup']:.2f} s (target <= {STARTUP_TARGET} s); {args.repeats} repeats "
        f"interleaved, slope over {sizes} studies",
        flush=True,
    )


if __name__ == "__main__":
    main()
