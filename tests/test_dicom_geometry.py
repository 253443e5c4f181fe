"""A series' geometry (lstv.dicom_geometry): the plane of an orientation, and a series whose
geometry cannot order or measure it is a failure, not a guess (issue 9.6)."""

import csv
import shutil

import numpy as np
import pydicom
import pytest

from helpers import edit, files_of, write_series
from lstv.dicom import read_series
from lstv.dicom_geometry import plane_of
from lstv.errors import SeriesReadError
from lstv.studies import read_series_table, sagittal_t2_tasks


@pytest.fixture
def mr_series(tmp_path):
    """Five copies of pydicom's MR_small as a sagittal series: the header checks need no
    phantom study, so these tests also run where none is built (and in the mutation run)."""
    return write_series(tmp_path / "series")


@pytest.mark.parametrize(
    ("orientation", "plane"),
    [
        ([0, 1, 0, 0, 0, -1], "sagittal"),
        ([1, 0, 0, 0, 1, 0], "axial"),
        ([1, 0, 0, 0, 0, -1], "coronal"),
        ([0, 0.97, 0.26, 0, -0.26, 0.97], "sagittal"),  # 15 degrees off
        ([0.569486, 0.822001, 0, 0, 0, -1], "oblique"),  # MR2_* of pydicom-data: 35 degrees
        ([0, 0, 0, 0, 0, 0], "unknown"),
    ],
)
def test_plane_from_image_orientation(orientation, plane):
    assert plane_of(orientation) == plane


def test_all_slices_at_one_position_is_unorderable(mr_series):
    edit(files_of(mr_series), ImagePositionPatient=[0, -100, 100])
    with pytest.raises(SeriesReadError, match="same position along the slice normal"):
        read_series(mr_series)


def test_one_nan_position_names_the_file(mr_series):
    victim = files_of(mr_series)[3]
    edit([victim], ImagePositionPatient=["nan", 0, 0])
    with pytest.raises(SeriesReadError, match=rf"{victim.name}: ImagePositionPatient"):
        read_series(mr_series)


@pytest.mark.parametrize(
    "spacing, reason",
    [
        ([0, 0], "outside"),
        (["nan", "nan"], "finite"),
        ([1e6, 1e6], "outside"),
        ([-1, 1], "outside"),
    ],
)
def test_bad_pixel_spacing(mr_series, spacing, reason):
    edit(files_of(mr_series), PixelSpacing=spacing)
    with pytest.raises(SeriesReadError, match=f"PixelSpacing .*{reason}"):
        read_series(mr_series)


@pytest.mark.parametrize(
    "orientation, reason",
    [
        ([0, 0, 0, 0, 0, 0], "length"),
        ([0, 2, 0, 0, 0, -2], "length"),
        ([0, 1, 0, 0, 1, 0], "perpendicular"),
        ([0, 0.8, 0.6, 0, 0.6, 0.8], "perpendicular"),
        (["nan", 1, 0, 0, 0, -1], "finite"),
    ],
)
def test_bad_orientation(mr_series, orientation, reason):
    edit(files_of(mr_series), ImageOrientationPatient=orientation)
    with pytest.raises(SeriesReadError, match=f"ImageOrientationPatient .*{reason}"):
        read_series(mr_series)


def test_scanner_rounding_of_cosines_is_accepted(mr_series):
    ds = pydicom.dcmread(files_of(mr_series)[0])
    rounded = [round(float(v), 4) + 1e-4 for v in ds.ImageOrientationPatient]
    edit(files_of(mr_series), ImageOrientationPatient=rounded)
    assert np.isfinite(read_series(mr_series).positions).all()


def test_unorderable_series_is_a_failure_row(phantom_dataset, tmp_path):
    from lstv.pipeline import InferenceConfig, run_inference

    images = shutil.copytree(phantom_dataset.images_dir, tmp_path / "images")
    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    edit(files_of(task.series_dir(images)), ImagePositionPatient=[1, 2, 3])
    out = tmp_path / "out"
    summary = run_inference(
        InferenceConfig(
            input_dir=images,
            series_csv=phantom_dataset.series_csv,
            output_dir=out,
            checkpoint=phantom_dataset.root / "missing.pth",  # the predictor is passed below
            valid_ids=phantom_dataset.valid_ids_path,
            mode="debug",
            debug_study_id=task.study_id,
            device="cpu",
            num_workers=0,
            quiet=True,
        ),
        *_tiny_predictor(),
    )
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert summary.n_failed == 1 and summary.n_completed == 0
    assert failures[0]["stage"] == "read"
    assert "cannot be ordered" in failures[0]["error"]


def _tiny_predictor():
    import torch

    from lstv.inference import Predictor
    from lstv.model import CheckpointInfo, PointNet

    torch.manual_seed(0)
    model = PointNet("resnet10t").eval()
    return Predictor(model, torch.device("cpu")), CheckpointInfo(path="tiny", sha256="0" * 64)
