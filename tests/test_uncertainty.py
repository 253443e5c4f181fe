import csv
import math

import numpy as np
import pytest
import torch

from helpers import blob, phantom_infer_config
from lstv.uncertainty import (
    NonFiniteMapError,
    RiskThresholds,
    block_sums,
    level_metrics,
    level_point,
    mutual_information,
    risk_level,
    shannon_entropy,
    spatial_entropy,
    study_metrics,
)


def test_delta_map_has_zero_entropy_and_full_confidence():
    m = np.zeros((160, 160))
    m[40, 70] = 1.0
    out = level_metrics(m)
    assert out["confidence"] == 1.0
    assert out["entropy"] == 0.0
    assert out["spatial_entropy"] == 0.0
    assert out["normalized_entropy"] == 0.0
    assert out["point"] == (70.0, 40.0)


def test_uniform_map_has_maximal_entropy():
    m = np.full((160, 160), 0.2)
    out = level_metrics(m)
    assert out["entropy"] == pytest.approx(math.log(160 * 160))
    assert out["normalized_entropy"] == pytest.approx(1.0)
    assert out["spatial_entropy"] == pytest.approx(math.log(100))
    assert out["confidence"] == pytest.approx(0.2)
    assert out["point"] is None  # nothing above 0.5


def test_two_equal_peaks_have_entropy_ln2_and_midpoint():
    m = np.zeros((160, 160))
    m[20, 20] = m[120, 140] = 0.9
    out = level_metrics(m)
    assert out["entropy"] == pytest.approx(math.log(2))
    assert out["spatial_entropy"] == pytest.approx(math.log(2))
    assert out["confidence"] == pytest.approx(0.9)
    assert out["point"] == (80.0, 70.0)


def test_two_peaks_in_one_block_have_zero_spatial_entropy():
    m = np.zeros((160, 160))
    m[0, 0] = m[15, 15] = 0.6  # both in the top-left 16 x 16 block
    assert spatial_entropy(m) == 0.0
    assert shannon_entropy(m) == pytest.approx(math.log(2))


def test_block_sums_partition_the_map():
    m = np.arange(37 * 23, dtype=float).reshape(37, 23)
    sums = block_sums(m, grid=10)
    assert sums.shape == (10, 10)
    assert sums.sum() == pytest.approx(m.sum())


def test_entropy_of_empty_map_is_an_error():
    with pytest.raises(ValueError, match="sums to zero"):
        shannon_entropy(np.zeros((4, 4)))


def test_point_is_mean_of_pixels_above_half():
    m = np.zeros((10, 10))
    m[2, 3] = m[4, 5] = 0.51
    m[9, 9] = 0.5  # not above the threshold
    assert level_point(m) == (4.0, 3.0)


def test_study_metrics_checks_shape_and_keys():
    probs = np.full((6, 16, 16), 1 / 6)
    out = study_metrics(probs)
    assert list(out) == ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]
    with pytest.raises(ValueError, match="shape"):
        study_metrics(probs[:5])


@pytest.mark.parametrize(
    ("entropy", "expected"),
    [(6.0, "High"), (5.5, "Medium"), (4.0, "Medium"), (4.7, "Medium"), (3.99, "Low")],
)
def test_risk_bands(entropy, expected):
    assert risk_level(entropy) == expected


def test_risk_bands_are_configurable_and_checked():
    assert risk_level(3.0, RiskThresholds(high_entropy=2.5, medium_entropy=1.0)) == "High"
    with pytest.raises(ValueError):
        RiskThresholds(high_entropy=3.0, medium_entropy=4.0)


def test_mutual_information_zero_when_views_agree_and_positive_when_not():
    base = np.zeros((6, 20, 20))
    base[0] = 1.0
    a, b = base.copy(), base.copy()
    a[5, 2, 2], b[5, 17, 17] = 0.9, 0.9
    same = mutual_information(np.stack([a, a, a]))
    differ = mutual_information(np.stack([a, b]))
    assert np.allclose(same, 0.0)
    assert differ[4] == pytest.approx(math.log(2))  # two disjoint deltas, equal weight


