"""Uncertainty metrics from the localizer's probability maps (pure numpy, no torch).

Every metric takes the softmax output for one study, ``probs`` of shape (6, S, S) with class 0
the background, and looks at one disc level's map at a time. The names and meanings of the first
three per-level metrics are the seed's and downstream scripts read them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from lstv.errors import UsageError
from lstv.levels import LEVEL_KEYS

POINT_THRESHOLD = 0.5
SPATIAL_GRID = 10
_EPS = 1e-12
# Shape features (see ``shape_features``): a second peak counts when it lies farther than this
# from the first (about two vertebral levels' spacing is 35-40 mm, one disc height is ~10 mm).
PEAK2_MIN_DISTANCE_MM = 20.0
CORE_FRACTION = 0.5
CORE_DILATIONS = 3
TOP_K = 100


class NonFiniteMapError(ValueError):
    """A probability map with NaN or infinite values, or no mass: it gives no verdict."""


@dataclass(frozen=True)
class RiskThresholds:
    """L5/S1 entropy cut-offs. Entropy depends on the map size: these suit 160 x 160 maps."""

    flag_entropy: float = 5.0
    high_entropy: float = 5.5
    medium_entropy: float = 4.0

    def __post_init__(self) -> None:
        for name in ("flag_entropy", "high_entropy", "medium_entropy"):
            if not math.isfinite(getattr(self, name)):
                raise UsageError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not self.medium_entropy <= self.high_entropy:
            raise UsageError(
                f"medium_entropy ({self.medium_entropy}) must not exceed "
                f"high_entropy ({self.high_entropy})"
            )

    def flag(self, l5_s1_entropy: float) -> bool:
        """The seed's rule: flagged when L5/S1 entropy exceeds ``flag_entropy``."""
        return bool(_finite_entropy(l5_s1_entropy) > self.flag_entropy)

    def risk(self, l5_s1_entropy: float) -> str:
        """High above ``high_entropy``, Low below ``medium_entropy``, Medium in between
        (inclusive)."""
        e = _finite_entropy(l5_s1_entropy)
        if e > self.high_entropy:
            return "High"
        if e < self.medium_entropy:
            return "Low"
        return "Medium"


def _finite_entropy(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):  # NaN compares False everywhere: it would read as Low
        raise NonFiniteMapError(f"L5/S1 entropy is {value}: no risk band without a number")
    return value


def resolve_thresholds(
    base: RiskThresholds | dict | None = None, source: str = "", **overrides
) -> RiskThresholds:
    """``base`` (a checkpoint's or a run's bands; the seed's defaults when None) with the
    ``overrides`` that are not None (command-line flags) applied on top.

    An override replaces only its own band. When the result does not fit together (a Medium
    above a given High), the ValueError names every band, its value and where it came from:
    ``source`` (e.g. "the run's manifest") for ``base``, "command line" for an override.
    """
    if isinstance(base, dict):
        base = RiskThresholds(
            **{k: float(v) for k, v in base.items() if k in RiskThresholds.__dataclass_fields__}
        )
    source = source if base else "the seed's defaults"
    base = base or RiskThresholds()
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return dataclasses.replace(base, **given)
    except ValueError as exc:
        if not given:
            raise
        bands = ", ".join(
            f"{name} {given.get(name, getattr(base, name)):g} "
            f"({'command line' if name in given else source or 'base'})"
            for name in RiskThresholds.__dataclass_fields__
        )
        raise UsageError(
            f"{exc}. Bands: {bands}. A threshold given on the command line replaces only its "
            f"own band; the others stay those of {source or 'the base'}: give the conflicting "
            "ones too (--flag_threshold, --high_threshold, --medium_threshold)"
        ) from None


def normal_calibrated_thresholds(normal_l5_s1_entropy) -> RiskThresholds:
    """Bands for a localizer whose entropy scale differs from the real checkpoint's, set from
    held-out normal studies: Medium above their 95th percentile, High above their maximum, the
    flag half-way between."""
    e = np.asarray(normal_l5_s1_entropy, dtype=float)
    medium, high = float(np.percentile(e, 95)), float(e.max())
    return RiskThresholds(
        flag_entropy=(medium + high) / 2, high_entropy=high, medium_entropy=medium
    )


