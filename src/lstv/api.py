"""One call each for notebooks: read a series, load a model, analyse a volume.

>>> import lstv
>>> series = lstv.read_series("data/raw/train_images/4003253/702807833")
>>> predictor = lstv.load_model("models/point_net_checkpoint.pth")
>>> metrics = lstv.analyse_volume(predictor, series.volume)
>>> metrics["l5_s1"]["entropy"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstv.dicom import Series, read_series
from lstv.levels import DEFAULT_IMAGE_SIZE

__all__ = ["analyse_volume", "load_model", "read_series", "Series"]


def load_model(checkpoint: str | Path, device: str = "auto"):
    """A :class:`lstv.inference.Predictor` for a checkpoint (its provenance in ``.info``)."""
    from lstv.inference import load_predictor

    predictor, info = load_predictor(Path(checkpoint), device)
    predictor.info = info
    return predictor


def analyse_volume(
    predictor,
    volume: np.ndarray,
    image_size: int = DEFAULT_IMAGE_SIZE,
    pixel_spacing=None,
) -> dict:
    """Per-level metrics of a (D, H, W) uint8 volume, read at its centre slice ``D // 2``.

    Points (``point``) are (x, y) in the original slice's pixels, or None; ``probs`` holds the
    (6, S, S) maps. With the centre slice's ``pixel_spacing`` (mm between rows, between
    columns) the map-shape features that the calibrated score uses are measured too.
    """
    from lstv.inference import model_input
    from lstv.uncertainty import model_pixel_mm, study_metrics

    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise TypeError(f"expected a (D, H, W) uint8 volume, got {volume.dtype} {volume.shape}")
    centre = volume[volume.shape[0] // 2]
    probs = predictor(model_input(volume, image_size)[None])[0]
    pixel_mm = (
        None
        if pixel_spacing is None
        else model_pixel_mm(pixel_spacing, centre.shape, probs.shape[-2:])
    )
    metrics = study_metrics(probs, pixel_mm)
    from lstv.sample import model_to_original

    for m in metrics.values():
        if m["point"] is not None:
            m["point"] = model_to_original(m["point"], image_size, centre.shape)
    metrics["probs"] = probs
    return metrics
