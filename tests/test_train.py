import numpy as np
import pytest

from lstv.train import (
    TrainConfig,
    disc_mask,
    is_degenerated,
    read_pfirrmann_grades,
    split_studies,
    train,
)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from lstv.phantom import write_phantom_dataset

    return write_phantom_dataset(
        tmp_path_factory.mktemp("train"),
        n_studies=8,
        lstv_fraction=0.25,
        seed=5,
        valid_fraction=0.25,
    )


def test_only_normal_studies_outside_the_hold_out_are_trained_on(train_data):
    train_tasks, val_tasks, labels = split_studies(train_data.root)
    types = dict(
        np.loadtxt(train_data.lstv_labels_csv, delimiter=",", skiprows=1, dtype=str, usecols=(0, 2))
    )
    held_out = set(train_data.valid_ids)
    assert train_tasks and val_tasks
    assert all(types[str(t.study_id)] == "normal" for t in train_tasks + val_tasks)
    assert not {t.study_id for t in train_tasks} & held_out
    assert {t.study_id for t in val_tasks} <= held_out
    assert all(len(labels[t.study_id]) == 5 for t in train_tasks)


def test_pfirrmann_grades_are_read_and_degenerated_normals_found(train_data, tmp_path):
    grades = read_pfirrmann_grades(train_data.lstv_labels_csv)
    assert set(grades) == set(train_data.study_ids)
    assert all(set(g) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"} for g in grades.values())
    assert all(1 <= v <= 5 for g in grades.values() for v in g.values())
    assert is_degenerated({"l4_l5": 4, "l5_s1": 1}) and is_degenerated({"l5_s1": 5})
    assert not is_degenerated({"l1_l2": 5, "l4_l5": 3, "l5_s1": 3})
    plain = tmp_path / "lstv_labels.csv"  # a real labels file has no grades
    plain.write_text("study_id,lstv,lstv_type\n1,0,normal\n")
    assert read_pfirrmann_grades(plain) == {}


def test_disc_mask_draws_each_level_as_its_class():
    points = np.array([[10, 10], [30, 30], [np.nan, np.nan], [50, 20], [20, 50]], float)
    mask = disc_mask(points, 64, radius_px=3)
    assert mask[10, 10] == 1 and mask[30, 30] == 2 and mask[20, 50] == 4 and mask[50, 20] == 5
    assert 3 not in mask
    assert (mask == 1).sum() == pytest.approx(np.pi * 9, rel=0.35)


@pytest.mark.slow
def test_loss_falls_and_the_checkpoint_loads(train_data, tmp_path):
    from lstv.model import load_checkpoint

    config = TrainConfig(
        data_dir=train_data.root,
        output=tmp_path / "tiny.pth",
        encoder="resnet10t",
        image_size=64,
        steps=24,
        batch_size=4,
        lr=3e-3,
        num_workers=0,
        device="cpu",
        quiet=True,
    )
    result = train(config)
    assert np.mean(result.losses[-4:]) < 0.8 * np.mean(result.losses[:4])
    model, info = load_checkpoint(result.checkpoint)
    assert info.config["encoder"] == "resnet10t" and info.config["image_size"] == 64
    assert info.iteration == 24
    assert set(result.val_error_mm) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"}
    if result.n_val_degenerated:  # the breakdown the hard negatives need
        assert set(result.val_error_degenerated_mm) == set(result.val_error_mm)
        assert "Pfirrmann >= 4" in result.summary()
    # Same seed, same losses.
    again = train(config.__class__(**{**config.__dict__, "output": tmp_path / "again.pth"}))
    assert again.losses == result.losses
    # Fine-tuning starts from the given weights and says so in the checkpoint.
    tuned = train(
        config.__class__(
            **{**config.__dict__, "output": tmp_path / "tuned.pth", "init_from": result.checkpoint}
        )
    )
    assert np.mean(tuned.losses[:4]) < np.mean(result.losses[:4])
    _, tuned_info = load_checkpoint(tuned.checkpoint)
    assert tuned_info.config["init_from_sha256"] == info.sha256


@pytest.mark.slow
def test_a_two_step_checkpoint_has_no_nan_and_lstv_infer_runs_it(train_data, tmp_path):
    """Two steps find few levels on the held-out normals: a level never found is null in the
    checkpoint's config (never NaN), and `lstv infer` with that checkpoint writes its manifest."""
    import json

    from lstv.cli import main
    from lstv.model import load_checkpoint

    ckpt = tmp_path / "two_steps.pth"
    argv = ["train", "--data_dir", str(train_data.root), "--output", str(ckpt)]
    argv += ["--encoder", "resnet10t", "--image_size", "64", "--steps", "2", "--batch_size", "2"]
    assert main([*argv, "--device", "cpu", "--num_workers", "0", "--quiet"]) == 0
    _, info = load_checkpoint(ckpt)
    json.dumps(info.config, allow_nan=False)  # raises on NaN or infinity
    errors = info.config["val_median_error_mm"]
    assert set(errors) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"}
    assert all(v is None or v >= 0 for v in errors.values())

    out = tmp_path / "run"
    infer = ["infer", "--input_dir", str(train_data.images_dir)]
    infer += ["--series_csv", str(train_data.series_csv), "--output_dir", str(out)]
    infer += ["--checkpoint", str(ckpt), "--image_size", "64", "--mode", "prod"]
    assert main([*infer, "--num_workers", "0", "--quiet"]) == 0
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["checkpoint"]["config"]["val_median_error_mm"] == errors
