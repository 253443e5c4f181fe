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

With ``--reference_size N`` (default 40) it also fits today's score (v1: the largest two-sided
robust |z| of ten map features, flag at the leave-one-out maximum) and score v2 on N normal
phantoms of ``--reference_seed`` run through the same checkpoint, and prints them side by side:
AUC with CI per type, per subtype and against degenerated normals, sensitivity at each rule's
shipped flag, and the flag rate among normals and degenerated normals; then what drives v2 per
type and the drift check (its verdict: acquisition drift, a feature shift without it, or none;
``benchmarks/acquisition_drift.py`` counts the acquisition part over many sets). ``--shift``
draws the test and reference phantoms as another scanner would show them (re-calibrated), and
adds the unshifted reference without re-calibration.

Pre-registration (written and committed before the test seed was run, once)
-------------------------------------------------------------------------------
Development: features and rule were chosen on seed 5002 (160 phantoms, 60 transitional)
against two references of 40 normals each (the two halves of seed 5001, 80 normals), shipped
localizer ``a8e76c16...`` (not fine-tuned to the realistic phantoms: the fine-tune did not
finish on the shared machine). Single features (raw AUC, sacralization / lumbarization):
L5/S1 1 - peak 0.82 / 0.30, L5/S1 peak2 0.51 / 0.83, L5/S1 mass_out 0.57 / 0.86; the geometry
columns 0.45-0.63 / 0.52-0.76. Combined (AUC all, the two references): v1 0.61 and 0.45;
Mahalanobis of the three L5/S1 map features 0.76 and 0.74; adding L5/S1 entropy 0.70 and
0.66; adding the geometry 0.66-0.72. Chosen: **v2 = robust Mahalanobis distance (MAD scales,
MinCovDet correlations) of L5/S1 1 - peak, peak2 and mass_out, each one-sided, flag at the
0.95 quantile of the reference's leave-one-out scores** (``lstv.score.V2_FEATURES``).

Test, run once with this commit's code:

    python benchmarks/phantom_auc.py --n_studies 200 --lstv_fraction 0.3 --seed 6002 \
        --reference_size 40 --reference_seed 6001 --output_dir /tmp/i18/test
    python benchmarks/phantom_auc.py --n_studies 120 --lstv_fraction 0.5 --seed 6004 \
        --reference_size 40 --reference_seed 6001 --shift --output_dir /tmp/i18/shift

Targets (issue 18): lstv_score AUC >= 0.90 for sacralization (>= 0.80 partial), >= 0.95 for
lumbarization, >= 0.90 against degenerated normals; at the shipped flag sensitivity >= 0.60
sacralization and >= 0.85 lumbarization with <= 10% of normals flagged; under the shift,
re-calibrated, AUC >= 0.85 each. Expected from development: well below them (AUC about 0.75);
the figures are reported as measured, whatever they are.

Pre-registration of test 2 (written and committed before its seeds were run, once)
-------------------------------------------------------------------------------------
What changed since test 1: the shipped localizer is fine-tuned to the realistic phantoms
(trained net ``5ce5216a...``, shipped file ``4f15a231...``; ``models/README.md``), and
``lstv infer`` writes the parasagittal columns (``--parasagittal 2``, the default).

Development, with that net, on the same seeds as test 1's (seed 5002: 160 phantoms, 100
normal of which 59 degenerated, 30 sacralized, 30 lumbarized; references: the two halves of
80 normals of seed 5001). Single columns (AUC sacralization / lumbarization): L5/S1 1 - peak
0.86 / 0.53, peak2 0.61 / 0.91, mass_out 0.50 / 0.94; the parasagittal ones L5/S1 lowest peak
(as 1 - peak) 0.87 / 0.58, L5/S1 mean second peak 0.52 / 0.94, L5/S1 shift 0.60 / 0.65, L4/L5
0.50-0.60 / 0.58-0.63: they repeat the centre slice's signals, not new ones. Robust
Mahalanobis (AUC all, reference A and B): v2's three L5/S1 map features 0.84 and 0.84
(sacralization 0.76 / 0.77, lumbarization 0.92 / 0.91, against degenerated normals 0.84 /
0.84); adding the L5/S1 mean parasagittal second peak 0.83 / 0.81; the lowest parasagittal
peak and mean second peak 0.84 / 0.82; those and the shift 0.84 / 0.84; the shift alone 0.84 /
0.82; the L4/L5 and L5/S1 parasagittal peaks and second peaks 0.85 / 0.82. None is better on
both references, so **v2 is unchanged: robust Mahalanobis of L5/S1 1 - peak, peak2 and
mass_out, one-sided; the parasagittal columns are written but do not enter the score**.

