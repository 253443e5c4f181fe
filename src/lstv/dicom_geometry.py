"""Is a series' geometry one the volume can be ordered and measured by? The anatomical plane of
an orientation, and the checks every slice's position, direction cosines and pixel spacing pass
before :func:`lstv.dicom.read_series` stacks them."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from lstv.errors import SeriesReadError

log = logging.getLogger(__name__)

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
    # A series' slices share one orientation or a few: each distinct one is named once.
    named: dict[bytes, str] = {}
    planes = []
    for s in slices:
        key = _orientation_key(s.orientation)
        if key not in named:
            named[key] = plane_of(s.orientation)
        planes.append(named[key])
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


# Pixel spacing outside these bounds (mm) is a broken header, not an unusual scanner.
MIN_PIXEL_SPACING_MM = 0.01
MAX_PIXEL_SPACING_MM = 50.0
# Tolerances for direction cosines as scanners round them (six decimals or fewer).
COSINE_TOLERANCE = 1e-2
# Slices closer than this along the slice normal cannot be told apart.
POSITION_TOLERANCE_MM = 1e-3


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
    passed: set[bytes] = set()  # orientations checked: a series' slices share one or a few
    for s in slices:
        name = Path(s.path).name
        position = np.asarray(s.position, dtype=np.float64)
        orientation = np.asarray(s.orientation, dtype=np.float64)
        spacing = np.asarray(s.spacing, dtype=np.float64)
        if position.shape != (3,) or not np.isfinite(position).all():
            raise SeriesReadError(
                f"{name}: ImagePositionPatient {position.tolist()} is not three finite numbers"
            )
        key = _orientation_key(orientation)
        if key not in passed:
            _check_orientation(name, orientation)
            passed.add(key)
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


def _orientation_key(orientation) -> bytes:
    """Equal for orientations of equal shape and numbers (float64), whatever their type."""
    o = np.asarray(orientation, dtype=np.float64)
    return repr(o.shape).encode() + o.tobytes()


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
