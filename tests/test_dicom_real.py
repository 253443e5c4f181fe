"""Real scanner files from the pydicom-data package: decoding, Enhanced MR, overlays."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lstv.dicom import SeriesReadError, normalise_to_uint8, read_file_slices, read_series

data = pytest.importorskip("pydicom.data")


def real(name: str):
    from pathlib import Path

    path = data.get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom-data")
    return Path(path)


def pixels(name: str) -> np.ndarray:
    """The decoded frames of a file, (F, H, W), as the reader gets them from pydicom."""
    decoded = pydicom.dcmread(real(name)).pixel_array
    return decoded[None] if decoded.ndim == 2 else decoded


@pytest.mark.parametrize(
    ("lossless", "reference"),
    [
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, 1024 x 1024
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),  # Enhanced MR, 10 frames
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_big_endian.dcm", "emri_small.dcm"),
    ],
)
def test_lossless_variants_decode_to_the_uncompressed_pixels(lossless, reference):
    a, b = pixels(lossless), pixels(reference)
    assert a.shape == b.shape and a.shape[0] >= 1
    np.testing.assert_array_equal(a, b)


def test_the_reader_keeps_the_decoded_pixels():
    np.testing.assert_array_equal(
        read_file_slices(real("MR2_J2KR.dcm"))[0].pixels, pixels("MR2_UNCR.dcm")[0]
    )


def test_lossy_jpeg_2000_matches_its_decompressed_copy_not_the_original():
    # MR2_UNCI is MR2_J2KI decompressed; MR2_UNCR is the original the lossy file was made from.
    lossy = pixels("MR2_J2KI.dcm")
    np.testing.assert_array_equal(lossy, pixels("MR2_UNCI.dcm"))
    original = pixels("MR2_UNCR.dcm")
    error = lossy.astype(float) - original.astype(float)
    psnr = 10 * np.log10(float(original.max()) ** 2 / np.mean(error**2))
    assert np.any(error != 0) and psnr > 30


def test_jpeg_lossless_without_patient_geometry_is_a_clear_error():
    # JPEG-LL is a nuclear medicine secondary capture: it decodes, but has no plane geometry.
    assert pydicom.dcmread(real("JPEG-LL.dcm")).pixel_array.shape == (1024, 256)
    with pytest.raises(SeriesReadError, match="missing ImageOrientationPatient"):
        read_series([real("JPEG-LL.dcm")])


def test_overlays_do_not_leak_into_pixels():
    path = real("MR-SIEMENS-DICOM-WithOverlays.dcm")
    ds = pydicom.dcmread(path)
    overlay = ds.overlay_array(0x6000)
    assert overlay.sum() > 0  # the file does carry a drawn overlay
    raw = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
    series = read_series([path])
    np.testing.assert_array_equal(series.volume[0], normalise_to_uint8(raw[None])[0])
    # Where the overlay is drawn, the image is not painted over with one value.
    assert len(np.unique(series.volume[0][overlay > 0])) > 10


def with_functional_groups(ds: Dataset, order: list[int]) -> tuple[Dataset, np.ndarray]:
    """Give a real Enhanced MR file (emri_small has its functional groups stripped) a
    sagittal per-frame geometry: frame ``k`` of the file lies at slab position ``order[k]``.
    Returns the dataset and each frame's position."""
    shared = Dataset()
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing = [0.9, 0.8]
    measures.SliceThickness = 1.2
    plane.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    positions = np.array([[-6.0 + 1.2 * k, -30.0, 40.0] for k in order])
    frames = []
    for position in positions:
        item, where = Dataset(), Dataset()
        where.ImagePositionPatient = [float(v) for v in position]
        item.PlanePositionSequence = Sequence([where])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return ds, positions


@pytest.mark.parametrize(
    "name",
    [
        "emri_small.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "emri_small_RLE.dcm",
    ],
)
def test_enhanced_mr_becomes_an_ordered_volume_with_per_frame_geometry(tmp_path, name):
    stripped = real(name)
    with pytest.raises(SeriesReadError) as caught:
        read_series([stripped])
    assert str(caught.value) == (
        f"{name}: missing ImageOrientationPatient, ImagePositionPatient, PixelSpacing "
        "(per-frame and shared functional groups)"
    )
    order = [3, 0, 9, 5, 1, 7, 2, 8, 4, 6]  # frames stored out of slab order
    ds, positions = with_functional_groups(pydicom.dcmread(stripped), order)
    path = tmp_path / "IM0001"  # no extension, as an index lists it
    ds.save_as(path)
    series = read_series([path])
    frames = pixels("emri_small.dcm")
    assert series.volume.shape == (10, 64, 64)
    # Slab order along the slice normal (row x column cosines = -x here), as for single frames.
    normal = np.cross([0, 1, 0], [0, 0, -1])
    slab = np.argsort(positions @ normal)
    assert sorted(slab) == list(range(10)) and list(slab) != list(range(10))
    np.testing.assert_array_equal(series.volume, normalise_to_uint8(frames[slab]))
    np.testing.assert_allclose(series.positions, positions[slab])
    np.testing.assert_allclose(series.positions[:, 0], 4.8 - 1.2 * np.arange(10))
    assert np.all(series.orientations == [0, 1, 0, 0, 0, -1])
    np.testing.assert_allclose(series.pixel_spacings, [[0.9, 0.8]] * 10)
    assert series.paths == (path,) * 10


def test_per_frame_groups_override_the_shared_ones(tmp_path):
    ds, _ = with_functional_groups(pydicom.dcmread(real("emri_small.dcm")), list(range(10)))
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    ds.PerFrameFunctionalGroupsSequence[4].PixelMeasuresSequence = Sequence([measures])
    ds.save_as(tmp_path / "f")
    series = read_series([tmp_path / "f"])
    fifth = int(np.argmin(np.abs(series.positions[:, 0] - (-6.0 + 1.2 * 4))))
    assert series.pixel_spacings[fifth].tolist() == [0.5, 0.5]
    others = np.delete(series.pixel_spacings, fifth, axis=0)
    assert np.all(others == [0.9, 0.8])
