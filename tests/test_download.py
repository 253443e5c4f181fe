"""src/lstv/download.py without Kaggle: the token and CLI checks, safe unpacking, the RSNA layout
check, and that step 01b installs only files that pass the check. (tests/test_scripts.py runs the
same code through the sbatch scripts with a stand-in Kaggle CLI.)"""

from __future__ import annotations

import logging
import subprocess
import zipfile
from pathlib import Path

import pytest

from lstv.download import (
    DownloadError,
    Kaggle,
    check_rsna_layout,
    download_model,
    extract_zip,
    kaggle_cli,
)


def token_env(tmp_path: Path, mode: int = 0o600, cli: bool = True) -> dict[str, str]:
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    token = tmp_path / "home" / ".kaggle" / "kaggle.json"
    token.write_text("{}")
    token.chmod(mode)
    (tmp_path / "bin").mkdir()
    if cli:
        (tmp_path / "bin" / "kaggle").write_text("#!/bin/sh\n")
        (tmp_path / "bin" / "kaggle").chmod(0o755)
    return {"HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "bin")}


def test_kaggle_cli_found_after_the_token(tmp_path, caplog):
    env = token_env(tmp_path, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="lstv.download"):
        assert kaggle_cli(env) == str(tmp_path / "bin" / "kaggle")
    assert "kaggle.json is readable by other users; run 'chmod 600" in caplog.text


def test_kaggle_config_dir_is_honoured(tmp_path):
    config = tmp_path / "elsewhere"
    with pytest.raises(DownloadError, match=f"no Kaggle API token at {config}/kaggle.json"):
        kaggle_cli({"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(config)})


def test_missing_kaggle_cli_says_how_to_get_it(tmp_path):
    with pytest.raises(DownloadError, match="'kaggle-x' is not on PATH: 'pip install kaggle'"):
        kaggle_cli(token_env(tmp_path, cli=False), "kaggle-x")


def test_extract_refuses_members_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escape.txt", "no")
    with pytest.raises(DownloadError, match="refusing to extract '../escape.txt'"):
        extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_extract_keeps_whole_files_and_replaces_cut_ones(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("a/1.dcm", "a/2.dcm", "b/3.dcm"):
            zf.writestr(name, name * 100)
    dest = tmp_path / "dest"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "1.dcm").write_text("a/1.dcm" * 100)  # whole: kept
    (dest / "a" / "2.dcm").write_text("cut")  # cut short: written again
    assert extract_zip(archive, dest) == (2, 1)
    assert (dest / "a" / "2.dcm").read_text() == "a/2.dcm" * 100
    assert not list(dest.rglob("*.part"))


def test_rsna_layout_names_what_is_missing(tmp_path):
    with pytest.raises(DownloadError, match="train_series_descriptions.csv missing"):
        check_rsna_layout(tmp_path)
    (tmp_path / "train_series_descriptions.csv").write_text(
        "study_id,series_id,series_description\n1,10,Sagittal T2/STIR\n1,11,Sagittal T1\n"
    )
    (tmp_path / "train_label_coordinates.csv").write_text("study_id\n")
    (tmp_path / "train_images" / "1" / "10").mkdir(parents=True)
    (tmp_path / "train_images" / "1" / "10" / "1.dcm").write_bytes(b"x")
    with pytest.raises(DownloadError, match=r"1 of 2 series have no images, e\.g\. \['1/11'\]"):
        check_rsna_layout(tmp_path)
    (tmp_path / "train_images" / "1" / "11").mkdir()
    (tmp_path / "train_images" / "1" / "11" / "1.dcm").write_bytes(b"x")
    assert check_rsna_layout(tmp_path) == (1, 2)


class FakeKaggle:
    """Serves dataset files into the ``-p`` folder, the large checkpoint zipped, as Kaggle does."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, command, env=None, **_):
        self.calls.append(command)
        name, folder = command[command.index("-f") + 1], Path(command[command.index("-p") + 1])
        if name.endswith(".pth"):
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
                zf.writestr(name, b"weights")
        else:
            (folder / name).write_bytes(b"ids")
        return subprocess.CompletedProcess(command, 0)


@pytest.mark.parametrize("accepted", [True, False])
def test_model_files_are_installed_only_when_they_pass_the_check(tmp_path, accepted):
    checkpoint = tmp_path / "models" / "point_net_checkpoint.pth"
    valid_ids = tmp_path / "models" / "valid_id.npy"
    checked: list[tuple[Path, Path]] = []

    def check(ckpt: Path, ids: Path) -> bool:
        checked.append((ckpt, ids))
        return accepted

    kaggle = FakeKaggle()
    args = (checkpoint, valid_ids, check, Kaggle(token_env(tmp_path), run=kaggle))
    if accepted:
        download_model(*args, min_mb=0)
        assert checkpoint.read_bytes() == b"weights" and valid_ids.read_bytes() == b"ids"
        assert not (tmp_path / "models" / ".download").exists()
    else:
        with pytest.raises(DownloadError, match="failed the check above and were removed"):
            download_model(*args, min_mb=0)
        assert not checkpoint.exists() and not valid_ids.exists()
        assert not list((tmp_path / "models" / ".download").iterdir())
    staging = tmp_path / "models" / ".download"
    assert checked == [(staging / "00002484.pth", staging / "valid_id.npy")]
    assert {c[0] for c in kaggle.calls} == {str(tmp_path / "bin" / "kaggle")}
    assert [c[1:5] for c in kaggle.calls] == [
        ["datasets", "download", "-d", "hengck23/rsna2024-demo-workflow"]
    ] * 2


def test_model_in_place_is_not_fetched_again(tmp_path):
    checkpoint, valid_ids = tmp_path / "ckpt.pth", tmp_path / "ids.npy"
    checkpoint.write_bytes(b"w")
    valid_ids.write_bytes(b"i")
    kaggle = FakeKaggle()
    # No token needed either: nothing is downloaded.
    no_token = Kaggle({"HOME": str(tmp_path)}, run=kaggle)
    download_model(checkpoint, valid_ids, lambda c, i: True, no_token, min_mb=0)
    assert kaggle.calls == []


def test_small_checkpoint_is_not_believed(tmp_path, caplog):
    checkpoint, valid_ids = tmp_path / "ckpt.pth", tmp_path / "ids.npy"
    checkpoint.write_bytes(b"w")
    valid_ids.write_bytes(b"i")
    with caplog.at_level(logging.WARNING), pytest.raises(DownloadError, match="no Kaggle API"):
        download_model(checkpoint, valid_ids, lambda c, i: True, Kaggle({"HOME": str(tmp_path)}))
    assert "expected about 130 MB (at least 100): incomplete?" in caplog.text
