import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from helpers import files_of, write_series
from lstv.dicom import (
    SeriesReadError,
    normalise_to_uint8,
    order_slices,
    read_series,
)

VARIANTS = [
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
]


@pytest.mark.parametrize("name", VARIANTS)
def test_transfer_syntaxes_decode_to_the_reference_pixels(name):
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    ds = pydicom.dcmread(get_testdata_file(name))
    assert np.array_equal(ds.pixel_array.astype(np.int32), reference.astype(np.int32))


def slice_marks(series):
    """The raw mark of each slice in volume order (normalisation would clip it)."""
    return [int(pydicom.dcmread(p).pixel_array[0, 0]) for p in series.paths]


def test_shuffled_series_is_ordered_by_geometry(tmp_path):
    plain = read_series(write_series(tmp_path / "plain"))
    shuffled = read_series(
        write_series(
            tmp_path / "shuffled", shuffle=True, name_fn=lambda k, ds: f"{(7 * k) % 5}.dcm"
        )
    )
    # Rows along +y and columns along -z give a normal along -x: slices run right to left.
    assert np.all(np.diff(shuffled.positions[:, 0]) < 0)
    assert np.array_equal(shuffled.volume, plain.volume)
    assert slice_marks(shuffled) == sorted(slice_marks(shuffled), reverse=True)
    assert list(shuffled.instance_numbers) != sorted(shuffled.instance_numbers)


def test_pixel_to_patient_uses_orientation_and_spacing(tmp_path):
    s = read_series(write_series(tmp_path / "s"))
    row_spacing, col_spacing = s.pixel_spacings[2]
    mm = s.pixel_to_patient(2, 10, 20)
    expected = s.positions[2] + [0, 10 * col_spacing, -20 * row_spacing]
    assert np.allclose(mm, expected)
    assert s.centre_index == 2


def test_groups_are_ordered_by_x():
    o_sag = [0, 1, 0, 0, 0, -1]
    o_other = [0, 1, 0.02, 0, 0, -1]
    orientations = np.array([o_other, o_sag, o_other, o_sag], dtype=float)
    positions = np.array([[12, 0, 0], [1, 0, 0], [10, 0, 0], [0, 0, 0]], dtype=float)
    # Within a group: along the normal (-x here); groups: by the x of their first slice.
    assert list(order_slices(orientations, positions)) == [1, 3, 0, 2]


def test_normalisation_clips_percentiles():
    v = np.arange(10000, dtype=np.uint16).reshape(1, 100, 100)
    v[0, 0, 0] = 60000  # one hot pixel must not squash the contrast
    out = normalise_to_uint8(v)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert out[0, 50, 0] == pytest.approx(127, abs=2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "series folder not found"),
        (lambda d: (d.mkdir(), d)[1], "no .dcm files"),
        (
            lambda d: (d.mkdir(), (d / "1.dcm").write_text("not dicom"), d)[2],
            "not a readable DICOM",
        ),
    ],
)
def test_bad_series_raise_clear_errors(tmp_path, make, message):
    with pytest.raises(SeriesReadError, match=message):
        read_series(make(tmp_path / "series"))


def test_series_without_pixel_data(tmp_path):
    folder = write_series(tmp_path / "s", n=2)
    ds = pydicom.dcmread(folder / "1.dcm")
    del ds.PixelData
    ds.save_as(folder / "1.dcm")
    with pytest.raises(SeriesReadError, match="no pixel data"):
        read_series(folder)


def test_mixed_image_sizes(tmp_path):
    folder = write_series(tmp_path / "s", n=2)
    ds = pydicom.dcmread(folder / "2.dcm")
    ds.Rows, ds.Columns = 32, 32
    ds.PixelData = np.zeros((32, 32), np.int16).tobytes()
    ds.save_as(folder / "2.dcm")
    with pytest.raises(SeriesReadError, match="mixed image sizes"):
        read_series(folder)


# --- hostile headers (issue 17) ---------------------------------------------------------------


# --- issue 20: tests that fail when a plausible bug is put into dicom.py --------------------


