"""Issue 9.5: maps with NaN (a checkpoint with NaN weights) give a failure row, never a verdict."""

import csv

import numpy as np
import pytest
import torch

from helpers import phantom_infer_config
from lstv.uncertainty import NonFiniteMapError, shannon_entropy, study_metrics


def _probs(size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.random((6, size, size))
    return p / p.sum(axis=0, keepdims=True)


def test_nan_map_has_no_entropy():
    level_map = np.full((16, 16), np.nan)
    with pytest.raises(NonFiniteMapError, match="NaN or infinite"):
        shannon_entropy(level_map)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_refuses_the_study(bad):
    probs = _probs()
    probs[5, 3, 4] = bad
    with pytest.raises(NonFiniteMapError, match="1 NaN or infinite values"):
        study_metrics(probs)


def test_a_level_map_without_mass_is_refused():
    probs = _probs()
    probs[4] = 0.0
    with pytest.raises(NonFiniteMapError, match="l4_l5 map sums to zero"):
        study_metrics(probs)


def test_finite_maps_still_give_metrics():
    metrics = study_metrics(_probs())
    assert all(np.isfinite(m["entropy"]) and m["entropy"] > 0 for m in metrics.values())


def test_nan_checkpoint_gives_failure_rows_not_low_risk(tmp_path, phantom_dataset):
    from lstv.model import PointNet, save_checkpoint
    from lstv.pipeline import run_inference

    torch.manual_seed(0)
    model = PointNet("resnet10t")
    with torch.no_grad():
        model.logit.weight.fill_(float("nan"))
    ckpt = save_checkpoint(model, tmp_path / "nan.pth")
    out = tmp_path / "out"
    summary = run_inference(
        phantom_infer_config(phantom_dataset, out, ckpt, mode="trial", n_trial=3)
    )
    with open(out / "lstv_uncertainty_metrics.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []  # no verdict
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert summary.n_completed == 0 and summary.n_failed == len(failures) == 3
    for row in failures:
        assert row["stage"] in ("metrics", "model")
        assert "NaN or infinite" in row["error"]
