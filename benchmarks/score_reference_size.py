"""How the calibrated LSTV score holds up when its reference has 20, 40 or 80 normal studies.

Takes two runs of the same checkpoint: a *calibration* run over normal studies (the pool that
references are drawn from) and a *test* run over other studies with labels (the phantom
benchmark set, ``lstv_labels.csv`` with ``lstv_type`` and ``pfirrmann_*``). For the whole pool and
for ``--repeats`` random draws of each size it fits a reference exactly as ``lstv calibrate`` does
and scores the test studies, then prints per-type ROC AUC, the AUC against degenerated normals
(a Pfirrmann grade >= 4 disc at L4/L5 or L5/S1: the hard negatives), and the false-positive rate
of the calibrated flag among all normals and among degenerated normals, with the sensitivity per
type. The AUC of the whole pool's reference has a 95% bootstrap interval; for the draws the table
gives the median and the 5th-95th percentile over draws.

    python benchmarks/score_reference_size.py \\
        --calibration_csv CAL/infer/lstv_uncertainty_metrics.csv \\
        --test_csv BENCH/infer/lstv_uncertainty_metrics.csv \\
        --test_labels BENCH/phantoms/lstv_labels.csv --sizes 20 40 80 --repeats 50
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

TYPES = ("sacralization", "lumbarization")
DEGENERATED_GRADE = 4
DEGENERATION_LEVELS = ("l4_l5", "l5_s1")


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_groups(rows: list[dict], labels_csv: Path) -> dict[str, np.ndarray]:
    """Boolean masks over ``rows``: each type, normal, and degenerated normal."""
    labels = {r["study_id"]: r for r in read_rows(labels_csv)}
    missing = [r["study_id"] for r in rows if r["study_id"] not in labels]
    if missing:
        raise ValueError(f"{len(missing)} test studies have no label in {labels_csv}")
    kind = np.array([labels[r["study_id"]]["lstv_type"] for r in rows])
    grades = [labels[r["study_id"]] for r in rows]
    if f"pfirrmann_{DEGENERATION_LEVELS[0]}" not in grades[0]:
        raise ValueError(f"{labels_csv} has no pfirrmann_* columns (phantoms of issue 11)")
    worst = np.array(
        [max(int(g[f"pfirrmann_{level}"]) for level in DEGENERATION_LEVELS) for g in grades]
    )
    normal = kind == "normal"
    return {
        **{t: kind == t for t in TYPES},
        "normal": normal,
        "degenerated": normal & (worst >= DEGENERATED_GRADE),
    }


def measure(ref, test_raw: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    from lstv.evaluate import roc_auc

    score, _, flag = ref.score(test_raw)
    out = {"threshold": ref.threshold}
    for t in TYPES:
        m = groups[t] | groups["normal"]
        out[f"auc_{t}"] = roc_auc(groups[t][m].astype(int), score[m])
        out[f"sens_{t}"] = float(flag[groups[t]].mean())
    lstv = groups["sacralization"] | groups["lumbarization"]
    m = lstv | groups["degenerated"]
    out["auc_vs_degenerated"] = roc_auc(lstv[m].astype(int), score[m])
    out["fpr_normals"] = float(flag[groups["normal"]].mean())
    out["fpr_degenerated"] = float(flag[groups["degenerated"]].mean())
    return out


def auc_ci(ref, test_raw, groups, n_bootstrap: int) -> dict[str, tuple[float, float]]:
    from lstv.evaluate import bootstrap_auc_ci

    score = ref.score(test_raw)[0]
    lstv = groups["sacralization"] | groups["lumbarization"]
    cases = {t: (groups[t], groups["normal"]) for t in TYPES}
    cases["vs_degenerated"] = (lstv, groups["degenerated"])
    out = {}
    for name, (pos, neg) in cases.items():
        m = pos | neg
        out[name] = bootstrap_auc_ci(pos[m].astype(int), score[m], n=n_bootstrap, seed=0)
    return out


def run(args) -> str:
    from lstv.score import FEATURES, feature_matrix, fit_reference
    from lstv.scoring import run_manifest

    cal_sha = run_manifest(args.calibration_csv).checkpoint_sha256
    test_sha = run_manifest(args.test_csv).checkpoint_sha256
    if cal_sha != test_sha:
        raise ValueError(
            f"the calibration run used checkpoint {cal_sha} and the test run {test_sha}: "
            "a reference holds only for its own checkpoint"
        )
    cal_rows = read_rows(args.calibration_csv)
    if args.calibration_labels:
        normal = {
            r["study_id"] for r in read_rows(args.calibration_labels) if r["lstv"].strip() == "0"
        }
        cal_rows = [r for r in cal_rows if r["study_id"] in normal]
    pool = feature_matrix(cal_rows, FEATURES, str(args.calibration_csv))
    pool = pool[np.isfinite(pool).all(axis=1)]
    test_rows = read_rows(args.test_csv)
    test_raw = feature_matrix(test_rows, FEATURES, str(args.test_csv))
    groups = test_groups(test_rows, args.test_labels)
    counts = {k: int(v.sum()) for k, v in groups.items()}

    q = args.target_specificity
    full = fit_reference(pool, cal_sha, target_specificity=q)
    whole = measure(full, test_raw, groups)
    ci = auc_ci(full, test_raw, groups, args.n_bootstrap)
    rule = "maximum" if q is None else f"quantile {q:g}"
    lines = [
        f"flag threshold: the {rule} of the reference studies' leave-one-out scores",
        f"checkpoint {cal_sha[:12]}; calibration pool {len(pool)} normal studies "
        f"({args.calibration_csv}); test {len(test_rows)} studies: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
        "| reference | threshold | AUC sacralization | AUC lumbarization | AUC vs degenerated "
        "normals | FPR normals | FPR degenerated normals | sens. sacralization | "
        "sens. lumbarization |",
        "| --- |" + " --- |" * 8,
    ]

    def pct(x: float, n: int) -> str:
        return f"{100 * x:.1f}% ({round(x * n)}/{n})"

    lines.append(
        f"| all {len(pool)} | {whole['threshold']:.2f} | "
        + " | ".join(
            f"{whole[f'auc_{k}']:.3f} [{ci[k][0]:.2f}, {ci[k][1]:.2f}]"
            for k in ("sacralization", "lumbarization", "vs_degenerated")
        )
        + f" | {pct(whole['fpr_normals'], counts['normal'])} | "
        f"{pct(whole['fpr_degenerated'], counts['degenerated'])} | "
        f"{pct(whole['sens_sacralization'], counts['sacralization'])} | "
        f"{pct(whole['sens_lumbarization'], counts['lumbarization'])} |"
    )
    rng = np.random.default_rng(args.seed)
    keys = (
        "threshold", "auc_sacralization", "auc_lumbarization", "auc_vs_degenerated",
        "fpr_normals", "fpr_degenerated", "sens_sacralization", "sens_lumbarization",
    )
    for size in args.sizes:
        if size > len(pool):
            lines.append(f"| {size} | pool has only {len(pool)} |" + " |" * 7)
            continue
        draws = [
            measure(
                fit_reference(
                    pool[rng.choice(len(pool), size, replace=False)], cal_sha,
                    target_specificity=q,
                ),
                test_raw, groups,
            )
            for _ in range(args.repeats)
        ]
        cells = []
        for k in keys:
            v = np.array([d[k] for d in draws])
            scale, digits = (100, 1) if k.startswith(("fpr", "sens")) else (1, 3)
            unit = "%" if scale == 100 else ""
            lo, mid, hi = np.percentile(v * scale, [5, 50, 95])
            cells.append(f"{mid:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]")
        lines.append(f"| {size} ({args.repeats} draws) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration_csv", type=Path, required=True)
    parser.add_argument(
        "--calibration_labels", type=Path, default=None,
        help="keep only the calibration studies labelled normal (default: all)",
    )
    parser.add_argument("--test_csv", type=Path, required=True)
    parser.add_argument("--test_labels", type=Path, required=True, help="lstv_labels.csv")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_bootstrap", type=int, default=2000)
    parser.add_argument(
        "--target_specificity", type=float, default=None,
        help="flag threshold rule as in lstv calibrate (default: leave-one-out maximum)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print(run(args))


if __name__ == "__main__":
    main()
