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

from lstv.levels import LEVEL_KEYS

POINT_THRESHOLD = 0.5
SPATIAL_GRID = 10
_EPS = 1e-12


class NonFiniteMapError(ValueError):
    """A probability map with NaN or infinite values, or no mass: it gives no verdict."""


@dataclass(frozen=True)
class RiskThresholds:
    """L5/S1 entropy cut-offs. Entropy depends on the map size: these suit 160 x 160 maps."""

    flag_entropy: float = 5.0
    high_entropy: float = 5.5
    medium_entropy: float = 4.0

    def __post_init__(self) -> None:
        if not self.medium_entropy <= self.high_entropy:
            raise ValueError(
                f"medium_entropy ({self.medium_entropy}) must not exceed "
                f"high_entropy ({self.high_entropy})"
            )


def resolve_thresholds(base: RiskThresholds | dict | None = None, **overrides) -> RiskThresholds:
    """``base`` (a checkpoint's or a run's bands; the seed's defaults when None) with the
    ``overrides`` that are not None (command-line flags) applied on top."""
    if isinstance(base, dict):
        base = RiskThresholds(
            **{k: float(v) for k, v in base.items() if k in RiskThresholds.__dataclass_fields__}
        )
    base = base or RiskThresholds()
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


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
    """High above ``high_entropy``, Low below ``medium_entropy``, Medium in between (inclusive)."""
    if l5_s1_entropy > thresholds.high_entropy:
        return "High"
    if l5_s1_entropy < thresholds.medium_entropy:
        return "Low"
    return "Medium"


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
    """Sums of ``level_map`` over a ``grid`` x ``grid`` partition (edges absorb the remainder)."""
    h, w = level_map.shape
    rows = np.linspace(0, h, grid + 1).astype(int)
    cols = np.linspace(0, w, grid + 1).astype(int)
    row_sums = np.add.reduceat(level_map.astype(np.float64), rows[:-1], axis=0)
    return np.add.reduceat(row_sums, cols[:-1], axis=1)


def spatial_entropy(level_map: np.ndarray, grid: int = SPATIAL_GRID) -> float:
    """Entropy of where the mass lies, at the coarse scale of a ``grid`` x ``grid`` partition."""
    return shannon_entropy(block_sums(level_map, grid))


def level_point(level_map: np.ndarray, threshold: float = POINT_THRESHOLD):
    """Mean (x, y) of the pixels above ``threshold`` in map pixels, or None when there are none."""
    ys, xs = np.nonzero(level_map > threshold)
    if xs.size == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def level_metrics(level_map: np.ndarray) -> dict:
    """Per-level metrics of one probability map (values in [0, 1])."""
    h, w = level_map.shape
    entropy = shannon_entropy(level_map)
    return {
        "confidence": float(level_map.max()),
        "entropy": entropy,
        "spatial_entropy": spatial_entropy(level_map),
        "normalized_entropy": entropy / math.log(h * w),
        "point": level_point(level_map),
    }


def study_metrics(probs: np.ndarray) -> dict[str, dict]:
    """Metrics for every disc level of one study's (6, S, S) softmax output, keyed by level key."""
    if probs.ndim != 3 or probs.shape[0] != len(LEVEL_KEYS) + 1:
        raise ValueError(f"expected probabilities of shape (6, S, S), got {probs.shape}")
    check_maps(probs)
    return {key: level_metrics(probs[i + 1]) for i, key in enumerate(LEVEL_KEYS)}


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
