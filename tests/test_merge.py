"""Tests for lstv.merge: joining sharded inference outputs, and refusing broken sets of shards."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from helpers import phantom_infer_config
from lstv.cli import main
from lstv.merge import merge_shards
from lstv.results import METRIC_COLUMNS
from lstv.rundir import FAILURE_COLUMNS, Manifest, RunDir

SHA = "ab" * 32


def _row(study_id: int, value: float) -> dict:
    """A metrics row with distinct, checkable numbers in every column."""
    row = {c: f"{value + i / 1000:.6f}" for i, c in enumerate(METRIC_COLUMNS)}
    row.update(
        study_id=str(study_id),
        series_id=str(study_id * 10),
        series_description="Sagittal T2/STIR",
        lstv_flag="False",
        risk_level="Low",
    )
    return row


def make_shard(
    root: Path,
    part_id: int,
    num_parts: int,
    studies: list[int],
    *,
    failed: tuple[int, ...] = (),
    status: str = "complete",
    sha: str = SHA,
    heatmaps: bool = True,
    columns: list[str] | None = None,
    selected: list[int] | None = None,
    dirname: str | None = None,
) -> Path:
    """Write what ``lstv infer --num_parts N --part_id i`` leaves in its output folder."""
    shard = root / (dirname or f"part_{part_id:03d}")
    shard.mkdir(parents=True)
    columns = list(columns or METRIC_COLUMNS)
    with open(shard / "lstv_uncertainty_metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for s in studies:
            writer.writerow(_row(s, s / 7))
    with open(shard / "failures.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FAILURE_COLUMNS)
        for s in failed:
            writer.writerow([s, "", "read", "ValueError: no sagittal slices"])
    all_ids = sorted([*studies, *failed]) if selected is None else selected
    RunDir(shard).write_manifest(
        Manifest(
            command=f"lstv infer --num_parts {num_parts} --part_id {part_id}",
            lstv_version="0.1.0",
            versions={"python": "3.11.7", "torch": "2.14.1"},
            device="cpu",
            checkpoint={"path": "models/x.pth", "sha256": sha, "config": {}},
            image_size=160,
            thresholds={"flag_entropy": 5.0, "high_entropy": 5.5, "medium_entropy": 4.0},
            mode="prod",
            num_parts=num_parts,
            part_id=part_id,
            validation_filter=True,
            selected_study_ids=all_ids,
            n_selected=len(all_ids),
            n_completed=len(studies),
            n_failed=len(failed),
            status=status,
            started_at=f"2026-01-01T00:0{part_id}:00+00:00",
            finished_at=None if status != "complete" else f"2026-01-01T01:0{part_id}:00+00:00",
        )
    )
    if heatmaps and studies:
        (shard / "heatmaps").mkdir()
        for s in studies:
            np.savez(shard / "heatmaps" / f"{s}.npz", probs=np.full((6, 4, 4), s, np.float32))
    return shard


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def three_shards(tmp_path: Path) -> list[Path]:
    shards_dir = tmp_path / "shards"
    # tasks[part::3] of studies 100..108, with study 107 failing in part 1.
    return [
        make_shard(shards_dir, 0, 3, [100, 103, 106]),
        make_shard(shards_dir, 1, 3, [101, 104], failed=(107,)),
        make_shard(shards_dir, 2, 3, [102, 105, 108]),
    ]


def test_merge_joins_rows_sorted_and_byte_identical(three_shards, tmp_path):
    out = tmp_path / "merged"
    # Given in reverse: the merge orders by part and then by study, not by argument order.
    summary = merge_shards(list(reversed(three_shards)), out, expected_parts=3)

    merged = _read(out / "lstv_uncertainty_metrics.csv")
    assert [r["study_id"] for r in merged] == [
        str(s) for s in (100, 101, 102, 103, 104, 105, 106, 108)
    ]
    with open(out / "lstv_uncertainty_metrics.csv", newline="") as f:
        assert next(csv.reader(f)) == METRIC_COLUMNS
    by_study = {
        r["study_id"]: r
        for shard in three_shards
        for r in _read(shard / "lstv_uncertainty_metrics.csv")
    }
    for row in merged:
        assert row == by_study[row["study_id"]]
    assert merged[0]["l5_s1_entropy"] == _row(100, 100 / 7)["l5_s1_entropy"]

    failures = _read(out / "failures.csv")
    assert [(f["study_id"], f["stage"]) for f in failures] == [("107", "read")]

    heatmaps = sorted(p.name for p in (out / "heatmaps").glob("*.npz"))
    assert heatmaps == [f"{s}.npz" for s in (100, 101, 102, 103, 104, 105, 106, 108)]
    assert float(np.load(out / "heatmaps" / "105.npz")["probs"][0, 0, 0]) == 105.0
    # Shards are only read.
    assert (three_shards[0] / "heatmaps" / "100.npz").is_file()

    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest == summary
    assert manifest["num_parts"] == 3
    assert manifest["n_completed"] == 8
    assert manifest["n_failed"] == 1
    assert manifest["n_selected"] == 9
    assert manifest["n_heatmaps"] == 8
    assert manifest["checkpoint"]["sha256"] == SHA
    assert manifest["mode"] == "prod"
    assert [s["part_id"] for s in manifest["shards"]] == [0, 1, 2]
    assert manifest["shards"][1]["path"] == str(three_shards[1].resolve())
    assert manifest["shards"][1]["n_completed"] == 2
    assert manifest["started_at"] == "2026-01-01T00:00:00+00:00"
    assert manifest["finished_at"] == "2026-01-01T01:02:00+00:00"


def test_merge_twice_gives_the_same_files(three_shards, tmp_path):
    out = tmp_path / "merged"
    merge_shards(three_shards, out)
    first = (out / "lstv_uncertainty_metrics.csv").read_bytes()
    merge_shards(three_shards, out)
    assert (out / "lstv_uncertainty_metrics.csv").read_bytes() == first


def test_merge_into_the_shards_parent(three_shards):
    parent = three_shards[0].parent
    merge_shards(three_shards, parent)
    assert len(_read(parent / "lstv_uncertainty_metrics.csv")) == 8


def test_missing_part_is_an_error(three_shards, tmp_path):
    with pytest.raises(ValueError, match=r"missing part\(s\) \[1\] of 3"):
        merge_shards([three_shards[0], three_shards[2]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicated_part_is_an_error(three_shards, tmp_path):
    copy = make_shard(tmp_path / "again", 1, 3, [101, 104], failed=(107,))
    with pytest.raises(ValueError, match="part 1 appears twice"):
        merge_shards([*three_shards, copy], tmp_path / "out")


def test_mismatched_num_parts_is_an_error(three_shards, tmp_path):
    other = make_shard(tmp_path / "other", 3, 4, [109])
    with pytest.raises(ValueError, match="different splits"):
        merge_shards([*three_shards, other], tmp_path / "out")


def test_expected_parts_is_checked(three_shards, tmp_path):
    with pytest.raises(ValueError, match="expected 4 parts"):
        merge_shards(three_shards, tmp_path / "out", expected_parts=4)


def test_study_in_two_shards_is_an_error(tmp_path):
    shards = [
        make_shard(tmp_path / "s", 0, 2, [1, 3]),
        make_shard(tmp_path / "s", 1, 2, [2, 3]),
    ]
    with pytest.raises(ValueError, match="study 3 appears in .*part_000 and .*part_001"):
        merge_shards(shards, tmp_path / "out")


def test_study_failed_in_one_shard_and_done_in_another_is_an_error(tmp_path):
    shards = [
        make_shard(tmp_path / "s", 0, 2, [1, 3]),
        make_shard(tmp_path / "s", 1, 2, [2], failed=(3,)),
    ]
    with pytest.raises(ValueError, match="study 3 appears in"):
        merge_shards(shards, tmp_path / "out")


def test_study_twice_in_one_shard_is_an_error(tmp_path):
    shards = [make_shard(tmp_path / "s", 0, 1, [5, 5])]
    with pytest.raises(ValueError, match="study 5 appears twice in"):
        merge_shards(shards, tmp_path / "out")


def test_unfinished_shard_is_an_error(three_shards, tmp_path):
    running = make_shard(tmp_path / "r", 1, 3, [101], status="running", selected=[101, 104, 107])
    with pytest.raises(ValueError, match="not complete .*'running'"):
        merge_shards([three_shards[0], running, three_shards[2]], tmp_path / "out")


def test_shard_that_lost_a_selected_study_is_an_error(three_shards, tmp_path):
    short = make_shard(tmp_path / "x", 1, 3, [101], selected=[101, 104, 107])
    with pytest.raises(ValueError, match=r"missing studies \['104', '107'\]"):
        merge_shards([three_shards[0], short, three_shards[2]], tmp_path / "out")


def test_different_checkpoints_are_an_error(three_shards, tmp_path):
    other = make_shard(tmp_path / "o", 1, 3, [101, 104], failed=(107,), sha="cd" * 32)
    with pytest.raises(ValueError, match="different checkpoints"):
        merge_shards([three_shards[0], other, three_shards[2]], tmp_path / "out")


def test_different_columns_are_an_error(three_shards, tmp_path):
    fewer = make_shard(tmp_path / "c", 1, 3, [101, 104], failed=(107,), columns=METRIC_COLUMNS[:-1])
    with pytest.raises(ValueError, match="other columns"):
        merge_shards([three_shards[0], fewer, three_shards[2]], tmp_path / "out")


def test_shard_in_a_folder_of_another_part_is_an_error(tmp_path):
    shards = [
        make_shard(tmp_path / "s", 0, 2, [1], dirname="part_001"),
        make_shard(tmp_path / "s", 1, 2, [2], dirname="part_000"),
    ]
    with pytest.raises(ValueError, match="holds part"):
        merge_shards(shards, tmp_path / "out")


def test_shard_without_manifest_or_nothing_to_merge(tmp_path):
    (tmp_path / "part_000").mkdir()
    with pytest.raises(ValueError, match="no run_manifest.json"):
        merge_shards([tmp_path / "part_000"], tmp_path / "out")
    with pytest.raises(ValueError, match="no shard folders"):
        merge_shards([], tmp_path / "out")


def test_output_dir_may_not_be_a_shard(three_shards):
    with pytest.raises(ValueError, match="is one of the shards"):
        merge_shards(three_shards, three_shards[0])


def test_cli_merge(three_shards, tmp_path, capsys):
    shards_dir = three_shards[0].parent
    out = tmp_path / "cli"
    assert (
        main(
            [
                "merge",
                "--shards_dir",
                str(shards_dir),
                "--output_dir",
                str(out),
                "--num_parts",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(_read(out / "lstv_uncertainty_metrics.csv")) == 8

    for p in (three_shards[1] / "heatmaps").glob("*"):
        p.unlink()
    (three_shards[1] / "heatmaps").rmdir()
    for p in three_shards[1].iterdir():
        p.unlink()
    three_shards[1].rmdir()
    assert (
        main(["merge", "--shards_dir", str(shards_dir), "--output_dir", str(out), "--quiet"]) == 2
    )
    assert "missing part(s) [1] of 3" in capsys.readouterr().err

# -------------------- merge symlinks
# Issue 9.11: ``lstv merge`` copies only the heatmaps a shard wrote, never a symlink's target.


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
