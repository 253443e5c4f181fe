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
        ([1.138972, 1.644002, 0, 0, 0, -2], "oblique"),  # MR2_*'s, cosines of length 2
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


# --- issue 20: mutation survivors of lstv.dicom_geometry -------------------------------------

SAGITTAL, AXIAL, CORONAL = [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1]


def slices(*specs, spacing=(0.5, 0.5)):
    """Slices as validate_geometry reads them: (file name, x position, orientation) each."""
    from types import SimpleNamespace

    return [
        SimpleNamespace(
            path=f"/s/{name}", position=[x, -50.0, 60.0], orientation=o, spacing=list(spacing)
        )
        for name, x, o in specs
    ]


def geometry_error(found) -> str:
    from lstv.dicom_geometry import validate_geometry

    with pytest.raises(SeriesReadError) as caught:
        validate_geometry(found)
    return str(caught.value)


@pytest.mark.parametrize(
    "orientation", [[0, 1, 0, 0, 0], [np.nan, 1, 0, 0, 0, -1], [0, 1, 0, 0, 1, 0]]
)
def test_an_orientation_without_a_plane_is_unknown(orientation):
    assert plane_of(orientation) == "unknown"  # five numbers, not finite, parallel cosines


def test_slices_of_several_planes_are_named_with_their_counts():
    sagittal = [(f"s{k}.dcm", float(k), SAGITTAL) for k in range(5)]
    axial = [(f"a{k}.dcm", float(k), AXIAL) for k in range(4)]
    assert geometry_error(slices(*sagittal, *axial, ("c.dcm", 0.0, CORONAL))) == (
        "a0.dcm, a1.dcm, a2.dcm and 2 more: 5 sagittal and 4 axial and 1 coronal slices in one "
        "series; lstv reads one sagittal stack (is a localizer or another series among its "
        "files?)"
    )
    # Three files are all named; planes as common as each other go in alphabetical order.
    assert geometry_error(slices(*sagittal, *axial[:2], ("c.dcm", 0.0, CORONAL))).startswith(
        "a0.dcm, a1.dcm, c.dcm: 5 sagittal and 2 axial and 1 coronal slices in one series"
    )
    assert geometry_error(slices(*sagittal, *axial)).startswith(
        "a0.dcm, a1.dcm, a2.dcm and 1 more: 5 sagittal and 4 axial slices"
    )
    assert geometry_error(slices(*sagittal[:2], *axial[:2])).startswith(
        "s0.dcm, s1.dcm: 2 axial and 2 sagittal slices"
    )


def test_slices_closer_than_the_tolerance_cannot_be_ordered(caplog):
    import logging

    from lstv.dicom_geometry import validate_geometry

    # Along the normal (-x): two slices 1 um apart, the tolerance, are one position.
    assert geometry_error(slices(("1.dcm", 0.001, SAGITTAL), ("2.dcm", 0.002, SAGITTAL))) == (
        "all 2 slices lie at the same position along the slice normal (-0.001 mm): the series "
        "cannot be ordered"
    )
    # Orientations equal to three decimals are one stack, checked together, and a stack of
    # one slice met first does not end the check.
    same = [("1.dcm", 10.0, [0, 1, 0.0001, 0, 0, -1]), ("2.dcm", 10.0, [0, 1, 0.0004, 0, 0, -1])]
    assert "all 2 slices lie at the same position" in geometry_error(slices(*same))
    alone = ("0.dcm", 3.0, [0.02, 1, 0, 0, 0, -1])
    assert "all 2 slices lie at the same position" in geometry_error(slices(alone, *same))
    # One slice in another orientation is a group of its own, with nothing to tell apart.
    tilted = [0.02, 1, 0, 0, 0, -1]
    with caplog.at_level(logging.WARNING, logger="lstv.dicom_geometry"):
        validate_geometry(
            slices(("1.dcm", 10.0, SAGITTAL), ("2.dcm", 12.0, SAGITTAL), ("3.dcm", 10.0, tilted))
        )
        assert not caplog.records
        validate_geometry(
            slices(*[(f"{k}.dcm", float(min(k, 2)), SAGITTAL) for k in range(5)])
        )  # slices 2, 3 and 4 at one position
        in_two_folders = slices(*[(f"{k}.dcm", float(min(k, 2)), SAGITTAL) for k in range(5)])
        in_two_folders[0].path = "/first/0.dcm"
        validate_geometry(in_two_folders)  # the folder of the stack's first file is named
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 5 slices share a position with another slice (/s ...): their order between them "
        "follows file names",
        "2 of 5 slices share a position with another slice (/first ...): their order between "
        "them follows file names",
    ]


