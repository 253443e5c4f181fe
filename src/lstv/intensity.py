"""The original demo's 8-bit windowing, bit for bit, without sorting or copying the volume.

hengck23's demo stacks a series and normalises it as ``lo, hi = np.percentile(x, (0.1, 99.9))``,
``x = np.clip(x, lo, hi)``, ``x = x - np.min(x)``, ``x = x / np.max(x)``,
``(x * 255).astype(np.uint8)``, in float64. For integer pixel data (what DICOM decodes to) both
steps follow from the value range: the percentiles from a histogram (numpy's default ``linear``
interpolation between order statistics, transcribed from ``numpy.percentile``), and the 8-bit
values from a table that applies the same float64 formula to every value between the minimum and
the maximum. Same numbers; the cost is one histogram pass and one table lookup per slice instead
of a partial sort of a copy and four passes over a float64 copy, and the slices need not be
stacked first. Float data, and integers spread over more than :data:`MAX_TABLE_SIZE` values, take
numpy's own path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Above this many possible values a histogram and a table cost more than they save.
MAX_TABLE_SIZE = 1 << 20
# cv2.calcHist returns float32 counts, exact below 2**24: it never sees more voxels at once.
_CALCHIST_MAX_VOXELS = (1 << 24) - 1


class NoContrastError(ValueError):
    """The window is empty: the upper percentile is not above the lower one."""


def normalise_to_uint8(
    planes: np.ndarray | Sequence[np.ndarray],
    lower: float,
    upper: float,
    keep: slice = slice(None),
) -> np.ndarray:
    """The original's 8-bit volume: clip at the ``lower``/``upper`` percentiles of all voxels,
    then min-max to 0..255 in float64.

    Args:
        planes: one array, or a sequence of same-shape arrays (the slices of a series) that
            stand for their ``np.stack``.
        lower, upper: percentiles in [0, 100].
        keep: the part of the result wanted, along its first axis (the slices a caller
            reads): only those are converted, with the window of all the voxels.

    Returns:
        uint8, the shape of ``planes`` (or of their stack), ``[keep]``.

    Raises:
        NoContrastError: the upper percentile is not above the lower one.
    """
    source = _IntegerPlanes.of(planes)
    if source is None:
        volume = _stack(planes)
        lo, hi = np.percentile(volume, (lower, upper))
        _check_contrast(lo, hi)
        return _window(volume, lo, hi)[keep]
    lo, hi = source.percentiles((lower, upper))
    _check_contrast(lo, hi)
    return source.window(lo, hi, keep)


def percentiles(planes: np.ndarray | Sequence[np.ndarray], q: Sequence[float]) -> np.ndarray:
    """``np.percentile`` of ``planes`` (or of their stack) at ``q``: the same float64 numbers.

    Raises:
        ValueError: a percentile outside [0, 100].
    """
    source = _IntegerPlanes.of(planes)
    return np.percentile(_stack(planes), q) if source is None else source.percentiles(q)


def _check_contrast(lo, hi) -> None:
    if not hi > lo:
        raise NoContrastError(f"series has no contrast (all pixels within {lo:g}..{hi:g})")


def _stack(planes) -> np.ndarray:
    return planes if isinstance(planes, np.ndarray) else np.stack(planes)


def _window(x: np.ndarray, lo, hi) -> np.ndarray:
    # The original's arithmetic, step by step; float64 bounds make it float64 throughout.
    x = np.clip(x, np.float64(lo), np.float64(hi))
    x = x - np.min(x)
    x = x / np.max(x)
    return (x * 255).astype(np.uint8)


class _IntegerPlanes:
    """Integer planes seen as indices into a table of their possible values.

    ``index(plane)`` maps each value v to ``v - offset`` (non-negative, below ``table_size``):
    8- and 16-bit data map by a view (and a sign flip for signed data), wider integers by
    subtracting their minimum.
    """

    def __init__(self, planes: list[np.ndarray], shape: tuple[int, ...], vmin: int, vmax: int):
        self.planes = planes
        self.shape = shape
        self.dtype = planes[0].dtype
        self.vmin, self.vmax = vmin, vmax
        self.n = sum(p.size for p in planes)
        if self.dtype.itemsize <= 2:
            self.offset = int(np.iinfo(self.dtype).min)
        else:
            self.offset = vmin
        self.table_size = vmax - self.offset + 1

    @classmethod
    def of(cls, planes) -> _IntegerPlanes | None:
        """The planes, or None when numpy's own path applies: not integers, no voxels, planes
        that differ in dtype or shape (``np.stack`` would convert them), non-native byte order,
        a value range over :data:`MAX_TABLE_SIZE`."""
        if isinstance(planes, np.ndarray):
            shape, planes = planes.shape, [planes]
        else:
            planes = list(planes)
            if not planes or any(
                p.dtype != planes[0].dtype or p.shape != planes[0].shape for p in planes
            ):
                return None
            shape = (len(planes), *planes[0].shape)
        dtype = planes[0].dtype
        if dtype.kind not in "ui" or not dtype.isnative or planes[0].size == 0:
            return None
        vmin = min(int(p.min()) for p in planes)
        vmax = max(int(p.max()) for p in planes)
        if vmax - vmin >= MAX_TABLE_SIZE:
            return None
        return cls(planes, shape, vmin, vmax)

    def index(self, plane: np.ndarray) -> np.ndarray:
        if self.dtype.itemsize <= 2:
            unsigned = plane.view(f"u{self.dtype.itemsize}")
            if self.offset == 0:
                return unsigned
            return unsigned ^ unsigned.dtype.type(-self.offset)  # v - min of the dtype
        # Wrap-around subtraction in the data's own width, read unsigned: exact, as the range
        # is below 2**20.
        shifted = (plane - np.array(self.offset).astype(self.dtype)).view(f"u{self.dtype.itemsize}")
        return shifted.astype(np.uint16 if self.table_size <= 1 << 16 else np.intp)

    def counts(self) -> np.ndarray:
        """int64 number of voxels of each value from ``vmin`` to ``vmax``."""
        size = self.table_size
        first = self.vmin - self.offset
        indices = (self.index(p).reshape(-1) for p in self.planes)
        if size > 1 << 16:
            counts = sum(np.bincount(i, minlength=size) for i in indices)
            return counts[first:]
        import cv2

        counts = np.zeros(size, np.int64)
        hist, pending = None, 0
        for flat in indices:
            for start in range(0, flat.size, _CALCHIST_MAX_VOXELS):
                chunk = flat[start : start + _CALCHIST_MAX_VOXELS].reshape(1, -1)
                if pending + chunk.size > _CALCHIST_MAX_VOXELS:
                    counts += hist.reshape(-1).astype(np.int64)
                    hist, pending = None, 0
                hist = cv2.calcHist(
                    [chunk], [0], None, [size], [0, size], hist=hist, accumulate=hist is not None
                )
                pending += chunk.size
        if hist is not None:
            counts += hist.reshape(-1).astype(np.int64)
        return counts[first:]

    def percentiles(self, q: Sequence[float]) -> np.ndarray:
        """numpy's ``_quantile`` for ``method="linear"``, reading the order statistics off the
        histogram instead of a partitioned copy."""
        quantiles = np.true_divide(np.atleast_1d(q), 100)
        if not np.all((quantiles >= 0) & (quantiles <= 1)):
            raise ValueError("Percentiles must be in the range [0, 100]")
        n = self.n
        virtual = np.asanyarray((n - 1) * quantiles)
        previous = np.floor(virtual)
        following = previous + 1
        above = virtual >= n - 1
        previous[above] = -1
        following[above] = -1
        previous = previous.astype(np.intp)
        following = following.astype(np.intp)
        gamma = np.asanyarray(virtual - previous, dtype=virtual.dtype)
        cumulative = np.cumsum(self.counts())

        def order_statistics(ranks: np.ndarray) -> np.ndarray:
            values = self.vmin + np.searchsorted(cumulative, ranks % n, side="right")
            return values.astype(self.dtype)

        a, b = order_statistics(previous), order_statistics(following)
        # numpy's _lerp, the difference taken in the data's own dtype as numpy takes it.
        diff_b_a = b - a
        result = np.add(a, diff_b_a * gamma)
        np.subtract(
            b,
            diff_b_a * (1 - gamma),
            out=result,
            where=gamma >= 0.5,
            casting="unsafe",
            dtype=result.dtype,
        )
        return result

    def window(self, lo, hi, keep: slice = slice(None)) -> np.ndarray:
        """The original's 8-bit values (``[keep]``) through a table of every value from the
        minimum to the maximum; both occur in the data, so the table's min and max after
        clipping are the volume's and the float64 arithmetic is the same, value by value."""
        table = np.zeros(self.table_size, np.uint8)
        values = np.arange(self.vmin, self.vmax + 1).astype(self.dtype)
        table[self.vmin - self.offset :] = _window(values, lo, hi)
        if len(self.planes) == 1 and self.shape == self.planes[0].shape:  # one array
            return np.take(table, self.index(self.planes[0]))[keep]
        planes = self.planes[keep]
        out = np.empty((len(planes), *self.shape[1:]), np.uint8)
        for plane, target in zip(planes, out, strict=True):
            np.take(table, self.index(plane), out=target)
        return out
