"""How the phantom generator draws the cues a score reads, per subtype: L5 wedge, Ferguson's
lumbosacral angle in the image, L1-S1 lordosis, the image rotation, the L5/S1 spacing over the
mean spacing above it (disc centres in the column's frame) and the S1/S2 remnant.

It draws anatomies and their placement only (no image), so it is quick:

    python benchmarks/phantom_cues.py --n 200

The ``lstv.phantom`` docstring's table quotes these figures (mean +- SD [5th, 95th percentile]).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")


def cues(kind: str, subtype: str, n: int, seed: int) -> dict:
    from lstv.phantom.anatomy import l5_wedge_deg, s1_s2_remnant
    from lstv.phantom.geometry import lumbosacral_angle_deg, place_in_image
    from lstv.phantom.population import sample_anatomy
    from lstv.phantom.render import sample_matrix

    out: dict = {"wedge": [], "ferguson": [], "lordosis": [], "rotation": [], "spacing": [],
                 "remnant": Counter()}
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        a = sample_anatomy(rng, kind, subtype)
        placement = place_in_image(rng, a, *sample_matrix(rng))
        bodies = {b.name: b for b in a.bodies}
        centres = {f"{u.name}/{lo.name}": (u.inf_centre + lo.sup_centre) / 2
                   for u, lo in zip(a.bodies[:-1], a.bodies[1:], strict=True)}
        steps = [np.linalg.norm(centres[LEVELS[k + 1]] - centres[LEVELS[k]]) for k in range(4)]
        out["wedge"].append(l5_wedge_deg(a))
        out["ferguson"].append(lumbosacral_angle_deg(a, placement))
        out["lordosis"].append(bodies["S1"].sup_angle - bodies["L1"].sup_angle)
        out["rotation"].append(placement.rotation)
        out["spacing"].append(steps[3] / np.mean(steps[:3]))
        out["remnant"][s1_s2_remnant(a)] += 1
    return out


def summary(values) -> str:
    v = np.asarray(values, dtype=float)
    low, high = np.percentile(v, [5, 95])
    return f"{v.mean():.1f} +- {v.std():.1f} [{low:.1f}, {high:.1f}]"


def main(argv=None) -> None:
    from lstv.phantom import LSTV_SUBTYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="anatomies per subtype")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print("| subtype | L5 wedge (deg) | Ferguson's angle (deg) | L1-S1 lordosis (deg) | "
          "image rotation (deg) | L5/S1 spacing ratio | S1/S2 remnant |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, subtypes in LSTV_SUBTYPES.items():
        for subtype in subtypes:
            c = cues(kind, subtype, args.n, args.seed)
            remnant = ", ".join(f"{k} {v}" for k, v in sorted(c["remnant"].items()))
            cells = [summary(c[k]) for k in ("wedge", "ferguson", "lordosis", "rotation")]
            cells.append(f"{np.mean(c['spacing']):.2f} +- {np.std(c['spacing']):.2f}")
            print(f"| {subtype} | " + " | ".join(cells) + f" | {remnant} |")


if __name__ == "__main__":
    main()
