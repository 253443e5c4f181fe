from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from lstv.inference import TTA_SHIFTS, Predictor


class CountingNet(torch.nn.Module):
    """Six-class logits that depend on the pixels (so views differ), counting images seen."""

    def __init__(self):
        super().__init__()
        self.images_seen = 0
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        self.images_seen += x.shape[0]
        x = x.float() / 255.0
        return torch.cat([x * k for k in range(6)], dim=1)


def test_tta_reuses_the_unshifted_maps_so_five_views_cost_five_passes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 32, 32), dtype=np.uint8)
    net = CountingNet()
    predictor = Predictor(net, torch.device("cpu"))
    batch = predictor(images)  # the run's batch forward: one unshifted pass per image
    views = [
        predictor.predict_views(img, unshifted=p) for img, p in zip(images, batch, strict=True)
    ]
    assert net.images_seen == 3 * len(TTA_SHIFTS)  # 15 passes for 3 studies x 5 views, not 18
    assert all(v.shape == (len(TTA_SHIFTS), 6, 32, 32) for v in views)
    # the same maps as running every view through the net
    fresh = predictor.predict_views(images[1])
    assert np.allclose(views[1], fresh, atol=1e-6)
    assert np.array_equal(views[1][TTA_SHIFTS.index((0, 0))], batch[1])


# The largest test-time shift: pixels nearer the border than this come from the replicated edge.
BORDER = max(abs(v) for shift in TTA_SHIFTS for v in shift)
INTERIOR = (..., slice(BORDER, -BORDER), slice(BORDER, -BORDER))


def assert_views_line_up(views, unshifted):
    """Each view, shifted back, equals the unshifted maps away from the border (the net is
    pixel-wise), and every shifted view really was shifted (its border differs)."""
    for shift, view in zip(TTA_SHIFTS, views, strict=True):
        assert np.allclose(view[INTERIOR], unshifted[INTERIOR], atol=1e-6), shift
        if shift != (0, 0):
            assert not np.allclose(view, unshifted, atol=1e-6), shift


def test_each_view_shifted_back_lines_up_with_the_unshifted_view():
    """With a pixel-wise net, every test-time view aligned back into the image's frame is the
    unshifted view away from the border.

    Mutant ``shift_image(p, dx, dy)`` for ``shift_image(p, -dx, -dy)`` (shifted back with the
    wrong sign): fails (the (-6, 0) view is 12 px off); without it: passes."""
    image = np.random.default_rng(1).integers(0, 255, size=(40, 40), dtype=np.uint8)
    predictor = Predictor(CountingNet(), torch.device("cpu"))
    unshifted = predictor(image[None])[0]
    assert_views_line_up(predictor.predict_views(image), unshifted)
    assert_views_line_up(predictor.predict_views(image, unshifted=unshifted), unshifted)


@dataclass
class RecordingPredictor(Predictor):
    """A Predictor that keeps each study's image and the views the run scored."""

    seen: list = field(default_factory=list)

    def predict_views(self, image, shifts=TTA_SHIFTS, unshifted=None):
        views = super().predict_views(image, shifts, unshifted)
        self.seen.append((image.copy(), views))
        return views


def test_a_tta_run_makes_five_passes_per_study(tmp_path, phantom_dataset):
    """Five net passes per study, and the views a run scores line up with the study's own
    unshifted maps (not only "five passes": a view shifted back wrongly, or another study's
    maps reused as the unshifted view, fails here)."""
    from lstv.model import CheckpointInfo
    from lstv.pipeline import InferenceConfig, run_inference

    net = CountingNet()
    predictor = RecordingPredictor(net, torch.device("cpu"))
    summary = run_inference(
        InferenceConfig(
            input_dir=phantom_dataset.root / "train_images",
            series_csv=phantom_dataset.root / "train_series_descriptions.csv",
            output_dir=tmp_path / "out",
            checkpoint=tmp_path / "unused.pth",
            valid_ids=phantom_dataset.root / "valid_id.npy",
            mode="trial",
            n_trial=3,
            device="cpu",
            num_workers=0,
            tta=True,
            quiet=True,
        ),
        predictor=predictor,
        checkpoint_info=CheckpointInfo(path="counting", sha256="0" * 64),
    )
    assert summary.n_completed == 3
    assert net.images_seen == 3 * len(TTA_SHIFTS)
    assert len(predictor.seen) == 3
    for image, views in predictor.seen:
        unshifted = Predictor(CountingNet(), torch.device("cpu"))(image[None])[0]
        assert_views_line_up(views, unshifted)


def test_a_shift_fills_the_uncovered_border_with_the_edge_values():
    from lstv.inference import shift_image

    image = np.arange(1, 41, dtype=np.float32).reshape(5, 8)
    right = shift_image(image, 2, 0)
    assert np.array_equal(right[:, 2:], image[:, :-2])
    assert np.array_equal(right[:, :2], np.repeat(image[:, :1], 2, axis=1))  # not zeros
    down = shift_image(image, 0, -1)
    assert np.array_equal(down[:-1], image[1:]) and np.array_equal(down[-1], image[-1])
    assert right.shape == image.shape and right.dtype == image.dtype


def test_views_that_all_reuse_the_unshifted_maps_run_no_pass():
    net = CountingNet()
    predictor = Predictor(net, torch.device("cpu"))
    unshifted = np.random.default_rng(2).random((6, 16, 16))  # float64: views are float32
    views = predictor.predict_views(np.zeros((16, 16), np.uint8), ((0, 0),), unshifted=unshifted)
    assert net.calls == 0
    assert views.shape == (1, 6, 16, 16) and views.dtype == np.float32
    assert np.array_equal(views[0], unshifted.astype(np.float32))


def test_resolve_device(monkeypatch):
    from lstv.inference import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="^--device cuda was asked for, but torch sees no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="^device must be auto, cpu or cuda, got 'tpu'$"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == resolve_device("cuda") == torch.device("cuda")


def test_load_predictor_runs_the_checkpoints_model_on_the_device(tiny_checkpoint, monkeypatch):
    from lstv.atomic import file_sha256
    from lstv.inference import load_predictor
    from lstv.model import load_checkpoint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    predictor, info = load_predictor(tiny_checkpoint)  # "auto": the CPU here
    assert predictor.device == torch.device("cpu")
    assert info.sha256 == file_sha256(tiny_checkpoint)
    model, _ = load_checkpoint(tiny_checkpoint, device=torch.device("cpu"))
    images = np.random.default_rng(3).integers(0, 255, size=(2, 64, 64), dtype=np.uint8)
    probs = predictor(images)
    assert probs.shape == (2, 6, 64, 64) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with torch.inference_mode():
        logits = model(torch.from_numpy(images[:, None]))
    assert np.allclose(probs, torch.softmax(logits, dim=1).numpy(), atol=1e-6)
