"""Issue 9, property: whatever is wrong with the DICOM headers or the series CSV, ``lstv infer``
exits 0 or 2 with a one-line error, accounts for every selected study exactly once (a metrics
row or a failure row), prints no traceback and writes nothing outside its output folder."""

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
)
def test_infer_accounts_for_every_study(dataset, dicom_mutations, csv_mutations):
    from lstv.cli import main

    work = Path(tempfile.mkdtemp(prefix="lstv-property-"))
    try:
        images = shutil.copytree(dataset.images_dir, work / "train_images")
        series_csv = Path(shutil.copy(dataset.series_csv, work / "series.csv"))
        valid_ids = Path(shutil.copy(dataset.valid_ids_path, work / "valid_id.npy"))
        study_dirs = sorted(p.relative_to(images) for p in images.iterdir())
        for m in dicom_mutations:
            apply_dicom_mutation(images, study_dirs, m)
        # Whole-file changes last: the next mutation's csv.reader would refuse a huge field.
        for m in sorted(csv_mutations, key=lambda m: m[0] in ("huge_field", "bom")):
            apply_csv_mutation(series_csv, m)
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
            assert str(series_csv) in err or "series" in err or "valid" in err, err
            return
        manifest = json.loads((out / "run_manifest.json").read_text())
        selected = [str(s) for s in manifest["selected_study_ids"]]
        seen = [r["study_id"] for r in read_rows(out / "lstv_uncertainty_metrics.csv")]
        seen += [r["study_id"] for r in read_rows(out / "failures.csv")]
        assert sorted(seen) == sorted(selected), (seen, selected)
        assert len(set(seen)) == len(seen)
        for row in read_rows(out / "lstv_uncertainty_metrics.csv"):
            assert row["risk_level"] in ("High", "Medium", "Low")
    finally:
        shutil.rmtree(work, ignore_errors=True)
