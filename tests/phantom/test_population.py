"""How the phantoms' columns are drawn (lstv.phantom.population): the degeneration mix, the
transitional subtypes and their Castellvi types, the thoracolumbar junction, and normal spines
that vary as published while transitional cues overlap them."""

from collections import Counter

import numpy as np

from lstv.levels import LEVELS
from lstv.phantom.anatomy import CASTELLVI_TYPES, LSTV_SUBTYPES, l5_wedge_deg, s1_s2_remnant
from lstv.phantom.population import sample_anatomy


def _anatomies(kind: str, n: int, seed: int = 77):
    return [sample_anatomy(np.random.default_rng([seed, i]), kind) for i in range(n)]


def test_default_degeneration_mix():
    anatomies = _anatomies("normal", 300) + _anatomies("lumbarization", 100)
    lower = [max(a.disc("L4/L5").grade, a.disc("L5/S1").grade) for a in anatomies]
    assert np.mean(np.array(lower) >= 4) >= 0.4  # the default mix
    assert 0.05 <= np.mean(np.array(lower) == 5) <= 0.35  # some collapsed, black discs
    mean_grade = {lv: np.mean([a.disc(lv).grade for a in anatomies]) for lv in LEVELS}
    assert mean_grade["L1/L2"] < mean_grade["L3/L4"] < mean_grade["L4/L5"]
    assert mean_grade["L1/L2"] < mean_grade["L5/S1"] - 1.0  # worst at the bottom
    slips = [d for a in anatomies for d in a.discs if d.slip > 0]
    assert 0.02 <= len(slips) / len(anatomies) <= 0.15  # occasional
    assert {d.name for d in slips} <= {"L4/L5", "L5/S1"}
    assert all(3.0 <= d.slip <= 8.0 for d in slips)  # grade 1: under a quarter of the depth
    # What each grade draws: lower and darker with the grade, signs of age from grade 3.
    by_grade = {g: [d for a in anatomies for d in a.discs[:-1] if d.grade == g] for g in (1, 5)}
    assert max(d.signal for d in by_grade[5]) < min(
        d.signal for d in by_grade[1] if d.kind == "normal"
    )
    assert all(d.degeneration.blur == 1.0 for d in by_grade[5])
    assert any(d.degeneration.modic for d in by_grade[5])
    assert any(d.degeneration.osteophyte for d in by_grade[5])


def test_transitional_subtypes_and_castellvi():
    for kind in ("sacralization", "lumbarization"):
        anatomies = _anatomies(kind, 120)
        subtypes = Counter(a.subtype for a in anatomies)
        assert set(subtypes) == set(LSTV_SUBTYPES[kind])
        assert min(subtypes.values()) >= 40  # about half each
        for a in anatomies:
            assert a.castellvi in CASTELLVI_TYPES
            states = set(a.transverse)
            if a.subtype == "sacralization_complete":
                assert a.castellvi == "III" and a.transverse == ("fused", "fused")
                assert a.disc("L5/S1").kind == "rudimentary" and a.disc("L5/S1").grade == 5
            if a.subtype == "sacralization_partial":  # one side fused, a narrowed real disc
                assert a.castellvi in ("III", "IV") and "fused" in states
                assert a.transverse.count("fused") == 1
                assert a.disc("L5/S1").kind == "normal" and a.disc("L5/S1").height < 7.0
            if a.subtype == "lumbarization_rudimentary":
                assert a.disc("S1/S2").kind == "rudimentary" and a.disc("S1/S2").height <= 4.0
            if a.subtype == "lumbarization_full":
                assert a.disc("S1/S2").kind == "normal"
            expected = (
                "IV"
                if {"fused", "articulating"} <= states
                else "III"
                if "fused" in states
                else "II"
                if "articulating" in states
                else "I"
                if "enlarged" in states
                else ""
            )
            assert a.castellvi == expected
    assert all(a.castellvi == "" for a in _anatomies("normal", 50))


def test_thoracolumbar_junction_overlaps_the_lumbar_range():
    anatomies = _anatomies("normal", 300)

    def heights(name):  # hydrated discs only: degeneration lowers any disc
        return np.array([a.disc(name).height for a in anatomies if a.disc(name).grade == 1])

    names = ("T9/T10", "T10/T11", "T11/T12", "T12/L1", "L1/L2")
    medians = [np.median(heights(n)) for n in names]
    assert medians == sorted(medians) and len(set(medians)) == len(medians)  # grows downwards
    lumbar_low = np.percentile(heights("L1/L2"), 10)
    assert np.mean(heights("T11/T12") > lumbar_low) > 0.1
    assert np.mean(heights("T12/L1") > lumbar_low) > 0.3
    assert all(a.disc(n).kind == "normal" for a in anatomies for n in ("T11/T12", "T12/L1"))


def _drawn_cues(kind: str, subtype: str, n: int) -> dict[str, np.ndarray]:
    from lstv.phantom.geometry import lumbosacral_angle_deg, place_in_image
    from lstv.phantom.render import sample_matrix

    out: dict[str, list] = {"wedge": [], "ferguson": [], "remnant": []}
    for i in range(n):
        rng = np.random.default_rng([31, i])
        a = sample_anatomy(rng, kind, subtype)
        placement = place_in_image(rng, a, *sample_matrix(rng))
        out["wedge"].append(l5_wedge_deg(a))
        out["ferguson"].append(lumbosacral_angle_deg(a, placement))
        out["remnant"].append(s1_s2_remnant(a))
    return {k: np.array(v) for k, v in out.items()}


def test_normal_spines_spread_and_transitional_cues_overlap():
    """Normals vary as published (Ferguson's angle 44.5 +- 9.9 degrees; an S1/S2 disc in 39%),
    and a sacralized L5's wedge overlaps the normal one instead of following a fixed rule."""
    normal = _drawn_cues("normal", "normal", 200)
    complete = _drawn_cues("sacralization", "sacralization_complete", 100)
    assert 40.0 < normal["ferguson"].mean() < 49.0 and 7.0 < normal["ferguson"].std() < 13.0
    shares = {k: float(np.mean(normal["remnant"] == k)) for k in ("none", "faint", "residual")}
    assert 0.25 < shares["residual"] < 0.55 and min(shares.values()) > 0.1
    assert complete["wedge"].mean() > normal["wedge"].mean() + 1.0
    # Overlap: a fifth of the normals are more wedged than the median sacralized L5.
    assert np.mean(normal["wedge"] > np.median(complete["wedge"])) > 0.1
