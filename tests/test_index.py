import shutil

import numpy as np
import pydicom
import pytest

from helpers import read_rows
from lstv.index import (
    INDEX_COLUMNS,
    MAX_EXACT_ID,
    build_index,
    index_tree,
    uid_to_id,
)
from lstv.rsna import SERIES_COLUMNS
from lstv.studies import read_series_table, study_tasks


def test_uid_ids_are_stable_positive_and_exact_in_a_spreadsheet():
    uid = "1.2.826.0.1.3680043.8.498.10365577352827537393240282237204281968"
    first = uid_to_id(uid)
    assert first == uid_to_id(uid) == uid_to_id(f" {uid} ")
    assert 0 < first < MAX_EXACT_ID
    assert uid_to_id(uid + "1") != first
    assert float(first) == first  # a double (Excel, pandas) holds it exactly
    assert uid_to_id("4003253") == 4003253  # RSNA's anonymised UIDs are the folder names


@pytest.fixture(scope="module")
def messy_export(tmp_path_factory, phantom_dataset):
    """The phantom studies as a PACS would export them: nested folders, no extensions, one
    series split over two folders, a duplicate file, a text file and a non-image DICOM."""
    root = tmp_path_factory.mktemp("export")
    for k, row in enumerate(read_series_table(phantom_dataset.series_csv)):
        study_id, series_id, _ = row
        src = phantom_dataset.images_dir / str(study_id) / str(series_id)
        files = sorted(src.glob("*.dcm"))
        dest = root / f"PAT{k % 3}" / f"STUDY_{study_id}" / f"SER{k:03d}"
        dest.mkdir(parents=True)
        for i, f in enumerate(files):
            shutil.copy(f, dest / f"IM{i:05d}")
    # One series spread over two folders (a flat export mixes series in one folder).
    first = sorted(root.glob("PAT0/*/SER000"))[0]
    split = first.parent / "SER000_part2"
    split.mkdir()
    for f in sorted(first.iterdir())[::2]:
        f.rename(split / f.name)
    shutil.copy(next(split.iterdir()), split / "COPY_OF_IM")
    (root / "README.TXT").write_text("exported by PACS\n")
    non_image = pydicom.dcmread(next(split.iterdir()), stop_before_pixels=True)
    for keyword in ("Rows", "Columns"):
        delattr(non_image, keyword)
    non_image.save_as(root / "PAT0" / "PRESENTATION_STATE", enforce_file_format=True)
    return root


def test_index_groups_instances_by_uid_whatever_the_layout(messy_export, phantom_dataset):
    result = index_tree(messy_export, num_workers=2)
    rsna = read_series_table(phantom_dataset.series_csv)
    assert len(result.rows) == len(rsna)
    assert result.n_studies == len({r[0] for r in rsna})
    assert result.skipped == {"not DICOM": 1, "no image": 1}
    assert result.n_duplicates == 1
    n_files = sum(
        len(list((phantom_dataset.images_dir / str(a) / str(b)).glob("*.dcm"))) for a, b, _ in rsna
    )
    assert result.n_instances == n_files
    by_description = {}
    for row in result.rows:
        by_description.setdefault(row["series_description"], set()).add(row["orientation"])
        assert row["n_frames"] == row["n_instances"] > 0
        files = row["path"].split(";")
        if len(files) == 1:  # a folder holding exactly this series
            assert (messy_export / files[0]).is_dir()
        else:
            assert all((messy_export / f).is_file() for f in files)
    assert by_description == {
        "Sagittal T2/STIR": {"sagittal"},
        "Sagittal T1": {"sagittal"},
        "Axial T2": {"axial"},
    }
    t2 = [r for r in result.rows if r["series_description"] == "Sagittal T2/STIR"]
    assert {r["echo_time"] for r in t2} == {95.0} and {r["repetition_time"] for r in t2} == {3500.0}


def test_index_csv_is_a_series_csv_and_reindexing_keeps_the_ids(messy_export, tmp_path):
    out = tmp_path / "series.csv"
    build_index(messy_export, out, num_workers=1)
    rows = read_rows(out)
    assert tuple(rows[0]) == INDEX_COLUMNS
    assert tuple(rows[0])[:3] == SERIES_COLUMNS
    assert len(read_series_table(out)) == len(rows)
    assert not list(tmp_path.glob("*.tmp"))
    again = tmp_path / "again.csv"
    build_index(messy_export, again, num_workers=2)
    assert out.read_text() == again.read_text()
    tasks = study_tasks(out)
    assert all(t.selection_rule == "description" for t in tasks)
    assert all(t.series_description == "Sagittal T2/STIR" for t in tasks)