def write_distinct_series(folder, n):
    """A sagittal series of ``n`` slices whose pixels differ from slice to slice (each one
    rolled by its position), so a test can tell which slice it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for k in range(n):
        ds = base.copy()
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-10.0 + 4.0 * k, -50.0, 60.0]
        ds.InstanceNumber = k + 1
        ds.PixelData = np.roll(base.pixel_array, 5 * k, axis=0).tobytes()
        ds.save_as(folder / f"{k + 1}.dcm")
    return folder


@pytest.mark.parametrize("n", [4, 5])
def test_the_reported_slice_is_the_slice_the_model_reads(tmp_path, n):
    """With an even slice count, the slice index, pixels and position a reader reports belong to
    slice D // 2, the one the model's input is cut from.

    Mutant ``centre_index = (D - 1) // 2``: fails (n=4 reports slice 1, the model reads 2);
    without it: passes."""
    import cv2

    from lstv.inference import model_input
    from lstv.sample import read_sample
    from lstv.studies import StudyTask

    folder = write_distinct_series(tmp_path / "1" / "2", n)
    series = read_series(folder)
    assert series.centre_index == n // 2
    sample = read_sample(StudyTask(1, 2), tmp_path, 64)
    assert (sample.slice_index, sample.n_slices) == (n // 2, n)
    assert np.array_equal(sample.image, model_input(series.volume, 64))

    # The model's input is the reported slice resized (OpenCV's one-channel path may differ by
    # one grey level); every other slice is far from it.
    def distance(k):
        alone = cv2.resize(series.volume[k], (64, 64), interpolation=cv2.INTER_LINEAR)
        return int(np.abs(alone.astype(int) - sample.image.astype(int)).max())

    assert np.array_equal(sample.slice_pixels, series.volume[n // 2])
    assert distance(n // 2) <= 1
    assert all(distance(k) > 10 for k in range(n) if k != n // 2)
    assert np.array_equal(sample.position, series.positions[n // 2])
    assert sample.pixel_to_patient(0, 0)[0] == pytest.approx(series.positions[n // 2][0])


READ_MAIN = """
import sys
from lstv.dicom import SeriesReadError, read_series
try:
    read_series(sys.argv[1:])
except SeriesReadError as exc:
    print(exc)
"""


def test_a_fifo_named_as_a_series_file_is_refused_not_waited_on(tmp_path):
    """17.2: an index path naming a FIFO blocked lstv infer's reader for good."""
    import os
    import subprocess
    import sys

    files = sorted(write_series(tmp_path / "s").iterdir())
    fifo = tmp_path / "s" / "pipe.dcm"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-c", READ_MAIN, *map(str, files), str(fifo)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pipe.dcm: not a regular file (a FIFO)" in proc.stdout
    with pytest.raises(SeriesReadError, match="s: not a regular file"):
        read_series([tmp_path / "s"])  # a folder listed as a file


def test_the_unedited_copy_reads(series_dir):
    assert read_series(series_dir).volume.shape[0] == len(files_of(series_dir))


# --- issue 20: mutation survivors of lstv.dicom ----------------------------------------------


def test_folder_files_skips_hidden_files_dicomdir_and_folders(tmp_path):
    """An index's folder: every file by any name, but not hidden files, the DICOMDIR or a
    subfolder; a missing or empty folder is a clear error."""
    from lstv.dicom import folder_files

    folder = tmp_path / "s"
    (folder / "sub").mkdir(parents=True)
    for name in ("IM0001", "2.dcm", ".DS_Store", "DICOMDIR"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in folder_files(folder)] == ["2.dcm", "IM0001"]
    with pytest.raises(SeriesReadError, match=r"^series folder not found: .*missing$"):
        folder_files(tmp_path / "missing")
    (folder / "2.dcm").unlink()
    (folder / "IM0001").unlink()
    with pytest.raises(SeriesReadError, match=r"^no files in .*s$"):
        folder_files(folder)  # hidden files and the DICOMDIR do not count


def test_series_files_takes_dcm_files_only(tmp_path):
    from lstv.dicom import series_files

    folder = tmp_path / "s"
    (folder / "sub.dcm").mkdir(parents=True)  # a folder named like a file
    for name in ("1.dcm", "2.DCM", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in series_files(folder)] == ["1.dcm", "2.DCM"]


