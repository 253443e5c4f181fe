"""Figures of one study: the slice with each level's heatmap, and the per-level metrics."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lstv.levels import LEVEL_KEYS, LEVELS

LEVEL_COLOURS = ("#4e79a7", "#59a14f", "#edc948", "#f28e2b", "#e15759")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap_figure(image: np.ndarray, probs: np.ndarray, metrics: dict, title: str = ""):
    """The model input and, per level, its heatmap with the point (model pixels) and metrics.

    ``metrics`` is :func:`lstv.uncertainty.study_metrics` output (points in model pixels).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.6))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(title)
    for i, (ax, key, name) in enumerate(zip(axes[1:], LEVEL_KEYS, LEVELS, strict=True)):
        m = metrics[key]
        ax.imshow(image, cmap="gray")
        ax.imshow(probs[i + 1], cmap="hot", alpha=0.55, vmin=0, vmax=1)
        if m["point"] is not None:
            ax.plot(*m["point"], "c+", ms=12, mew=2)
        ax.set_title(f"{name}\nH={m['entropy']:.2f}  p={m['confidence']:.2f}")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def metrics_figure(metrics: dict, risk: str):
    """Bars of entropy and peak confidence per level."""
    plt = _pyplot()
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_h.bar(LEVELS, [metrics[k]["entropy"] for k in LEVEL_KEYS], color=LEVEL_COLOURS)
    ax_h.set_ylabel("Shannon entropy (nats)")
    ax_h.set_title(f"entropy (risk {risk})")
    ax_c.bar(LEVELS, [metrics[k]["confidence"] for k in LEVEL_KEYS], color=LEVEL_COLOURS)
    ax_c.set_ylim(0, 1)
    ax_c.set_ylabel("peak probability")
    ax_c.set_title("confidence")
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a figure, which is closed afterwards."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def save_study_figures(folder: Path, sample, probs: np.ndarray, metrics: dict, risk: str):
    """Debug mode: ``{study}_heatmaps.png`` and ``{study}_metrics.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study = sample.task.study_id
    title = f"study {study}\nslice {sample.slice_index + 1} of {sample.n_slices}"
    paths = [folder / f"{study}_heatmaps.png", folder / f"{study}_metrics.png"]
    figures = [heatmap_figure(sample.image, probs, metrics, title), metrics_figure(metrics, risk)]
    for path, fig in zip(paths, figures, strict=True):
        path.write_bytes(figure_png(fig))
    return paths