def test_index_inside_the_export_never_overwrites_a_file_of_it(messy_export):
    victim = next(messy_export.glob("PAT1/*/SER*/IM00000"))
    before = victim.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        build_index(messy_export, victim)
    assert victim.read_bytes() == before
    # An earlier index inside the export may be replaced, and is not read as an input.
    inside = messy_export / "series.csv"
    try:
        build_index(messy_export, inside, num_workers=1)
        result = build_index(messy_export, inside, num_workers=1)
        assert result.skipped == {"not DICOM": 1, "no image": 1}
    finally:
        inside.unlink(missing_ok=True)


def test_an_export_without_images_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no DICOM images"):
        build_index(tmp_path, tmp_path.parent / "out.csv")
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "missing", tmp_path.parent / "out.csv")


def write_dicomdir(phantom_dataset, folder):
    """A DICOMDIR file set in ``folder`` of the phantoms' first series; returns its source files."""
    from pydicom.fileset import FileSet

    study_id, series_id, _ = read_series_table(phantom_dataset.series_csv)[0]
    files = sorted((phantom_dataset.images_dir / str(study_id) / str(series_id)).glob("*.dcm"))
    fileset = FileSet()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientID = ds.get("PatientID") or "PHANTOM"
        fileset.add(ds)
    fileset.write(folder)
    return files


def test_dicomdir_lists_the_instances(tmp_path, phantom_dataset):
    files = write_dicomdir(phantom_dataset, tmp_path / "cd")
    # A file the DICOMDIR does not reference is not read.
    shutil.copy(files[0], tmp_path / "cd" / "STRAY")
    result = index_tree(tmp_path / "cd", num_workers=1)
    assert [r["n_instances"] for r in result.rows] == [len(files)]
    assert result.n_files == len(files)
    assert np.all([r["orientation"] == "sagittal" for r in result.rows])


INDEX_MAIN = """
import sys
from lstv.index import index_tree
result = index_tree(sys.argv[1], num_workers=1)
print(sorted(result.skipped.items()), [r["n_instances"] for r in result.rows])
"""


def test_a_dicomdir_record_naming_a_fifo_is_skipped_not_waited_on(tmp_path, phantom_dataset):
    """17.2: the folder walk skipped FIFOs, but a DICOMDIR record naming one hung lstv index."""
    import os
    import subprocess
    import sys

    files = write_dicomdir(phantom_dataset, tmp_path / "cd")
    members = sorted((tmp_path / "cd").rglob("*"))
    victim = next(p for p in members if p.is_file() and p.name != "DICOMDIR")
    victim.unlink()
    os.mkfifo(victim)
    proc = subprocess.run(
        [sys.executable, "-c", INDEX_MAIN, str(tmp_path / "cd")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"[('not a regular file', 1)] [{len(files) - 1}]"


def test_a_semicolon_in_a_file_name_survives_the_index(tmp_path, phantom_dataset):
    """17.5: a ``;`` in a file name failed its study with "No such file" in lstv infer."""
    from lstv.dicom import read_series

    rows = read_series_table(phantom_dataset.series_csv)
    study_id, series_id, _ = next(r for r in rows if r[2] == "Sagittal T2/STIR")
    files = sorted((phantom_dataset.images_dir / str(study_id) / str(series_id)).glob("*.dcm"))
    export = tmp_path / "export"
    (export / "SER;1").mkdir(parents=True)
    (export / "mixed").mkdir()
    for i, f in enumerate(files):  # half in a folder of their own, half among others' files
        shutil.copy(f, export / ("SER;1" if i % 2 else "mixed") / f"IM;{i}")
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), export / "mixed" / "x")
    out = tmp_path / "series.csv"
    build_index(export, out, num_workers=1)
    (task,) = [t for t in study_tasks(out) if t.series_description == "Sagittal T2/STIR"]
    series = read_series(task.series_source(export))
    assert len(series.paths) == len(files)