def test_no_files_given_is_a_clear_error():
    with pytest.raises(SeriesReadError, match=r"^no files given for the series$"):
        read_series([])


def test_a_fifo_swapped_in_after_the_check_is_refused_without_blocking(tmp_path, monkeypatch):
    """open_regular checks the path, then the open descriptor: a FIFO put in place between the
    two is opened non-blocking (no writer needed), refused, and its descriptor closed."""
    import os
    import threading

    from lstv.dicom import NotRegularFileError, open_regular

    fifo = tmp_path / "f.dcm"
    os.mkfifo(fifo)
    regular = tmp_path / "regular.dcm"
    regular.write_bytes(b"x")
    real_stat, regular_stat = os.stat, os.stat(regular)

    # The path check sees the regular file that was there a moment before.
    def stat(p, *args, **kwargs):
        return regular_stat if str(p) == str(fifo) else real_stat(p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    outcome = {}

    def attempt():
        try:
            open_regular(fifo).close()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread below
            outcome["error"] = exc

    n_open = len(os.listdir("/proc/self/fd"))
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked in open() until a writer comes: be that writer, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("open_regular blocked on a FIFO")
    assert isinstance(outcome.get("error"), NotRegularFileError), outcome
    assert str(outcome["error"]) == "f.dcm: not a regular file (a FIFO)"
    assert len(os.listdir("/proc/self/fd")) == n_open  # the descriptor was closed


def test_orientations_equal_to_three_decimals_are_one_stack():
    """Scanners round direction cosines differently from slice to slice: orientations equal to
    three decimals are one stack, sorted along its normal (-x), not two interleaved ones."""
    o1, o2 = [0, 1, 0.0001, 0, 0, -1], [0, 1, 0.0004, 0, 0, -1]
    orientations = np.array([o1, o2, o1, o2], dtype=float)
    positions = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=float)
    assert list(order_slices(orientations, positions)) == [3, 2, 1, 0]


def test_groups_whose_first_slices_share_x_keep_file_order():
    """Two stacks starting at the same x: the one met first in the files comes first."""
    o_sag, o_other = [0, 1, 0, 0, 0, -1], [0, 1, 0.02, 0, 0, -1]
    orientations = np.array([o_sag, o_other, o_other, o_sag], dtype=float)
    positions = np.array([[0, 0, 0], [5, 0, 0], [6, 0, 0], [5, 0, 0]], dtype=float)
    # Stack 1 (files 0, 3) runs along -x: 3 then 0, starting at x 5; stack 2: 2 then 1, at 6...
    assert list(order_slices(orientations, positions)) == [3, 0, 2, 1]
    positions[2, 0] = 4.0  # ... and now stack 2 starts at x 5 too: stack 1 still first
    assert list(order_slices(orientations, positions)) == [3, 0, 1, 2]


def test_a_file_over_the_per_file_limit_is_named(tmp_path):
    from lstv.dicom_limits import DecodeLimits

    folder = write_series(tmp_path / "s", n=2)
    with pytest.raises(SeriesReadError, match=r"^1.dcm: declares 64 x 64 pixels"):
        read_series(folder, DecodeLimits(max_file_bytes=100))


@pytest.mark.parametrize(
    "drop",
    [["ImagePositionPatient"], ["PixelSpacing"], ["ImagePositionPatient", "PixelSpacing"]],
)
def test_missing_geometry_is_named_attribute_by_attribute(tmp_path, drop):
    folder = write_series(tmp_path / "s", n=2)
    ds = pydicom.dcmread(folder / "2.dcm")
    for name in drop:
        delattr(ds, name)
    ds.save_as(folder / "2.dcm")
    with pytest.raises(SeriesReadError) as caught:
        read_series(folder)
    assert str(caught.value) == f"2.dcm: missing {', '.join(drop)}"


def test_a_colour_image_is_refused_not_stacked(tmp_path):
    """One RGB frame decodes to (H, W, 3): not a grey-level slice, whatever its frame count."""
    folder = write_series(tmp_path / "s", n=2)
    ds = pydicom.dcmread(folder / "2.dcm")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((64, 64, 3), np.uint8).tobytes()
    ds.save_as(folder / "2.dcm")
    with pytest.raises(SeriesReadError) as caught:
        read_series(folder)
    assert str(caught.value) == "2.dcm: expected 1 grey-level 2-D frame(s), got shape (64, 64, 3)"


