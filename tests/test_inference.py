import numpy as np
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


def test_a_tta_run_makes_five_passes_per_study(tmp_path, phantom_dataset):
    from lstv.model import CheckpointInfo
    from lstv.pipeline import InferenceConfig, run_inference

    net = CountingNet()
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
        predictor=Predictor(net, torch.device("cpu")),
        checkpoint_info=CheckpointInfo(path="counting", sha256="0" * 64),
    )
    assert summary.n_completed == 3
    assert net.images_seen == 3 * len(TTA_SHIFTS)