def test_resolve_thresholds_layers_flags_over_a_base():
    from lstv.uncertainty import resolve_thresholds

    assert resolve_thresholds() == RiskThresholds()
    base = {"flag_entropy": 9.0, "high_entropy": 9.5, "medium_entropy": 8.0, "other": 1}
    assert resolve_thresholds(base) == RiskThresholds(9.0, 9.5, 8.0)
    assert resolve_thresholds(base, flag_entropy=8.5, high_entropy=None) == RiskThresholds(
        8.5, 9.5, 8.0
    )


def test_a_partial_override_that_does_not_fit_names_each_band_and_its_source():
    """`lstv report --high_threshold 5.5` on a phantom run: the run's Medium (8.1859) stays and
    is above the given High; the error says where each band came from and what to give."""
    from lstv.uncertainty import resolve_thresholds

    run = {"flag_entropy": 8.2485, "high_entropy": 8.3111, "medium_entropy": 8.1859}
    with pytest.raises(ValueError) as raised:
        resolve_thresholds(run, source="the run's manifest", high_entropy=5.5)
    message = str(raised.value)
    assert "medium_entropy 8.1859 (the run's manifest)" in message
    assert "high_entropy 5.5 (command line)" in message
    assert "flag_entropy 8.2485 (the run's manifest)" in message
    assert "--medium_threshold" in message
    # all three given: the run's bands play no part
    assert resolve_thresholds(
        run, source="x", flag_entropy=5.0, high_entropy=5.5, medium_entropy=4.0
    ) == RiskThresholds(5.0, 5.5, 4.0)
    # without a base the seed's defaults are the source
    with pytest.raises(ValueError, match=r"high_entropy 5.5 \(the seed's defaults\)"):
        resolve_thresholds(medium_entropy=6.0)


def test_bands_calibrated_on_normals():
    from lstv.uncertainty import normal_calibrated_thresholds

    normals = np.linspace(9.0, 9.6, 61)  # 95th percentile 9.57, maximum 9.6
    bands = normal_calibrated_thresholds(normals)
    assert bands.medium_entropy == pytest.approx(9.57)
    assert bands.high_entropy == pytest.approx(9.6)
    assert bands.flag_entropy == pytest.approx(9.585)
    assert risk_level(9.3, bands) == "Low" and risk_level(10.0, bands) == "High"


def test_model_pixel_mm_scales_spacing_by_the_resize():
    from lstv.uncertainty import model_pixel_mm

    # 400 rows of 0.5 mm and 320 columns of 0.8 mm resized to 160 x 160
    assert model_pixel_mm([0.5, 0.8], (400, 320), (160, 160)) == pytest.approx((1.25, 1.6))


def test_two_equal_peaks_30_mm_apart_have_peak2_one():
    from lstv.uncertainty import shape_features

    m = np.full((160, 160), 1e-3)
    m += blob(m.shape, (60, 80), 2.0, 0.9) + blob(m.shape, (90, 80), 2.0, 0.9)
    out = shape_features(m, (1.0, 1.0))  # 30 pixels of 1 mm: 30 mm below the first
    assert out["peak2"] == pytest.approx(1.0)
    assert out["peak2_dy_mm"] == pytest.approx(30.0) and out["peak2_dx_mm"] == 0.0
    assert out["mass_out"] == pytest.approx(0.5, abs=0.02)  # half the mass in the other blob


def test_peak2_uses_the_pixel_size_in_mm():
    from lstv.uncertainty import second_peak

    m = np.full((160, 160), 1e-3)
    m += blob(m.shape, (60, 80), 1.0, 0.9) + blob(m.shape, (75, 80), 1.0, 0.6)
    # 15 pixels apart: 15 mm at 1 mm per pixel (inside the 20 mm exclusion), 30 mm at 2 mm
    near, _, _ = second_peak(m, (1.0, 1.0))
    far, dx, dy = second_peak(m, (2.0, 1.0))
    assert near < 0.01
    assert far == pytest.approx(0.6 / 0.9, rel=1e-3) and dy == pytest.approx(30.0)
    with pytest.raises(ValueError, match="positive"):
        second_peak(m, (0.0, 1.0))


def test_single_blob_has_small_peak2_and_no_mass_outside():
    from lstv.uncertainty import shape_features

    m = np.full((160, 160), 1e-3) + blob((160, 160), (100, 70), 1.5, 0.95)
    out = shape_features(m, (1.0, 1.0))
    assert out["peak2"] < 0.01
    assert out["mass_out"] < 0.01  # only the Gaussian's tail beyond the dilated core
    assert 0 < out["top100_entropy"] < math.log(100)


