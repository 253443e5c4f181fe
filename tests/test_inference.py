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
            parasagittal=0,  # the TTA views alone (tests/test_pipeline.py counts both)
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



def test_load_predictor_takes_a_digest_the_caller_already_has(tiny_checkpoint, monkeypatch):
    """``lstv infer --reference`` hashes the checkpoint first: the load records that digest
    and does not read the file a second time to hash it."""
    from lstv import model
    from lstv.atomic import file_sha256
    from lstv.inference import load_predictor

    digest = file_sha256(tiny_checkpoint)
    monkeypatch.setattr(model, "file_sha256", lambda path: pytest.fail(f"{path} hashed again"))
    _, info = load_predictor(tiny_checkpoint, "cpu", sha256=digest)
    assert info.sha256 == digest

class PoolNet(torch.nn.Module):
    """Six-class logits from each pixel's 9 x 9 neighbourhood mean: maps that differ from slice
    to slice (as a real net's do), computed the same whatever the batch (pooling is exact), so
    a study's maps do not depend on what else shares its forward pass. Counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.images_seen = 0

    def forward(self, x):
        self.calls += 1
        self.images_seen += x.shape[0]
        local = torch.nn.functional.avg_pool2d(
            x.float() / 255.0, 9, stride=1, padding=4, count_include_pad=False
        )
        return torch.cat([local * (3 * k) for k in range(6)], dim=1)


def run_pool_net(tmp_path, dataset, name: str, **settings):
    """``lstv infer`` of three phantom studies with :class:`PoolNet`: the net and the rows."""
    from helpers import phantom_infer_config, read_rows
    from lstv.model import CheckpointInfo
    from lstv.pipeline import run_inference

    net = PoolNet()
    config = phantom_infer_config(
        dataset, tmp_path / name, tmp_path / "unused.pth", mode="trial", n_trial=3, **settings
    )
    run_inference(
        config, predictor=Predictor(net, torch.device("cpu")),
        checkpoint_info=CheckpointInfo(path="pool", sha256="0" * 64),
    )
    return net, read_rows(tmp_path / name / "lstv_uncertainty_metrics.csv")


def side_slice_features(dataset, row: dict, offsets) -> dict:
    """The parasagittal columns recomputed from the series on disk: the slices ``D // 2 + o``
    of the whole volume resized as the original demo resizes it, each through PoolNet alone."""
    import cv2

    from lstv.dicom import read_series
    from lstv.uncertainty import model_pixel_mm, parasagittal_features, study_metrics

    series = read_series(dataset.images_dir / row["study_id"] / row["series_id"])
    volume = series.volume
    resized = cv2.resize(volume.transpose(1, 2, 0), (160, 160), interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(160, 160, -1).transpose(2, 0, 1)
    predictor = Predictor(PoolNet(), torch.device("cpu"))
    centre = len(volume) // 2
    pixel_mm = model_pixel_mm(series.pixel_spacings[centre], volume.shape[1:], (160, 160))
    levels = study_metrics(predictor(resized[[centre]])[0], pixel_mm)
    side = np.stack([predictor(resized[[centre + o]])[0] for o in offsets])
    return parasagittal_features(side, levels, pixel_mm)


def test_parasagittal_slices_share_the_centre_slices_forward_pass(tmp_path, phantom_dataset):
    """--parasagittal 2: the model reads D // 2 +-1 and +-2 in the batch's one forward pass,
    and the columns are those slices' maps (recomputed one by one from the series on disk).

    Mutants: offsets 1..4 on one side, or +-1 and +-3, give other values (checked below: the
    test can tell them apart); a side map taken from the wrong study's rows fails the same way;
    one forward call per slice fails the call count."""
    from lstv.columns import PARASAGITTAL_COLUMNS

    net, rows = run_pool_net(tmp_path, phantom_dataset, "k2", parasagittal=2)
    assert len(rows) == 3
    assert net.calls == 1 and net.images_seen == 3 * 5  # one batch: 3 centres + 12 sides
    for row in rows:
        assert row["parasagittal_slices"] == "4"
        expected = side_slice_features(phantom_dataset, row, (-1, 1, -2, 2))
        for name in PARASAGITTAL_COLUMNS[1:]:
            assert float(row[name]) == pytest.approx(expected[name], rel=1e-6, abs=1e-9), name
        for wrong in ((1, 2, 3, 4), (-1, 1, -3, 3)):
            other = side_slice_features(phantom_dataset, row, wrong)
            assert any(
                other[n] != pytest.approx(expected[n], rel=1e-4) for n in PARASAGITTAL_COLUMNS[1:]
            ), wrong


def test_parasagittal_off_leaves_its_columns_empty_and_the_centre_unchanged(
    tmp_path, phantom_dataset
):
    """--parasagittal 0: one image per study through the net, the parasagittal columns empty
    (parasagittal_slices 0), and every other column byte-identical to a run with 2."""
    from lstv.columns import PARASAGITTAL_COLUMNS

    net, off = run_pool_net(tmp_path, phantom_dataset, "k0", parasagittal=0)
    _, on = run_pool_net(tmp_path, phantom_dataset, "k2", parasagittal=2)
    assert net.images_seen == 3
    assert [r["parasagittal_slices"] for r in off] == ["0"] * 3
    assert all(r[n] == "" for r in off for n in PARASAGITTAL_COLUMNS[1:])
    assert all(r[n] != "" for r in on for n in PARASAGITTAL_COLUMNS[1:])
    for a, b in zip(off, on, strict=True):
        assert {k: v for k, v in a.items() if k not in PARASAGITTAL_COLUMNS} == {
            k: v for k, v in b.items() if k not in PARASAGITTAL_COLUMNS
        }


# -------------------- mutation survivors (issue 20): model_inputs' checks and size


def test_model_inputs_refuses_an_offset_one_past_the_last_slice():
    from lstv.inference import model_inputs

    volume = np.zeros((5, 8, 8), np.uint8)
    assert model_inputs(volume, 16, offsets=(0, 2)).shape == (2, 16, 16)  # slice 4, the last
    with pytest.raises(ValueError, match=r"^slice offsets \[3\] lie outside a volume of 5$"):
        model_inputs(volume, 16, offsets=(0, 3))


@pytest.mark.parametrize("shape", [(8, 8), (2, 8, 8, 1)])
def test_model_inputs_refuses_a_volume_that_is_not_3d(shape):
    from lstv.inference import model_inputs

    with pytest.raises(ValueError, match=r"^model_input needs the \(D, H, W\) volume"):
        model_inputs(np.ones(shape, np.uint8), 16)