def test_what_could_not_be_read_is_said(tmp_path, messy_export, monkeypatch, capsys):
    """17.6: an unreadable folder made its studies vanish without a word, and an unreadable
    file counted as "not DICOM". (The tests run as root, whom permissions do not stop, so the
    refusals are simulated where the operating system would raise them.)"""
    import os

    import lstv.index
    from lstv.cli import main

    locked = sorted(messy_export.glob("PAT1/*"))[0]
    locked_file = sorted(messy_export.glob("PAT2/*/*/IM00000"))[0]
    scandir, open_regular = os.scandir, lstv.index.open_regular

    def refuse_folder(path="."):
        # os.scandir also takes a file descriptor (shutil.rmtree passes one): only paths match
        if not isinstance(path, int) and os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    def refuse_file(path):
        if str(path) == str(locked_file):
            raise PermissionError(13, "Permission denied", str(path))
        return open_regular(path)

    monkeypatch.setattr(os, "scandir", refuse_folder)
    monkeypatch.setattr(lstv.index, "open_regular", refuse_file)
    out = tmp_path / "series.csv"
    assert main(["index", "--input_dir", str(messy_export), "--output", str(out),
                 "--num_workers", "1", "--quiet"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "1 unreadable file (permission denied)" in said
    where = locked.relative_to(messy_export)
    assert f"1 folder could not be read ({where}: permission denied)" in said


def test_two_patients_sharing_a_study_uid_are_kept_apart_with_a_warning(
    tmp_path, phantom_dataset, caplog
):
    """17.7: two patients' files under one StudyInstanceUID were merged into one study, and
    the selection then ran patient B's series for patient A's study."""
    rows = read_series_table(phantom_dataset.series_csv)
    by_study = {}
    for study_id, series_id, description in rows:
        by_study.setdefault(study_id, []).append((series_id, description))
    (a, a_series), (b, b_series) = list(by_study.items())[:2]
    export = tmp_path / "export"
    uid = None
    for patient, study_id, series in (("PAT-A", a, a_series), ("PAT-B", b, b_series)):
        for series_id, _ in series:
            folder = export / patient / str(series_id)
            folder.mkdir(parents=True)
            source = phantom_dataset.images_dir / str(study_id) / str(series_id)
            for f in sorted(source.glob("*")):
                ds = pydicom.dcmread(f)
                uid = uid or ds.StudyInstanceUID
                ds.StudyInstanceUID, ds.PatientID = uid, patient  # a PACS that reused the UID
                ds.save_as(folder / f.name)
    with caplog.at_level("WARNING", logger="lstv.index"):
        result = index_tree(export, num_workers=1)
    assert result.n_studies == 2
    assert "shared by 2 patients" in caplog.text and uid in caplog.text
    by_id = {}
    for r in result.rows:
        by_id.setdefault(r["study_id"], set()).add(r["path"].split("/")[0])
    assert sorted(map(sorted, by_id.values())) == [["PAT-A"], ["PAT-B"]]


def test_an_enhanced_file_mixing_planes_is_indexed_as_mixed_and_refused_in_plain_words(tmp_path):
    """17.13: 3 axial frames among sagittal ones were indexed as sagittal (3 frames probed),
    then failed in lstv infer with a geometry message."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from lstv.dicom import SeriesReadError, read_series

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("emri_small.dcm"))
    shared, measures, plane = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [0.9, 0.8]
    plane.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(10):
        item, where = Dataset(), Dataset()
        where.ImagePositionPatient = [-6.0 + 1.2 * k, -30.0, 40.0 + k]
        item.PlanePositionSequence = Sequence([where])
        if k in (1, 2, 3):  # not the first, middle or last frame
            axial = Dataset()
            axial.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            item.PlaneOrientationSequence = Sequence([axial])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    (tmp_path / "export").mkdir()
    ds.save_as(tmp_path / "export" / "IM0001")
    (row,) = index_tree(tmp_path / "export", num_workers=1).rows
    assert row["orientation"] == "mixed"
    with pytest.raises(SeriesReadError, match=r"IM0001: 7 sagittal and 3 axial slices in one"):
        read_series([tmp_path / "export" / "IM0001"])


def test_a_dicomdir_with_broken_offsets_is_named_in_plain_words(tmp_path, phantom_dataset, caplog):
    """17.13: "unreadable DICOMDIR (7402)" said nothing a user could act on."""
    files = write_dicomdir(phantom_dataset, tmp_path / "cd")
    dicomdir = pydicom.dcmread(tmp_path / "cd" / "DICOMDIR")
    dicomdir.DirectoryRecordSequence[0].OffsetOfTheNextDirectoryRecord = 7402
    dicomdir.save_as(tmp_path / "cd" / "DICOMDIR")
    with caplog.at_level("WARNING", logger="lstv.index"):
        result = index_tree(tmp_path / "cd", num_workers=1)
    assert "record points to byte 7402 of the DICOMDIR, where no record starts" in caplog.text
    assert "walking the folders instead" in caplog.text
    assert [r["n_instances"] for r in result.rows] == [len(files)]


# -------------------- input parsing
# Issue 9, messages: CSV and ID parsing that gives clear errors instead of tracebacks or silently
# wrong matches, and an audit queue that a spreadsheet cannot run as formulas.


def test_index_csv_with_a_bom_keeps_clean_column_names(tmp_path):
    from lstv.studies import read_series_records

    path = tmp_path / "index.csv"
    path.write_text(
        "study_uid,study_id,series_id,series_description\n1.2.3,1,10,Sagittal T2\n",
        encoding="utf-8-sig",
    )
    (record,) = read_series_records(path)
    assert (record.study_id, record.series_id) == (1, 10)
    assert record.headers == {"study_uid": "1.2.3"}


def test_a_uid_in_full_width_digits_is_not_taken_as_that_number():
    from lstv.index import uid_to_id

    assert uid_to_id("123") == 123
    assert uid_to_id("１２３") != 123  # hashed like any other non-numeric UID
    assert uid_to_id("4773_9259") != 47739259
