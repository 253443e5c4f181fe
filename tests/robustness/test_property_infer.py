"""Issue 9, property: whatever is wrong with the DICOM headers, the series CSV, the paths of an
``lstv index`` CSV or a ``--reference`` (issue 17), ``lstv infer`` exits 0 or 2 with a one-line
error, accounts for every selected study exactly once (a metrics row or a failure row at reading
or selection, never a study failed by a bad reference), prints no traceback, never hangs on a
FIFO and writes nothing outside its output folder."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "models" / "phantom_point_net.pth"
N_STUDIES = 3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHECKPOINT.is_file(), reason="models/phantom_point_net.pth missing"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small phantom dataset, written once: (root, series files per study)."""
    from lstv.phantom import write_phantom_dataset

    ds = write_phantom_dataset(
        tmp_path_factory.mktemp("property_phantom"),
        n_studies=N_STUDIES,
        lstv_fraction=0.34,
        seed=3,
        valid_fraction=1.0,
    )
    return ds


@pytest.fixture(scope="module")
def index_csv(dataset, tmp_path_factory) -> Path:
    """An ``lstv index`` CSV of the dataset's images (paths relative to the images folder)."""
    from lstv.index import build_index

    out = tmp_path_factory.mktemp("property_index") / "index.csv"
    build_index(dataset.images_dir, out, num_workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def reference_json(tmp_path_factory) -> dict:
    """A valid score reference of the checkpoint, as JSON data (a reference's fields)."""
    import numpy as np

    from helpers import normal_features
    from lstv.rundir import file_sha256
    from lstv.score import fit_reference

    raw = normal_features(np.random.default_rng(0), 25)
    ref = fit_reference(raw, file_sha256(CHECKPOINT), rule="max_abs_z")
    path = ref.save(tmp_path_factory.mktemp("property_ref") / "reference.json")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- mutations

FLOATS = st.sampled_from([0.0, -1.0, 1e-9, 1e9, float("nan"), float("inf"), 0.7, 120.5])
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian (the file stays explicit)
    "1.2.840.10008.1.2.2",  # big endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline, pixels not compressed
    "1.2.840.10008.1.2.5",  # RLE, pixels not compressed
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.3.4.5",  # unknown
]

header_edit = st.one_of(
    st.tuples(st.just("ImagePositionPatient"), st.lists(FLOATS, min_size=3, max_size=3)),
    st.tuples(st.just("ImagePositionPatient"), st.just("same")),
    st.tuples(st.just("PixelSpacing"), st.lists(FLOATS, min_size=2, max_size=2)),
    st.tuples(st.just("ImageOrientationPatient"), st.lists(FLOATS, min_size=6, max_size=6)),
    st.tuples(
        st.just("ImageOrientationPatient"),
        st.sampled_from([[0, 1, 0, 0, 0, -1], [0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]]),
    ),
    st.tuples(st.sampled_from(["Rows", "Columns"]), st.sampled_from([0, 1, 479, 60000])),
    st.tuples(st.just("NumberOfFrames"), st.sampled_from([0, 2, 60000])),
    st.tuples(st.just("BitsAllocated"), st.sampled_from([0, 1, 8, 32])),
    st.tuples(st.just("SamplesPerPixel"), st.sampled_from([0, 3])),
    st.tuples(st.just("TransferSyntaxUID"), st.sampled_from(TRANSFER_SYNTAXES)),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("delete"), st.just(None)),
)
# (which study, which file of its series (a fraction of the count), every file or just one, edit)
dicom_mutation = st.tuples(
    st.integers(0, N_STUDIES - 1), st.floats(0, 0.999), st.booleans(), header_edit
)
csv_mutation = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 50)),
    st.tuples(st.just("duplicate"), st.integers(0, 50)),
    st.tuples(st.just("describe"), st.sampled_from(["Axial T2", "", "SAGITTAL t2 ☃", "x" * 300])),
    st.tuples(st.just("study_id"), st.sampled_from(["4773_9259", "１２３", "", "12.5", "-4"])),
    st.tuples(st.just("series_id"), st.sampled_from(["999", "0", "abc"])),
    st.tuples(st.just("bom"), st.none()),
    st.tuples(st.just("huge_field"), st.none()),
)