def risk_level(l5_s1_entropy: float, thresholds: RiskThresholds = RiskThresholds()) -> str:
    """``thresholds.risk(l5_s1_entropy)``: kept for callers of round 1."""
    return thresholds.risk(l5_s1_entropy)


def shannon_entropy(weights: np.ndarray) -> float:
    """Shannon entropy (natural log) of non-negative ``weights`` normalised to sum 1."""
    p = np.asarray(weights, dtype=np.float64).ravel()
    if not np.isfinite(p).all():
        # NaN compares false everywhere: without this check a NaN map has entropy -0.0.
        raise NonFiniteMapError("cannot take the entropy of a map with NaN or infinite values")
    total = p.sum()
    if total <= 0:
        raise NonFiniteMapError("cannot take the entropy of a map that sums to zero")
    p = p / total
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def block_sums(level_map: np.ndarray, grid: int = SPATIAL_GRID) -> np.ndarray:
    """Sums of ``level_map`` over a ``grid`` x ``grid`` partition (edges absorb the remainder);
    a stack of maps (..., H, W) gives one (..., grid, grid) per map."""
    h, w = level_map.shape[-2:]
    rows = np.linspace(0, h, grid + 1).astype(int)
    cols = np.linspace(0, w, grid + 1).astype(int)
    row_sums = np.add.reduceat(np.asarray(level_map, np.float64), rows[:-1], axis=-2)
    return np.add.reduceat(row_sums, cols[:-1], axis=-1)


def spatial_entropy(level_map: np.ndarray, grid: int = SPATIAL_GRID) -> float:
    """Entropy of where the mass lies, at the coarse scale of a ``grid`` x ``grid`` partition."""
    return shannon_entropy(block_sums(level_map, grid))


def level_point(level_map: np.ndarray, threshold: float = POINT_THRESHOLD):
    """Mean (x, y) of the pixels above ``threshold`` in map pixels, or None when there are none."""
    ys, xs = np.nonzero(level_map > threshold)
    if xs.size == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def model_pixel_mm(
    pixel_spacing, slice_shape: tuple[int, int], map_shape: tuple[int, int]
) -> tuple[float, float]:
    """Size in mm (row step, column step) of one pixel of a map resized from the slice.

    Args:
        pixel_spacing: the slice's DICOM PixelSpacing (between rows, between columns), mm.
        slice_shape: (H, W) of the original slice.
        map_shape: (S, S) of the model input and its maps.
    """
    row_mm, col_mm = (float(v) for v in pixel_spacing)
    (h, w), (sh, sw) = slice_shape, map_shape
    return row_mm * h / sh, col_mm * w / sw


def second_peak(
    level_map: np.ndarray,
    pixel_mm: tuple[float, float],
    min_distance_mm: float = PEAK2_MIN_DISTANCE_MM,
) -> tuple[float, float, float]:
    """The largest value farther than ``min_distance_mm`` from the map's peak, over the peak.

    A level map with one sharp blob gives a ratio near 0; a localizer torn between two discs
    (a sixth lumbar-looking disc, or the count shifted by one) gives a ratio near 1.

    Args:
        level_map: (S, S) probabilities of one level.
        pixel_mm: (row step, column step) of one map pixel in mm (:func:`model_pixel_mm`).
        min_distance_mm: how far from the peak the second one must lie.

    Returns:
        (ratio, dx_mm, dy_mm): ``ratio`` in [0, 1]; (dx, dy) is where the second peak lies
        relative to the first, in mm along the image columns and rows (dy > 0: lower in the
        image). (0, nan, nan) when no pixel lies that far or the map is all zero.
    """
    m = np.asarray(level_map, dtype=np.float64)
    row_mm, col_mm = pixel_mm
    if not (row_mm > 0 and col_mm > 0):
        raise ValueError(f"pixel size must be positive, got {pixel_mm}")
    py, px = np.unravel_index(int(np.argmax(m)), m.shape)
    peak = m[py, px]
    # Offsets along each axis, broadcast: the same numbers as full (S, S) grids, a column and a
    # row of them instead.
    dy = ((np.arange(m.shape[0]) - py) * row_mm)[:, None]
    dx = ((np.arange(m.shape[1]) - px) * col_mm)[None, :]
    far = dx**2 + dy**2 > min_distance_mm**2
    if peak <= 0 or not far.any():
        return 0.0, math.nan, math.nan
    i = int(np.argmax(np.where(far, m, -np.inf)))
    y, x = divmod(i, m.shape[1])
    return float(m.flat[i] / peak), float(dx[0, x]), float(dy[y, 0])