def test_each_geometry_refusal_names_the_file_and_the_numbers():
    one = [("2.dcm", 12.0, SAGITTAL)]
    bad = slices(("1.dcm", 10.0, SAGITTAL), *one)
    bad[0].position = [1.0, 2.0]
    assert (
        geometry_error(bad) == "1.dcm: ImagePositionPatient [1.0, 2.0] is not three finite numbers"
    )
    bad = slices(("1.dcm", 10.0, SAGITTAL), *one)
    bad[0].spacing = [0.5]
    assert geometry_error(bad) == "1.dcm: PixelSpacing [0.5] is not two finite numbers"
    # The spacing bounds are inclusive.
    for spacing in ([0.01, 0.01], [50.0, 50.0]):
        from lstv.dicom_geometry import validate_geometry

        validate_geometry(slices(("1.dcm", 10.0, SAGITTAL), *one, spacing=spacing))
    assert geometry_error(slices(("1.dcm", 10.0, SAGITTAL), *one, spacing=(0.5, 51))) == (
        "1.dcm: PixelSpacing [0.5, 51.0] mm is outside 0.01..50 mm"
    )
    bad = slices(("1.dcm", 10.0, [0, 2, 0, 0, 0, -1]), *one)
    assert geometry_error(bad) == (
        "1.dcm: ImageOrientationPatient [0.0, 2.0, 0.0, 0.0, 0.0, -1.0] has direction cosines "
        "of length 2 and 1, not 1"
    )
    bad = slices(("1.dcm", 10.0, [0, 1, 0, 0, 1, 0]), *one)
    assert geometry_error(bad) == (
        "1.dcm: ImageOrientationPatient [0.0, 1.0, 0.0, 0.0, 1.0, 0.0] has row and column "
        "directions that are not perpendicular"
    )
    bad = slices(("1.dcm", 10.0, [0, 1, 0, 0, 0]), *one)
    assert geometry_error(bad) == (
        "1.dcm: ImageOrientationPatient [0.0, 1.0, 0.0, 0.0, 0.0] is not six finite numbers"
    )


def test_each_distinct_orientation_is_checked_and_named_once(monkeypatch):
    """A series' slices share an orientation or a few: each is checked and given a plane once
    (the per-slice numpy work was 0.5 ms of a 17-slice study), and a bad one after good ones
    is still refused with its own file's name."""
    from lstv import dicom_geometry
    from lstv.dicom_geometry import validate_geometry

    calls = {"plane_of": 0, "_check_orientation": 0}
    for name in calls:
        original = getattr(dicom_geometry, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(dicom_geometry, name, counted)
    tilted = [0, 0.97, 0.26, 0, -0.26, 0.97]
    many = [(f"{k}.dcm", float(k), SAGITTAL if k % 2 else tilted) for k in range(9)]
    validate_geometry(slices(*many))
    assert calls == {"plane_of": 2, "_check_orientation": 2}
    bad = slices(*many[:4], ("9.dcm", 9.0, [0, 2, 0, 0, 0, -1]))
    assert geometry_error(bad) == (
        "9.dcm: ImageOrientationPatient [0.0, 2.0, 0.0, 0.0, 0.0, -1.0] has direction cosines "
        "of length 2 and 1, not 1"
    )