def test_mass_out_ignores_the_background_floor():
    from lstv.uncertainty import mass_outside_peak

    peak = blob((160, 160), (80, 80), 1.5, 0.9)
    # a high constant floor adds nothing above the median; a spread-out second bump does
    assert mass_outside_peak(peak + 0.01) < 0.01
    spread = peak + blob((160, 160), (20, 20), 8.0, 0.3)
    assert mass_outside_peak(spread) > 0.5
    assert mass_outside_peak(np.full((8, 8), 0.2)) == 0.0  # nothing above the median


def test_top100_entropy_of_flat_and_peaked_top():
    from lstv.uncertainty import top_k_entropy

    flat = np.zeros((160, 160))
    flat[:10, :10] = 0.3  # exactly 100 equal values
    assert top_k_entropy(flat) == pytest.approx(math.log(100))
    delta = np.zeros((160, 160))
    delta[5, 5] = 1.0
    assert top_k_entropy(delta) == pytest.approx(0.0)
    assert top_k_entropy(np.full((5, 5), 0.1)) == pytest.approx(math.log(25))  # fewer than 100


def test_study_metrics_adds_shape_features_only_with_a_pixel_size():
    probs = np.full((6, 40, 40), 0.01)
    probs[5, 20, 20] = 0.9
    assert "peak2" not in study_metrics(probs)["l5_s1"]
    out = study_metrics(probs, (1.0, 1.0))["l5_s1"]
    assert {"peak2", "peak2_dx_mm", "peak2_dy_mm", "mass_out", "top100_entropy"} <= set(out)
    assert out["peak2"] == pytest.approx(0.01 / 0.9)


def _mass_outside_by_definition(m, core_fraction, dilations):
    """mass_outside_peak as its docstring defines it, with scipy.ndimage on the whole map."""
    from scipy import ndimage

    eight = np.ones((3, 3), dtype=bool)
    excess = np.maximum(m - np.median(m), 0.0)
    components, _ = ndimage.label(m > core_fraction * m.max(), structure=eight)
    core = components == components[np.unravel_index(np.argmax(m), m.shape)]
    if dilations:
        core = ndimage.binary_dilation(core, structure=eight, iterations=dilations)
    return excess[~core].sum() / excess.sum()


@pytest.mark.parametrize(("core_fraction", "dilations"), [(0.5, 3), (0.3, 1), (0.5, 0)])
def test_mass_out_equals_its_definition(core_fraction, dilations):
    """The blob is the 8-connected component of the peak (diagonal neighbours join it), grown by
    ``dilations`` 3 x 3 dilations, at the map's border too: the cropped OpenCV computation equals
    scipy's labelling and iterated dilation on the whole map. Fails with 4-connectivity, a
    dilation of the wrong size, or a border counted as blob."""
    from lstv.uncertainty import mass_outside_peak

    rng = np.random.default_rng(3)
    for _ in range(30):
        m = rng.random((40, 40)) ** 8  # sparse bright pixels: blobs that touch diagonally
        m[rng.integers(0, 40), rng.integers(0, 2) * 39] = 1.5  # the peak on the border
        expected = _mass_outside_by_definition(m, core_fraction, dilations)
        got = mass_outside_peak(m, core_fraction=core_fraction, dilations=dilations)
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("entropy", "flagged"), [(4.99, False), (5.0, False), (math.nextafter(5.0, 6.0), True)]
)
def test_the_seed_flag_is_strictly_above_its_threshold(entropy, flagged):
    """The seed flags L5/S1 entropy *above* 5.0: a study at exactly 5.0 is not flagged, one a
    hair above is, and any threshold leaves a study exactly at it unflagged.

    Mutant ``> self.flag_entropy`` -> ``>=``: fails (all three cases); without it: passes."""
    assert RiskThresholds().flag(entropy) is flagged
    assert RiskThresholds(flag_entropy=entropy).flag(entropy) is False


# -------------------- nan maps
# Issue 9.5: maps with NaN (a checkpoint with NaN weights) give a failure row, never a verdict.


