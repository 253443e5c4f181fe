"""Matplotlib figures of the report and of ``lstv evaluate`` (Agg canvas, no pyplot state).

Only the report and evaluate commands import this module, so matplotlib never slows
``lstv --help``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lstv.levels import LEVEL_KEYS, LEVELS
from lstv.study_view import LEVEL_COLOURS
from lstv.uncertainty import RiskThresholds

RISK_COLORS = {"High": "#c62828", "Medium": "#ef8f00", "Low": "#2e7d32"}
RISK_ORDER = ("High", "Medium", "Low")
# Band shading behind histograms: the same hues as the risk colours, faint.
_BAND_ALPHA = 0.10
# Overlay colours of the two levels that matter for LSTV, distinguishable by colour-blind readers.
_TEXT = "#263238"
_GRID = "#cfd8dc"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color=_GRID, linewidth=0.6, alpha=0.7)
    ax.set_axisbelow(True)
    ax.tick_params(colors=_TEXT, labelsize=9)


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def png_data_uri(fig: Figure, dpi: int = 110) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, to embed in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def save_png(fig: Figure, path: str | Path, dpi: int = 130) -> Path:
    """Write the figure to ``path`` as PNG."""
    path = Path(path)
    path.write_bytes(png_bytes(fig, dpi))
    return path


def _bands(ax, thresholds: RiskThresholds, orientation: str = "vertical") -> None:
    """Shade the Low / Medium / High bands and mark the flag threshold."""
    lo, hi = thresholds.medium_entropy, thresholds.high_entropy
    span = ax.axvspan if orientation == "vertical" else ax.axhspan
    line = ax.axvline if orientation == "vertical" else ax.axhline
    span(-1e3, lo, color=RISK_COLORS["Low"], alpha=_BAND_ALPHA, lw=0)
    span(lo, hi, color=RISK_COLORS["Medium"], alpha=_BAND_ALPHA, lw=0)
    span(hi, 1e3, color=RISK_COLORS["High"], alpha=_BAND_ALPHA, lw=0)
    line(thresholds.flag_entropy, color="#37474f", ls="--", lw=1.2)


def _entropy_range(values: np.ndarray, thresholds: RiskThresholds) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    lo = min(finite.min() if finite.size else 0.0, thresholds.medium_entropy)
    hi = max(finite.max() if finite.size else 1.0, thresholds.high_entropy)
    pad = 0.06 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def entropy_histograms(df: pd.DataFrame, thresholds: RiskThresholds) -> Figure:
    """Histograms of L5/S1 and L4/L5 entropy with the risk bands and the flag threshold."""
    fig = _figure(11.0, 3.4)
    axes = fig.subplots(1, 2)
    for ax, key, name in zip(axes, ("l5_s1", "l4_l5"), ("L5/S1", "L4/L5"), strict=True):
        values = df[f"{key}_entropy"].to_numpy(dtype=float)
        lo, hi = _entropy_range(df["l5_s1_entropy"].to_numpy(float), thresholds)
        lo2, hi2 = _entropy_range(values, thresholds)
        xlim = (min(lo, lo2), max(hi, hi2))
        _style(ax)
        _bands(ax, thresholds)
        finite = values[np.isfinite(values)]
        bins = np.linspace(*xlim, 41)
        ax.hist(finite, bins=bins, color="#455a64", edgecolor="white", linewidth=0.5)
        ax.set_xlim(*xlim)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} entropy (n = {finite.size})", fontsize=11, color=_TEXT, loc="left")
        ax.set_xlabel("Shannon entropy of the level map (nats)", fontsize=9, color=_TEXT)
        ax.set_ylabel("studies", fontsize=9, color=_TEXT)
    handles = [
        _patch(RISK_COLORS["Low"], f"Low < {thresholds.medium_entropy:g}"),
        _patch(
            RISK_COLORS["Medium"],
            f"Medium {thresholds.medium_entropy:g}–{thresholds.high_entropy:g}",
        ),
        _patch(RISK_COLORS["High"], f"High > {thresholds.high_entropy:g}"),
        _line("#37474f", f"flag > {thresholds.flag_entropy:g}"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    return fig


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, alpha=0.35, edgecolor=color, label=label)


def _line(color: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=color, ls="--", lw=1.2, label=label)


def entropy_confidence_scatter(
    df: pd.DataFrame, risk: pd.Series, thresholds: RiskThresholds
) -> Figure:
    """Entropy against peak confidence for L5/S1 and L4/L5, coloured by the study's risk."""
    fig = _figure(11.0, 3.8)
    axes = fig.subplots(1, 2)
    risk = np.asarray(risk)
    for ax, key, name in zip(axes, ("l5_s1", "l4_l5"), ("L5/S1", "L4/L5"), strict=True):
        _style(ax)
        _bands(ax, thresholds, orientation="horizontal")
        x = df[f"{key}_confidence"].to_numpy(dtype=float)
        y = df[f"{key}_entropy"].to_numpy(dtype=float)
        # Low first so that the rarer, more important High points are drawn on top.
        for level in reversed(RISK_ORDER):
            sel = risk == level
            if sel.any():
                ax.scatter(
                    x[sel],
                    y[sel],
                    s=16,
                    color=RISK_COLORS[level],
                    alpha=0.75,
                    edgecolors="white",
                    linewidths=0.3,
                    label=f"{level} ({int(sel.sum())})",
                )
        ylo, yhi = _entropy_range(
            np.concatenate([y, df["l5_s1_entropy"].to_numpy(float)]), thresholds
        )
        ax.set_ylim(ylo, yhi)
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(f"{name}: entropy vs peak confidence", fontsize=11, color=_TEXT, loc="left")
        ax.set_xlabel("peak probability of the level map", fontsize=9, color=_TEXT)
        ax.set_ylabel("entropy (nats)", fontsize=9, color=_TEXT)
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: RISK_ORDER.index(labels[i].split()[0]))
    fig.legend(
        [handles[i] for i in order],
        [f"risk {labels[i]}" for i in order],
        loc="outside lower center",
        ncols=3,
        fontsize=9,
        frameon=False,
    )
    return fig


