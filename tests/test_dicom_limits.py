"""What decoding may cost (lstv.dicom_limits): declared sizes and frame counts checked against
limits before any pixel is decoded (issues 9.8, 17), and decoder failures as one series error."""

import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from helpers import write_series
from lstv.dicom import read_series
from lstv.dicom_limits import DecodeLimits, declared_pixel_bytes
from lstv.errors import SeriesReadError

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


@pytest.fixture
def mr_series(tmp_path):
    """Five copies of pydicom's MR_small as a sagittal series: the header checks need no
    phantom study, so these tests also run where none is built (and in the mutation run)."""
    return write_series(tmp_path / "series")


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


def test_a_file_declaring_exactly_the_per_file_limit_is_read(tmp_path):
    """The per-file limit is inclusive: a file whose declared size equals it is read, one byte
    less refuses it.

    Mutant ``need >= limits.max_file_bytes``: fails (the file at the limit is refused);
    without it: passes."""
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
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated = 30, 20, bits
    assert declared_pixel_bytes(ds) == 30 * 20 * bytes_per_sample


def rle_bomb(template, path, rows, columns):
    """A small RLE file whose header declares ``rows`` x ``columns`` pixels."""
    ds = pydicom.dcmread(template)
    ds.Rows, ds.Columns = 64, 64
    dtype = np.int16 if ds.PixelRepresentation else np.uint16  # MR_small is signed
    ds.compress(RLELossless, np.zeros((64, 64), dtype=dtype))
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(path)
    return path


def test_declared_bytes():
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 60000, 60000, 16, 1
    assert declared_pixel_bytes(ds) == 60000 * 60000 * 2
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated = 3, 3, 1
    assert declared_pixel_bytes(ds) == 60000 * 60000 * 3 * 3


def test_60000_squared_rle_file_is_refused_without_allocating(mr_series):
    files = sorted(mr_series.glob("*.dcm"))
    bomb = rle_bomb(files[0], files[0], 60000, 60000)
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(SeriesReadError, match=r"60000 x 60000 .*per-file limit"):
            read_series(mr_series)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # 7.2 GB if it were decoded


def test_limit_is_configurable(mr_series):
    files = sorted(mr_series.glob("*.dcm"))
    rle_bomb(files[0], files[0], 4096, 4096)  # 32 MB declared
    with pytest.raises(SeriesReadError, match="per-file limit"):
        read_series(mr_series, DecodeLimits(max_file_bytes=16 * 2**20))


def test_per_series_total(mr_series, monkeypatch):
    n = len(list(mr_series.glob("*.dcm")))
    one = pydicom.dcmread(sorted(mr_series.glob("*.dcm"))[0])
    per_file = declared_pixel_bytes(one)
    assert read_series(mr_series, DecodeLimits(max_series_bytes=n * per_file)).volume.shape[0] == n
    with pytest.raises(SeriesReadError, match="more than .* MB"):
        read_series(mr_series, DecodeLimits(max_series_bytes=(n - 1) * per_file))
    for f in sorted(mr_series.glob("*.dcm")):  # 512 x 512 each: 0.5 MB, 2.5 MB in all
        ds = pydicom.dcmread(f)
        ds.Rows, ds.Columns = 512, 512
        ds.compress(RLELossless, np.zeros((512, 512), dtype=np.int16))
        ds.save_as(f)
    monkeypatch.setenv("LSTV_MAX_SERIES_DECODE_MB", "1")
    with pytest.raises(SeriesReadError, match="LSTV_MAX_SERIES_DECODE_MB"):
        read_series(mr_series)


def test_bad_limit_in_the_environment(monkeypatch):
    monkeypatch.setenv("LSTV_MAX_FILE_DECODE_MB", "１２")
    with pytest.raises(ValueError, match="LSTV_MAX_FILE_DECODE_MB"):
        DecodeLimits.from_env()


@pytest.mark.parametrize("rows", [-5, "abc"])
def test_nonsense_size_is_a_clear_error(mr_series, rows):
    f = sorted(mr_series.glob("*.dcm"))[0]
    raw = f.read_bytes()
    ds = pydicom.dcmread(f)
    ds["Rows"].VR = "US" if isinstance(rows, int) and rows >= 0 else "SS"
    if isinstance(rows, str):
        ds["Rows"].VR = "LO"
    ds.Rows = rows
    ds.save_as(f)
    assert f.read_bytes() != raw
    with pytest.raises(SeriesReadError, match="Rows"):
        read_series(mr_series)


