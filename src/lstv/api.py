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
from lstv.levels import DEFAULT_IMAGE_SIZE, DEFAULT_PARASAGITTAL

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
    reference=None,
    parasagittal: int = DEFAULT_PARASAGITTAL,
):
    """The result of a (D, H, W) uint8 volume, read at its centre slice ``D // 2``: a
    :class:`lstv.results.StudyResult`, the same object ``lstv infer`` writes as a row.

    As a mapping: level key -> metrics, with ``point`` as (x, y) in the original slice's pixels
    or None; ``probs`` holds the (6, S, S) maps. With the centre slice's ``pixel_spacing`` (mm
    between rows, between columns) the map-shape features are measured too, and with a score
    ``reference`` (:class:`lstv.score_reference.Reference` of this checkpoint) ``.score`` holds the
    calibrated score. The ``parasagittal`` slices each side of the centre go through the model
    in the same forward pass; ``.parasagittal`` holds how their maps agree (0: not read).
    """
    from lstv.inference import model_inputs, parasagittal_offsets
    from lstv.results import StudyResult

    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise TypeError(f"expected a (D, H, W) uint8 volume, got {volume.dtype} {volume.shape}")
    centre = volume[volume.shape[0] // 2]
    offsets = parasagittal_offsets(volume.shape[0], parasagittal)
    probs = predictor(model_inputs(volume, image_size, (0, *offsets)))
    return StudyResult.from_maps(
        probs[0], centre.shape, pixel_spacing, reference, side_probs=probs[1:] if offsets else None
    )