# (which row of the index, how its path is changed)
index_mutation = st.tuples(
    st.integers(0, 50),
    st.sampled_from(["outside", "absolute", "fifo", "semicolon", "missing", "folder_file"])
    | st.sampled_from(["[", "[]", '["a"', ";;;", "\n", "é/x", "../../etc/passwd", "/dev/zero"]),
)
REFERENCE_FIELDS = [
    "threshold", "log_offset", "features", "log_features", "centre.l5_s1_peak2",
    "scale.l5_s1_peak2", "n", "format", "checkpoint_sha256", "target_specificity", "rule",
]  # fmt: skip
REFERENCE_VALUES = [
    "5.0", 10**400, -5, 0, 1e-320, 7.5, None, True, [], {}, "x",
    float("nan"), float("inf"), ["l5_s1_peak2"], ["l5_s1_nonsense"],
]  # fmt: skip
# None: no --reference; "deep": 100,000 nested brackets; else (field, value)
reference_mutation = st.one_of(
    st.none(),
    st.just("deep"),
    st.just("valid"),
    st.tuples(st.sampled_from(REFERENCE_FIELDS), st.sampled_from(REFERENCE_VALUES)),
)


# Edits that leave a reference valid: every other edit must be refused with exit 2.
GOOD_EDITS = [
    ("threshold", 7.5), ("threshold", 0), ("threshold", 1e-320),
    ("log_offset", 7.5), ("log_offset", 1e-320),
    ("centre.l5_s1_peak2", 7.5), ("centre.l5_s1_peak2", -5), ("centre.l5_s1_peak2", 0),
    ("centre.l5_s1_peak2", 1e-320), ("scale.l5_s1_peak2", 7.5),
    ("target_specificity", None), ("log_features", []),
]  # fmt: skip


def apply_index_mutation(images: Path, path: Path, mutation) -> None:
    from lstv.studies import join_paths, split_paths

    row_number, kind = mutation
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    row = rows[row_number % len(rows)]
    first = split_paths(row["path"])[0]
    if kind == "outside":
        row["path"] = "../" + images.name + "/../" + first
    elif kind == "absolute":
        row["path"] = str(images / first)
    elif kind == "fifo":
        fifo = images / f"pipe{row_number}"
        if not fifo.exists():
            os.mkfifo(fifo)
        row["path"] = fifo.name
    elif kind == "semicolon":  # a legal name with the old separator in it
        renamed = images / (first + ";v2")
        if (images / first).is_dir() and not renamed.exists():
            (images / first).rename(renamed)
            for other in rows:  # the series that lived there moved with it
                if split_paths(other["path"]) == [first]:
                    other["path"] = join_paths([first + ";v2"])
    elif kind == "missing":
        row["path"] = first + "/gone"
    elif kind == "folder_file":  # a folder listed as one of two files
        row["path"] = join_paths([first, first])
    else:
        row["path"] = kind
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_reference(data: dict, path: Path, mutation) -> None:
    if mutation == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
        return
    data = json.loads(json.dumps(data))
    if isinstance(mutation, tuple):
        field, value = mutation
        *parents, last = field.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
    path.write_text(json.dumps(data))


