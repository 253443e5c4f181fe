"""The histogram/table normalisation gives numpy's numbers exactly (issue 10)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lstv.dicom import SeriesReadError
from lstv.dicom import normalise_to_uint8 as dicom_normalise
from lstv.intensity import NoContrastError, normalise_to_uint8, percentiles

Q = (0.1, 99.9)


def original_normalise(x, lower=0.1, upper=99.9):
    """hengck23's demo, transcribed: numpy percentiles, clip, min-max to 8 bit in float64."""
    lower, upper = np.percentile(x, (lower, upper))
    x = np.clip(x, lower, upper)
    x = x - np.min(x)
    x = x / np.max(x)
    return (x * 255).astype(np.uint8)


def assert_same_as_numpy(volume, q=Q):
    expected = np.percentile(volume, q)
    got = percentiles(volume, q)
    assert got.dtype == expected.dtype
    assert np.array_equal(got, expected), (got, expected)
    lo, hi = np.percentile(volume, Q)
    if hi > lo:
        reference = original_normalise(volume)
        assert np.array_equal(normalise_to_uint8(volume, *Q), reference)
        if volume.ndim == 3:  # the slices, not stacked, stand for the volume
            assert np.array_equal(normalise_to_uint8(list(volume), *Q), reference)
            # a part of the slices alone, windowed as in the whole volume
            d = len(volume)
            for keep in (slice(d // 2, d // 2 + 1), slice(max(0, d // 2 - 2), d // 2 + 3)):
                assert np.array_equal(normalise_to_uint8(list(volume), *Q, keep), reference[keep])
                assert np.array_equal(normalise_to_uint8(volume, *Q, keep), reference[keep])


def test_mr_like_uint16_volume():
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 300.0, (17, 64, 48)).astype(np.uint16)
    volume[3, 5, 5] = 65535  # a hot pixel
    assert_same_as_numpy(volume)


def test_int16_with_negative_values():
    rng = np.random.default_rng(1)
    assert_same_as_numpy(rng.integers(-2000, 3000, (9, 31, 33), dtype=np.int16))


def test_int16_full_range_where_numpy_differences_wrap():
    # b - a of the two order statistics overflows int16; numpy computes it in int16 and so must we.
    volume = np.array([-32768] * 5 + [32767] * 5, dtype=np.int16).reshape(1, 2, 5)
    for q in [(0.1, 99.9), (45.0, 50.0, 55.0), (0.0, 100.0)]:
        assert_same_as_numpy(volume, q)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_tiny_volumes(dtype, size):
    info = np.iinfo(dtype)
    values = np.array([info.min, info.max, 0][:size], dtype=dtype)
    assert_same_as_numpy(values)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_constant_volume_has_no_contrast(dtype):
    volume = np.full((3, 4, 4), 7, dtype=dtype)
    assert_same_as_numpy(volume)
    with pytest.raises(NoContrastError, match="no contrast"):
        normalise_to_uint8(volume, *Q)
    with pytest.raises(SeriesReadError, match="no contrast"):
        dicom_normalise(list(volume))


def test_wide_integers_and_floats_take_numpys_path():
    rng = np.random.default_rng(2)
    assert_same_as_numpy(rng.integers(-(2**40), 2**40, (2, 50, 50), dtype=np.int64))
    assert_same_as_numpy(rng.normal(0, 1, (3, 20, 20)).astype(np.float32))
    assert_same_as_numpy(rng.integers(0, 2**20 + 5, (2, 40, 40), dtype=np.uint32))  # bincount


def test_slices_of_mixed_dtypes_are_stacked_as_numpy_would():
    a = np.arange(100, dtype=np.uint16).reshape(10, 10)
    b = -np.arange(100, dtype=np.int16).reshape(10, 10)
    stacked = np.stack([a, b])
    assert stacked.dtype == np.int32
    assert np.array_equal(normalise_to_uint8([a, b], *Q), original_normalise(stacked))
    assert np.array_equal(percentiles([a, b], Q), np.percentile(stacked, Q))


def test_a_slice_over_the_float32_count_limit_is_counted_exactly():
    # cv2.calcHist's float32 counts are exact only below 2**24; one value fills more than that.
    volume = np.zeros((1, 4097, 4097), np.uint16)
    volume[0, 0, :100] = 4000
    assert volume.size > 2**24
    assert_same_as_numpy(volume, (0.1, 99.9, 99.999, 99.9999))


INTEGER_DTYPES = st.sampled_from(["u1", "i1", "u2", "i2", "<u2", ">i2", "i4", "u4", "i8"])


@settings(max_examples=300, deadline=None)
@given(
    volume=INTEGER_DTYPES.flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, max_side=12))
    ),
    q=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=4),
)
def test_property_same_numbers_as_numpy(volume, q):
    assert_same_as_numpy(volume, q)


