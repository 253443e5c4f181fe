"""What decoding a file's pixels may cost, checked against what its header declares before
anything is decoded (:class:`DecodeLimits`, :class:`DecodeBudget`), and decoding itself with any
decoder's failure as one :class:`~lstv.errors.SeriesReadError`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lstv.errors import SeriesReadError, UsageError


class _PluginFailureToDebug(logging.Filter):
    """pydicom logs each decoding plugin that fails with its full traceback at ERROR, then
    raises one error that lists every plugin's message (which becomes the study's failure
    row). The tracebacks go to debug, so a batch's stderr holds no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.msg = f"decoding plugin failed: {record.getMessage()}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("pydicom.pixels.decoders.base").addFilter(_PluginFailureToDebug())

MAX_FILE_DECODE_MB = 512
MAX_SERIES_DECODE_MB = 4096
# A spine MR series has tens to hundreds of slices; a 3-D one a few thousand at most.
MAX_FRAMES = 10_000


@dataclass(frozen=True)
class DecodeLimits:
    """The most bytes pixel decoding may allocate, checked against what the headers declare
    before anything is decoded: a few hundred kilobytes of RLE can declare 60000 x 60000 pixels.

    ``max_frames`` bounds the frames one file may declare (each costs per-frame work before
    decoding). ``from_env`` reads ``LSTV_MAX_FILE_DECODE_MB``, ``LSTV_MAX_SERIES_DECODE_MB`` and
    ``LSTV_MAX_FRAMES``, so batch jobs and reader processes can change the limits without new
    flags.
    """

    max_file_bytes: int = MAX_FILE_DECODE_MB * 2**20
    max_series_bytes: int = MAX_SERIES_DECODE_MB * 2**20
    max_frames: int = MAX_FRAMES

    @classmethod
    def from_env(cls) -> DecodeLimits:
        import os

        def whole(name: str, default: int, unit: str) -> int:
            text = os.environ.get(name, "").strip()
            if not text:
                return default
            if not text.isascii() or not text.isdigit() or int(text) == 0:
                raise UsageError(f"{name} must be a positive whole number{unit}, got {text!r}")
            return int(text)

        return cls(
            max_file_bytes=whole("LSTV_MAX_FILE_DECODE_MB", MAX_FILE_DECODE_MB, " of MB") * 2**20,
            max_series_bytes=whole("LSTV_MAX_SERIES_DECODE_MB", MAX_SERIES_DECODE_MB, " of MB")
            * 2**20,
            max_frames=whole("LSTV_MAX_FRAMES", MAX_FRAMES, ""),
        )


