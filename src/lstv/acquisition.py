"""How a study was acquired, read off its image and header, not its anatomy.

The drift check (:mod:`lstv.score_drift`) must tell "this set was acquired differently from the
reference" (re-calibrate) from "this set holds many transitional studies" (do not). The map
features cannot: transitional anatomy moves them too. These descriptors are ratios over the
whole 16-bit centre slice, or header facts, so a small region at the bottom of the image, where
L5 and S1 lie, barely moves them, while a scanner or protocol change does:

* ``acq_noise``: the noise (the MAD of the slice's Laplacian, as the SD of white noise) over
  the body's median signal: coil, field strength, bandwidth, averages;
* ``acq_sharpness``: mean |Laplacian| over mean |gradient|: the effective resolution (matrix,
  reconstruction filter, interpolation) against the noise;
* ``acq_contrast``: log of the body's 99th over its 90th intensity percentile: the intensity
  curve (sequence timing, scaling, a gamma);
* ``acq_bias_ratio``: log of the body's median in the right third of the slice over the left
  third: the receive coil's bias field along the image's rows (posterior-anterior on a sagittal);
* ``acq_pixel_spacing_mm``, ``acq_slice_spacing_mm``: in-plane pixel spacing and the distance
  from the centre slice to its neighbour, from the header: acquisition by definition.

What the phantoms exercise (``lstv.phantom.render.scanner_shift``: coarser in-plane resolution,
a gamma of 0.8, a stronger bias field, more noise; README, "The acquisition drift check,
measured"): sharpness, contrast and noise move by 1-2.5 reference spreads; the bias ratio barely
(the shift's field is weak beside the anatomy's left-right contrast), and the header spacings
not at all (the shift keeps them). Those three are for real changes: another coil, matrix, field
of view or slice thickness. ``acq_contrast`` reads the body's 99th percentile: a bright structure
over about 1% of the body would move it; the phantoms' transitional anatomy does not.

The body is the part of the slice brighter than the slice's mean (air, most of an MR slice,
lies below it). The image descriptors are read at every :data:`STRIDE`-th row and column of
the slice, with their full-resolution neighbours: 0.37 ms of CPU per study (320-512 rows), in
the reader processes, beside the tens of milliseconds a DICOM series takes to decode.
:func:`fit_descriptors` gives a reference's centre and spread of them (``lstv calibrate``).
"""

from __future__ import annotations

import math

import numpy as np

DESCRIPTORS = (
    "acq_noise",
    "acq_sharpness",
    "acq_contrast",
    "acq_bias_ratio",
    "acq_pixel_spacing_mm",
    "acq_slice_spacing_mm",
)
STRIDE = 4
# A 4-neighbour Laplacian of white noise of SD sigma has SD sqrt(20) sigma; a MAD is 1/1.4826
# of an SD.
_LAPLACIAN_TO_NOISE = 1.4826 / math.sqrt(20.0)
# A body part of the slice with fewer pixels than this (in the strided sample) says nothing.
_MIN_PIXELS = 16
# A reference's spread is at least this share of its median: one protocol's header spacing is
# a constant (no spread), and a change under 2.5% of it (half a spread) is not worth a word.
MIN_RELATIVE_SPREAD = 0.05


