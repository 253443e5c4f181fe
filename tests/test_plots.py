"""The report's figures (lstv.plots): every figure renders as a PNG."""

import numpy as np
import pandas as pd

from lstv.levels import LEVEL_KEYS
from lstv.plots import entropy_histograms, level_boxplot, png_bytes, png_data_uri
from lstv.uncertainty import RiskThresholds


def metrics_table(n=12):
    rng = np.random.default_rng(1)
    data = {"study_id": [str(i) for i in range(n)], "series_id": [str(i) for i in range(n)]}
    for key in LEVEL_KEYS:
        data[f"{key}_entropy"] = rng.uniform(3.5, 6.0, n)
        data[f"{key}_confidence"] = rng.uniform(0.1, 0.9, n)
        data[f"{key}_spatial_entropy"] = rng.uniform(0.1, 1.0, n)
    return pd.DataFrame(data)


def test_the_distribution_figures_render_as_png():
    df = metrics_table()
    for figure in (entropy_histograms, level_boxplot):
        png = png_bytes(figure(df, RiskThresholds()))
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert png_data_uri(entropy_histograms(df, RiskThresholds())).startswith(
        "data:image/png;base64,"
    )
