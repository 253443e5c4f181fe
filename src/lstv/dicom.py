"""Reading a DICOM series into a sorted 8-bit volume with per-slice geometry.

This follows hengck23's demo: group slices by orientation, sort each group along its slice
normal, order sagittal groups by x, stack, and normalise the whole volume to 8 bit between its
0.1 and 99.9 percentiles. Compressed transfer syntaxes decode through python-gdcm / pylibjpeg.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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


def normalise_to_uint8(
    volume: np.ndarray, lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE
) -> np.ndarray:
    """Clip at the ``lower``/``upper`` percentiles of the whole volume, then min-max to 0..255."""
    lo, hi = np.percentile(volume, (lower, upper))
    if hi <= lo:
        raise SeriesReadError(f"series has no contrast (all pixels within {lo:g}..{hi:g})")
    clipped = np.clip(volume.astype(np.float32), lo, hi)
    return ((clipped - lo) / (hi - lo) * 255).astype(np.uint8)


@dataclass
class _Slice:
    path: Path
    pixels: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray
    instance_number: int


def _read_slice(path: Path) -> _Slice:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise SeriesReadError(f"{path.name}: not a readable DICOM file ({exc})") from exc
    missing = [
        tag
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        if tag not in ds
    ]
    if "PixelData" not in ds:
        raise SeriesReadError(f"{path.name}: no pixel data")
    if missing:
        raise SeriesReadError(f"{path.name}: missing {', '.join(missing)}")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        raise SeriesReadError(f"{path.name}: cannot decode pixels ({syntax}): {exc}") from exc
    if pixels.ndim != 2:
        raise SeriesReadError(f"{path.name}: expected one 2-D frame, got shape {pixels.shape}")
    return _Slice(
        path=path,
        pixels=pixels,
        position=np.asarray(ds.ImagePositionPatient, dtype=np.float64),
        orientation=np.asarray(ds.ImageOrientationPatient, dtype=np.float64),
        spacing=np.asarray(ds.PixelSpacing, dtype=np.float64),
        instance_number=int(ds.get("InstanceNumber", 0) or 0),
    )


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


def read_series(series_dir: str | Path) -> Series:
    """Read every ``.dcm`` of a series folder into a :class:`Series`.

    Raises:
        SeriesReadError: missing folder, unreadable or non-DICOM file, no pixel data, missing
            geometry, mixed image sizes, or a volume without contrast.
    """
    slices = [_read_slice(p) for p in series_files(Path(series_dir))]
    shapes = sorted({s.pixels.shape for s in slices})
    if len(shapes) > 1:
        raise SeriesReadError(f"mixed image sizes in one series: {shapes}")
    order = order_slices(
        np.stack([s.orientation for s in slices]), np.stack([s.position for s in slices])
    )
    slices = [slices[i] for i in order]
    volume = normalise_to_uint8(np.stack([s.pixels for s in slices]))
    return Series(
        volume=volume,
        positions=np.stack([s.position for s in slices]),
        orientations=np.stack([s.orientation for s in slices]),
        pixel_spacings=np.stack([s.spacing for s in slices]),
        instance_numbers=np.array([s.instance_number for s in slices], dtype=np.int64),
        paths=tuple(s.path for s in slices),
    )