def apply_dicom_mutation(images: Path, study_dirs: list[Path], mutation) -> None:
    study, where, every, (attr, value) = mutation
    files = sorted((images / study_dirs[study]).rglob("*.dcm"))
    if not files:  # every file deleted by an earlier mutation
        return
    chosen = files if every else [files[int(where * len(files))]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on invalid values: they are the point
        for f in chosen:
            if not f.exists():
                continue
            if attr == "delete":
                f.unlink()
            elif attr == "truncate":
                data = f.read_bytes()
                f.write_bytes(data[: int(len(data) * value)])
            else:
                try:
                    ds = pydicom.dcmread(f)
                except Exception:  # already truncated by an earlier mutation
                    continue
                if attr == "TransferSyntaxUID":
                    ds.file_meta.TransferSyntaxUID = value
                elif value == "same":
                    ds.ImagePositionPatient = [1.5, -2.5, 3.5]
                else:
                    setattr(ds, attr, value)
                try:
                    ds.save_as(f, enforce_file_format=False)
                except Exception:  # pydicom cannot write this value: the file stays as it was
                    continue


def apply_csv_mutation(path: Path, mutation) -> None:
    kind, value = mutation
    default_limit = csv.field_size_limit(2**31 - 1)  # an earlier mutation may be a huge field
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    finally:
        csv.field_size_limit(default_limit)  # the code under test must see the default
    header, body = rows[0], rows[1:]
    i = (value if isinstance(value, int) else 0) % len(body)
    if kind == "drop":
        del body[i]
    elif kind == "duplicate":
        body.insert(i, list(body[i]))
    elif kind == "describe":
        body[0][2] = value
    elif kind == "study_id":
        body[-1][0] = value
    elif kind == "series_id":
        body[0][1] = value
    elif kind == "huge_field":
        body[0][2] = "Sagittal T2 " + "x" * (csv.field_size_limit() + 1)
    encoding = "utf-8-sig" if kind == "bom" else "utf-8"
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows([header, *body])


# --------------------------------------------------------------------------- invariants


def snapshot(folder: Path, skip: Path) -> dict[str, str]:
    """Path -> SHA-256 of every file under ``folder`` except under ``skip``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record):
        self.texts.append(self.format(record) if record.exc_info else record.getMessage())


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    dicom_mutations=st.lists(dicom_mutation, max_size=3),
    csv_mutations=st.lists(csv_mutation, max_size=2),
    index_mutations=st.none() | st.lists(index_mutation, max_size=3),
    reference=reference_mutation,
)
def test_infer_accounts_for_every_study(
    dataset, index_csv, reference_json, dicom_mutations, csv_mutations, index_mutations, reference
):
    from lstv.cli import main

    work = Path(tempfile.mkdtemp(prefix="lstv-property-"))
    try:
        images = shutil.copytree(dataset.images_dir, work / "train_images")
        valid_ids = Path(shutil.copy(dataset.valid_ids_path, work / "valid_id.npy"))
        study_dirs = sorted(p.relative_to(images) for p in images.iterdir())
        for m in dicom_mutations:
            apply_dicom_mutation(images, study_dirs, m)
        if index_mutations is None:  # the RSNA series CSV
            series_csv = Path(shutil.copy(dataset.series_csv, work / "series.csv"))
            # Whole-file changes last: the next mutation's csv.reader would refuse a huge field.
            for m in sorted(csv_mutations, key=lambda m: m[0] in ("huge_field", "bom")):
                apply_csv_mutation(series_csv, m)
        else:  # an lstv index of the same images, its paths changed
            series_csv = Path(shutil.copy(index_csv, work / "series.csv"))
            for m in index_mutations:
                apply_index_mutation(images, series_csv, m)
        extra = []
        if reference is not None:
            write_reference(reference_json, work / "reference.json", reference)
            extra = ["--reference", str(work / "reference.json")]
        out = work / "out"
        before = snapshot(work, out)

        records = _Records()
        root = logging.getLogger()
        root.addHandler(records)
        stderr, stdout = io.StringIO(), io.StringIO()
        cwd = Path.cwd()
        os.chdir(work)  # a stray relative write would land here and be seen
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                code = main(
                    [
                        "infer",
                        "--input_dir", str(images),
                        "--series_csv", str(series_csv),
                        "--output_dir", str(out),
                        "--checkpoint", str(CHECKPOINT),
                        "--valid_ids", str(valid_ids),
                        "--mode", "prod",
                        "--device", "cpu",
                        "--num_workers", "0",
                        "--batch_size", "2",
                        "--quiet",
                        *extra,
                    ]
                )  # fmt: skip
        finally:
            os.chdir(cwd)
            root.removeHandler(records)

        err = stderr.getvalue()
        logged = "\n".join(records.texts)
        assert "Traceback" not in err and "Traceback" not in logged, err + logged
        assert code in (0, 2), (code, err)
        assert snapshot(work, out) == before, "files outside the output folder changed"
        if code == 2:
            assert err.startswith("error: ") and err.count("\n") == 1, err
            named = (str(series_csv), "series", "valid", "reference.json")
            assert any(n in err for n in named), err
            if "reference.json" in err:  # refused before any work: not even the folder
                assert not out.exists()
            return
        if reference not in (None, "valid"):  # a bad reference is refused; a good one scores
            field, value = reference
            assert (field, value) in GOOD_EDITS, (reference, err)
        manifest = json.loads((out / "run_manifest.json").read_text())
        selected = [str(s) for s in manifest["selected_study_ids"]]
        seen = [r["study_id"] for r in read_rows(out / "lstv_uncertainty_metrics.csv")]
        seen += [r["study_id"] for r in read_rows(out / "failures.csv")]
        assert sorted(seen) == sorted(selected), (seen, selected)
        assert len(set(seen)) == len(seen)
        for row in read_rows(out / "lstv_uncertainty_metrics.csv"):
            assert row["risk_level"] in ("High", "Medium", "Low")
            if reference is not None:
                assert row["lstv_score"] != "" or row["lstv_score_driver"] == ""
        # A study fails at reading or selection, never at scoring (a reference was checked).
        assert {r["stage"] for r in read_rows(out / "failures.csv")} <= {"read", "select"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