# -------------------- mutation survivors (issue 20)


def test_integer_planes_take_the_histogram_path(monkeypatch):
    """Integer data, one array or a list of slices (even of one voxel each), is windowed from a
    histogram: numpy's percentile and stack are never called (the module's whole point: no
    sorted copy, no stacked copy)."""
    rng = np.random.default_rng(4)
    volume = rng.integers(0, 3000, (4, 16, 16), dtype=np.uint16)
    expected = (np.percentile(volume, Q), original_normalise(volume))
    tiny = [np.array([[7]], np.int16), np.array([[-3]], np.int16)]
    tiny_expected = np.percentile(np.stack(tiny), Q)

    def refused(*args, **kwargs):
        raise AssertionError("numpy's path taken for integer planes")

    monkeypatch.setattr(np, "percentile", refused)
    monkeypatch.setattr(np, "stack", refused)
    for planes in (volume, list(volume)):
        assert np.array_equal(percentiles(planes, Q), expected[0])
        assert np.array_equal(normalise_to_uint8(planes, *Q), expected[1])
    assert np.array_equal(percentiles(tiny, Q), tiny_expected)


def test_int32_over_a_range_wider_than_16_bits():
    """A table of more than 65536 values (int32 data spread over 100,000) is counted by
    bincount; cv2.calcHist takes no such index."""
    rng = np.random.default_rng(5)
    volume = rng.integers(-50_000, 50_000, (3, 40, 40), dtype=np.int32)
    volume[0, 0, 0], volume[0, 0, 1] = -50_000, 50_000
    assert_same_as_numpy(volume, (0.1, 7.0, 50.0, 99.9))


@pytest.mark.parametrize(
    "planes",
    [
        # many slices, none over the float32 limit alone, 21 million voxels in all
        lambda: [np.zeros((2048, 2048), np.uint16) for _ in range(5)],
        # two slices over it each: three flushes of the float32 histogram
        lambda: [np.zeros((4097, 4097), np.uint16) for _ in range(2)],
    ],
    ids=["five-4-megavoxel-slices", "two-16-megavoxel-slices"],
)
def test_histogram_counts_every_voxel_exactly_past_the_float32_limit(planes):
    from lstv.intensity import _IntegerPlanes

    planes = planes()
    planes[0][0, :101] = 4000  # the count of zeros is odd: float32 cannot hold it past 2**24
    planes[-1][-1, -8:] = 1
    counts = _IntegerPlanes.of(planes).counts()
    expected = np.bincount(np.concatenate([p.ravel() for p in planes]))
    assert counts.dtype == np.int64
    assert np.array_equal(counts, expected)


@pytest.mark.parametrize("q", [-0.5, 100.5, 150.0, 250.0])
def test_a_percentile_outside_0_100_is_refused_as_numpy_refuses_it(q):
    volume = np.arange(100, dtype=np.uint16).reshape(1, 10, 10)
    with pytest.raises(ValueError, match=r"^Percentiles must be in the range \[0, 100\]$"):
        percentiles(volume, (q,))
    with pytest.raises(ValueError, match=r"^Percentiles must be in the range \[0, 100\]$"):
        np.percentile(volume, (q,))
