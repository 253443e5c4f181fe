"""Acquisition descriptors (lstv.acquisition): what a scanner change moves, read off a slice."""

import math

import cv2
import numpy as np
import pytest

from lstv.acquisition import DESCRIPTORS, descriptor_matrix, descriptors, fit_descriptors
from lstv.errors import UsageError

IMAGE = ("acq_noise", "acq_sharpness", "acq_contrast", "acq_bias_ratio")


def body_slice(seed=0, noise=20.0, size=256, gamma=1.0, ramp=0.0, coarse=1.0):
    """A sagittal-like 16-bit slice: an ellipse of textured tissue on air, Rician-like noise;
    ``gamma``, a left-right bias ``ramp`` and a ``coarse`` resolution as a scanner might."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = (x / 0.8) ** 2 + (y / 0.95) ** 2 < 1
    texture = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.5)
    img = body * (1500 + 2500 * np.clip(0.5 + 0.15 * texture / texture.std(), 0, 1))
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8)
    if coarse < 1:
        small = (int(size * coarse), int(size * coarse))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (size, size))
    img = 4000 * (img / 4000) ** gamma * np.exp(ramp * x)
    real, imag = noise * rng.standard_normal((2, *img.shape))
    return np.hypot(img + real, imag).round().astype(np.uint16)


def test_image_descriptors_are_scale_invariant():
    # Another receiver gain scales every pixel: no descriptor may move.
    plane = body_slice()
    a, b = descriptors(plane, (0.7, 0.7)), descriptors(plane * np.uint16(3), (0.7, 0.7))
    for name in IMAGE:
        assert b[name] == pytest.approx(a[name], rel=1e-6, abs=1e-9), name


def test_noise_is_measured_relative_to_the_signal():
    quiet, loud = (descriptors(body_slice(noise=n), (0.7, 0.7))["acq_noise"] for n in (15, 60))
    assert 2.5 < loud / quiet < 4.5  # four times the noise, less the texture's own share
    assert 0.003 < quiet < 0.02  # noise 15 on a body of median ~3000, through the Laplacian


def test_a_coarser_resolution_lowers_the_sharpness():
    sharp = descriptors(body_slice(noise=5), (0.7, 0.7))["acq_sharpness"]
    coarse = descriptors(body_slice(noise=5, coarse=0.6), (0.7, 0.7))["acq_sharpness"]
    assert coarse < 0.9 * sharp  # 0.87 here; the phantom scanner shift: 0.93


def test_a_gamma_scales_the_contrast():
    # log(p99 / p90) of a power law is the power times the log ratio, noise aside.
    plain = descriptors(body_slice(noise=1), (0.7, 0.7))["acq_contrast"]
    gamma = descriptors(body_slice(noise=1, gamma=0.8), (0.7, 0.7))["acq_contrast"]
    assert gamma / plain == pytest.approx(0.8, abs=0.04)


def test_a_bias_field_across_the_rows_moves_the_bias_ratio_its_way():
    # exp(0.3 x): the body in the right third (x 1/3..0.8) over the left's, about 0.3 in log.
    plain = descriptors(body_slice(), (0.7, 0.7))["acq_bias_ratio"]
    for ramp in (0.3, -0.3):
        biased = descriptors(body_slice(ramp=ramp), (0.7, 0.7))["acq_bias_ratio"]
        assert biased - plain == pytest.approx(ramp, abs=0.1)


def test_a_small_region_at_the_bottom_barely_moves_them():
    # Another structure low in the image (a disc below S1, a squared S1): anatomy, of tissue
    # intensity (a region brighter than the body's 99th percentile, over 1% of the body, would
    # move acq_contrast: the phantoms' transitional studies do not, lstv.acquisition's docs).
    plane = body_slice()
    changed = plane.copy()
    changed[200:230, 110:150] = 2400  # 1,200 pixels, 3% of the body
    a, b = descriptors(plane, (0.7, 0.7)), descriptors(changed, (0.7, 0.7))
    for name in ("acq_noise", "acq_sharpness", "acq_contrast"):
        assert b[name] == pytest.approx(a[name], rel=0.06), name
    assert b["acq_bias_ratio"] == pytest.approx(a["acq_bias_ratio"], abs=0.02)


def test_header_descriptors_come_from_the_spacing_and_the_neighbouring_slice():
    positions = np.array([[0.0, 0, 0], [-4.4, 0, 0], [-8.8, 0.3, 0]])
    d = descriptors(body_slice(), (0.6, 0.8), positions, 1)
    assert d["acq_pixel_spacing_mm"] == pytest.approx(0.7)
    assert d["acq_slice_spacing_mm"] == pytest.approx(math.hypot(4.4, 0.3))  # to the next
    last = descriptors(body_slice(), (0.6, 0.8), positions, 2)
    assert last["acq_slice_spacing_mm"] == pytest.approx(math.hypot(4.4, 0.3))  # the one before
    one = descriptors(body_slice(), (0.6, 0.8), positions[:1], 0)
    assert math.isnan(one["acq_slice_spacing_mm"])


def test_a_slice_without_signal_has_no_image_descriptors():
    d = descriptors(np.zeros((64, 64), np.uint16), (0.5, 0.5))
    assert all(math.isnan(d[n]) for n in IMAGE) and d["acq_pixel_spacing_mm"] == 0.5
    assert list(d) == list(DESCRIPTORS)


def test_fit_descriptors_takes_the_median_and_the_mad_of_the_known_values():
    raw = np.full((12, len(DESCRIPTORS)), np.nan)
    raw[:, 0] = np.arange(12.0)  # median 5.5, MAD 3
    raw[:, 4] = 0.6875  # one protocol's spacing: no spread, floored at 5% of it
    raw[:9, 5] = 4.0  # known in 9 studies only: left out
    fitted = fit_descriptors(raw)
    assert fitted["n"] == 12 and set(fitted["descriptors"]) == {DESCRIPTORS[0], DESCRIPTORS[4]}
    assert fitted["descriptors"][DESCRIPTORS[0]] == {"centre": 5.5, "spread": 1.4826 * 3, "n": 12}
    assert fitted["descriptors"][DESCRIPTORS[4]]["spread"] == pytest.approx(0.034375)
    assert fit_descriptors(np.full((20, len(DESCRIPTORS)), np.nan)) == {}


def test_descriptor_matrix_reads_the_columns_or_says_there_are_none():
    rows = [{"study_id": "1", **dict.fromkeys(DESCRIPTORS, "0.5")}, {"study_id": "2"}]
    rows[1].update(dict.fromkeys(DESCRIPTORS, ""))
    m = descriptor_matrix(rows)
    assert m.shape == (2, 6) and (m[0] == 0.5).all() and np.isnan(m[1]).all()
    assert descriptor_matrix([{"study_id": "1", "l5_s1_peak2": "0.1"}]) is None
    rows[0]["acq_noise"] = "loud"
    with pytest.raises(UsageError, match="run.csv: acq_noise = 'loud' is not a number"):
        descriptor_matrix(rows, "run.csv")