def mass_outside_peak(
    level_map: np.ndarray, core_fraction: float = CORE_FRACTION, dilations: int = CORE_DILATIONS
) -> float:
    """Share of the above-floor mass outside the peak's blob.

    The floor is the map's median (the background level a down-weighted background leaves in
    every pixel); the blob is the 8-connected component of {map > ``core_fraction`` x peak}
    that holds the peak, grown by ``dilations`` 3 x 3 dilations.

    Returns:
        A share in [0, 1]; 0 for a map with nothing above its median.
    """
    m = np.asarray(level_map, dtype=np.float64)
    return _mass_outside(m, np.median(m), core_fraction, dilations)


def _mass_outside(m: np.ndarray, median: float, core_fraction: float, dilations: int) -> float:
    """:func:`mass_outside_peak` of a float64 map whose median is known."""
    # OpenCV, not scipy.ndimage: the main process has cv2 already (the model's input), and
    # importing scipy.ndimage cost 0.18 s of CPU in the first batch, on the start-up's path.
    import cv2

    excess = np.maximum(m - median, 0.0)
    total = excess.sum()
    if total <= 0:
        return 0.0
    # The blob and its dilation are found inside the bounding boxes of what they can reach
    # (the pixels over the core threshold; the blob grown by ``dilations``): outside them both
    # are False, so the result is the same at a fraction of the cost on a 160 x 160 map.
    above = _crop(m > core_fraction * m.max())
    _, components = cv2.connectedComponents(above.array.astype(np.uint8), connectivity=8)
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    label = components[peak[0] - above.top, peak[1] - above.left]
    core = np.zeros(m.shape, dtype=bool)
    core[above.window] = components == label
    if dilations > 0:
        # n 3 x 3 dilations are one (2n + 1)-square dilation, a third of the time; outside the
        # map counts as background (borderValue 0), as in the definition.
        grown = _crop(core, margin=dilations)
        size = 2 * dilations + 1
        core[grown.window] = cv2.dilate(
            grown.array.astype(np.uint8),
            np.ones((size, size), np.uint8),
            borderType=cv2.BORDER_CONSTANT,
            borderValue=0,
        ).astype(bool)
    return float(excess[~core].sum() / total)


@dataclass(frozen=True)
class _Crop:
    array: np.ndarray
    window: tuple[slice, slice]

    @property
    def top(self) -> int:
        return self.window[0].start

    @property
    def left(self) -> int:
        return self.window[1].start


def _crop(mask: np.ndarray, margin: int = 0) -> _Crop:
    """The bounding box of a 2-D mask's True pixels grown by ``margin`` (within the mask)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        window = (slice(0, 0), slice(0, 0))
    else:
        window = tuple(
            slice(max(0, int(v[0]) - margin), min(size, int(v[-1]) + 1 + margin))
            for v, size in ((rows, mask.shape[0]), (cols, mask.shape[1]))
        )
    return _Crop(mask[window], window)


def top_k_entropy(level_map: np.ndarray, k: int = TOP_K) -> float:
    """Entropy of the ``k`` largest values renormalised to sum 1: how evenly the strongest
    pixels share the mass, blind to the background floor that dominates the whole-map entropy."""
    values = np.asarray(level_map, dtype=np.float64).ravel()
    return float(_top_k_entropies(values[None], k)[0])


def _top_k_entropies(rows: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k_entropy` of each row of a 2-D float64 array."""
    k = min(k, rows.shape[1])
    return _entropies(np.partition(rows, rows.shape[1] - k, axis=1)[:, rows.shape[1] - k :])


