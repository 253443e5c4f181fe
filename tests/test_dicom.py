import csv
import shutil
import tracemalloc
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from lstv.dicom import (
    DecodeLimits,
    SeriesReadError,
    declared_pixel_bytes,
    normalise_to_uint8,
    order_slices,
    read_series,
)
from lstv.studies import read_series_table, sagittal_t2_tasks

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


def write_series(folder, n=5, shuffle=False, name_fn=None, spacing=4.0):
    """Copies of MR_small as a sagittal series along x, each slice marked by its position."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    order = np.random.default_rng(3).permutation(n) if shuffle else np.arange(n)
    for k in range(n):
        ds = base.copy()
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-10.0 + k * spacing, -50.0, 60.0]
        ds.InstanceNumber = int(order[k]) + 1
        pixels = base.pixel_array.copy()
        pixels[0, 0] = 1000 + 100 * k  # the slice's true position, readable after sorting
        ds.PixelData = pixels.tobytes()
        fname = name_fn(k, ds) if name_fn else f"{ds.InstanceNumber}.dcm"
        ds.save_as(folder / fname)
    return folder


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

HUGE_FRAMES_MAIN = """
import sys, time
import pydicom
from pydicom.data import get_testdata_file
from lstv.dicom import SeriesReadError, read_series
ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
ds.NumberOfFrames, ds.Rows, ds.Columns = int(sys.argv[2]), 1, 1
ds.PixelData = b"\\0\\0" * 1000
ds.save_as(sys.argv[1])
start = time.perf_counter()
try:
    read_series([sys.argv[1]])
except SeriesReadError as exc:
    print(f"{time.perf_counter() - start:.3f}", exc)
"""


@pytest.mark.parametrize("frames", [10**6, 10**7])
def test_a_huge_frame_count_is_refused_from_the_header_at_once(tmp_path, frames):
    """17.1: 10^6 declared frames took 32 s of per-frame geometry before any size check."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", HUGE_FRAMES_MAIN, str(tmp_path / "f.dcm"), str(frames)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    seconds, message = proc.stdout.split(" ", 1)
    assert float(seconds) < 0.5
    assert f"declares {frames:,} frames" in message


def test_a_frame_count_the_pixel_data_cannot_hold_is_refused(tmp_path):
    """Uncompressed pixel data shorter than the header declares: refused before decoding."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.NumberOfFrames = 40
    ds.save_as(tmp_path / "f.dcm")
    with pytest.raises(SeriesReadError, match=r"f.dcm: .*40 frames.*holds 1 frame"):
        read_series([tmp_path / "f.dcm"])


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


def test_a_file_declaring_exactly_the_per_file_limit_is_read(tmp_path):
    """The per-file limit is inclusive: a file whose declared size equals it is read, one byte
    less refuses it.

    Mutant ``need >= limits.max_file_bytes``: fails (the file at the limit is refused);
    without it: passes."""
    from lstv.dicom import DecodeLimits, declared_pixel_bytes

    folder = write_series(tmp_path / "s", n=2)
    size = declared_pixel_bytes(pydicom.dcmread(folder / "1.dcm"))
    assert read_series(folder, DecodeLimits(max_file_bytes=size)).volume.shape[0] == 2
    with pytest.raises(SeriesReadError, match="per-file limit"):
        read_series(folder, DecodeLimits(max_file_bytes=size - 1))


@pytest.mark.parametrize(
    ("bits", "bytes_per_sample"), [(1, 1), (8, 1), (9, 2), (12, 2), (16, 2), (24, 3), (32, 4)]
)
def test_declared_bytes_round_bits_up_to_whole_bytes(bits, bytes_per_sample):
    """BitsAllocated 12 takes 2 bytes per sample, 1 bit still 1 byte.

    Mutant ``BitsAllocated // 8`` (rounded down): fails for 9 and 12; without it: passes."""
    from lstv.dicom import declared_pixel_bytes

    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated = 30, 20, bits
    assert declared_pixel_bytes(ds) == 30 * 20 * bytes_per_sample


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


# -------------------- decode guard
# Issue 9.8: the declared image size is checked against a limit before any pixel is decoded.