def declared_pixel_bytes(ds, name: str = "") -> int:
    """Bytes the decoded pixels of ``ds`` will take, from Rows x Columns x NumberOfFrames x
    SamplesPerPixel x bytes per sample (BitsAllocated rounded up to whole bytes).

    Raises:
        SeriesReadError: a size attribute is missing, not a whole number, or negative.
    """
    sizes = {}
    for attr, default in (
        ("Rows", None),
        ("Columns", None),
        ("NumberOfFrames", 1),
        ("SamplesPerPixel", 1),
        ("BitsAllocated", 16),
    ):
        value = ds.get(attr)
        if value is None or value == "":
            if default is None:
                raise SeriesReadError(f"{name}: no {attr} in the header")
            value = default
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise SeriesReadError(f"{name}: {attr} {value!r} is not a whole number") from exc
        if number < 0 or number != float(value):
            raise SeriesReadError(f"{name}: {attr} {value!r} is not a whole number >= 0")
        sizes[attr] = number
    bytes_per_sample = max(1, -(-sizes["BitsAllocated"] // 8))
    return (
        sizes["Rows"]
        * sizes["Columns"]
        * max(1, sizes["NumberOfFrames"])
        * max(1, sizes["SamplesPerPixel"])
        * bytes_per_sample
    )


def check_frames(ds, name: str, limits: DecodeLimits) -> int:
    """The number of frames ``ds`` declares, checked against what the file can hold, in
    constant time: at most ``limits.max_frames``, as many per-frame functional groups as
    frames, and (uncompressed) pixel data long enough for them all.

    Raises:
        SeriesReadError: names the file and says what the header declares against what it has.
    """
    value = ds.get("NumberOfFrames") or 1
    try:
        n_frames = int(value)
    except (TypeError, ValueError) as exc:
        raise SeriesReadError(f"{name}: NumberOfFrames {value!r} is not a whole number") from exc
    if n_frames < 1:
        raise SeriesReadError(f"{name}: NumberOfFrames {value!r} is not a whole number >= 1")
    if n_frames > limits.max_frames:
        raise SeriesReadError(
            f"{name}: declares {n_frames:,} frames, more than the {limits.max_frames:,} one "
            "image file of a series may hold (LSTV_MAX_FRAMES): a broken or hostile header"
        )
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and n_frames > 1 and len(per_frame) != n_frames:
        raise SeriesReadError(
            f"{name}: declares {n_frames:,} frames but describes {len(per_frame):,} in its "
            "per-frame functional groups"
        )
    syntax = (getattr(ds, "file_meta", None) or {}).get("TransferSyntaxUID")
    if n_frames > 1 and syntax is not None and not syntax.is_compressed:
        frame_bytes = declared_pixel_bytes(ds, name) // n_frames
        held = len(ds.PixelData or b"") // max(1, frame_bytes)
        if held < n_frames:
            raise SeriesReadError(
                f"{name}: declares {n_frames:,} frames of {ds.get('Rows')} x "
                f"{ds.get('Columns')} pixels but its pixel data holds {held:,} "
                f"frame{'s' if held != 1 else ''}"
            )
    return n_frames


class DecodeBudget:
    """Bytes a series may still decode: each file is checked before its pixels are decoded,
    against the per-file limit and what is left of the per-series one."""

    def __init__(self, limits: DecodeLimits | None = None):
        self.limits = limits or DecodeLimits.from_env()
        self.used = 0

    def claim(self, ds, name: str) -> None:
        """Reserve the declared size of ``ds`` or raise :class:`SeriesReadError`."""
        need = declared_pixel_bytes(ds, name)
        limits = self.limits
        if need > limits.max_file_bytes:
            raise SeriesReadError(
                f"{name}: declares {_shape_text(ds)} pixels ({need / 2**20:,.0f} MB decoded), "
                f"over the {limits.max_file_bytes / 2**20:,.0f} MB per-file limit "
                "(LSTV_MAX_FILE_DECODE_MB)"
            )
        if self.used + need > limits.max_series_bytes:
            raise SeriesReadError(
                f"{name}: the series would decode to more than "
                f"{limits.max_series_bytes / 2**20:,.0f} MB (LSTV_MAX_SERIES_DECODE_MB)"
            )
        self.used += need


def _shape_text(ds) -> str:
    frames = ds.get("NumberOfFrames") or 1
    return f"{ds.get('Rows')} x {ds.get('Columns')}" + (
        f" x {frames} frames" if int(frames) > 1 else ""
    )


def decode_pixels(ds, name: str) -> np.ndarray:
    """``ds.pixel_array``, with any decoder failure as a one-line :class:`SeriesReadError`.

    Decoders written in Rust (pylibjpeg-rle) panic on some malformed data, and pyo3 raises that
    as ``PanicException``, a BaseException that ``except Exception`` lets through: it would
    end the whole batch instead of failing one study.
    """
    try:
        return ds.pixel_array
    except BaseException as exc:
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise  # KeyboardInterrupt, SystemExit
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        reason = " ".join(str(exc).split())  # pydicom lists each plugin on its own line
        raise SeriesReadError(f"{name}: cannot decode pixels ({syntax}): {reason}") from exc
