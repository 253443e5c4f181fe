"""How well the localizer's uncertainty separates transitional from normal phantoms.

Generates a fixed-seed held-out phantom set (never seen in training: other seed, other IDs), runs
``lstv infer`` with the shipped localizer, and prints the ROC AUC (95% bootstrap interval) of
L5/S1 and L4/L5 entropy, 1 - peak confidence and spatial entropy for transitional vs normal,
overall and separately for sacralization and lumbarization, and the localisation error on the
normal studies. Phantoms test the software and the method's mechanics, not clinical accuracy.

    python benchmarks/phantom_auc.py --n_studies 200 --seed 31337
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCORES = (
    "l5_s1_entropy", "l5_s1_one_minus_confidence", "l5_s1_spatial_entropy",
    "l4_l5_entropy", "l4_l5_one_minus_confidence", "l4_l5_spatial_entropy",
)
GROUPS = ("all", "sacralization", "lumbarization")


def localisation_errors(metrics_csv: Path, data) -> dict[str, list[float]]:
    """Per level, the distance (mm) from the predicted point to the label on normal studies;
    NaN where the localizer put no point."""
    import pydicom

    from lstv.levels import LEVEL_KEYS, LEVELS
    from lstv.train import read_disc_labels, read_lstv_types

    labels = read_disc_labels(data.labels_csv)
    types = read_lstv_types(data.lstv_labels_csv)
    errors: dict[str, list[float]] = {k: [] for k in LEVEL_KEYS}
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if types.get(int(r["study_id"])) == "normal"]
    for r in rows:
        series_dir = data.images_dir / r["study_id"] / r["series_id"]
        header = pydicom.dcmread(next(series_dir.glob("*.dcm")), stop_before_pixels=True)
        row_spacing, col_spacing = (float(v) for v in header.PixelSpacing)
        for key, level in zip(LEVEL_KEYS, LEVELS, strict=True):
            _, x, y = labels[int(r["study_id"])][level]
            if r[f"{key}_x"] == "":
                errors[key].append(float("nan"))
                continue
            dx = (float(r[f"{key}_x"]) - x) * col_spacing
            dy = (float(r[f"{key}_y"]) - y) * row_spacing
            errors[key].append(float(np.hypot(dx, dy)))
    return errors


def run(n_studies: int, lstv_fraction: float, seed: int, checkpoint: Path, out: Path,
        tta: bool, n_bootstrap: int) -> str:
    from lstv.evaluate import evaluate
    from lstv.phantom import write_phantom_dataset
    from lstv.pipeline import InferenceConfig, run_inference

    started = time.perf_counter()
    data = write_phantom_dataset(out / "phantoms", n_studies=n_studies,
                                 lstv_fraction=lstv_fraction, seed=seed, valid_fraction=1.0)
    summary = run_inference(InferenceConfig(
        input_dir=data.images_dir, series_csv=data.series_csv, output_dir=out / "infer",
        checkpoint=checkpoint, valid_ids=data.valid_ids_path, mode="prod", tta=tta, quiet=True,
    ))
    metrics_csv = out / "infer" / "lstv_uncertainty_metrics.csv"
    result = evaluate(metrics_csv, data.lstv_labels_csv, out / "evaluation",
                      n_bootstrap=n_bootstrap)
    scores = SCORES + (("l5_s1_tta_mi", "l4_l5_tta_mi") if tta else ())
    groups = result["groups"]
    lines = [
        f"{summary.n_completed} phantom studies (seed {seed}; {summary.n_failed} failed), "
        f"checkpoint {checkpoint.name}, {time.perf_counter() - started:.0f} s",
        "ROC AUC [95% CI], transitional vs normal "
        + ", ".join(f"{g} n={groups[g]['n_positive']}" for g in GROUPS if g in groups)
        + f", normal n={groups['all']['n_negative']}",
        "| score | " + " | ".join(GROUPS) + " |",
        "| --- |" + " --- |" * len(GROUPS),
    ]
    for score in scores:
        cells = []
        for g in GROUPS:
            s = groups.get(g, {}).get("scores", {}).get(score)
            cells.append("n/a" if not s or s["auc"] is None else
                         f"{s['auc']:.3f} [{s['auc_ci_low']:.2f}, {s['auc_ci_high']:.2f}]")
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    errors = localisation_errors(metrics_csv, data)
    lines += ["", "Localisation error on normal studies (mm), point found:",
              "| level | median | mean | found |", "| --- | --- | --- | --- |"]
    for key, values in errors.items():
        v = np.asarray(values, dtype=float)
        found = np.isfinite(v)
        median = f"{np.median(v[found]):.2f}" if found.any() else "n/a"
        mean = f"{np.mean(v[found]):.2f}" if found.any() else "n/a"
        lines.append(f"| {key} | {median} | {mean} | {found.mean():.0%} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_studies", type=int, default=200)
    parser.add_argument("--lstv_fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument("--checkpoint", type=Path,
                        default=REPO / "models" / "phantom_point_net.pth")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="keep phantoms and results here (default: a temporary folder)")
    parser.add_argument("--tta", action="store_true",
                        help="also score the test-time mutual information")
    parser.add_argument("--n_bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        print(run(args.n_studies, args.lstv_fraction, args.seed, args.checkpoint, out, args.tta,
                  args.n_bootstrap))


if __name__ == "__main__":
    main()
