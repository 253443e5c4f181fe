"""The drift check: do a run's studies sit where its reference's normal studies sat?"""

from __future__ import annotations

import math
from statistics import NormalDist

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
        note = (
            f"these {n_max} studies sit far from the reference's normal studies ("
            + _largest_shifts(drifted)
            + "): the reference may come from another scanner, protocol or population, and "
            "its flag rate will not hold; run lstv calibrate on confirmed normal studies of "
            "this set"
        )
    return {"drift": bool(drifted), "n": n_max, "features": drifted, "note": note}


# --------------------------------------------------------------------------- acquisition

ACQUISITION_ALPHA = 1e-3  # family-wise, over the reference's descriptors (Bonferroni)
ACQUISITION_MIN_SHIFT = 0.5  # reference spreads
NO_ACQUISITION = (
    "the acquisition check cannot run: the reference records no acquisition descriptors "
    "(fitted by an lstv before them, or on fewer than 10 studies with them); lstv calibrate "
    "on 10 or more normal studies of a current run records them"
)


def acquisition_check(acquisition: dict, raw: np.ndarray) -> dict:
    """Were a run's studies acquired as the reference's normal studies were? A robust test of
    each acquisition descriptor's median (:mod:`lstv.acquisition`) against the reference's.

    Per descriptor, a sign test: the share ``q`` of the run's studies above the reference's
    median (ties count half). Under "acquired alike" ``q`` is about 1/2 with a variance of
    1/(4n) + 1/(4 n_ref) (the reference's median is itself a sample's), so
    z = 2 (q - 1/2) / sqrt(1/n + 1/n_ref), whatever the descriptor's distribution: header
    spacings are discrete, a mix of protocols multimodal, where a z of medians on a MAD scale
    fires by chance. A descriptor drifts when its two-sided p, times the number of descriptors
    the reference has (Bonferroni), is below :data:`ACQUISITION_ALPHA` and its median moved by
    at least :data:`ACQUISITION_MIN_SHIFT` reference spreads (1.4826 x MAD,
    ``median_shift_sd``); 10 studies or more, and enough that a set wholly on one side of the
    reference's median reaches that p (22 against a reference of 40, 49 against 20): with
    fewer, ``drift`` is None and the note says how many it needs. The descriptors do not depend
    on the anatomy, so a set rich in transitional studies sits where the reference's normals
    sat.

    Args:
        acquisition: the reference's ``acquisition`` field (:func:`lstv.acquisition.
            fit_descriptors`); empty for a reference fitted before it.
        raw: (n, len(DESCRIPTORS)) the run's descriptors, NaN where unknown; None when the
            run's CSV has no acquisition columns.

    Returns:
        ``{"drift": bool or None (not tested), "n", "descriptors": {name: {"median_shift_sd",
        "p_adjusted"}} of the drifted ones, "note"}``.
    """
    from lstv.acquisition import DESCRIPTORS

    fitted = (acquisition or {}).get("descriptors") or {}
    if not fitted:
        return {"drift": None, "n": 0, "descriptors": {}, "note": NO_ACQUISITION}
    if raw is None:
        note = (
            "the acquisition check cannot run: this run's CSV has no acquisition columns "
            "(written by an lstv before them; run lstv infer again to have them)"
        )
        return {"drift": None, "n": 0, "descriptors": {}, "note": note}
    raw = np.asarray(raw, dtype=float)
    z_needed = NormalDist().inv_cdf(1 - ACQUISITION_ALPHA / (2 * len(fitted)))
    drifted, n_max, n_tested = {}, 0, 0
    for j, name in enumerate(DESCRIPTORS):
        if name not in fitted:
            continue
        v = raw[:, j][np.isfinite(raw[:, j])]
        n_max = max(n_max, len(v))
        ref = fitted[name]
        # All studies on one side give the sign test's largest z: below z_needed, it cannot
        # fire, and silence would be no evidence.
        if len(v) < DRIFT_MIN_STUDIES or 1 / math.sqrt(1 / len(v) + 1 / ref["n"]) < z_needed:
            continue
        n_tested += 1
        shift = (float(np.median(v)) - ref["centre"]) / ref["spread"]
        above = (np.sum(v > ref["centre"]) + 0.5 * np.sum(v == ref["centre"])) / len(v)
        z = 2 * (float(above) - 0.5) / math.sqrt(1 / len(v) + 1 / ref["n"])
        p_adjusted = min(1.0, math.erfc(abs(z) / math.sqrt(2)) * len(fitted))
        if p_adjusted < ACQUISITION_ALPHA and abs(shift) >= ACQUISITION_MIN_SHIFT:
            drifted[name] = {"median_shift_sd": round(shift, 2), "p_adjusted": p_adjusted}
    if not n_tested:
        note = "too few studies to test the acquisition" + _too_few(
            n_max, (acquisition or {}).get("n", 0), z_needed
        )
        return {"drift": None, "n": n_max, "descriptors": {}, "note": note}
    if not drifted:
        note = f"the acquisition of {n_max} studies is like the reference's"
    else:
        note = (
            f"these {n_max} studies were acquired differently from the reference's normal "
            f"studies ({_largest_shifts(drifted)})"
        )
    return {"drift": bool(drifted), "n": n_max, "descriptors": drifted, "note": note}


