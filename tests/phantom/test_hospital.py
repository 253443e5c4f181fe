"""A hospital-style export and real scanner files, end to end: index -> infer -> report."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from helpers import read_rows
from lstv.cli import main
from lstv.dicom import read_series
from lstv.index import uid_to_id
from lstv.phantom.hospital import ENHANCED_DESCRIPTION, write_hospital_export
from lstv.rsna import SAGITTAL_T2
from lstv.studies import read_series_table, study_tasks


@pytest.fixture(scope="module")
def hospital(tmp_path_factory, phantom_dataset):
    out = tmp_path_factory.mktemp("hospital")
    export = write_hospital_export(phantom_dataset.root, out)
    series_csv = out / "series.csv"
    assert main(["index", "--input_dir", str(export.root), "--output", str(series_csv)]) == 0
    return export, series_csv


def rsna_t2(phantom_dataset):
    """RSNA study ID -> (StudyInstanceUID, SeriesInstanceUID, folder) of its sagittal T2."""
    found = {}
    for study_id, series_id, description in read_series_table(phantom_dataset.series_csv):
        if description == SAGITTAL_T2:
            folder = phantom_dataset.images_dir / str(study_id) / str(series_id)
            ds = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
            found[study_id] = (ds.StudyInstanceUID, ds.SeriesInstanceUID, folder)
    return found


def test_export_looks_like_a_hospital_one(hospital):
    export, _ = hospital
    files = [p for p in export.root.rglob("*") if p.is_file()]
    assert (export.root / "DICOMDIR").is_file()
    assert not [p for p in files if p.suffix]  # no extensions anywhere
    depths = {len(p.relative_to(export.root).parts) for p in files if p.name != "DICOMDIR"}
    assert depths == {4}  # patient / study / series / image
    assert len(export.enhanced_series_uids) >= 1


def test_selection_finds_every_sagittal_t2_by_its_rule(hospital, phantom_dataset):
    export, series_csv = hospital
    tasks = {t.study_id: t for t in study_tasks(series_csv)}
    index = {int(r["series_id"]): r for r in read_rows(series_csv)}
    rules = {}
    for study_uid, series_uid, _ in rsna_t2(phantom_dataset).values():
        task = tasks[uid_to_id(study_uid)]
        assert task.series_id == uid_to_id(series_uid)
        rules[index[task.series_id]["series_description"]] = task.selection_rule
    assert rules == {
        "SAG T2": "description_pattern",
        "T2 SAG": "description_pattern",
        "t2_tse_sag_384": "description_pattern",
        "Sag T2 FRFSE": "description_pattern",
        ENHANCED_DESCRIPTION: "headers",
    }
    enhanced = [r for r in index.values() if r["series_uid"] in export.enhanced_series_uids]
    assert all(r["n_instances"] == "1" and int(r["n_frames"]) > 1 for r in enhanced)


def test_enhanced_copy_reads_as_the_single_frame_original(hospital, phantom_dataset):
    export, series_csv = hospital
    uid = export.enhanced_series_uids[0]
    row = next(r for r in read_rows(series_csv) if r["series_uid"] == uid)
    task = next(t for t in study_tasks(series_csv) if t.series_id == int(row["series_id"]))
    enhanced = read_series(task.series_source(export.root))
    folder = next(f for _, s, f in rsna_t2(phantom_dataset).values() if s == uid)
    original = read_series(folder)
    np.testing.assert_array_equal(enhanced.volume, original.volume)
    np.testing.assert_allclose(enhanced.positions, original.positions)
    np.testing.assert_allclose(enhanced.orientations, original.orientations)
    np.testing.assert_allclose(enhanced.pixel_spacings, original.pixel_spacings)


@pytest.mark.slow
def test_index_infer_report_gives_the_rsna_run_s_numbers(
    hospital, phantom_dataset, infer_output, tiny_checkpoint, tmp_path
):
    export, series_csv = hospital
    out = tmp_path / "run"
    args = ["infer", "--input_dir", str(export.root), "--series_csv", str(series_csv)]
    args += ["--output_dir", str(out), "--checkpoint", str(tiny_checkpoint), "--mode", "prod"]
    args += ["--device", "cpu", "--num_workers", "0", "--valid_ids", str(tmp_path / "none.npy")]
    assert main(args + ["--save_heatmaps", "--quiet"]) == 0
    rows = {int(r["study_id"]): r for r in read_rows(out / "lstv_uncertainty_metrics.csv")}
    rsna = {int(r["study_id"]): r for r in read_rows(infer_output / "lstv_uncertainty_metrics.csv")}
    uids = rsna_t2(phantom_dataset)
    assert len(rows) == len(rsna) == len(uids)
    for study_id, (study_uid, _, _) in uids.items():
        ours, theirs = rows[uid_to_id(study_uid)], rsna[study_id]
        assert theirs["selection_rule"] == "description"
        assert ours["selection_rule"] in ("description_pattern", "headers")
        for key in ("l5_s1_entropy", "l4_l5_confidence", "l1_l2_spatial_entropy", "n_slices"):
            assert float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-6), key
    report = tmp_path / "report.html"
    csv_path = out / "lstv_uncertainty_metrics.csv"
    report_args = ["report", "--csv", str(csv_path), "--output", str(report)]
    assert main([*report_args, "--data_dir", str(export.root)]) == 0
    html = report.read_text()
    # thumbnails from the export's own DICOM files, found through the index's paths
    assert html.count("DICOM image ") == len(rows) and "DICOM series not found" not in html
    labels = export.labels_csv
    assert {int(r["study_id"]) for r in read_rows(labels)} == set(rows)


REAL_FILES = (
    "MR2_UNCR.dcm",
    "MR2_J2KR.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "JPEG-LL.dcm",
)


@pytest.mark.slow
def test_real_scanner_files_end_to_end(tmp_path, tiny_checkpoint):
    """pydicom-data's vendor files in a PACS-like tree. Unchanged, none is a sagittal T2 and
    each study is a failure row that says what it had; a copy of the JPEG 2000 lossless MR
    described ``SAG T2`` (its real pixels and geometry) runs through to a metrics row."""
    from pydicom.data import get_testdata_file

    export = tmp_path / "export"
    for k, name in enumerate(REAL_FILES):
        folder = export / f"PAT{k}" / "STUDY1" / "SERIES1"
        folder.mkdir(parents=True)
        shutil.copy(get_testdata_file(name), folder / "IM0001")
    relabelled = pydicom.dcmread(get_testdata_file("MR2_J2KR.dcm"))
    relabelled.StudyInstanceUID = relabelled.StudyInstanceUID + ".1"
    relabelled.SeriesInstanceUID = relabelled.SeriesInstanceUID + ".1"
    relabelled.SOPInstanceUID = relabelled.SOPInstanceUID + ".1"
    relabelled.SeriesDescription = "SAG T2"
    (export / "PAT9" / "S" / "SE").mkdir(parents=True)
    relabelled.save_as(export / "PAT9" / "S" / "SE" / "IM0001")
    series_csv = tmp_path / "series.csv"
    assert main(["index", "--input_dir", str(export), "--output", str(series_csv)]) == 0
    index = read_rows(series_csv)
    # MR2_UNCR and MR2_J2KR are one instance (same UIDs): counted once.
    assert len(index) == len(REAL_FILES)
    by_file = {r["path"].split("/")[0]: r for r in index}
    assert by_file["PAT2"]["n_frames"] == "10" and by_file["PAT2"]["orientation"] == "unknown"
    assert by_file["PAT0"]["orientation"] == "oblique"
    out = tmp_path / "run"
    args = ["infer", "--input_dir", str(export), "--series_csv", str(series_csv)]
    args += ["--output_dir", str(out), "--checkpoint", str(tiny_checkpoint), "--mode", "prod"]
    args += ["--device", "cpu", "--num_workers", "0", "--valid_ids", str(tmp_path / "none.npy")]
    assert main(args + ["--quiet"]) == 0
    metrics = read_rows(out / "lstv_uncertainty_metrics.csv")
    assert [(r["series_description"], r["selection_rule"]) for r in metrics] == [
        ("SAG T2", "description_pattern")
    ]
    assert (metrics[0]["image_height"], metrics[0]["image_width"]) == ("1024", "1024")
    failures = read_rows(out / "failures.csv")
    assert len(failures) == len(REAL_FILES) - 1
    assert all("study has no sagittal T2 series (had:" in f["error"] for f in failures)
    assert any("marked lesion<MPR Collection>" in f["error"] for f in failures)
    report = tmp_path / "report.html"
    csv_path = out / "lstv_uncertainty_metrics.csv"
    assert main(["report", "--csv", str(csv_path), "--output", str(report)]) == 0
    assert report.is_file()


def test_web_demo_takes_a_whole_study_export(hospital, tiny_checkpoint, tmp_path):
    """A zip of one hospital study (T1, axial and sagittal T2 series, no extensions): the demo
    analyses the series lstv infer would pick; a study without one is refused with the list."""
    import io
    import zipfile

    from lstv.api import load_model
    from lstv.web import create_app

    export, series_csv = hospital
    client = create_app(load_model(tiny_checkpoint, device="cpu"), max_upload_mb=50).test_client()
    tasks = study_tasks(series_csv)
    index = read_rows(series_csv)
    n_series = {t.study_id: sum(int(r["study_id"]) == t.study_id for r in index) for t in tasks}
    # A study with T1 and axial series besides the T2 (one series alone is analysed as given).
    task = next(t for t in tasks if n_series[t.study_id] >= 3 and "/" in t.path)
    study_folder = export.root / Path(task.path).parts[0] / Path(task.path).parts[1]

    def zipped(files):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for f in files:
                archive.write(f, f.relative_to(export.root).as_posix())
        buffer.seek(0)
        return {"files": [(buffer, "study.zip")]}

    files = [p for p in study_folder.rglob("*") if p.is_file()]
    res = client.post("/api/analyse", data=zipped(files), content_type="multipart/form-data")
    assert res.status_code == 200, res.get_json()
    chosen = next(r for r in index if int(r["series_id"]) == task.series_id)
    assert res.get_json()["n_slices"] == int(chosen["n_frames"])
    without_t2 = [f for f in files if f.parent.name != Path(task.path).parts[2]]
    res = client.post("/api/analyse", data=zipped(without_t2), content_type="multipart/form-data")
    assert res.status_code == 400
    assert "has no sagittal T2 series (had:" in res.get_json()["error"]


def test_phantom_command_writes_a_hospital_layout(tmp_path):
    """``lstv phantom --layout hospital``: even a two-study export has its Enhanced MR file."""
    out = tmp_path / "ph"
    args = ["phantom", "--output_dir", str(out), "--n_studies", "2", "--layout", "hospital"]
    assert main(args + ["--quiet"]) == 0
    series_csv = tmp_path / "series.csv"
    assert (
        main(["index", "--input_dir", str(out / "hospital_export"), "--output", str(series_csv)])
        == 0
    )
    rows = read_rows(series_csv)
    assert sum(r["sop_class"] == "Enhanced MR Image Storage" for r in rows) == 1
    assert {t.selection_rule for t in study_tasks(series_csv)} == {"description_pattern", "headers"}
    labels = read_rows(out / "hospital_labels.csv")
    assert {int(r["study_id"]) for r in labels} == {int(r["study_id"]) for r in rows}
