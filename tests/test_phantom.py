"""Tests of the synthetic RSNA-layout DICOM studies (lstv.phantom)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lstv.phantom import (
    JPEG_LOSSLESS_SV1,
    LSTV_TYPES,
    RLE_LOSSLESS,
    _plan_studies,
    _valid_split,
    render_study,
    study_rng,
    write_phantom_dataset,
)

pydicom = pytest.importorskip("pydicom")

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
EXPLICIT = "1.2.840.10008.1.2.1"
SEED = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantom_dataset(
        tmp_path_factory.mktemp("phantom"),
        n_studies=6,
        lstv_fraction=0.5,
        seed=SEED,
        valid_fraction=0.5,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _kinds(ds) -> dict[int, str]:
    return {int(r["study_id"]): r["lstv_type"] for r in _rows(ds.lstv_labels_csv)}


def _t2_series(ds) -> dict[int, Path]:
    return {
        int(r["study_id"]): ds.images_dir / r["study_id"] / r["series_id"]
        for r in _rows(ds.series_csv)
        if r["series_description"] == "Sagittal T2/STIR"
    }


def _read_sorted(series_dir: Path):
    """Headers and pixels of a series sorted along the slice normal, as the localizer reads it."""
    files = [pydicom.dcmread(p) for p in sorted(series_dir.glob("*.dcm"))]
    iop = np.asarray(files[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    files.sort(key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ normal))
    return files


def _median3(img: np.ndarray, x: float, y: float) -> float:
    r, c = int(round(y)), int(round(x))
    return float(np.median(img[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]))


def _bright_run_mm(img: np.ndarray, point, direction, threshold: float, spacing: float) -> float:
    """Length (mm) of the run of pixels above ``threshold`` through ``point``, along ``direction``.

    Pixels are 3x3 medians, sampled every half pixel within 12 mm of ``point``.
    """
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d)
    step = spacing / 2
    ts = np.arange(-12.0, 12.0 + 1e-6, step)
    above = [_median3(img, *(np.asarray(point) + d * t / spacing)) > threshold for t in ts]
    centre = len(ts) // 2
    if not above[centre]:
        return 0.0
    lo = hi = centre
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < len(ts) - 1 and above[hi + 1]:
        hi += 1
    return (hi - lo + 1) * step


def test_layout_and_tables(dataset):
    ds = dataset
    assert ds.images_dir == ds.root / "train_images"
    series = _rows(ds.series_csv)
    assert list(series[0]) == ["study_id", "series_id", "series_description"]
    per_study = Counter(
        int(r["study_id"]) for r in series if r["series_description"] == "Sagittal T2/STIR"
    )
    assert per_study == Counter({sid: 1 for sid in ds.study_ids})
    descriptions = Counter(r["series_description"] for r in series)
    assert descriptions["Sagittal T1"] >= 1 and descriptions["Axial T2"] >= 1
    for r in series:
        assert any((ds.images_dir / r["study_id"] / r["series_id"]).glob("*.dcm"))

    labels = _rows(ds.labels_csv)
    assert list(labels[0]) == [
        "study_id",
        "series_id",
        "instance_number",
        "condition",
        "level",
        "x",
        "y",
    ]
    t2 = {
        int(r["study_id"]): int(r["series_id"])
        for r in series
        if r["series_description"] == "Sagittal T2/STIR"
    }
    assert len(labels) == 5 * len(ds.study_ids)
    for sid in ds.study_ids:
        rows = [r for r in labels if int(r["study_id"]) == sid]
        assert [r["level"] for r in rows] == list(LEVELS)
        assert {r["condition"] for r in rows} == {"Spinal Canal Stenosis"}
        assert {int(r["series_id"]) for r in rows} == {t2[sid]}
        assert len({int(r["instance_number"]) for r in rows}) == 1
        ys = [float(r["y"]) for r in rows]
        assert ys == sorted(ys), "levels go down the image"

    kinds = _rows(ds.lstv_labels_csv)
    assert list(kinds[0]) == ["study_id", "lstv", "lstv_type"]
    assert {int(r["study_id"]) for r in kinds} == set(ds.study_ids)
    for r in kinds:
        assert r["lstv_type"] in LSTV_TYPES
        assert r["lstv"] == ("0" if r["lstv_type"] == "normal" else "1")

    valid = np.load(ds.valid_ids_path)
    assert valid.dtype == np.int64
    assert tuple(valid.tolist()) == ds.valid_ids
    assert len(valid) == 3 and set(valid.tolist()) <= set(ds.study_ids)
    types = {int(r["study_id"]): r["lstv_type"] for r in kinds}
    assert {types[i] == "normal" for i in valid.tolist()} == {True, False}, "stratified"
    for sid in ds.study_ids:  # RSNA-like ids
        assert 7 <= len(str(sid)) <= 10


def test_lstv_fraction_is_honoured(dataset):
    kinds = Counter(_kinds(dataset).values())
    assert kinds == Counter({"normal": 3, "sacralization": 1, "lumbarization": 2}) or kinds == (
        Counter({"normal": 3, "sacralization": 2, "lumbarization": 1})
    )
    for n, fraction in ((10, 0.3), (7, 0.0), (9, 1.0), (200, 0.25)):
        plans = _plan_studies(n, fraction, seed=11)
        counts = Counter(p.kind for p in plans)
        assert counts["sacralization"] + counts["lumbarization"] == round(n * fraction)
        assert abs(counts["sacralization"] - counts["lumbarization"]) <= 1


@pytest.mark.parametrize(
    ("n", "lstv_fraction", "valid_fraction"), [(4, 0.3, 0.25), (20, 0.3, 0.25), (50, 0.5, 0.2)]
)
def test_valid_split_is_stratified(n, lstv_fraction, valid_fraction):
    plans = _plan_studies(n, lstv_fraction, seed=5)
    valid = _valid_split(plans, valid_fraction, seed=5)
    kinds = {p.study_id: p.kind for p in plans}
    assert len(valid) == max(2, round(n * valid_fraction)) and len(set(valid)) == len(valid)
    assert {kinds[i] == "normal" for i in valid} == {True, False}
    assert _valid_split(plans, 1.0, seed=5) == sorted(kinds)
    assert _valid_split(plans, 0.0, seed=5) == []


def test_same_seed_same_bytes_other_seed_other_ids(dataset, tmp_path):
    again = write_phantom_dataset(
        tmp_path / "again", n_studies=6, lstv_fraction=0.5, seed=SEED, valid_fraction=0.5
    )
    for name in (
        "train_series_descriptions.csv",
        "train_label_coordinates.csv",
        "lstv_labels.csv",
        "valid_id.npy",
    ):
        assert (dataset.root / name).read_bytes() == (again.root / name).read_bytes()
    files = sorted(dataset.images_dir.rglob("*.dcm"))
    assert len(files) == len(sorted(again.images_dir.rglob("*.dcm")))
    for path in files[:: max(1, len(files) // 12)]:
        other = again.root / path.relative_to(dataset.root)
        assert path.read_bytes() == other.read_bytes(), path

    other = write_phantom_dataset(
        tmp_path / "other", n_studies=2, lstv_fraction=0.5, seed=SEED + 1, valid_fraction=1.0
    )
    assert not set(other.study_ids) & set(dataset.study_ids)
    series_a = {r["series_id"] for r in _rows(dataset.series_csv)}
    series_b = {r["series_id"] for r in _rows(other.series_csv)}
    assert not series_a & series_b
    assert other.valid_ids == tuple(sorted(other.study_ids))  # valid_fraction=1.0: all


def test_t2_series_geometry(dataset):
    syntaxes = set()
    for series_dir in _t2_series(dataset).values():
        files = _read_sorted(series_dir)
        assert 15 <= len(files) <= 20
        first = files[0]
        syntaxes.add(str(first.file_meta.TransferSyntaxUID))
        assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert 320 <= first.Rows <= 512 and 320 <= first.Columns <= 512
        assert (first.BitsAllocated, first.BitsStored, first.HighBit) == (16, 12, 11)
        assert first.PixelRepresentation == 0 and first.PhotometricInterpretation == "MONOCHROME2"
        pixels = first.pixel_array
        assert pixels.dtype == np.uint16 and pixels.shape == (first.Rows, first.Columns)
        assert 0 < pixels.max() <= 4095
        spacing = float(first.SpacingBetweenSlices)
        assert 3.0 <= float(first.SliceThickness) <= 4.0
        assert float(first.SliceThickness) <= spacing <= float(first.SliceThickness) + 0.5
        pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in files])
        for d in files:
            assert [float(v) for v in d.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
            ps = [float(v) for v in d.PixelSpacing]
            assert ps[0] == ps[1] and 0.5 <= ps[0] <= 0.9
            assert (d.Rows, d.Columns) == (first.Rows, first.Columns)
        np.testing.assert_allclose(np.abs(np.diff(pos[:, 0])), spacing, atol=2e-3)
        np.testing.assert_allclose(pos[:, 1:], np.broadcast_to(pos[0, 1:], pos[:, 1:].shape))
        assert len({d.SOPInstanceUID for d in files}) == len(files)
        assert len({d.SeriesInstanceUID for d in files}) == 1
    assert syntaxes == {EXPLICIT, RLE_LOSSLESS, JPEG_LOSSLESS_SV1}


def test_labels_land_on_bright_disc_of_the_mid_slice(dataset):
    labels = _rows(dataset.labels_csv)
    kinds = _kinds(dataset)
    checked = 0
    for sid, series_dir in _t2_series(dataset).items():
        files = _read_sorted(series_dir)
        mid = files[len(files) // 2]
        rows = [r for r in labels if int(r["study_id"]) == sid]
        assert int(rows[0]["instance_number"]) == int(mid.InstanceNumber)
        if kinds[sid] != "normal":
            continue
        img = mid.pixel_array.astype(float)
        mm = 10.0 / float(mid.PixelSpacing[0])
        for r in rows:
            x, y = float(r["x"]), float(r["y"])
            assert 0 <= x < mid.Columns and 0 <= y < mid.Rows
            disc = _median3(img, x, y)
            above, below = _median3(img, x, y - mm), _median3(img, x, y + mm)
            assert disc > 1.15 * max(above, below), (sid, r["level"], disc, above, below)
            checked += 1
    assert checked == 15  # three normal studies x five levels


def _disc_runs(kind: str, index: int) -> tuple[float, float]:
    """(bright run through L5/S1, bright run through S1/S2) in mm, on the mid slice."""
    study = render_study(np.random.default_rng([2024, index]), kind)
    img = study.volume[study.mid_index].astype(float)
    spacing = study.geometry.pixel_spacing
    l45, l5s1 = (np.array(study.disc_centres[k]) for k in ("L4/L5", "L5/S1"))
    s1s2 = np.array(study.all_discs["S1/S2"])
    # Threshold halfway between the L5 body and a normal lumbar disc (L3/L4).
    threshold = (
        _median3(img, *((l45 + l5s1) / 2)) + _median3(img, *study.disc_centres["L3/L4"])
    ) / 2
    return (
        _bright_run_mm(img, l5s1, l5s1 - l45, threshold, spacing),
        _bright_run_mm(img, s1s2, s1s2 - l5s1, threshold, spacing),
    )


@pytest.mark.parametrize("index", [0, 1])
def test_transitional_anatomy(index):
    normal_l5s1, normal_s1s2 = _disc_runs("normal", index)
    sacral_l5s1, _ = _disc_runs("sacralization", index)
    lumbar_l5s1, lumbar_s1s2 = _disc_runs("lumbarization", index)
    assert normal_l5s1 >= 5.0 and lumbar_l5s1 >= 5.0  # a hydrated L5/S1 disc
    assert sacral_l5s1 <= 3.5  # thin or absent rudimentary disc
    assert normal_s1s2 <= 3.0  # vestigial S1/S2 remnant only
    assert lumbar_s1s2 >= 5.0  # the extra, well-formed S1/S2 disc


def test_render_study_contract():
    study = render_study(np.random.default_rng(5), "lumbarization")
    d, h, w = study.volume.shape
    assert study.volume.dtype == np.uint16 and 15 <= d <= 20 and min(h, w) >= 320
    assert study.mid_index == d // 2
    assert list(study.disc_centres) == list(LEVELS)
    assert study.disc_centres["L5/S1"] == study.all_discs["L5/S1"]
    assert study.all_discs["S1/S2"][1] > study.disc_centres["L5/S1"][1]
    assert (
        8.0
        <= min(study.disc_heights[k] for k in LEVELS)
        <= max(study.disc_heights[k] for k in LEVELS)
        <= 12.0
    )
    with pytest.raises(ValueError, match="kind"):
        render_study(np.random.default_rng(0), "hemivertebra")


def test_shuffled_series_label_the_true_mid_slice(dataset):
    labels = {int(r["study_id"]): int(r["instance_number"]) for r in _rows(dataset.labels_csv)}
    shuffled = 0
    for sid, series_dir in _t2_series(dataset).items():
        files = _read_sorted(series_dir)
        numbers = [int(d.InstanceNumber) for d in files]
        assert sorted(numbers) == list(range(1, len(files) + 1))
        for d in files:
            assert Path(d.filename).name == f"{int(d.InstanceNumber)}.dcm"
        steps = np.diff(numbers)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            shuffled += 1
            assert labels[sid] == numbers[len(files) // 2]
    assert shuffled >= 1


def test_compressed_files_decode_to_the_rendered_pixels(dataset):
    kinds = _kinds(dataset)
    seen = set()
    for index, sid in enumerate(dataset.study_ids):
        files = _read_sorted(_t2_series(dataset)[sid])
        syntax = str(files[0].file_meta.TransferSyntaxUID)
        if syntax in seen or syntax == EXPLICIT:
            continue
        seen.add(syntax)
        study = render_study(study_rng(SEED, index), kinds[sid])
        decoded = np.stack([d.pixel_array for d in files])
        np.testing.assert_array_equal(decoded, study.volume)
    assert seen == {RLE_LOSSLESS, JPEG_LOSSLESS_SV1}


def test_files_pass_dciodvfy(dataset):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
    by_kind: dict[tuple[str, str], Path] = {}
    for r in _rows(dataset.series_csv):
        series_dir = dataset.images_dir / r["study_id"] / r["series_id"]
        path = next(series_dir.glob("*.dcm"))
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        by_kind.setdefault((r["series_description"], syntax), path)
    assert {s for _, s in by_kind} == {EXPLICIT, RLE_LOSSLESS, JPEG_LOSSLESS_SV1}
    for (description, syntax), path in by_kind.items():
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        report = out.stdout + out.stderr
        assert "MRImage" in report, report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"{description} ({syntax}): {errors}"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_studies": 0},
        {"lstv_fraction": 1.5},
        {"valid_fraction": -0.1},
        {"seed": -1},
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_phantom_dataset(tmp_path, **kwargs)
