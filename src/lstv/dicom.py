"""Reading a DICOM series into a sorted 8-bit volume with per-slice geometry.

This follows hengck23's demo: group slices by orientation, sort each group along its slice
normal, order sagittal groups by x, stack, and normalise the whole volume to 8 bit between its
0.1 and 99.9 percentiles. Compressed transfer syntaxes decode through python-gdcm / pylibjpeg.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

LOWER_PERCENTILE = 0.1
UPPER_PERCENTILE = 99.9


class SeriesReadError(ValueError):
    """A series that cannot become a volume; the message says why, for failures.csv."""


@dataclass(frozen=True)
class Series:
    """A series as the localizer sees it.

    Attributes:
        volume: (D, H, W) uint8, slices in increasing projection of their position on the
            slice normal (row cosines x column cosines), as the original demo sorts them.
        positions: (D, 3) ImagePositionPatient of each slice, mm.
        orientations: (D, 6) ImageOrientationPatient (row cosines, then column cosines).
        pixel_spacings: (D, 2) PixelSpacing (between rows, between columns), mm.
        instance_numbers: (D,) InstanceNumber of each slice, in volume order.
        paths: the file of each slice, in volume order.
    """

    volume: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    pixel_spacings: np.ndarray
    instance_numbers: np.ndarray
    paths: tuple[Path, ...]

    @property
    def centre_index(self) -> int:
        """The slice the localizer reads (``D // 2``, as in the original demo)."""
        return self.volume.shape[0] // 2

    def pixel_to_patient(self, slice_index: int, x: float, y: float) -> np.ndarray:
        """Patient coordinates (mm) of pixel column ``x``, row ``y`` of one slice."""
        i = slice_index
        return pixel_to_patient(
            self.positions[i], self.orientations[i], self.pixel_spacings[i], x, y
        )


def pixel_to_patient(position, orientation, pixel_spacing, x: float, y: float) -> np.ndarray:
    """Patient coordinates (mm) of pixel column ``x``, row ``y`` of a slice with this
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing (between rows, columns)."""
    row_spacing, col_spacing = pixel_spacing
    return (
        np.asarray(position)
        + x * col_spacing * np.asarray(orientation[:3])
        + y * row_spacing * np.asarray(orientation[3:])
    )


# A plane is named after the patient axis its normal is within 30 degrees of; else oblique.
PLANE_COSINE = float(np.cos(np.radians(30)))
_PLANES = ("sagittal", "coronal", "axial")  # normal along x (L-R), y (A-P), z (S-I)


def plane_of(orientation) -> str:
    """``sagittal``, ``coronal``, ``axial`` or ``oblique`` for an ImageOrientationPatient."""
    o = np.asarray(orientation, dtype=np.float64)
    if o.shape != (6,) or not np.all(np.isfinite(o)):
        return "unknown"
    normal = np.cross(o[:3], o[3:])
    length = float(np.linalg.norm(normal))
    if length < 1e-6:
        return "unknown"
    normal = np.abs(normal) / length
    axis = int(np.argmax(normal))
    return _PLANES[axis] if normal[axis] >= PLANE_COSINE else "oblique"


def check_one_plane(slices) -> None:
    """Refuse slices of several anatomical planes in one series (a localizer's axial frames
    inside a sagittal Enhanced MR file, a mixed export): their volume would mean nothing.

    Raises:
        SeriesReadError: says how many slices lie in each plane, and in which files.
    """
    from collections import Counter

    planes = [plane_of(s.orientation) for s in slices]
    counts = Counter(planes)
    if len(counts) < 2:
        return
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    minority = {p for p, _ in ranked[1:]}
    pairs = zip(slices, planes, strict=True)
    files = sorted({Path(s.path).name for s, plane in pairs if plane in minority})
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    counted = " and ".join(f"{n} {plane}" for plane, n in ranked)
    raise SeriesReadError(
        f"{', '.join(files[:3])}{more}: {counted} slices in one series; lstv reads one "
        "sagittal stack (is a localizer or another series among its files?)"
    )


def normalise_to_uint8(
    volume: np.ndarray | Sequence[np.ndarray],
    lower: float = LOWER_PERCENTILE,
    upper: float = UPPER_PERCENTILE,
) -> np.ndarray:
    """Clip at the ``lower``/``upper`` percentiles of the whole volume, then min-max to 0..255:
    the original demo's numbers bit for bit (see :mod:`lstv.intensity`). ``volume`` may be the
    list of its slices, which then need not be stacked first."""
    from lstv.intensity import NoContrastError
    from lstv.intensity import normalise_to_uint8 as normalise

    try:
        return normalise(volume, lower, upper)
    except NoContrastError as exc:
        raise SeriesReadError(str(exc)) from exc


@dataclass
class _Slice:
    path: Path
    pixels: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray
    instance_number: int


def frame_geometry(ds, frame: int):
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of one frame, each None
    when absent: the frame's per-frame functional group first, then the shared functional
    group (Enhanced MR), then the top level (single-frame images)."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    found = []
    for attr, sequence in (
        ("ImagePositionPatient", "PlanePositionSequence"),
        ("ImageOrientationPatient", "PlaneOrientationSequence"),
        ("PixelSpacing", "PixelMeasuresSequence"),
    ):
        items = [g.get(sequence) for g in groups]
        values = [seq[0].get(attr) for seq in items if seq and attr in seq[0]]
        found.append(values[0] if values else ds.get(attr))
    return tuple(found)


class NotRegularFileError(SeriesReadError):
    """A path from data (an index, a DICOMDIR) that names a FIFO, device, socket or folder."""


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading in binary if, and only if, it is a regular file.

    Every path that comes from data (an index's ``path``, a DICOMDIR record, a report's
    ``--data_dir``) is opened through here: opening a FIFO blocks until a writer comes, which
    may be never, and a device streams without end. The file is checked before it is opened
    and again on the open descriptor (opened non-blocking), so a swap in between is caught.

    Raises:
        NotRegularFileError: the path names anything but a regular file (symlinks followed).
        OSError: the path is missing or unreadable.
    """
    path = Path(path)

    def refuse(mode: int) -> None:
        for test, kind in _FILE_KINDS:
            if test(mode):
                raise NotRegularFileError(f"{path.name}: not a regular file ({kind})")
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path.name}: not a regular file")

    refuse(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        refuse(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_slices(path: Path, budget: DecodeBudget | None = None) -> list[_Slice]:
    """The frames of one file: one for a classic image, each frame of a multi-frame (Enhanced
    MR) file with its own geometry from the functional groups. ``budget`` bounds what decoding
    may allocate (default: :meth:`DecodeLimits.from_env` for this file alone)."""
    import pydicom

    try:
        with open_regular(path) as f:
            ds = pydicom.dcmread(f)
    except NotRegularFileError:
        raise
    except Exception as exc:
        raise SeriesReadError(f"{path.name}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise SeriesReadError(f"{path.name}: no pixel data")
    budget = budget or DecodeBudget()
    # Everything the header declares is checked before any per-frame work: a few megabytes
    # can declare ten million frames, and their geometry alone would take minutes.
    n_frames = check_frames(ds, path.name, budget.limits)
    budget.claim(ds, path.name)
    geometry = [frame_geometry(ds, f) for f in range(n_frames)]
    names = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    missing = sorted({n for g in geometry for n, v in zip(names, g, strict=True) if v is None})
    if missing:
        where = "" if n_frames == 1 else " (per-frame and shared functional groups)"
        raise SeriesReadError(f"{path.name}: missing {', '.join(missing)}{where}")
    pixels = decode_pixels(ds, path.name)
    frames = pixels[None] if n_frames == 1 else pixels
    if frames.ndim != 3 or len(frames) != n_frames:
        raise SeriesReadError(
            f"{path.name}: expected {n_frames} grey-level 2-D frame(s), got shape {pixels.shape}"
        )
    instance_number = int(ds.get("InstanceNumber", 0) or 0)
    return [
        _Slice(
            path=path,
            pixels=frame,
            position=np.asarray(position, dtype=np.float64),
            orientation=np.asarray(orientation, dtype=np.float64),
            spacing=np.asarray(spacing, dtype=np.float64),
            instance_number=instance_number,
        )
        for frame, (position, orientation, spacing) in zip(frames, geometry, strict=True)
    ]


def order_slices(orientations: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Indices that put slices in volume order.

    Slices are grouped by rounded orientation; each group is sorted by the projection of its
    positions on the slice normal, and groups are ordered by the x of their first slice.
    """
    keys = [tuple(np.round(o, 3)) for o in orientations]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    ordered_groups = []
    for key, members in groups.items():
        o = np.asarray(key)
        normal = np.cross(o[:3], o[3:])
        members = sorted(members, key=lambda i: float(positions[i] @ normal))
        ordered_groups.append((float(positions[members[0], 0]), members))
    ordered_groups.sort(key=lambda g: g[0])
    return np.array([i for _, members in ordered_groups for i in members], dtype=int)


def series_files(series_dir: Path) -> list[Path]:
    """The ``.dcm`` files of a series folder; an error when the folder or files are missing."""
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise SeriesReadError(f"series folder not found: {series_dir}")
    files = sorted(p for p in series_dir.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not files:
        raise SeriesReadError(f"no .dcm files in {series_dir}")
    return files


def folder_files(folder: Path) -> list[Path]:
    """Every file of a folder from an index (any name, no extension needed), except hidden
    files and a DICOMDIR; an error when the folder is missing or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SeriesReadError(f"series folder not found: {folder}")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR"
    )
    if not files:
        raise SeriesReadError(f"no files in {folder}")
    return files


def read_series(
    source: str | Path | Sequence[str | Path], limits: DecodeLimits | None = None
) -> Series:
    """Read a series into a :class:`Series`: every ``.dcm`` of a folder (RSNA layout), or the
    given files (any names, as an index lists them). A multi-frame file gives one slice per
    frame; all slices are ordered and normalised together.

    ``limits`` bounds the bytes decoding may allocate, per file and for the series, checked
    against the declared image size before decoding (default: :meth:`DecodeLimits.from_env`).

    Raises:
        SeriesReadError: missing folder or file, unreadable or non-DICOM file, no pixel data,
            missing or invalid geometry (see :func:`validate_geometry`), a declared image size
            over ``limits``, mixed image sizes, or a volume without contrast.
    """
    if isinstance(source, (str, Path)):
        files = series_files(Path(source))
    else:
        files = [Path(p) for p in source]
        if not files:
            raise SeriesReadError("no files given for the series")
    budget = DecodeBudget(limits)
    slices = [s for p in files for s in _read_slices(p, budget)]
    shapes = sorted({s.pixels.shape for s in slices})
    if len(shapes) > 1:
        raise SeriesReadError(f"mixed image sizes in one series: {shapes}")
    validate_geometry(slices)
    order = order_slices(
        np.stack([s.orientation for s in slices]), np.stack([s.position for s in slices])
    )
    slices = [slices[i] for i in order]
    volume = normalise_to_uint8([s.pixels for s in slices])
    return Series(
        volume=volume,
        positions=np.stack([s.position for s in slices]),
        orientations=np.stack([s.orientation for s in slices]),
        pixel_spacings=np.stack([s.spacing for s in slices]),
        instance_numbers=np.array([s.instance_number for s in slices], dtype=np.int64),
        paths=tuple(s.path for s in slices),
    )


# --------------------------------------------------------------------------- guards


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
# Pixel spacing outside these bounds (mm) is a broken header, not an unusual scanner.
MIN_PIXEL_SPACING_MM = 0.01
MAX_PIXEL_SPACING_MM = 50.0
# Tolerances for direction cosines as scanners round them (six decimals or fewer).
COSINE_TOLERANCE = 1e-2
# Slices closer than this along the slice normal cannot be told apart.
POSITION_TOLERANCE_MM = 1e-3


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
                raise ValueError(f"{name} must be a positive whole number{unit}, got {text!r}")
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


def validate_geometry(slices) -> None:
    """Refuse geometry the volume cannot be ordered or measured by.

    Each slice (anything with ``path``, ``position``, ``orientation`` and ``spacing``) needs a
    finite 3-vector position, two finite, unit, orthogonal direction cosines and a finite,
    positive, plausible pixel spacing; all slices must lie in one anatomical plane; and slices
    that share an orientation must not all lie at one position along their normal (file-name
    order is no order).

    Raises:
        SeriesReadError: names the file and the attribute.
    """
    for s in slices:
        name = Path(s.path).name
        position = np.asarray(s.position, dtype=np.float64)
        orientation = np.asarray(s.orientation, dtype=np.float64)
        spacing = np.asarray(s.spacing, dtype=np.float64)
        if position.shape != (3,) or not np.isfinite(position).all():
            raise SeriesReadError(
                f"{name}: ImagePositionPatient {position.tolist()} is not three finite numbers"
            )
        _check_orientation(name, orientation)
        if spacing.shape != (2,) or not np.isfinite(spacing).all():
            raise SeriesReadError(
                f"{name}: PixelSpacing {spacing.tolist()} is not two finite numbers"
            )
        if not ((spacing >= MIN_PIXEL_SPACING_MM) & (spacing <= MAX_PIXEL_SPACING_MM)).all():
            raise SeriesReadError(
                f"{name}: PixelSpacing {spacing.tolist()} mm is outside "
                f"{MIN_PIXEL_SPACING_MM:g}..{MAX_PIXEL_SPACING_MM:g} mm"
            )
    check_one_plane(slices)
    _check_positions_distinct(slices)


def _check_orientation(name: str, orientation: np.ndarray) -> None:
    if orientation.shape != (6,) or not np.isfinite(orientation).all():
        raise SeriesReadError(
            f"{name}: ImageOrientationPatient {orientation.tolist()} is not six finite numbers"
        )
    row, col = orientation[:3], orientation[3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if any(abs(n - 1) > COSINE_TOLERANCE for n in norms):
        raise SeriesReadError(
            f"{name}: ImageOrientationPatient {orientation.tolist()} has direction cosines of "
            f"length {norms[0]:.3g} and {norms[1]:.3g}, not 1"
        )
    if abs(float(row @ col)) > COSINE_TOLERANCE:
        raise SeriesReadError(
            f"{name}: ImageOrientationPatient {orientation.tolist()} has row and column "
            "directions that are not perpendicular"
        )


def _check_positions_distinct(slices) -> None:
    groups: dict[tuple, list] = {}
    for s in slices:
        key = tuple(np.round(np.asarray(s.orientation, dtype=np.float64), 3))
        groups.setdefault(key, []).append(s)
    for key, members in groups.items():
        if len(members) < 2:
            continue
        o = np.asarray(key)
        normal = np.cross(o[:3], o[3:])
        depth = np.array([np.asarray(s.position, dtype=np.float64) @ normal for s in members])
        if np.ptp(depth) <= POSITION_TOLERANCE_MM:
            raise SeriesReadError(
                f"all {len(members)} slices lie at the same position along the slice normal "
                f"({depth[0]:g} mm): the series cannot be ordered"
            )
        n_unique = len(np.unique(np.round(depth / POSITION_TOLERANCE_MM)))
        if n_unique < len(members):
            log.warning(
                "%d of %d slices share a position with another slice (%s ...): their order "
                "between them follows file names",
                len(members) - n_unique,
                len(members),
                Path(members[0].path).parent,
            )
