"""How well each uncertainty score separates transitional from normal phantoms, hard cases apart.

Generates a fixed-seed held-out phantom set (never seen in training: other seed, other IDs), runs
``lstv infer`` with the shipped localizer, and prints, for every score column of the metrics CSV
(the seed's confidence, entropy and spatial entropy, the TTA mutual information, map-shape
features, ``lstv_score`` where present), the ROC AUC with a 95% bootstrap interval of:

* transitional vs normal, overall and per type (sacralization, lumbarization);
* transitional vs *degenerated* normals only (a Pfirrmann >= 4 disc at L4/L5 or L5/S1: the hard
  negatives, whose narrow dark L5/S1 looks like a sacralized one);
* each ``lstv_subtype`` (partial/complete sacralization, rudimentary/full lumbarization) vs normal;

and the localisation error on the normal studies, degenerated ones apart. Phantoms test the
software and the method's mechanics, not clinical accuracy.

    python benchmarks/phantom_auc.py --n_studies 200 --seed 31337 --tta
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from lstv.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SUBTYPES = (
    "sacralization_partial", "sacralization_complete",
    "lumbarization_rudimentary", "lumbarization_full",
)
# Columns that are positions, sizes, flags or text, not scores.
NOT_SCORES = {
    "study_id", "series_id", "series_description", "n_slices", "slice_index", "image_height",
    "image_width", "lstv_flag", "risk_level", "lstv_score_driver", "lstv_score_flag",
    "lstv_score_reason", "selection_rule",
}
NOT_SCORE_SUFFIXES = ("_x", "_y", "_x_mm", "_y_mm", "_z_mm", "_dx_mm", "_dy_mm")
LEVEL_ORDER = ("l5_s1", "l4_l5", "l3_l4", "l2_l3", "l1_l2")


def score_columns(header: list[str], rows: list[dict]) -> list[str]:
    """Every numeric score column, L5/S1 and L4/L5 first, then study-level, then the others."""
    def numeric(c: str) -> bool:
        values = [r[c] for r in rows if r[c] != ""]
        try:
            [float(v) for v in values]
        except ValueError:
            return False
        return bool(values)

    found = [c for c in header if c not in NOT_SCORES and not c.endswith(NOT_SCORE_SUFFIXES)
             and numeric(c)]

    def rank(c: str) -> tuple[int, int]:
        for i, level in enumerate(LEVEL_ORDER):
            if c.startswith(level + "_"):
                return (i if i < 2 else i + 1, header.index(c))
        return (2, header.index(c))

    return sorted(found, key=rank)


def score_values(rows: list[dict], column: str) -> tuple[str, np.ndarray]:
    """(name, values) oriented so that higher means more suspicious: confidence is flipped."""
    values = np.array([float(r[column]) if r[column] != "" else np.nan for r in rows])
    if column.endswith("_confidence"):
        return column.replace("_confidence", "_one_minus_confidence"), 1.0 - values
    return column, values


def study_groups(lstv_labels_csv: Path) -> dict[int, dict[str, str]]:
    """study_id -> lstv_type, lstv_subtype and whether a normal study is degenerated."""
    from lstv.train import is_degenerated, read_pfirrmann_grades

    grades = read_pfirrmann_grades(lstv_labels_csv)
    with open(lstv_labels_csv, newline="") as f:
        return {
            int(r["study_id"]): {
                "type": r["lstv_type"],
                "subtype": r.get("lstv_subtype", ""),
                "degenerated": is_degenerated(grades.get(int(r["study_id"]), {})),
            }
            for r in csv.DictReader(f)
        }


def comparisons(info: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Column name -> (positive mask, negative mask) over the studies."""
    kind = np.array([i["type"] for i in info])
    subtype = np.array([i["subtype"] for i in info])
    degenerated = np.array([i["degenerated"] for i in info])
    normal, lstv = kind == "normal", kind != "normal"
    out = {
        "all": (lstv, normal),
        "sacralization": (kind == "sacralization", normal),
        "lumbarization": (kind == "lumbarization", normal),
        "vs degenerated normals": (lstv, normal & degenerated),
    }
    for s in SUBTYPES:
        out[s] = (subtype == s, normal)
    return out


def auc_cell(y_pos, y_neg, values: np.ndarray, n_bootstrap: int) -> str:
    from lstv.evaluate import bootstrap_auc_ci, roc_auc

    keep = (y_pos | y_neg) & np.isfinite(values)
    y = y_pos[keep].astype(int)
    if y.sum() == 0 or y.sum() == len(y):
        return "n/a"
    auc = roc_auc(y, values[keep])
    low, high = bootstrap_auc_ci(y, values[keep], n=n_bootstrap, seed=0)
    return f"{auc:.2f} [{low:.2f}, {high:.2f}]"


def localisation_errors(metrics_csv: Path, data, normal_ids: set[int]) -> dict[str, list[float]]:
    """Per level, the distance (mm) from the predicted point to the label on the studies of
    ``normal_ids``; NaN where the localizer put no point."""
    import pydicom

    from lstv.levels import LEVEL_KEYS, LEVELS
    from lstv.train import read_disc_labels

    labels = read_disc_labels(data.labels_csv)
    errors: dict[str, list[float]] = {k: [] for k in LEVEL_KEYS}
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["study_id"]) in normal_ids]
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