def shape_features(level_map: np.ndarray, pixel_mm: tuple[float, float]) -> dict:
    """``peak2`` (with its offset ``peak2_dx_mm``, ``peak2_dy_mm``), ``mass_out`` and
    ``top100_entropy`` of one level map; see the functions above."""
    m = np.asarray(level_map, dtype=np.float64)
    return _levels_metrics(m[None], pixel_mm)[0]


def level_metrics(level_map: np.ndarray, pixel_mm: tuple[float, float] | None = None) -> dict:
    """Per-level metrics of one probability map (values in [0, 1]).

    With ``pixel_mm`` (mm per map pixel, rows then columns) the shape features are added too;
    without it they cannot be measured in mm and are left out.
    """
    maps = np.asarray(level_map, dtype=np.float64)[None]
    return _levels_metrics(maps, pixel_mm, with_level=True)[0]


def _levels_metrics(
    maps: np.ndarray, pixel_mm: tuple[float, float] | None, with_level: bool = False
) -> list[dict]:
    """:func:`level_metrics` of each of a (L, H, W) float64 stack of finite maps, the shape
    features alone unless ``with_level``. What can be is computed for all maps at once (the
    same float64 numbers, map by map, as one map at a time: tests/test_uncertainty.py)."""
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    out: list[dict] = [{} for _ in range(n)]
    if with_level:
        entropies = _entropies(flat)
        spatial = _entropies(block_sums(maps).reshape(n, -1))
        confidence = flat.max(axis=1)
        for i, o in enumerate(out):
            o.update(
                confidence=float(confidence[i]),
                entropy=float(entropies[i]),
                spatial_entropy=float(spatial[i]),
                normalized_entropy=float(entropies[i]) / math.log(h * w),
                point=level_point(maps[i]),
            )
    if pixel_mm is None:
        return out
    medians = _medians(flat)
    top = _top_k_entropies(flat, TOP_K)
    for i, o in enumerate(out):
        ratio, dx, dy = second_peak(maps[i], pixel_mm)
        o.update(
            peak2=ratio,
            peak2_dx_mm=dx,
            peak2_dy_mm=dy,
            mass_out=_mass_outside(maps[i], medians[i], CORE_FRACTION, CORE_DILATIONS),
            top100_entropy=float(top[i]),
        )
    return out


def _medians(rows: np.ndarray) -> np.ndarray:
    """``np.median`` of each row of a 2-D float64 array without NaN, the same numbers: one
    partition at the upper middle (numpy's partitions at both middles, several times slower)
    and the largest value below it."""
    half = rows.shape[1] // 2
    part = np.partition(rows, half, axis=1)
    upper = part[:, half]
    if rows.shape[1] % 2:
        return upper
    return (part[:, :half].max(axis=1) + upper) / 2


def _entropies(rows: np.ndarray) -> np.ndarray:
    """:func:`shannon_entropy` of each row of a 2-D float64 array, in one pass when every
    weight is positive (each row's sums are then the ones a single row's would be)."""
    totals = rows.sum(axis=1, keepdims=True)
    if np.isfinite(rows).all() and (totals > 0).all():
        p = rows / totals
        if (p > 0).all():
            return -(p * np.log(p)).sum(axis=1)
    return np.array([shannon_entropy(row) for row in rows])


def study_metrics(
    probs: np.ndarray, pixel_mm: tuple[float, float] | None = None
) -> dict[str, dict]:
    """Metrics for every disc level of one study's (6, S, S) softmax output, keyed by level key.

    ``pixel_mm`` (see :func:`model_pixel_mm`) adds the shape features of :func:`shape_features`.
    """
    if probs.ndim != 3 or probs.shape[0] != len(LEVEL_KEYS) + 1:
        raise ValueError(f"expected probabilities of shape (6, S, S), got {probs.shape}")
    check_maps(probs)
    # Every metric is taken in float64: the maps are converted once, not once per metric.
    maps = _levels_metrics(np.asarray(probs[1:], dtype=np.float64), pixel_mm, with_level=True)
    return dict(zip(LEVEL_KEYS, maps, strict=True))


