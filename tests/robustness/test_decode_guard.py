"""Issue 9.8: the declared image size is checked against a limit before any pixel is decoded."""

import shutil
import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from lstv.dicom import DecodeLimits, SeriesReadError, declared_pixel_bytes, read_series
from lstv.studies import read_series_table, sagittal_t2_tasks


@pytest.fixture()
def series_dir(phantom_dataset, tmp_path):
    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    return shutil.copytree(task.series_dir(phantom_dataset.images_dir), tmp_path / "series")


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
