"""Shared fixtures: data the tests make themselves (phantoms, random-weight checkpoints)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import phantom_infer_config

REPO = Path(__file__).resolve().parents[1]


# Session fixtures that build data (phantom studies, a resnet50d checkpoint): seconds each. The
# mutation run (tools/mutation.sh) runs tests once per mutant in a fresh process, so it leaves
# them out (the resnet10t ``tiny_checkpoint`` takes about a second and stays).
BUILT_DATA = {"phantom_dataset", "original_layout_checkpoint"}


def pytest_addoption(parser):
    parser.addoption(
        "--without-built-data",
        action="store_true",
        help="deselect the tests that need phantom studies or the resnet50d checkpoint",
    )


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--without-built-data"):
        return
    drop = [item for item in items if BUILT_DATA & set(getattr(item, "fixturenames", ()))]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if item not in drop]


CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright drives it, never downloads a browser
LOCAL = ("http://127.0.0.1:", "http://localhost:", "file:", "data:", "blob:", "about:")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session, driven by Playwright (skips without either)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A 1366 x 768 tab that refuses every request off this machine; after the test it asserts
    that none was tried and that the page logged no error. ``page.errors`` and
    ``page.external`` are what it saw so far."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    tab = context.new_page()
    tab.errors, tab.external = [], []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            tab.external.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    tab.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
    yield tab
    context.close()
    assert tab.external == [], f"requests off this machine: {tab.external}"


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


@pytest.fixture(scope="session")
def shipped_infer_output(tmp_path_factory, phantom_dataset) -> Path:
    """An ``lstv infer`` run of the shipped phantom localizer with heatmaps: its maps and
    points are where the discs are, unlike a random-weight model's flat maps."""
    from lstv.pipeline import run_inference

    out = tmp_path_factory.mktemp("infer_shipped")
    checkpoint = REPO / "models" / "phantom_point_net.pth"
    run_inference(
        phantom_infer_config(phantom_dataset, out, checkpoint, batch_size=4, save_heatmaps=True)
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


@pytest.fixture()
def series_dir(phantom_dataset, tmp_path):
    """A writable copy of one phantom sagittal T2 series."""
    from lstv.studies import read_series_table, sagittal_t2_tasks

    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    return shutil.copytree(task.series_dir(phantom_dataset.images_dir), tmp_path / "series")