def _error_cells(values: list[float]) -> list[str]:
    v = np.asarray(values, dtype=float)
    found = np.isfinite(v)
    if not found.any():
        return ["n/a", "n/a", f"{found.mean():.0%}" if len(v) else "n/a"]
    return [f"{np.median(v[found]):.2f}", f"{np.mean(v[found]):.2f}", f"{found.mean():.0%}"]


def phantoms(root: Path, n_studies: int, lstv_fraction: float, seed: int, workers: int):
    """The held-out phantom set: written, or the one a kept ``--output_dir`` already holds
    (its recorded settings are these; the same settings write the same bytes)."""
    import json

    from lstv import rsna
    from lstv.phantom import PhantomDataset, write_phantom_dataset
    from lstv.phantom.dataset import SETTINGS_JSON

    settings = {"n_studies": n_studies, "lstv_fraction": lstv_fraction, "seed": seed,
                "valid_fraction": 1.0}
    recorded = root / SETTINGS_JSON
    labels = root / "lstv_labels.csv"
    if not (recorded.is_file() and labels.is_file()
            and json.loads(recorded.read_text()) == settings):
        return write_phantom_dataset(root, workers=workers, **settings)
    with open(labels, newline="") as f:
        ids = tuple(int(r["study_id"]) for r in csv.DictReader(f))
    valid = tuple(int(i) for i in np.load(root / "valid_id.npy"))
    return PhantomDataset(root, root / rsna.TRAIN_IMAGES, root / rsna.SERIES_CSV,
                          root / rsna.LABELS_CSV, labels, root / "valid_id.npy", ids, valid)


def run(n_studies: int, lstv_fraction: float, seed: int, checkpoint: Path, out: Path,
        tta: bool, n_bootstrap: int, workers: int = 1) -> str:
    from lstv.evaluate import evaluate
    from lstv.pipeline import InferenceConfig, run_inference

    started = time.perf_counter()
    data = phantoms(out / "phantoms", n_studies, lstv_fraction, seed, workers)
    summary = run_inference(InferenceConfig(
        input_dir=data.images_dir, series_csv=data.series_csv, output_dir=out / "infer",
        checkpoint=checkpoint, valid_ids=data.valid_ids_path, mode="prod", tta=tta, quiet=True,
    ))
    metrics_csv = RunDir(out / "infer").metrics_csv
    evaluate(metrics_csv, data.lstv_labels_csv, out / "evaluation", n_bootstrap=n_bootstrap)
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    groups = study_groups(data.lstv_labels_csv)
    rows = [r for r in rows if int(r["study_id"]) in groups]
    info = [groups[int(r["study_id"])] for r in rows]
    masks = comparisons(info)
    counts = ", ".join(f"{name} {int(pos.sum())}" for name, (pos, _) in masks.items()
                       if name in ("sacralization", "lumbarization", *SUBTYPES))
    n_normal = int(masks["all"][1].sum())
    n_hard = int(masks["vs degenerated normals"][1].sum())
    lines = [
        f"{summary.n_completed} phantom studies (seed {seed}; {summary.n_failed} failed), "
        f"checkpoint {checkpoint.name}, {time.perf_counter() - started:.0f} s",
        f"transitional {int(masks['all'][0].sum())} ({counts}); normal {n_normal}, of which "
        f"{n_hard} degenerated (Pfirrmann >= 4 at L4/L5 or L5/S1)",
        "ROC AUC [95% bootstrap CI] of transitional (column) vs normal studies; "
        "'vs degenerated normals': every transitional study vs the degenerated normals only",
        "| score | " + " | ".join(masks) + " |",
        "| --- |" + " --- |" * len(masks),
    ]
    for column in score_columns(header, rows):
        name, values = score_values(rows, column)
        cells = [auc_cell(pos, neg, values, n_bootstrap) for pos, neg in masks.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    normal_ids = {int(r["study_id"]) for r, i in zip(rows, info, strict=True)
                  if i["type"] == "normal"}
    degenerated_ids = {int(r["study_id"]) for r, i in zip(rows, info, strict=True)
                       if i["type"] == "normal" and i["degenerated"]}
    errors = localisation_errors(metrics_csv, data, normal_ids)
    hard_errors = localisation_errors(metrics_csv, data, degenerated_ids)
    lines += [
        "",
        f"Localisation error (mm) on the {len(normal_ids)} normal studies, and on the "
        f"{len(degenerated_ids)} degenerated ones, point found:",
        "| level | median | mean | found | degenerated median | degenerated mean | found |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, values in errors.items():
        cells = _error_cells(values) + _error_cells(hard_errors[key])
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
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
    parser.add_argument("--workers", type=int, default=1,
                        help="processes writing the phantoms (same files for any count)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        print(run(args.n_studies, args.lstv_fraction, args.seed, args.checkpoint, out, args.tta,
                  args.n_bootstrap, args.workers))


if __name__ == "__main__":
    main()