def level_boxplot(df: pd.DataFrame, thresholds: RiskThresholds) -> Figure:
    """Entropy and peak confidence of every disc level side by side."""
    fig = _figure(11.0, 3.6)
    ax_e, ax_c = fig.subplots(1, 2)
    colors = ["#90a4ae"] * (len(LEVEL_KEYS) - 2) + [
        LEVEL_COLOURS[3],
        LEVEL_COLOURS[4],
    ]
    for ax, metric, label in (
        (ax_e, "entropy", "entropy (nats)"),
        (ax_c, "confidence", "peak probability"),
    ):
        _style(ax)
        data = []
        for key in LEVEL_KEYS:
            v = df[f"{key}_{metric}"].to_numpy(dtype=float)
            data.append(v[np.isfinite(v)])
        box = ax.boxplot(
            data,
            tick_labels=list(LEVELS),
            patch_artist=True,
            widths=0.55,
            showfliers=True,
            medianprops={"color": _TEXT, "lw": 1.4},
            flierprops={"marker": "o", "ms": 3, "mfc": "#607d8b", "mec": "none", "alpha": 0.6},
        )
        for patch, color in zip(box["boxes"], colors, strict=True):
            patch.set_facecolor(color)
            patch.set_alpha(0.55)
            patch.set_edgecolor(_TEXT)
        ax.set_ylabel(label, fontsize=9, color=_TEXT)
        ax.set_title(
            f"{label.split(' (')[0].capitalize()} by level", fontsize=11, color=_TEXT, loc="left"
        )
    ax_e.axhline(
        thresholds.flag_entropy,
        color="#37474f",
        ls="--",
        lw=1.0,
        label=f"flag threshold {thresholds.flag_entropy:g}",
    )
    # A legend placed by matplotlib away from the boxes; a text label could sit on a box.
    ax_e.legend(loc="best", fontsize=8, frameon=True, framealpha=0.9)
    ax_c.set_ylim(-0.02, 1.02)
    return fig


def roc_figure(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    groups: Mapping[str, np.ndarray],
    result: Mapping,
) -> Figure:
    """ROC curves: entropy per level, the L5/S1 scores, and L5/S1 entropy per LSTV type.

    Args:
        y: 1 transitional, 0 normal, for the joined studies.
        scores: Score name -> values over the same studies.
        groups: Group name -> row mask (``all`` and one per type), as from ``label_groups``.
        result: The evaluation result; its AUCs label the curves.
    """
    from sklearn.metrics import roc_curve

    def curve(ax, name: str, group: str, label: str, color=None, ls="-") -> None:
        mask = groups[group] & ~np.isnan(scores[name])
        yy, ss = y[mask], scores[name][mask]
        if yy.min() == yy.max():
            return
        fpr, tpr, _ = roc_curve(yy, ss)
        auc = result["groups"][group]["scores"][name]["auc"]
        ax.plot(fpr, tpr, lw=1.8, color=color, ls=ls, label=f"{label}  AUC {auc:.2f}")

    panels = [("Entropy by level", "all")]
    l5_names = [n for n in scores if n.startswith("l5_s1_")] + [
        n for n in scores if n.endswith("_score") and not n.startswith("l5_s1_")
    ]
    panels.append(("L5/S1 scores", "all"))
    types = [g for g in groups if g != "all"]
    if types:
        panels.append(("L5/S1 entropy by LSTV type", "types"))
    fig = _figure(4.2 * len(panels), 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, _) in zip(axes, panels, strict=True):
        _style(ax)
        ax.plot([0, 1], [0, 1], color="#90a4ae", ls=":", lw=1)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("1 - specificity", fontsize=9, color=_TEXT)
        ax.set_ylabel("sensitivity", fontsize=9, color=_TEXT)
        ax.set_title(title, fontsize=11, color=_TEXT, loc="left")
    palette = ["#90a4ae", "#78909c", "#546e7a", LEVEL_COLOURS[3], LEVEL_COLOURS[4]]
    for key, level, color in zip(LEVEL_KEYS, LEVELS, palette, strict=True):
        if f"{key}_entropy" in scores:
            curve(axes[0], f"{key}_entropy", "all", level, color)
    styles = ["-", "--", "-.", ":", (0, (5, 1)), (0, (1, 1))]
    for i, name in enumerate(l5_names):
        label = name.removeprefix("l5_s1_").replace("_", " ")
        curve(axes[1], name, "all", label, ls=styles[i % len(styles)])
    if types and "l5_s1_entropy" in scores:
        curve(axes[2], "l5_s1_entropy", "all", "all transitional", "#37474f")
        for t in types:
            curve(axes[2], "l5_s1_entropy", t, f"{t} vs normal")
    for ax in axes:
        ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9)
    return fig