def _too_few(n: int, n_ref: int, z_needed: float) -> str:
    """Why a sign test of ``n`` studies against a reference of ``n_ref`` cannot fire."""
    room = 1 / z_needed**2 - 1 / max(n_ref, 1)
    if room <= 0:
        return (
            f": a sign test against a reference of {n_ref} normal studies cannot reach "
            f"p < {ACQUISITION_ALPHA:g} however large the set (it needs a reference of "
            f"{math.floor(z_needed**2) + 1} or more)"
        )
    needed = max(DRIFT_MIN_STUDIES, math.floor(1 / room) + 1)
    return (
        f": {n} studies against a reference of {n_ref} cannot reach p < {ACQUISITION_ALPHA:g} "
        f"(it needs {needed} or more)"
    )


# --------------------------------------------------------------------------- both parts

ACQUISITION_DRIFT = "acquisition drift"
FEATURE_SHIFT_ONLY = "feature shift without acquisition drift"
FEATURE_DRIFT = "feature drift"  # the acquisition was not checked
NO_DRIFT = "none"
CALIBRATE = "run lstv calibrate on confirmed normal studies of this set"


def check_run(ref: Reference, rows: list[dict], source: str = "metrics CSV") -> dict:
    """The drift check of a run's metrics rows against its reference, both parts: the
    acquisition (:func:`acquisition_check`), then the score features (:func:`drift_check`).

    ``verdict`` says which it is: :data:`ACQUISITION_DRIFT` (the set was acquired differently:
    re-calibrate), :data:`FEATURE_SHIFT_ONLY` (the features moved but the acquisition did not:
    the set may hold many transitional studies; no reason to re-calibrate), :data:`FEATURE_DRIFT`
    (the features moved and the acquisition could not be checked), or :data:`NO_DRIFT`.

    Returns:
        :func:`drift_check`'s keys (``drift``, ``n``, ``features``; ``note`` now the whole
        verdict in words, the features' own as ``feature_note``), and ``acquisition``
        (:func:`acquisition_check`), ``acquisition_drift`` and ``verdict``.
    """
    from lstv.acquisition import descriptor_matrix
    from lstv.score_features import feature_matrix

    features = drift_check(ref, feature_matrix(rows, ref.features, source))
    acquisition = acquisition_check(ref.acquisition, descriptor_matrix(rows, source))
    moved = _largest_shifts(features["features"])
    if acquisition["drift"]:
        verdict = ACQUISITION_DRIFT
        note = (
            f"{acquisition['note']}: the reference comes from another scanner or protocol, and "
            f"its flag rate will not hold; {CALIBRATE}"
            + (f" (the score features moved too: {moved})" if moved else "")
        )
    elif features["drift"] and acquisition["drift"] is False:
        verdict = FEATURE_SHIFT_ONLY
        note = (
            f"the score features of these {features['n']} studies moved ({moved}) but "
            f"{acquisition['note']}: the set may hold many transitional studies; that is not a "
            "reason to re-calibrate"
        )
    elif features["drift"]:
        verdict = FEATURE_DRIFT
        note = f"{features['note']} ({acquisition['note']})"
    else:
        verdict = NO_DRIFT
        note = f"{features['note']}; {acquisition['note']}"
    return {
        **features,
        "note": note,
        "feature_note": features["note"],
        "acquisition": acquisition,
        "acquisition_drift": acquisition["drift"],
        "verdict": verdict,
    }


def _largest_shifts(drifted: dict) -> str:
    """The three largest median shifts of what drifted, in words, largest first."""
    worst = sorted(drifted, key=lambda f: -abs(drifted[f]["median_shift_sd"]))[:3]
    return ", ".join(f"{f} median {drifted[f]['median_shift_sd']:+.1f} SD" for f in worst)