def test_decoder_plugin_failures_log_no_traceback(mr_series, caplog):
    import logging

    from pydicom.encaps import encapsulate

    f = sorted(mr_series.glob("*.dcm"))[0]
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"  # JPEG lossless
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream" * 8])  # every plugin fails
    ds.save_as(f)
    with caplog.at_level(logging.INFO), pytest.raises(SeriesReadError, match="cannot decode"):
        read_series(mr_series)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # With pydicom's debug log on, each plugin's failure is one debug line, no traceback; the
    # error lists every plugin's reason on one line.
    caplog.clear()
    with (
        caplog.at_level(logging.DEBUG, logger="pydicom"),
        pytest.raises(SeriesReadError) as caught,
    ):
        read_series(mr_series)
    assert str(caught.value).startswith(
        f"{f.name}: cannot decode pixels (1.2.840.10008.1.2.4.70): Unable to decode as "
        "exceptions were raised by all available plugins: "
    )
    assert "\n" not in str(caught.value)
    failures = [r for r in caplog.records if r.name == "pydicom.pixels.decoders.base"]
    assert failures
    for r in failures:
        assert (r.levelno, r.levelname) == (logging.DEBUG, "DEBUG")
        assert r.getMessage().startswith("decoding plugin failed: ")
        assert not r.exc_info and not r.exc_text
    # The logger's other messages pass as they are.
    logging.getLogger("pydicom.pixels.decoders.base").warning("a plain warning")
    assert (caplog.records[-1].levelname, caplog.records[-1].getMessage()) == (
        "WARNING",
        "a plain warning",
    )


def test_a_multi_frame_file_over_the_limit_names_its_frames(tmp_path):
    for frames in (1, 2):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.NumberOfFrames = frames
        ds.PixelData = ds.PixelData * frames
        ds.save_as(tmp_path / "f.dcm")
        with pytest.raises(SeriesReadError) as caught:
            read_series([tmp_path / "f.dcm"], DecodeLimits(max_file_bytes=1000))
        shape = "64 x 64" + (f" x {frames} frames" if frames > 1 else "")
        assert str(caught.value).startswith(f"f.dcm: declares {shape} pixels (")


def test_a_panicking_rust_decoder_is_a_series_error(mr_series):
    """pylibjpeg-rle panics (pyo3 PanicException, a BaseException) when Rows is one short."""
    files = sorted(mr_series.glob("*.dcm"))
    rle_bomb(files[0], files[0], 63, 64)
    with pytest.raises(SeriesReadError, match=r"cannot decode pixels \(1.2.840.10008.1.2.5\)") as e:
        read_series(mr_series)
    assert str(e.value).startswith(f"{files[0].name}: cannot decode")  # the file is named


# --- issue 20: mutation survivors of lstv.dicom_limits ---------------------------------------


