"""The drift check: do a run's studies sit where its reference's normal studies sat?"""

from __future__ import annotations

import math

import numpy as np

from lstv.score_reference import Reference

DRIFT_ALPHA = 1e-3  # family-wise, over the reference's features (Bonferroni)
DRIFT_MIN_SHIFT = 0.5  # reference spreads: smaller shifts of a median are not worth a word
DRIFT_MIN_STUDIES = 10


def drift_check(ref: Reference, raw: np.ndarray) -> dict:
    """Do a run's studies sit where the reference's normal studies sat? A robust test of each
    feature's median against the reference's.

    Per feature, the run's median on the reference's scale, shifted by the reference's median
    and divided by its spread, is ``shift`` (in reference SDs); under "like the reference" it
    is about normal with a standard error of 1.2533 / sqrt(n) (a median's). A feature drifts
    when its two-sided p, times the number of features, is below :data:`DRIFT_ALPHA` and its
    shift is at least :data:`DRIFT_MIN_SHIFT`. Most of a screened set is normal, so its medians
    should sit near the reference's whatever a few LSTV do.

    Returns:
        ``{"drift": bool or None (fewer than 10 studies: not tested), "n": studies,
        "features": {name: {"median_shift_sd", "p_adjusted"}} of the drifted ones, "note"}``.
    """
    x = ref.transform(np.asarray(raw, dtype=float))
    drifted, n_max = {}, 0
    for j, name in enumerate(ref.features):
        v = x[:, j][np.isfinite(x[:, j])]
        n_max = max(n_max, len(v))
        if len(v) < DRIFT_MIN_STUDIES:
            continue
        shift = (float(np.median(v)) - ref.centre[name]) / ref.scale[name]
        z = shift / (1.2533 / math.sqrt(len(v)))
        p_adjusted = min(1.0, math.erfc(abs(z) / math.sqrt(2)) * len(ref.features))
        if p_adjusted < DRIFT_ALPHA and abs(shift) >= DRIFT_MIN_SHIFT:
            drifted[name] = {"median_shift_sd": round(shift, 2), "p_adjusted": p_adjusted}
    if n_max < DRIFT_MIN_STUDIES:
        return {"drift": None, "n": n_max, "features": {}, "note": "too few studies to test"}
    if not drifted:
        note = f"feature medians of {n_max} studies are like the reference's"
    else:
        worst = sorted(drifted, key=lambda f: -abs(drifted[f]["median_shift_sd"]))[:3]
        note = (
            f"these {n_max} studies sit far from the reference's normal studies ("
            + ", ".join(f"{f} median {drifted[f]['median_shift_sd']:+.1f} SD" for f in worst)
            + "): the reference may come from another scanner, protocol or population, and "
            "its flag rate will not hold; run lstv calibrate on confirmed normal studies of "
            "this set"
        )
    return {"drift": bool(drifted), "n": n_max, "features": drifted, "note": note}
