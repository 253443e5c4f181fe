"""Does the acquisition drift check fire on a scanner change and stay silent on like sets,
however many transitional studies they hold?

Writes a reference set of normal phantoms (``--reference_seed``, the default scanner) and, for
each test seed, a phantom set of the default scanner ("like": its fraction of transitional
studies cycles through ``--like_fractions``, all-normal and LSTV-rich sets included) or of the
shifted scanner (``lstv.phantom.render.scanner_shift``: coarser in-plane resolution, a gamma of
0.8, a stronger bias field, more noise). Every study is read as ``lstv infer`` reads it
(:func:`lstv.sample.read_sample`, which computes the acquisition descriptors); the reference's
descriptors are fitted as ``lstv calibrate`` fits them (:func:`lstv.acquisition.fit_descriptors`)
and each set is tested as ``lstv infer --reference`` tests a run
(:func:`lstv.score_drift.acquisition_check`). The net is not needed: the descriptors do not
depend on it. Prints one row per set (its verdict and each descriptor's median shift in
reference spreads) and the counts: like sets silent, shifted sets fired.

    python benchmarks/acquisition_drift.py --output_dir /tmp/acq
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def read_descriptors(data) -> np.ndarray:
    """(n, len(DESCRIPTORS)): each study of a phantom set read through the reading path."""
    from lstv.acquisition import DESCRIPTORS
    from lstv.sample import read_sample
    from lstv.studies import read_series_table, sagittal_t2_tasks

    rows = []
    for task in sagittal_t2_tasks(read_series_table(data.series_csv)):
        sample = read_sample(task, data.images_dir, 160, parasagittal=0)
        rows.append([sample.acquisition[name] for name in DESCRIPTORS])
    return np.array(rows, dtype=float)


def shifts(fitted: dict, raw: np.ndarray) -> list[str]:
    """Each descriptor's median shift in reference spreads, as the check computes it."""
    from lstv.acquisition import DESCRIPTORS

    cells = []
    for j, name in enumerate(DESCRIPTORS):
        ref = fitted["descriptors"].get(name)
        v = raw[:, j][np.isfinite(raw[:, j])]
        cells.append(f"{(np.median(v) - ref['centre']) / ref['spread']:+.2f}" if ref else "n/a")
    return cells


def run(out: Path, n_studies: int, reference_size: int, reference_seed: int, like_seeds: list,
        shifted_seeds: list, like_fractions: list, shifted_fraction: float, workers: int) -> str:
    from phantom_auc import phantoms  # written once, kept in --output_dir

    from lstv.acquisition import DESCRIPTORS, fit_descriptors
    from lstv.score_drift import acquisition_check

    started = time.perf_counter()
    ref_data = phantoms(out / f"reference_{reference_seed}", reference_size, 0.0,
                        reference_seed, workers)
    fitted = fit_descriptors(read_descriptors(ref_data))
    sets = [(seed, "default", like_fractions[i % len(like_fractions)])
            for i, seed in enumerate(like_seeds)]
    sets += [(seed, "shifted", shifted_fraction) for seed in shifted_seeds]
    lines = [
        f"Reference: {reference_size} normal phantoms of seed {reference_seed} (default "
        f"scanner); each set {n_studies} phantoms. Median shift of each descriptor in reference "
        "spreads; the check (lstv.score_drift.acquisition_check): a sign test against the "
        "reference's median, Bonferroni p < 0.001, and |shift| >= 0.5.",
        "| seed | scanner | transitional | verdict | " + " | ".join(DESCRIPTORS) + " |",
        "| --- | --- | --- | --- |" + " --- |" * len(DESCRIPTORS),
    ]
    fired = {"default": 0, "shifted": 0}
    untested = {"default": 0, "shifted": 0}
    for seed, scanner, fraction in sets:
        data = phantoms(out / f"{scanner}_{seed}", n_studies, fraction, seed, workers, scanner)
        raw = read_descriptors(data)
        result = acquisition_check(fitted, raw)
        fired[scanner] += bool(result["drift"])
        untested[scanner] += result["drift"] is None
        verdict = {True: "acquisition drift", False: "silent", None: "not tested"}[result["drift"]]
        if result["drift"]:
            verdict += f" ({', '.join(result['descriptors'])})"
        lines.append(f"| {seed} | {scanner} | {fraction:.0%} | {verdict} | "
                     + " | ".join(shifts(fitted, raw)) + " |")
    lines += [
        "",
        f"Like sets silent: {len(like_seeds) - fired['default'] - untested['default']} of "
        f"{len(like_seeds)}; shifted sets fired: {fired['shifted']} of {len(shifted_seeds)}"
        + (f"; not tested (too few studies): {untested['default']} like, "
           f"{untested['shifted']} shifted" if any(untested.values()) else "")
        + f" ({time.perf_counter() - started:.0f} s)",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="keep the phantoms here (default: a temporary folder)")
    parser.add_argument("--n_studies", type=int, default=60)
    parser.add_argument("--reference_size", type=int, default=40)
    parser.add_argument("--reference_seed", type=int, default=7000)
    parser.add_argument("--like_seeds", type=int, nargs="+",
                        default=[7001, 7002, 7003, 7004, 7005, 7006, 7007, 7008])
    parser.add_argument("--like_fractions", type=float, nargs="+", default=[0.0, 0.3, 0.5, 1.0],
                        help="transitional share of the like sets, in turn")
    parser.add_argument("--shifted_seeds", type=int, nargs="+", default=[7101, 7102, 7103, 7104])
    parser.add_argument("--shifted_fraction", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes writing the phantoms (same files for any count)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        print(run(out, args.n_studies, args.reference_size, args.reference_seed,
                  args.like_seeds, args.shifted_seeds, args.like_fractions,
                  args.shifted_fraction, args.workers))


if __name__ == "__main__":
    main()