def check_maps(probs: np.ndarray) -> None:
    """Refuse maps no verdict may come from: any NaN or infinite value, or a level map summing
    to zero (a checkpoint with NaN weights, or a broken input, gives such maps).

    Raises:
        NonFiniteMapError: names the level and what is wrong.
    """
    probs = np.asarray(probs)
    bad = ~np.isfinite(probs)
    if bad.any():
        raise NonFiniteMapError(
            f"the localizer's maps hold {int(bad.sum())} NaN or infinite values of "
            f"{probs.size}: the checkpoint's weights or the input are broken"
        )
    for i, key in enumerate(LEVEL_KEYS):
        if not probs[i + 1].sum() > 0:
            raise NonFiniteMapError(f"the {key} map sums to zero: no entropy can be computed")


def mutual_information(view_probs: np.ndarray) -> np.ndarray:
    """Per-level epistemic uncertainty across test-time views: H(mean) - mean(H).

    Args:
        view_probs: (V, 6, S, S) softmax maps of V views of the same slice, aligned back to one
            frame. Each level map is normalised to a spatial distribution, as for ``entropy``.

    Returns:
        (5,) mutual information in nats, one per disc level; 0 when all views agree.
    """
    maps = np.asarray(view_probs, dtype=np.float64)[:, 1:]
    maps = maps / np.maximum(maps.sum(axis=(2, 3), keepdims=True), _EPS)
    mean = maps.mean(axis=0)

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(np.maximum(p, _EPS))).sum(axis=(-2, -1))

    return np.maximum(entropy(mean) - entropy(maps).mean(axis=0), 0.0)


# Levels whose maps on the parasagittal slices are measured (``lstv infer --parasagittal``):
# where a transitional segment changes the count.
PARASAGITTAL_LEVELS = ("l4_l5", "l5_s1")


def parasagittal_features(
    side_probs: np.ndarray | None,
    centre_levels: dict[str, dict],
    pixel_mm: tuple[float, float] | None = None,
) -> dict:
    """How the maps of the slices beside the centre agree with it (the columns of
    :data:`lstv.columns.PARASAGITTAL`).

    Args:
        side_probs: (N, 6, S, S) maps of the N parasagittal slices, or None (none were read).
        centre_levels: the centre slice's :func:`study_metrics` (its points, in map pixels).
        pixel_mm: mm per map pixel (:func:`model_pixel_mm`); without it the second peak and
            the shift in mm are NaN.

    Returns:
        ``parasagittal_slices`` (N) and, per level of :data:`PARASAGITTAL_LEVELS`, the lowest
        peak over the N slices (``{level}_para_min_confidence``) and the mean second peak
        (``{level}_para_mean_peak2``); ``l5_s1_para_shift_mm``, the largest distance from the
        centre's L5/S1 point to a side slice's. NaN where nothing was measured.
    """
    n = 0 if side_probs is None else len(side_probs)
    out: dict = {"parasagittal_slices": n}
    for key in PARASAGITTAL_LEVELS:
        maps = [] if n == 0 else side_probs[:, LEVEL_KEYS.index(key) + 1]
        out[f"{key}_para_min_confidence"] = min((float(m.max()) for m in maps), default=math.nan)
        peak2 = [second_peak(m, pixel_mm)[0] for m in maps] if pixel_mm is not None else []
        out[f"{key}_para_mean_peak2"] = float(np.mean(peak2)) if peak2 else math.nan
    centre = centre_levels.get("l5_s1", {}).get("point")
    shifts = []
    if n and centre is not None and pixel_mm is not None:
        row_mm, col_mm = pixel_mm
        for m in side_probs[:, LEVEL_KEYS.index("l5_s1") + 1]:
            point = level_point(m)
            if point is not None:
                shifts.append(math.hypot((point[0] - centre[0]) * col_mm,
                                         (point[1] - centre[1]) * row_mm))
    out["l5_s1_para_shift_mm"] = max(shifts, default=math.nan)
    return out