Threshold estimator, from 12 random draws of 40 of the 80 reference normals, the flag rate on
the 100 development normals (mean [5th-95th percentile over draws]): the 0.95 quantile of the
40 cross-fitted scores (today's) 5.1% [0.6%, 9.8%]; the Harrell-Davis 0.95 quantile 3.2%
[0.0%, 8.0%]; a log-normal fit 0.0%; a gamma fit 0.8% [0.0%, 3.8%] (the one-sided distances
pile up at 0, which the parametric fits cannot follow). **Kept: the empirical 0.95 quantile**
(on target on average with this net; test 1's 16% came with the net before the fine-tune).
A reference of 40 still leaves the rate anywhere between about 1% and 10% from one draw to the
next.

Test 2, run once with this commit's code, new test seeds, the references the same 40 normals
of seed 6001 as test 1 (never used in development), through the fine-tuned net:

    python benchmarks/phantom_auc.py --n_studies 200 --lstv_fraction 0.3 --seed 6102 \
        --reference_size 40 --reference_seed 6001 --output_dir /tmp/i18/test2
    python benchmarks/phantom_auc.py --n_studies 120 --lstv_fraction 0.5 --seed 6104 \
        --reference_size 40 --reference_seed 6001 --shift --output_dir /tmp/i18/shift2

Targets as test 1's. Expected from development: AUC about 0.84 overall, sacralization about
0.76 and partial sacralization about 0.63 (below target), lumbarization about 0.92 (below 0.95),
a flag rate among normals near 5%.
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


def phantoms(root: Path, n_studies: int, lstv_fraction: float, seed: int, workers: int,
             scanner: str = "default"):
    """The held-out phantom set: written, or the one a kept ``--output_dir`` already holds
    (its recorded settings are these; the same settings write the same bytes)."""
    import json

    from lstv import rsna
    from lstv.phantom import PhantomDataset, write_phantom_dataset
    from lstv.phantom.dataset import SETTINGS_JSON

    settings = {"n_studies": n_studies, "lstv_fraction": lstv_fraction, "seed": seed,
                "valid_fraction": 1.0, **({"scanner": scanner} if scanner != "default" else {})}
    recorded = root / SETTINGS_JSON
    labels = root / "lstv_labels.csv"
    if not (recorded.is_file() and labels.is_file()
            and json.loads(recorded.read_text()) == settings):
        return write_phantom_dataset(root, workers=workers, **{"scanner": scanner, **settings})
    with open(labels, newline="") as f:
        ids = tuple(int(r["study_id"]) for r in csv.DictReader(f))
    valid = tuple(int(i) for i in np.load(root / "valid_id.npy"))
    return PhantomDataset(root, root / rsna.TRAIN_IMAGES, root / rsna.SERIES_CSV,
                          root / rsna.LABELS_CSV, labels, root / "valid_id.npy", ids, valid)


def infer(data, out: Path, checkpoint: Path, tta: bool = False):
    """``lstv infer`` of a phantom set: the run summary and its metrics CSV."""
    from lstv.pipeline import InferenceConfig, run_inference

    summary = run_inference(InferenceConfig(
        input_dir=data.images_dir, series_csv=data.series_csv, output_dir=out,
        checkpoint=checkpoint, valid_ids=data.valid_ids_path, mode="prod", tta=tta, quiet=True,
    ))
    return summary, RunDir(out).metrics_csv


def read_rows(metrics_csv: Path) -> tuple[list[str], list[dict]]:
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# Today's score (score v1: the largest |z| of ten map features, flag at the leave-one-out
# maximum, the default of lstv calibrate before v2) and score v2 (robust Mahalanobis of map and
# geometry features, flag at a cross-fitted target specificity).
RULES = {
    "today (v1)": {"rule": "max_abs_z", "target_specificity": None},
    "v2": {"rule": "mahalanobis"},
}


def fit_references(ref_csv: Path, ref_labels: Path, out: Path, target_specificity: float):
    """The two references of one set of normal studies, by the rules of :data:`RULES`."""
    from lstv.calibrate import calibrate

    refs = {}
    for name, kw in RULES.items():
        kw = {"target_specificity": target_specificity, **kw}
        path = out / f"reference_{kw['rule']}.json"
        path.unlink(missing_ok=True)
        refs[name] = calibrate(ref_csv, path, ref_labels, **kw)
    return refs


def _rate(flags: np.ndarray, mask: np.ndarray) -> str:
    n = int(mask.sum())
    return f"{flags[mask].mean():.0%} ({int(flags[mask].sum())}/{n})" if n else "n/a"


def side_by_side(rows: list[dict], info: list[dict], refs: dict, n_bootstrap: int) -> list[str]:
    """Per rule: AUC [95% CI] per comparison and, at its shipped flag, sensitivity per type and
    the share of normals and of degenerated normals flagged."""
    from lstv.score import score_rows

    masks = comparisons(info)
    kind = np.array([i["type"] for i in info])
    normal, degenerated = masks["all"][1], masks["vs degenerated normals"][1]
    head = ["sens. sacralization", "sens. lumbarization", "FPR normals",
            "FPR degenerated normals", "threshold"]
    lines = ["| score | " + " | ".join([*masks, *head]) + " |",
             "| --- |" + " --- |" * (len(masks) + len(head))]
    for name, ref in refs.items():
        scored = score_rows(rows, ref)
        values = np.array([float(s["lstv_score"]) if s["lstv_score"] != "" else np.nan
                           for s in scored])
        flags = np.array([s["lstv_score_flag"] is True for s in scored])
        cells = [auc_cell(pos, neg, values, n_bootstrap) for pos, neg in masks.values()]
        cells += [_rate(flags, kind == "sacralization"), _rate(flags, kind == "lumbarization"),
                  _rate(flags, normal), _rate(flags, degenerated), f"{ref.threshold:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def drivers(rows: list[dict], info: list[dict], ref) -> list[str]:
    """Which feature drives v2's score, per type: how much each cue carries."""
    from collections import Counter

    from lstv.score import score_rows

    scored = score_rows(rows, ref)
    lines = []
    for kind in ("normal", "sacralization", "lumbarization"):
        c = Counter(s["lstv_score_driver"] for s, i in zip(scored, info, strict=True)
                    if i["type"] == kind)
        lines.append(f"- {kind}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    return lines


def run(n_studies: int, lstv_fraction: float, seed: int, checkpoint: Path, out: Path,
        tta: bool, n_bootstrap: int, workers: int = 1, reference_size: int = 40,
        reference_seed: int | None = None, shift: bool = False,
        target_specificity: float = 0.95) -> str:
    from lstv.evaluate import evaluate

    started = time.perf_counter()
    scanner = "shifted" if shift else "default"
    data = phantoms(out / "phantoms", n_studies, lstv_fraction, seed, workers, scanner)
    summary, metrics_csv = infer(data, out / "infer", checkpoint, tta)
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
    if reference_size:
        lines += scores_against_references(
            rows, info, out, checkpoint, reference_size,
            seed + 1 if reference_seed is None else reference_seed, workers, scanner,
            target_specificity, n_bootstrap)
    return "\n".join(lines)


def scores_against_references(rows, info, out, checkpoint, reference_size, reference_seed,
                              workers, scanner, target_specificity, n_bootstrap) -> list[str]:
    """Today's score and v2 side by side, each fitted on ``reference_size`` normal phantoms of
    ``reference_seed`` (the same scanner as the test set), and the drift check; under a
    scanner shift, also the unshifted reference without re-calibration."""
    from lstv.score_drift import check_run

    def reference(scanner: str):
        root = out / ("reference" if scanner == "default" else f"reference_{scanner}")
        ref_data = phantoms(root / "phantoms", reference_size, 0.0, reference_seed, workers,
                            scanner)
        _, ref_csv = infer(ref_data, root / "infer", checkpoint)
        return fit_references(ref_csv, ref_data.lstv_labels_csv, root, target_specificity)

    refs = reference(scanner)
    shifted = scanner != "default"
    lines = [
        "",
        f"Calibrated score, reference of {reference_size} normal phantoms (seed "
        f"{reference_seed}{', shifted scanner, re-calibrated' if shifted else ''}); v2's flag "
        f"at target specificity {target_specificity:g}. AUC [95% bootstrap CI]; sensitivity "
        "and false-positive rates at each rule's shipped flag:",
        *side_by_side(rows, info, refs, n_bootstrap),
        "",
        "What drives v2's score, per type (feature: studies):",
        *drivers(rows, info, refs["v2"]),
    ]
    drift = check_run(refs["v2"], rows)
    lines += ["", f"Drift check, this set against its own-scanner reference: {drift['verdict']}: "
              f"{drift['note']}"]
    if shifted:
        plain = reference("default")
        lines += [
            "",
            "The same normals on the unshifted scanner as the reference, without "
            "re-calibration:",
            *side_by_side(rows, info, plain, n_bootstrap),
        ]
        drift = check_run(plain["v2"], rows)
        lines.append(f"Drift check, against the unshifted reference: {drift['verdict']}: "
                     f"{drift['note']}")
    return lines


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
    parser.add_argument("--reference_size", type=int, default=40,
                        help="normal phantoms the scores' references are fitted on (0: none)")
    parser.add_argument("--reference_seed", type=int, default=None,
                        help="their seed (default: --seed + 1)")
    parser.add_argument("--target_specificity", type=float, default=0.95,
                        help="v2's flag: this quantile of the reference's cross-fitted scores")
    parser.add_argument("--shift", action="store_true",
                        help="a scanner change (coarser, gamma, bias field, noise) applied to "
                        "the test and reference phantoms; also reports the unshifted "
                        "reference without re-calibration")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        print(run(args.n_studies, args.lstv_fraction, args.seed, args.checkpoint, out, args.tta,
                  args.n_bootstrap, args.workers, args.reference_size, args.reference_seed,
                  args.shift, args.target_specificity))


if __name__ == "__main__":
    main()
