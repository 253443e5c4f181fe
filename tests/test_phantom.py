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
    CASTELLVI_TYPES,
    JPEG_LOSSLESS_SV1,
    LSTV_SUBTYPES,
    LSTV_TYPES,
    RLE_LOSSLESS,
    render_study,
    study_rng,
    write_phantom_dataset,
)
from lstv.phantom.dataset import plan_studies, valid_split
from lstv.phantom.render import render_t2

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


def _grades(ds) -> dict[int, dict[str, int]]:
    keys = dict(zip(LEVELS, ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"), strict=True))
    return {
        int(r["study_id"]): {lv: int(r[f"pfirrmann_{k}"]) for lv, k in keys.items()}
        for r in _rows(ds.lstv_labels_csv)
    }


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
    assert list(kinds[0])[:3] == ["study_id", "lstv", "lstv_type"]
    assert list(kinds[0])[3:] == ["lstv_subtype", "castellvi"] + [
        f"pfirrmann_{k}" for k in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
    ] + ["l5_wedge_deg", "lumbosacral_angle_deg", "s1_s2_remnant"]
    assert {int(r["study_id"]) for r in kinds} == set(ds.study_ids)
    for r in kinds:
        assert r["lstv_type"] in LSTV_TYPES
        assert r["lstv"] == ("0" if r["lstv_type"] == "normal" else "1")
        assert r["lstv_subtype"] in LSTV_SUBTYPES[r["lstv_type"]]
        assert r["castellvi"] in CASTELLVI_TYPES
        assert (r["castellvi"] == "") or r["lstv_type"] != "normal"
        assert {r[f"pfirrmann_{k}"] for k in ("l1_l2", "l4_l5", "l5_s1")} <= set("12345")
        if r["lstv_subtype"] == "sacralization_complete":
            assert r["pfirrmann_l5_s1"] == "5"
        assert -15.0 < float(r["l5_wedge_deg"]) < 25.0
        assert 0.0 < float(r["lumbosacral_angle_deg"]) < 80.0
        expected = {"lumbarization_full": {"full"}, "lumbarization_rudimentary": {"residual"}}
        assert r["s1_s2_remnant"] in expected.get(r["lstv_subtype"], {"none", "faint", "residual"})

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
        plans = plan_studies(n, fraction, seed=11)
        counts = Counter(p.kind for p in plans)
        assert counts["sacralization"] + counts["lumbarization"] == round(n * fraction)
        assert abs(counts["sacralization"] - counts["lumbarization"]) <= 1


@pytest.mark.parametrize(
    ("n", "lstv_fraction", "valid_fraction"), [(4, 0.3, 0.25), (20, 0.3, 0.25), (50, 0.5, 0.2)]
)
def test_valid_split_is_stratified(n, lstv_fraction, valid_fraction):
    plans = plan_studies(n, lstv_fraction, seed=5)
    valid = valid_split(plans, valid_fraction, seed=5)
    kinds = {p.study_id: p.kind for p in plans}
    assert len(valid) == max(2, round(n * valid_fraction)) and len(set(valid)) == len(valid)
    assert {kinds[i] == "normal" for i in valid} == {True, False}
    assert valid_split(plans, 1.0, seed=5) == sorted(kinds)
    assert valid_split(plans, 0.0, seed=5) == []


@pytest.mark.slow  # over 10 s on the shared 2-core machine
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
        assert float(first.SliceThickness) <= spacing <= float(first.SliceThickness) + 0.5 + 1e-9
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
    grades = _grades(dataset)
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
            if grades[sid][r["level"]] > 2:  # a degenerated disc is dark (tested below)
                continue
            disc = _median3(img, x, y)
            above, below = _median3(img, x, y - mm), _median3(img, x, y + mm)
            assert disc > 1.15 * max(above, below), (sid, r["level"], disc, above, below)
            checked += 1
    assert checked >= 6  # three normal studies, their hydrated (grade 1-2) discs


def _hydrated_study(kind: str, subtype: str, discs: tuple[str, ...]):
    """The first study of ``kind``/``subtype`` whose ``discs`` are all grade 1: the
    transitional shapes are compared without degeneration in the way."""
    for index in range(40):
        study, anatomy, _ = render_t2(np.random.default_rng([2024, index]), kind, subtype)
        if all(anatomy.disc(name).grade == 1 for name in discs):
            return study
    raise AssertionError(f"no {subtype} study with hydrated {discs} in 40 draws")


def _disc_runs(kind: str, subtype: str, discs=("L3/L4",)) -> tuple[float, float]:
    """(bright run through L5/S1, bright run through S1/S2) in mm, on the mid slice."""
    study = _hydrated_study(kind, subtype, discs)
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


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_transitional_anatomy():
    normal_l5s1, normal_s1s2 = _disc_runs("normal", "normal", ("L3/L4", "L5/S1"))
    sacral_l5s1, _ = _disc_runs("sacralization", "sacralization_complete")
    partial_l5s1, _ = _disc_runs("sacralization", "sacralization_partial")
    lumbar_l5s1, lumbar_s1s2 = _disc_runs(
        "lumbarization", "lumbarization_full", ("L3/L4", "L5/S1", "S1/S2")
    )
    _, rudimentary_s1s2 = _disc_runs(
        "lumbarization", "lumbarization_rudimentary", ("L3/L4", "L5/S1")
    )
    assert normal_l5s1 >= 5.0 and lumbar_l5s1 >= 5.0  # a hydrated L5/S1 disc
    assert sacral_l5s1 <= 3.5  # thin or absent rudimentary disc
    assert partial_l5s1 <= 5.0  # narrowed and dim
    assert normal_s1s2 <= 6.0  # no remnant, a faint line or a small residual S1/S2 disc
    assert lumbar_s1s2 >= 5.0 and lumbar_s1s2 > normal_s1s2  # the extra, well-formed disc
    assert rudimentary_s1s2 <= 4.0  # ... or a thin, dim, partly bridged one


def test_render_study_contract():
    study = render_study(np.random.default_rng(5), "lumbarization")
    d, h, w = study.volume.shape
    assert study.volume.dtype == np.uint16 and 15 <= d <= 20 and min(h, w) >= 320
    assert study.mid_index == d // 2
    assert list(study.disc_centres) == list(LEVELS)
    assert study.disc_centres["L5/S1"] == study.all_discs["L5/S1"]
    assert study.all_discs["S1/S2"][1] > study.disc_centres["L5/S1"][1]
    hydrated = [study.disc_heights[k] for k in LEVELS if study.grades[k] == 1]
    assert all(8.0 <= h <= 12.0 for h in hydrated)
    assert set(study.grades.values()) <= {1, 2, 3, 4, 5}
    assert study.subtype in ("lumbarization_rudimentary", "lumbarization_full")
    assert study.fov_top in ("T10", "T11", "T12", "L1")
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


def test_field_of_view_top_varies_from_t10_to_l1():
    from lstv.phantom.geometry import FOV_TOPS, place_in_image
    from lstv.phantom.render import sample_matrix

    tops = Counter()
    for i in range(200):
        rng = np.random.default_rng([91, i])
        kind = LSTV_TYPES[i % 3]
        from lstv.phantom import sample_anatomy

        a = sample_anatomy(rng, kind)
        rows, cols, spacing = sample_matrix(rng)
        placement = place_in_image(rng, a, rows, cols, spacing)
        tops[placement.top] += 1
        body = a.bodies[a.index(placement.top)]
        l1_l2 = (a.bodies[a.index("L1")].inf_centre + a.bodies[a.index("L2")].sup_centre) / 2
        sacrum = a.bodies[a.index("S2" if kind == "lumbarization" else "S1")]
        row = {
            name: placement.to_pixels(p)[1]
            for name, p in (
                ("top", body.sup_centre),
                ("bottom", body.inf_centre),
                ("l1_l2", l1_l2),
                ("sacrum", sacrum.sup_centre),
            )
        }
        # The first row cuts the body named: its top above, its bottom below the image top.
        assert row["top"] < 0 < row["bottom"]
        # The labelled discs from L1/L2 down and the top of the sacrum are in view.
        assert row["l1_l2"] > 0 and row["sacrum"] < rows
    assert set(tops) == set(FOV_TOPS), tops  # every top occurs, no other
    assert min(tops.values()) >= 10


def _profile(img: np.ndarray, point, direction, spacing: float, half_mm: float = 14.0):
    """3x3 medians along ``direction`` through ``point``, every half pixel, and their offsets."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    ts = np.arange(-half_mm, half_mm + 1e-6, spacing / 2)
    return ts, np.array([_median3(img, *(np.asarray(point) + d * t / spacing)) for t in ts])


def _disc_space_mm(img, point, direction, spacing, marrow: float) -> float:
    """Distance between the vertebral marrow above and below a disc: from the label, outward,
    to the first 1.5 mm of marrow-like signal (0.6-1.45 x the bodies' median) on each side."""
    ts, values = _profile(img, point, direction, spacing)
    like = (values > 0.6 * marrow) & (values < 1.45 * marrow)
    run = int(np.ceil(1.5 / (spacing / 2)))
    centre = len(ts) // 2
    ends = []
    for step in (-1, 1):
        i = centre
        while (
            0 <= i + step * run < len(ts)
            and not like[min(i, i + step * run) : max(i, i + step * run) + 1].all()
        ):
            i += step
        ends.append(abs(ts[i]))
    return sum(ends)


def test_grade_5_disc_is_thinner_and_darker_than_grade_1_in_the_written_pixels(dataset):
    """Labels agree with what is drawn, measured on the DICOM files at the labelled points."""
    labels = _rows(dataset.labels_csv)
    grades = _grades(dataset)
    series = _t2_series(dataset)
    pairs = 0
    for sid, graded in grades.items():
        if not ({1, 5} <= set(graded.values())):
            continue
        files = _read_sorted(series[sid])
        mid = files[len(files) // 2]
        img = mid.pixel_array.astype(float)
        spacing = float(mid.PixelSpacing[0])
        points = {
            r["level"]: np.array([float(r["x"]), float(r["y"])])
            for r in labels
            if int(r["study_id"]) == sid
        }
        # Marrow: the middle of the bodies between the labelled discs.
        marrow = float(
            np.median(
                [
                    _median3(img, *((points[a] + points[b]) / 2))
                    for a, b in zip(LEVELS[:-1], LEVELS[1:], strict=True)
                ]
            )
        )
        measured = {}
        for level in graded:
            i = LEVELS.index(level)
            axis = points[LEVELS[min(i + 1, 4)]] - points[LEVELS[max(i - 1, 0)]]
            measured[level] = (
                _median3(img, *points[level]),
                _disc_space_mm(img, points[level], axis, spacing, marrow),
            )
        for one in (lv for lv, g in graded.items() if g == 1):
            for five in (lv for lv, g in graded.items() if g == 5):
                (bright, tall), (dark, thin) = measured[one], measured[five]
                assert dark < 0.5 * bright, (sid, one, five, measured)
                assert thin < 0.7 * tall, (sid, one, five, measured)
                pairs += 1
    assert pairs >= 1  # the seed-3 set has one (a normal study: L1/L2 grade 1, L5/S1 grade 5)


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_workers_write_the_same_bytes(tmp_path):
    one = write_phantom_dataset(tmp_path / "one", n_studies=3, seed=21, workers=1)
    two = write_phantom_dataset(tmp_path / "two", n_studies=3, seed=21, workers=2)
    files = sorted(p.relative_to(one.root) for p in one.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two.root) for p in two.root.rglob("*") if p.is_file())
    assert len(files) > 3 * 15
    for rel in files:
        assert (one.root / rel).read_bytes() == (two.root / rel).read_bytes(), rel


def test_a_shifted_scanner_shows_the_same_anatomy_otherwise(tmp_path):
    """``scanner="shifted"``: same studies and labels, other pixels (coarser, another gamma,
    bias field, noise); an unknown scanner is refused."""
    plain = write_phantom_dataset(tmp_path / "a", 1, 0.0, seed=3, valid_fraction=1.0)
    shifted = write_phantom_dataset(
        tmp_path / "b", 1, 0.0, seed=3, valid_fraction=1.0, scanner="shifted"
    )
    assert plain.lstv_labels_csv.read_text() == shifted.lstv_labels_csv.read_text()
    assert plain.labels_csv.read_text() == shifted.labels_csv.read_text()
    a = _read_sorted(next(iter(_t2_series(plain).values())))
    b = _read_sorted(next(iter(_t2_series(shifted).values())))
    pa, pb = a[len(a) // 2].pixel_array.astype(float), b[len(b) // 2].pixel_array.astype(float)
    assert pa.shape == pb.shape and np.abs(pa - pb).mean() > 0.02 * pa.mean()
    with pytest.raises(ValueError, match="scanner"):
        write_phantom_dataset(tmp_path / "c", 1, 0.0, seed=3, scanner="philips")
