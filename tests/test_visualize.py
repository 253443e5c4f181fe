"""Debug figures of one study (lstv.visualize): the heatmaps and the metric bars."""

import numpy as np

from lstv.uncertainty import study_metrics
from lstv.visualize import figure_png, heatmap_figure, metrics_figure


def maps(size=48):
    probs = np.full((6, size, size), 1e-3)
    for i in range(1, 6):
        probs[i, 8 * i, size // 2] = 0.9
    return probs


def test_a_study_s_figures_render_with_and_without_points():
    probs = maps()
    metrics = study_metrics(probs)
    image = np.zeros((48, 48), np.uint8)
    for fig in (
        heatmap_figure(image, probs, metrics, "slice 1 of 1"),
        metrics_figure(metrics, "Low"),
    ):
        png = figure_png(fig)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    metrics["l5_s1"]["point"] = None  # no pixel above 0.5: drawn without a marker
    assert figure_png(heatmap_figure(image, probs, metrics)).startswith(b"\x89PNG")