def descriptors(
    plane: np.ndarray, pixel_spacing, positions: np.ndarray | None = None, index: int = 0
) -> dict[str, float]:
    """The acquisition descriptors of one study (:data:`DESCRIPTORS`), NaN where one cannot be
    measured (a slice without signal; the slice spacing of a series of one slice).

    Args:
        plane: the centre slice as decoded (before the 8-bit windowing), (H, W).
        pixel_spacing: (between rows, between columns) in mm.
        positions: (D, 3) ImagePositionPatient of the series' slices in volume order;
            ``index``: the centre slice's.
    """
    out = dict.fromkeys(DESCRIPTORS, math.nan)
    out["acq_pixel_spacing_mm"] = float(np.mean(pixel_spacing))
    if positions is not None and len(positions) > 1:
        other = index + 1 if index + 1 < len(positions) else index - 1
        out["acq_slice_spacing_mm"] = float(np.linalg.norm(positions[other] - positions[index]))
    plane = np.asarray(plane)
    if plane.ndim != 2 or min(plane.shape) < 3:
        return out
    # The strided grid, one pixel in from the border, and its four neighbours.
    s = STRIDE
    centre = plane[1:-1:s, 1:-1:s].astype(np.float32)
    rows, cols = centre.shape
    up = plane[0:-2:s, 1:-1:s][:rows, :cols].astype(np.float32)
    down = plane[2::s, 1:-1:s][:rows, :cols].astype(np.float32)
    left = plane[1:-1:s, 0:-2:s][:rows, :cols].astype(np.float32)
    right = plane[1:-1:s, 2::s][:rows, :cols].astype(np.float32)
    body = centre > centre.mean()
    if body.sum() < _MIN_PIXELS:
        return out
    p50, p90, p99 = _quantiles(centre[body], (0.5, 0.9, 0.99))
    if not p50 > 0:
        return out
    laplacian = np.abs(up + down + left + right - 4 * centre)
    gradient = float(np.abs(right - centre).mean())
    out["acq_noise"] = _quantiles(laplacian.ravel(), (0.5,))[0] * _LAPLACIAN_TO_NOISE / p50
    out["acq_sharpness"] = float(laplacian.mean()) / gradient if gradient > 0 else math.nan
    out["acq_contrast"] = math.log(p99 / p90)
    third = max(1, cols // 3)
    sides = [
        c[b]
        for c, b in ((centre[:, :third], body[:, :third]), (centre[:, -third:], body[:, -third:]))
    ]
    if min(v.size for v in sides) >= _MIN_PIXELS:
        left_median, right_median = (_quantiles(v, (0.5,))[0] for v in sides)
        out["acq_bias_ratio"] = math.log(right_median / left_median)
    return out


def _quantiles(values: np.ndarray, q) -> list[float]:
    """Order statistics at fractions ``q`` (nearest rank, one partial sort): cheaper than
    np.percentile's interpolation, and as good for a descriptor of thousands of pixels."""
    ranks = [min(len(values) - 1, int(f * len(values))) for f in q]
    part = np.partition(values, ranks)
    return [float(part[r]) for r in ranks]


def fit_descriptors(raw: np.ndarray) -> dict:
    """A reference's description of its normal studies' acquisition: per descriptor (columns
    of ``raw`` in :data:`DESCRIPTORS` order), the median as ``centre`` and 1.4826 x MAD as
    ``spread`` (at least :data:`MIN_RELATIVE_SPREAD` of the centre), over the studies that have
    it; a descriptor known in fewer than 10 studies is left out. ``{}`` when none is left."""
    raw = np.asarray(raw, dtype=float)
    fitted, n = {}, 0
    for j, name in enumerate(DESCRIPTORS):
        v = raw[:, j][np.isfinite(raw[:, j])]
        if len(v) < 10:
            continue
        centre = float(np.median(v))
        spread = 1.4826 * float(np.median(np.abs(v - centre)))
        spread = max(spread, MIN_RELATIVE_SPREAD * abs(centre), 1e-9)
        fitted[name] = {"centre": centre, "spread": spread, "n": int(len(v))}
        n = max(n, len(v))
    return {"n": n, "descriptors": fitted} if fitted else {}


def descriptor_matrix(rows: list[dict], source: str = "metrics CSV") -> np.ndarray | None:
    """(n, len(DESCRIPTORS)) the descriptors of metrics-CSV rows, NaN where empty; None when
    the rows have no acquisition columns (a CSV written before them).

    Raises:
        UsageError: a value is not a number; names ``source``.
    """
    from lstv.errors import UsageError
    from lstv.score_features import as_number

    if not rows or not any(name in rows[0] for name in DESCRIPTORS):
        return None
    out = np.full((len(rows), len(DESCRIPTORS)), math.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(DESCRIPTORS):
            try:
                out[i, j] = as_number(row.get(name))
            except ValueError as exc:
                raise UsageError(f"{source}: {name} = {row[name]!r} is not a number") from exc
    return out
