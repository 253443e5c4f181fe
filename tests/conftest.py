"""Shared fixtures: data the tests make themselves (phantoms, random-weight checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import start_chromium
from helpers import phantom_infer_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A headless Chromium for the whole session: its DevTools port."""
    yield from start_chromium(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight resnet10t point net saved by the project (with its ``config``)."""
    import torch

    from lstv.model import PointNet, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return save_checkpoint(PointNet(encoder="resnet10t"), path, iteration=0, epoch=0)


@pytest.fixture(scope="session")
def original_layout_checkpoint(tmp_path_factory) -> Path:
    """A random-weight resnet50d point net in the layout of hengck23's 00002484.pth."""
    import torch

    from lstv.model import PointNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "00002484.pth"
    torch.save({"state_dict": PointNet().state_dict(), "iteration": 2484, "epoch": 10}, path)
    return path


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory):
    """Eight phantom studies (some transitional, some compressed or shuffled), all held out."""
    from lstv.phantom import write_phantom_dataset

    return write_phantom_dataset(
        tmp_path_factory.mktemp("phantom"),
        n_studies=8,
        lstv_fraction=0.4,
        seed=7,
        valid_fraction=1.0,
    )


@pytest.fixture(scope="session")
def infer_output(tmp_path_factory, phantom_dataset, tiny_checkpoint) -> Path:
    """A real ``lstv infer`` run (random-weight model) with heatmaps, on the phantom studies."""
    from lstv.pipeline import run_inference

    out = tmp_path_factory.mktemp("infer")
    run_inference(
        phantom_infer_config(
            phantom_dataset, out, tiny_checkpoint, batch_size=4, save_heatmaps=True
        )
    )
    return out


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    """The web demo around the random-weight checkpoint, 20 MB uploads."""
    from lstv.api import load_model
    from lstv.web import create_app

    return create_app(load_model(tiny_checkpoint, device="cpu"), max_upload_mb=20)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def series_files(phantom_dataset):
    """The files of the first phantom study's sagittal T2 series."""
    from lstv.studies import read_series_table, sagittal_t2_tasks

    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    return sorted(task.series_dir(phantom_dataset.images_dir).glob("*.dcm"))
