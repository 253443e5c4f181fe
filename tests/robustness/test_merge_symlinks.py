"""Issue 9.11: ``lstv merge`` copies only the heatmaps a shard wrote, never a symlink's target."""

import logging

import pytest

from helpers import phantom_infer_config


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory, phantom_dataset, tiny_checkpoint):
    from lstv.pipeline import run_inference

    root = tmp_path_factory.mktemp("shards")
    for part in range(2):
        out = root / f"part{part}"
        run_inference(
            phantom_infer_config(
                phantom_dataset,
                out,
                tiny_checkpoint,
                mode="trial",
                n_trial=4,
                num_parts=2,
                part_id=part,
                save_heatmaps=True,
            )
        )
    return root


@pytest.fixture()
def shards(shard_run, tmp_path):
    """A copy of the two shards this test may damage."""
    import shutil

    copy = shutil.copytree(shard_run, tmp_path / "shards")
    return [copy / "part0", copy / "part1"]


def test_symlinked_heatmap_is_not_copied(shards, tmp_path, caplog):
    from lstv.merge import merge_shards

    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"another user's data")
    victim = sorted((shards[0] / "heatmaps").glob("*.npz"))[0]
    victim.unlink()
    victim.symlink_to(secret)
    planted = shards[1] / "heatmaps" / "planted.npz"
    planted.symlink_to(secret)

    out = tmp_path / "merged"
    with caplog.at_level(logging.WARNING, logger="lstv.merge"):
        merge_shards(shards, out, expected_parts=2)
    merged = {p.name: p for p in (out / "heatmaps").glob("*.npz")}
    assert victim.name not in merged and "planted.npz" not in merged
    assert all(p.read_bytes() != secret.read_bytes() for p in merged.values())
    assert all(not p.is_symlink() for p in merged.values())
    assert len(merged) == 4 - 1  # every real heatmap but the replaced one
    assert "symlink" in caplog.text and victim.name in caplog.text


def test_symlinked_heatmap_folder_is_not_copied(shards, tmp_path, caplog):
    import shutil

    from lstv.merge import merge_shards

    elsewhere = tmp_path / "elsewhere"
    shutil.move(shards[1] / "heatmaps", elsewhere)
    (shards[1] / "heatmaps").symlink_to(elsewhere, target_is_directory=True)
    out = tmp_path / "merged"
    with caplog.at_level(logging.WARNING, logger="lstv.merge"):
        merge_shards(shards, out, expected_parts=2)
    merged = {p.name for p in (out / "heatmaps").glob("*.npz")}
    assert merged == {p.name for p in (shards[0] / "heatmaps").glob("*.npz")}
    assert "symlink" in caplog.text


def test_shard_csv_with_a_huge_field_is_a_clear_error(shards, tmp_path):
    import csv

    from lstv.merge import merge_shards

    failures = shards[0] / "failures.csv"
    failures.write_text(
        "study_id,series_id,stage,error\n1,2,read," + "x" * (csv.field_size_limit() + 1) + "\n"
    )
    with pytest.raises(ValueError, match=rf"{failures} line 2: .*at most 128 KiB"):
        merge_shards(shards, tmp_path / "merged", expected_parts=2)