def header(frames=None, rows=64, columns=64, per_frame=None, pixel_bytes=None):
    """A bare header as check_frames and claim read it: no file, no file meta unless pixel
    data is given (then uncompressed, explicit VR little endian)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated = rows, columns, 16
    if frames is not None:
        ds.NumberOfFrames = frames
    if per_frame is not None:
        ds.PerFrameFunctionalGroupsSequence = Sequence(
            [pydicom.Dataset() for _ in range(per_frame)]
        )
    if pixel_bytes is not None:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = b"\0" * pixel_bytes
    return ds


def refusal(call, *args) -> str:
    with pytest.raises(SeriesReadError) as caught:
        call(*args)
    return str(caught.value)


def test_frame_count_refusals_say_what_the_header_declares():
    from lstv.dicom_limits import check_frames

    limits = DecodeLimits(max_frames=5)
    bad = pydicom.Dataset()
    bad.add_new(0x00280008, "LO", "abc")  # NumberOfFrames as text
    assert refusal(check_frames, bad, "f.dcm", limits) == (
        "f.dcm: NumberOfFrames 'abc' is not a whole number"
    )
    assert refusal(check_frames, header(frames=-3), "f.dcm", limits).startswith(
        "f.dcm: NumberOfFrames "
    )
    # The frame limit is inclusive, and a header without file meta has no pixel data to check.
    assert check_frames(header(frames=5), "f.dcm", limits) == 5
    assert refusal(check_frames, header(frames=6), "f.dcm", limits) == (
        "f.dcm: declares 6 frames, more than the 5 one image file of a series may hold "
        "(LSTV_MAX_FRAMES): a broken or hostile header"
    )
    assert refusal(check_frames, header(frames=2, per_frame=3), "f.dcm", limits) == (
        "f.dcm: declares 2 frames but describes 3 in its per-frame functional groups"
    )
    assert check_frames(header(frames=2, per_frame=2), "f.dcm", limits) == 2
    frame = 64 * 64 * 2
    assert refusal(check_frames, header(frames=2, pixel_bytes=frame), "f.dcm", limits) == (
        "f.dcm: declares 2 frames of 64 x 64 pixels but its pixel data holds 1 frame"
    )
    assert refusal(check_frames, header(frames=3, pixel_bytes=2 * frame), "f.dcm", limits) == (
        "f.dcm: declares 3 frames of 64 x 64 pixels but its pixel data holds 2 frames"
    )
    assert check_frames(header(frames=3, pixel_bytes=3 * frame), "f.dcm", limits) == 3
    # Frames of one byte each: three bytes hold three.
    tiny = header(frames=3, rows=1, columns=1, pixel_bytes=3)
    tiny.BitsAllocated = 8
    assert check_frames(tiny, "f.dcm", limits) == 3
    # A size the check needs but the header lacks is named with the file.
    no_columns = header(frames=2, pixel_bytes=2 * frame)
    del no_columns.Columns
    assert refusal(check_frames, no_columns, "f.dcm", limits) == "f.dcm: no Columns in the header"


def test_size_refusals_give_the_megabytes_and_the_variable_to_change():
    from lstv.dicom_limits import DecodeBudget

    big = header(rows=4096, columns=4096)  # 32 MB
    budget = DecodeBudget(DecodeLimits(max_file_bytes=16 * 2**20))
    assert refusal(budget.claim, big, "f.dcm") == (
        "f.dcm: declares 4096 x 4096 pixels (32 MB decoded), over the 16 MB per-file limit "
        "(LSTV_MAX_FILE_DECODE_MB)"
    )
    budget = DecodeBudget(DecodeLimits(max_series_bytes=48 * 2**20))
    budget.claim(big, "1.dcm")
    assert refusal(budget.claim, big, "2.dcm") == (
        "2.dcm: the series would decode to more than 48 MB (LSTV_MAX_SERIES_DECODE_MB)"
    )
    no_rows = header()
    del no_rows.Rows
    assert refusal(budget.claim, no_rows, "3.dcm") == "3.dcm: no Rows in the header"


def test_declared_bytes_defaults_and_what_is_not_a_size():
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns = 30, 20
    assert declared_pixel_bytes(ds, "f.dcm") == 30 * 20 * 2  # BitsAllocated 16 by default
    ds.NumberOfFrames, ds.SamplesPerPixel = "", 0  # empty and 0 count as one
    assert declared_pixel_bytes(ds, "f.dcm") == 30 * 20 * 2
    ds.add_new(0x00280010, "SS", -5)  # Rows
    assert refusal(declared_pixel_bytes, ds, "f.dcm") == "f.dcm: Rows -5 is not a whole number >= 0"
    ds.add_new(0x00280010, "LO", "")
    assert refusal(declared_pixel_bytes, ds, "f.dcm") == "f.dcm: no Rows in the header"


def test_a_file_without_a_transfer_syntax_cannot_be_decoded(tmp_path):
    from pydicom.dataset import FileMetaDataset

    from lstv.dicom_limits import decode_pixels

    ds = header(rows=1, columns=1)
    ds.file_meta = FileMetaDataset()
    ds.PixelData = b"\0\0"
    assert refusal(decode_pixels, ds, "f.dcm").startswith(
        "f.dcm: cannot decode pixels (unknown transfer syntax): "
    )


def test_limits_from_the_environment_word_for_word(monkeypatch):
    from lstv.errors import UsageError

    names = ("LSTV_MAX_FILE_DECODE_MB", "LSTV_MAX_SERIES_DECODE_MB", "LSTV_MAX_FRAMES")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    assert DecodeLimits.from_env() == DecodeLimits(512 * 2**20, 4096 * 2**20, 10_000)
    for name, value in zip(names, (" 3 ", "5", "7"), strict=True):
        monkeypatch.setenv(name, value)
    assert DecodeLimits.from_env() == DecodeLimits(3 * 2**20, 5 * 2**20, 7)
    for name, unit in zip(names, (" of MB", " of MB", ""), strict=True):
        for bad in ("0", "-1", "2.5"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(UsageError) as caught:
                DecodeLimits.from_env()
            assert str(caught.value) == (
                f"{name} must be a positive whole number{unit}, got {bad!r}"
            )
        monkeypatch.setenv(name, "1")


def test_one_frame_s_short_pixel_data_is_refused_with_the_bytes_missing(tmp_path):
    """Frames are counted only in a multi-frame file; a single frame's short data is left to the
    decoder, whose message gives the bytes (a frame count would say "holds 0 frames")."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelData = ds.PixelData[:4096]
    ds.save_as(tmp_path / "f.dcm")
    with pytest.raises(SeriesReadError) as caught:
        read_series([tmp_path / "f.dcm"])
    assert str(caught.value).startswith(
        "f.dcm: cannot decode pixels (1.2.840.10008.1.2.1): The number of bytes of pixel data "
        "is less than expected (4096 vs 8192 bytes)"
    )