def _probs(size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.random((6, size, size))
    return p / p.sum(axis=0, keepdims=True)


def test_nan_map_has_no_entropy():
    level_map = np.full((16, 16), np.nan)
    with pytest.raises(NonFiniteMapError, match="NaN or infinite"):
        shannon_entropy(level_map)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_refuses_the_study(bad):
    probs = _probs()
    probs[5, 3, 4] = bad
    with pytest.raises(NonFiniteMapError, match="1 NaN or infinite values"):
        study_metrics(probs)


def test_a_level_map_without_mass_is_refused():
    probs = _probs()
    probs[4] = 0.0
    with pytest.raises(NonFiniteMapError, match="l4_l5 map sums to zero"):
        study_metrics(probs)


def test_finite_maps_still_give_metrics():
    metrics = study_metrics(_probs())
    assert all(np.isfinite(m["entropy"]) and m["entropy"] > 0 for m in metrics.values())


def test_nan_checkpoint_gives_failure_rows_not_low_risk(tmp_path, phantom_dataset):
    from lstv.model import PointNet, save_checkpoint
    from lstv.pipeline import run_inference

    torch.manual_seed(0)
    model = PointNet("resnet10t")
    with torch.no_grad():
        model.logit.weight.fill_(float("nan"))
    ckpt = save_checkpoint(model, tmp_path / "nan.pth")
    out = tmp_path / "out"
    summary = run_inference(
        phantom_infer_config(phantom_dataset, out, ckpt, mode="trial", n_trial=3)
    )
    with open(out / "lstv_uncertainty_metrics.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []  # no verdict
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert summary.n_completed == 0 and summary.n_failed == len(failures) == 3
    for row in failures:
        assert row["stage"] in ("metrics", "model")
        assert "NaN or infinite" in row["error"]


# --- the metrics as they were computed one map at a time (before issue 22) -------------------
# study_metrics computes what it can for the five maps at once, crops the blob search, and
# takes medians by one partition; these are the straightforward definitions it replaced, and
# every number must stay the same, bit for bit.


def _mass_out_before(level_map, core_fraction=0.5, dilations=3):
    from scipy import ndimage

    m = np.asarray(level_map, dtype=np.float64)
    excess = np.maximum(m - np.median(m), 0.0)
    total = excess.sum()
    if total <= 0:
        return 0.0
    components, _ = ndimage.label(m > core_fraction * m.max(), structure=np.ones((3, 3), bool))
    core = components == components.flat[int(np.argmax(m))]
    core = ndimage.maximum_filter(core, size=2 * dilations + 1, mode="constant", cval=False)
    return float(excess[~core].sum() / total)


def _second_peak_before(level_map, pixel_mm, min_distance_mm=20.0):
    m = np.asarray(level_map, dtype=np.float64)
    py, px = np.unravel_index(int(np.argmax(m)), m.shape)
    ys, xs = np.indices(m.shape)
    dy, dx = (ys - py) * pixel_mm[0], (xs - px) * pixel_mm[1]
    far = dx**2 + dy**2 > min_distance_mm**2
    if m[py, px] <= 0 or not far.any():
        return 0.0, math.nan, math.nan
    i = int(np.argmax(np.where(far, m, -np.inf)))
    return float(m.flat[i] / m[py, px]), float(dx.flat[i]), float(dy.flat[i])


def _level_metrics_before(level_map, pixel_mm):
    m = np.asarray(level_map, dtype=np.float64)
    values = m.ravel()
    k = min(100, values.size)
    entropy = shannon_entropy(m)
    ratio, dx, dy = _second_peak_before(m, pixel_mm)
    h, w = m.shape
    rows = np.linspace(0, h, 11).astype(int)
    cols = np.linspace(0, w, 11).astype(int)
    blocks = np.add.reduceat(np.add.reduceat(m, rows[:-1], axis=0), cols[:-1], axis=1)
    return {
        "confidence": float(level_map.max()),
        "entropy": entropy,
        "spatial_entropy": shannon_entropy(blocks),
        "normalized_entropy": entropy / math.log(h * w),
        "point": level_point(level_map),
        "peak2": ratio,
        "peak2_dx_mm": dx,
        "peak2_dy_mm": dy,
        "mass_out": _mass_out_before(m),
        "top100_entropy": shannon_entropy(np.partition(values, values.size - k)[values.size - k :]),
    }


def _softmax_maps(rng, shape=(160, 160), zeros=False, edge=False):
    """(6, H, W) float32 maps like the localizer's: softmax of a background and five levels,
    each one or two blobs over noise (a blob at the border with ``edge``; exact zeros with
    ``zeros``, which take the one-map-at-a-time entropy)."""
    logits = rng.normal(0.0, 1.0, (6, *shape))
    logits[0] += 6.0
    for c in range(1, 6):
        for _ in range(int(rng.integers(1, 3))):
            centre = (0, int(rng.integers(shape[1]))) if edge else rng.integers(0, shape, 2)
            logits[c] += 14.0 * blob(shape, tuple(int(v) for v in centre), rng.uniform(1, 6), 1.0)
    e = np.exp(logits - logits.max(axis=0))
    probs = (e / e.sum(axis=0)).astype(np.float32)
    if zeros:
        probs[1:, : shape[0] // 4] = 0.0
    return probs


@pytest.mark.parametrize(
    "shape, zeros, edge",
    [((160, 160), False, False), ((160, 160), True, False), ((161, 157), False, True)],
)
def test_study_metrics_equal_the_one_map_at_a_time_definitions(shape, zeros, edge):
    rng = np.random.default_rng(sum(shape) + zeros + 2 * edge)
    for _ in range(6):
        probs = _softmax_maps(rng, shape, zeros, edge)
        pixel_mm = (float(rng.uniform(0.5, 2.5)), float(rng.uniform(0.5, 2.5)))
        got = study_metrics(probs, pixel_mm)
        for i, key in enumerate(got):
            want = _level_metrics_before(probs[i + 1], pixel_mm)
            assert list(got[key]) == list(want)
            for name, value in want.items():
                both_nan = value != value and got[key][name] != got[key][name]
                assert value == got[key][name] or both_nan, (key, name)
                assert type(value) is type(got[key][name]), (key, name)
            one = level_metrics(probs[i + 1], pixel_mm)
            assert {k: v for k, v in one.items() if v == v} == {
                k: v for k, v in got[key].items() if v == v
            }


def test_medians_are_numpys_row_by_row():
    from lstv.uncertainty import _medians

    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 6, 101, 25600):
        rows = rng.normal(size=(4, n)) ** 3
        rows[1] = np.round(rows[1], 1)  # ties
        rows[2] = np.sort(rows[2])[::-1]  # reversed order
        assert np.array_equal(_medians(rows), np.median(rows, axis=1))


def test_study_metrics_equal_the_definitions_on_phantom_maps(phantom_dataset, tiny_checkpoint):
    """The same check on a network's maps of phantom studies (random weights, real inputs)."""
    from lstv.inference import load_predictor
    from lstv.sample import read_sample
    from lstv.studies import read_series_table, sagittal_t2_tasks
    from lstv.uncertainty import model_pixel_mm

    tasks = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[:3]
    samples = [read_sample(t, phantom_dataset.images_dir, 160) for t in tasks]
    predictor, _ = load_predictor(tiny_checkpoint, "cpu")
    for sample, probs in zip(samples, predictor(np.stack([s.image for s in samples])), strict=True):
        pixel_mm = model_pixel_mm(sample.pixel_spacing, sample.slice_shape, probs.shape[-2:])
        got = study_metrics(probs, pixel_mm)
        for i, key in enumerate(got):
            want = _level_metrics_before(probs[i + 1], pixel_mm)
            for name, value in want.items():
                both_nan = value != value and got[key][name] != got[key][name]
                assert value == got[key][name] or both_nan, (key, name)


def test_parasagittal_features_read_the_side_maps_against_the_centre():
    """Lowest peak and mean second peak over the side slices, and how far L5/S1 moves."""
    from lstv.uncertainty import parasagittal_features, study_metrics

    def maps(l5_s1_at, l5_s1_peak, second=0.0):
        p = np.full((6, 64, 64), 1e-4)
        p[4, 10, 10] = 0.9  # L4/L5 steady
        p[5][l5_s1_at] = l5_s1_peak
        if second:
            p[5, 60, 60] = second
        return p

    centre = study_metrics(maps((30, 20), 0.9), (1.0, 0.5))
    side = np.stack([maps((30, 20), 0.8), maps((34, 26), 0.6, second=0.3)])
    f = parasagittal_features(side, centre, (1.0, 0.5))
    assert f["parasagittal_slices"] == 2
    assert f["l5_s1_para_min_confidence"] == pytest.approx(0.6)
    assert f["l5_s1_para_mean_peak2"] == pytest.approx((0.0 + 0.3 / 0.6) / 2, abs=1e-3)
    assert f["l4_l5_para_min_confidence"] == pytest.approx(0.9)
    # (x 20 -> 26) x 0.5 mm and (y 30 -> 34) x 1.0 mm
    assert f["l5_s1_para_shift_mm"] == pytest.approx(5.0)
    none = parasagittal_features(None, centre, (1.0, 0.5))
    assert none["parasagittal_slices"] == 0
    assert all(math.isnan(v) for k, v in none.items() if k != "parasagittal_slices")


# -------------------- mutation survivors (issue 20): exact values on small hand-made maps


def test_a_non_finite_entropy_has_no_flag_nor_band_and_says_so():
    for value in (math.nan, math.inf):
        with pytest.raises(NonFiniteMapError, match=r"^L5/S1 entropy is (nan|inf): no risk band"):
            RiskThresholds().flag(value)
        with pytest.raises(NonFiniteMapError, match=r"^L5/S1 entropy is (nan|inf): no risk band"):
            RiskThresholds().risk(value)


def test_band_errors_name_the_band_and_its_value():
    with pytest.raises(ValueError, match=r"^flag_entropy must be a finite number, got nan$"):
        RiskThresholds(flag_entropy=math.nan)
    with pytest.raises(ValueError, match=r"^high_entropy must be a finite number, got inf$"):
        RiskThresholds(high_entropy=math.inf)
    with pytest.raises(
        ValueError, match=r"^medium_entropy \(4.0\) must not exceed high_entropy \(3.0\)$"
    ):
        RiskThresholds(high_entropy=3.0, medium_entropy=4.0)


def test_medium_may_equal_high_leaving_medium_for_that_one_value():
    bands = RiskThresholds(high_entropy=4.5, medium_entropy=4.5)
    assert [bands.risk(e) for e in (4.4, 4.5, 4.6)] == ["Low", "Medium", "High"]


def test_a_level_map_with_little_mass_still_gives_metrics():
    """Only a map with no mass at all is refused: level maps of a softmax sum to far less
    than 1 when the background holds most of the probability."""
    probs = np.full((6, 4, 4), 0.01)
    probs[0] = 0.95
    assert study_metrics(probs)["l5_s1"]["entropy"] == pytest.approx(math.log(16))


def test_zero_sum_message_is_exact():
    with pytest.raises(
        NonFiniteMapError, match=r"^cannot take the entropy of a map that sums to zero$"
    ):
        shannon_entropy(np.zeros(3))
    with pytest.raises(
        NonFiniteMapError, match=r"^cannot take the entropy of a map with NaN or infinite values$"
    ):
        shannon_entropy(np.array([1.0, np.inf]))


def test_spatial_entropy_uses_the_grid_it_is_given():
    m = np.zeros((40, 40))
    m[1, 1] = m[1, 9] = m[9, 1] = m[9, 9] = 1.0  # four 4 x 4 blocks, one 20 x 20 quadrant
    assert spatial_entropy(m, grid=2) == 0.0
    assert spatial_entropy(m, grid=10) == pytest.approx(math.log(4))


def _float32_map(seed: int = 5, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.random((size, size)) ** 8  # a few bright pixels over a dim floor
    return m.astype(np.float32)


def test_float32_maps_give_the_numbers_of_float64_maps():
    """The localizer's softmax is float32; every metric is computed in float64 whatever the
    input's dtype, so a run on float32 maps and one on the same values in float64 agree to the
    last digit (float32 arithmetic differs from the seventh digit on)."""
    from lstv.uncertainty import mass_outside_peak, second_peak, shape_features, top_k_entropy

    m32 = _float32_map()
    m64 = m32.astype(np.float64)
    assert shannon_entropy(m32) == shannon_entropy(m64)
    assert mass_outside_peak(m32) == mass_outside_peak(m64)
    assert second_peak(m32, (0.5, 0.5))[0] == second_peak(m64, (0.5, 0.5))[0]
    assert shape_features(m32, (0.5, 0.5)) == shape_features(m64, (0.5, 0.5))
    assert top_k_entropy(m32) == top_k_entropy(m64)
    assert spatial_entropy(m32) == spatial_entropy(m64)
    assert level_metrics(m32, (0.5, 0.5)) == level_metrics(m64, (0.5, 0.5))
    views32 = np.stack(
        [np.stack([_float32_map(seed + level) for level in range(6)]) for seed in (1, 20)]
    )
    assert np.array_equal(
        mutual_information(views32), mutual_information(views32.astype(np.float64))
    )


def test_mutual_information_is_per_level_and_zero_for_agreeing_spread_views():
    """Views that agree give 0 even when each is spread out (H(mean) = mean(H) = ln 400), and
    each level is measured on its own: here only L5/S1 disagrees."""
    a = np.full((6, 20, 20), 0.1)
    b = a.copy()
    a[5], b[5] = 0.0, 0.0
    a[5, 2, 2], b[5, 17, 17] = 0.9, 0.9
    out = mutual_information(np.stack([a, b]))
    assert out.shape == (5,)
    assert np.allclose(out[:4], 0.0)
    assert out[4] == pytest.approx(math.log(2))


def test_second_peak_in_mm_along_the_columns_and_to_the_left():
    from lstv.uncertainty import second_peak

    m = np.zeros((40, 60))
    m[20, 40] = 0.9
    m[20, 25] = 0.6  # 15 columns to the left: 30 mm at 2 mm per column
    ratio, dx, dy = second_peak(m, (1.0, 2.0))
    assert (ratio, dx, dy) == (pytest.approx(0.6 / 0.9), -30.0, 0.0)
    assert second_peak(m, (1.0, 1.0))[0] == 0.0  # 15 mm: inside the exclusion


def test_second_peak_exactly_at_the_minimum_distance_does_not_count():
    from lstv.uncertainty import second_peak

    m = np.zeros((40, 40))
    m[5, 5] = 1.0
    m[25, 5] = 0.8  # exactly 20 mm below: not farther than 20 mm
    m[5, 30] = 0.3  # 25 mm to the right
    assert second_peak(m, (1.0, 1.0)) == (pytest.approx(0.3), 25.0, 0.0)


def test_second_peak_of_an_empty_or_small_map_is_zero_with_no_offset():
    from lstv.uncertainty import second_peak

    for m, reason in ((np.zeros((40, 40)), "all zero"), (np.eye(5), "no pixel 20 mm away")):
        ratio, dx, dy = second_peak(m, (1.0, 1.0))
        assert ratio == 0.0 and math.isnan(dx) and math.isnan(dy), reason


@pytest.mark.parametrize("pixel_mm", [(1.0, 0.0), (1.0, -1.0), (-1.0, 1.0)])
def test_second_peak_refuses_a_pixel_size_that_is_not_positive(pixel_mm):
    from lstv.uncertainty import second_peak

    with pytest.raises(ValueError, match="pixel size must be positive"):
        second_peak(np.eye(5), pixel_mm)


def test_mass_out_of_a_map_with_less_than_unit_mass():
    from lstv.uncertainty import mass_outside_peak

    m = np.zeros((8, 8))
    m[1, 1], m[7, 7] = 0.3, 0.2  # 6 pixels apart: beyond the 3-pixel growth of the blob
    assert mass_outside_peak(m) == pytest.approx(0.2 / 0.5)


def test_mass_out_blob_is_eight_connected():
    """A diagonal ridge above half the peak is one blob with 8-connectivity (4-connectivity
    would keep only the peak pixel and leave most of the ridge outside)."""
    from lstv.uncertainty import mass_outside_peak

    m = np.zeros((20, 20))
    m[np.arange(16), np.arange(16)] = 0.9
    m[0, 0] = 1.0
    assert mass_outside_peak(m) == 0.0


def test_mass_out_blob_holds_values_above_half_the_peak_only():
    from lstv.uncertainty import mass_outside_peak

    m = np.zeros((20, 20))
    m[0, 0] = 1.0
    m[0, 1:16] = 0.5  # exactly half the peak: not in the blob; columns 4-15 lie beyond growth
    assert mass_outside_peak(m) == pytest.approx(12 * 0.5 / (1.0 + 15 * 0.5))


@pytest.mark.parametrize("dilations", [0, 1, 2, 3, 4])
def test_mass_out_grows_the_blob_by_one_pixel_per_dilation(dilations):
    """Probes of 0.1 (below half the peak) at 1-6 pixels left and right of a peak in a 15 x 15
    map: after n dilations those within n pixels are inside the blob; a probe in the map's
    corner is never inside (the border adds nothing to the blob)."""
    from lstv.uncertainty import mass_outside_peak

    m = np.zeros((15, 15))
    m[7, 7] = 1.0
    for k in range(1, 7):
        m[7, 7 - k] = m[7, 7 + k] = 0.1
    m[0, 14] = 0.1
    outside = 0.1 * (2 * (6 - dilations) + 1)
    assert mass_outside_peak(m, dilations=dilations) == pytest.approx(outside / 2.3)


def test_mass_out_default_growth_is_three_dilations():
    from lstv.uncertainty import mass_outside_peak

    m = np.zeros((15, 15))
    m[7, 7] = 1.0
    m[7, 10] = m[7, 11] = 0.1
    assert mass_outside_peak(m) == pytest.approx(0.1 / 1.2)


def test_a_conflicting_override_on_a_base_without_a_source_names_it_the_base():
    from lstv.uncertainty import resolve_thresholds

    with pytest.raises(ValueError) as raised:
        resolve_thresholds(RiskThresholds(6.0, 7.0, 6.5), high_entropy=6.0)
    assert str(raised.value) == (
        "medium_entropy (6.5) must not exceed high_entropy (6.0). Bands: flag_entropy 6 (base), "
        "high_entropy 6 (command line), medium_entropy 6.5 (base). A threshold given on the "
        "command line replaces only its own band; the others stay those of the base: give the "
        "conflicting ones too (--flag_threshold, --high_threshold, --medium_threshold)"
    )
    with pytest.raises(ValueError, match="the others stay those of the run's manifest: give"):
        resolve_thresholds(RiskThresholds(6.0, 7.0, 6.5), "the run's manifest", high_entropy=6.0)


def test_shape_features_are_the_five_shape_columns_only():
    from lstv.uncertainty import shape_features

    out = shape_features(_float32_map(), (1.0, 1.0))
    assert list(out) == ["peak2", "peak2_dx_mm", "peak2_dy_mm", "mass_out", "top100_entropy"]


# -------------------- mutation survivors (issue 20): parasagittal_features


def _side_maps(l5_s1_at, peak=0.8):
    p = np.full((6, 64, 64), 1e-4)
    p[4, 10, 10] = 0.9
    p[5][l5_s1_at] = peak
    return p


def test_parasagittal_shift_is_in_mm_along_columns_and_rows():
    """The shift is (column step x its pixel size, row step x its pixel size): with unequal
    pixel sizes a swap of the two, or of the centre's coordinates, gives another distance."""
    from lstv.uncertainty import parasagittal_features, study_metrics

    pixel_mm = (2.0, 0.5)  # rows 2 mm apart, columns 0.5 mm
    centre = study_metrics(_side_maps((30, 20), 0.9), pixel_mm)
    f = parasagittal_features(np.stack([_side_maps((34, 26))]), centre, pixel_mm)
    assert f["l5_s1_para_shift_mm"] == pytest.approx(math.hypot(6 * 0.5, 4 * 2.0))


def test_parasagittal_features_without_pixel_size_or_centre_are_nan_not_errors():
    """Without a pixel size the second peak and shift are NaN but the lowest peak is measured;
    a result without a centre (results.py's default) and a run without side slices give NaN
    columns without a numpy warning of an empty mean."""
    import warnings

    from lstv.uncertainty import parasagittal_features, study_metrics

    side = np.stack([_side_maps((34, 26), 0.7)])
    centre = study_metrics(_side_maps((30, 20), 0.9), (1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = parasagittal_features(side, centre, None)
        assert f["l5_s1_para_min_confidence"] == pytest.approx(0.7)
        assert math.isnan(f["l5_s1_para_mean_peak2"]) and math.isnan(f["l5_s1_para_shift_mm"])
        for no_centre in (parasagittal_features(None, {}), parasagittal_features(side, {})):
            assert math.isnan(no_centre["l5_s1_para_shift_mm"])
        assert parasagittal_features(side, {})["l5_s1_para_min_confidence"] == pytest.approx(0.7)
        empty = parasagittal_features(None, {}, (1.0, 1.0))
        assert all(math.isnan(v) for k, v in empty.items() if k != "parasagittal_slices")