def test_a_slice_without_instance_number_reads_as_zero(tmp_path):
    folder = write_series(tmp_path / "s", n=3)
    ds = pydicom.dcmread(folder / "2.dcm")
    del ds.InstanceNumber
    ds.save_as(folder / "2.dcm")
    assert sorted(read_series(folder).instance_numbers.tolist()) == [0, 1, 3]


def test_an_empty_per_frame_sequence_falls_back_to_the_top_level_geometry(tmp_path):
    """A single-frame file with an empty PerFrameFunctionalGroupsSequence (some exports write
    one) takes its geometry from the top level."""
    from pydicom.sequence import Sequence

    folder = write_series(tmp_path / "s", n=2)
    ds = pydicom.dcmread(folder / "1.dcm")
    ds.PerFrameFunctionalGroupsSequence = Sequence([])
    ds.save_as(folder / "1.dcm")
    assert read_series(folder).positions[:, 0].tolist() == [-6.0, -10.0]


def _with_raw(ds, keyword: str, vr: str, text: bytes):
    """``ds`` with ``keyword``'s value as raw ``text``, as pydicom holds an element it has read
    and not yet converted."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(keyword)
    ds._dict[tag] = RawDataElement(tag, vr, len(text), text, 0, False, True)
    return ds


@pytest.mark.parametrize(
    "keyword, vr, text",
    [
        ("ImagePositionPatient", "DS", b"-36.522\\-147.918\\135.10800000000001 "),
        ("ImagePositionPatient", None, b" 1e2\\+0.5\\-0 "),  # implicit VR: no VR in the file
        ("PixelSpacing", "DS", b"0.68359375\\.5"),
        ("InstanceNumber", "IS", b"0012 "),
    ],
)
def test_header_numbers_are_pydicoms_numbers_without_its_conversion(keyword, vr, text):
    """header_numbers reads a DS/IS value's bytes as pydicom converts them (float / int of the
    same text), and leaves the element unconverted: pydicom's conversion is what it saves."""
    from pydicom.dataset import Dataset

    from lstv.dicom import header_numbers

    kind = int if keyword == "InstanceNumber" else float
    got = header_numbers(_with_raw(Dataset(), keyword, vr, text), keyword, kind)
    expected = _with_raw(Dataset(), keyword, vr or "DS", text).get(keyword)
    expected = [expected] if keyword == "InstanceNumber" else list(expected)
    assert got == [kind(v) for v in expected] and all(type(v) is kind for v in got)
    ds = _with_raw(Dataset(), keyword, vr, text)
    header_numbers(ds, keyword, kind)
    assert type(ds.get_item(keyword)).__name__ == "RawDataElement"


@pytest.mark.parametrize(
    "keyword, vr, text",
    [
        ("PixelSpacing", "DS", b"0.5\\0.5\x00"),  # NUL padding: pydicom strips it
        ("InstanceNumber", "IS", b"5.0"),  # pydicom's IS takes a whole float
        ("ImagePositionPatient", "DS", b""),  # empty: pydicom's None
        ("PixelSpacing", "FD", b"12345678"),  # binary (one double), though it reads as text
    ],
)
def test_header_numbers_leave_other_text_to_pydicom(keyword, vr, text):
    from pydicom.dataset import Dataset

    from lstv.dicom import header_numbers

    kind = int if keyword == "InstanceNumber" else float
    expected = _with_raw(Dataset(), keyword, vr, text).get(keyword)
    got = header_numbers(_with_raw(Dataset(), keyword, vr, text), keyword, kind)
    assert got == expected and type(got) is type(expected)
    assert header_numbers(Dataset(), keyword, kind) is None


def test_a_slice_with_several_instance_numbers_is_refused_as_before(tmp_path):
    folder = write_series(tmp_path / "s", n=3)
    _with_raw(pydicom.dcmread(folder / "2.dcm"), "InstanceNumber", "IS", b"2\\7").save_as(
        folder / "2.dcm"
    )
    with pytest.raises(TypeError):
        read_series(folder)