def rle_bomb(template, path, rows, columns):
    """A small RLE file whose header declares ``rows`` x ``columns`` pixels."""
    ds = pydicom.dcmread(template)
    ds.Rows, ds.Columns = 64, 64
    ds.compress(RLELossless, np.zeros((64, 64), dtype=np.uint16))
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(path)
    return path


def test_declared_bytes():
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 60000, 60000, 16, 1
    assert declared_pixel_bytes(ds) == 60000 * 60000 * 2
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated = 3, 3, 1
    assert declared_pixel_bytes(ds) == 60000 * 60000 * 3 * 3


def test_60000_squared_rle_file_is_refused_without_allocating(series_dir):
    files = sorted(series_dir.glob("*.dcm"))
    bomb = rle_bomb(files[0], files[0], 60000, 60000)
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(SeriesReadError, match=r"60000 x 60000 .*per-file limit"):
            read_series(series_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # 7.2 GB if it were decoded


def test_limit_is_configurable(series_dir):
    files = sorted(series_dir.glob("*.dcm"))
    rle_bomb(files[0], files[0], 4096, 4096)  # 32 MB declared
    with pytest.raises(SeriesReadError, match="per-file limit"):
        read_series(series_dir, DecodeLimits(max_file_bytes=16 * 2**20))


def test_per_series_total(series_dir, monkeypatch):
    n = len(list(series_dir.glob("*.dcm")))
    one = pydicom.dcmread(sorted(series_dir.glob("*.dcm"))[0])
    per_file = declared_pixel_bytes(one)
    assert read_series(series_dir, DecodeLimits(max_series_bytes=n * per_file)).volume.shape[0] == n
    with pytest.raises(SeriesReadError, match="more than .* MB"):
        read_series(series_dir, DecodeLimits(max_series_bytes=(n - 1) * per_file))
    monkeypatch.setenv("LSTV_MAX_SERIES_DECODE_MB", "1")
    with pytest.raises(SeriesReadError, match="LSTV_MAX_SERIES_DECODE_MB"):
        read_series(series_dir)


def test_bad_limit_in_the_environment(monkeypatch):
    monkeypatch.setenv("LSTV_MAX_FILE_DECODE_MB", "１２")
    with pytest.raises(ValueError, match="LSTV_MAX_FILE_DECODE_MB"):
        DecodeLimits.from_env()


@pytest.mark.parametrize("rows", [-5, "abc"])
def test_nonsense_size_is_a_clear_error(series_dir, rows):
    f = sorted(series_dir.glob("*.dcm"))[0]
    raw = f.read_bytes()
    ds = pydicom.dcmread(f)
    ds["Rows"].VR = "US" if isinstance(rows, int) and rows >= 0 else "SS"
    if isinstance(rows, str):
        ds["Rows"].VR = "LO"
    ds.Rows = rows
    ds.save_as(f)
    assert f.read_bytes() != raw
    with pytest.raises(SeriesReadError, match="Rows"):
        read_series(series_dir)


def test_decoder_plugin_failures_log_no_traceback(series_dir, caplog):
    import logging

    from pydicom.encaps import encapsulate

    f = sorted(series_dir.glob("*.dcm"))[0]
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"  # JPEG lossless
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream" * 8])  # every plugin fails
    ds.save_as(f)
    with caplog.at_level(logging.INFO), pytest.raises(SeriesReadError, match="cannot decode"):
        read_series(series_dir)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_panicking_rust_decoder_is_a_series_error(series_dir):
    """pylibjpeg-rle panics (pyo3 PanicException, a BaseException) when Rows is one short."""
    files = sorted(series_dir.glob("*.dcm"))
    rle_bomb(files[0], files[0], 63, 64)
    with pytest.raises(SeriesReadError, match=r"cannot decode pixels \(1.2.840.10008.1.2.5\)"):
        read_series(series_dir)

# -------------------- geometry
# Issue 9.6: a series whose geometry cannot order or measure it is a failure, not a guess.


@pytest.fixture()
def series_dir(phantom_dataset, tmp_path):
    """A writable copy of one phantom sagittal T2 series."""
    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    return shutil.copytree(task.series_dir(phantom_dataset.images_dir), tmp_path / "series")


def edit(files, **values):
    """Set header attributes of DICOM files (invalid values included, as broken exports do)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns on NaN in a DS
        for f in files:
            ds = pydicom.dcmread(f)
            for name, value in values.items():
                setattr(ds, name, value)
            ds.save_as(f)


def files_of(folder):
    return sorted(folder.glob("*.dcm"))


def test_the_unedited_copy_reads(series_dir):
    assert read_series(series_dir).volume.shape[0] == len(files_of(series_dir))


def test_all_slices_at_one_position_is_unorderable(series_dir):
    edit(files_of(series_dir), ImagePositionPatient=[0, -100, 100])
    with pytest.raises(SeriesReadError, match="same position along the slice normal"):
        read_series(series_dir)


def test_one_nan_position_names_the_file(series_dir):
    victim = files_of(series_dir)[3]
    edit([victim], ImagePositionPatient=["nan", 0, 0])
    with pytest.raises(SeriesReadError, match=rf"{victim.name}: ImagePositionPatient"):
        read_series(series_dir)


@pytest.mark.parametrize(
    "spacing, reason",
    [
        ([0, 0], "outside"),
        (["nan", "nan"], "finite"),
        ([1e6, 1e6], "outside"),
        ([-1, 1], "outside"),
    ],
)
def test_bad_pixel_spacing(series_dir, spacing, reason):
    edit(files_of(series_dir), PixelSpacing=spacing)
    with pytest.raises(SeriesReadError, match=f"PixelSpacing .*{reason}"):
        read_series(series_dir)


@pytest.mark.parametrize(
    "orientation, reason",
    [
        ([0, 0, 0, 0, 0, 0], "length"),
        ([0, 2, 0, 0, 0, -2], "length"),
        ([0, 1, 0, 0, 1, 0], "perpendicular"),
        ([0, 0.8, 0.6, 0, 0.6, 0.8], "perpendicular"),
        (["nan", 1, 0, 0, 0, -1], "finite"),
    ],
)
def test_bad_orientation(series_dir, orientation, reason):
    edit(files_of(series_dir), ImageOrientationPatient=orientation)
    with pytest.raises(SeriesReadError, match=f"ImageOrientationPatient .*{reason}"):
        read_series(series_dir)


def test_scanner_rounding_of_cosines_is_accepted(series_dir):
    ds = pydicom.dcmread(files_of(series_dir)[0])
    rounded = [round(float(v), 4) + 1e-4 for v in ds.ImageOrientationPatient]
    edit(files_of(series_dir), ImageOrientationPatient=rounded)
    assert np.isfinite(read_series(series_dir).positions).all()


def test_unorderable_series_is_a_failure_row(phantom_dataset, tmp_path):
    from lstv.pipeline import InferenceConfig, run_inference

    images = shutil.copytree(phantom_dataset.images_dir, tmp_path / "images")
    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    edit(files_of(task.series_dir(images)), ImagePositionPatient=[1, 2, 3])
    out = tmp_path / "out"
    summary = run_inference(
        InferenceConfig(
            input_dir=images,
            series_csv=phantom_dataset.series_csv,
            output_dir=out,
            checkpoint=phantom_dataset.root / "missing.pth",  # the predictor is passed below
            valid_ids=phantom_dataset.valid_ids_path,
            mode="debug",
            debug_study_id=task.study_id,
            device="cpu",
            num_workers=0,
            quiet=True,
        ),
        *_tiny_predictor(),
    )
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert summary.n_failed == 1 and summary.n_completed == 0
    assert failures[0]["stage"] == "read"
    assert "cannot be ordered" in failures[0]["error"]


def _tiny_predictor():
    import torch

    from lstv.inference import Predictor
    from lstv.model import CheckpointInfo, PointNet

    torch.manual_seed(0)
    model = PointNet("resnet10t").eval()
    return Predictor(model, torch.device("cpu")), CheckpointInfo(path="tiny", sha256="0" * 64)
