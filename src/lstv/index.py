"""``lstv index``: any DICOM export (nested folders, no extensions, DICOMDIR) -> a series CSV.

Headers only are read (``stop_before_pixels``), in a process pool, and instances are grouped by
StudyInstanceUID and SeriesInstanceUID. The CSV starts with the RSNA columns (``study_id``,
``series_id``, ``series_description``) so ``lstv infer --series_csv`` takes it as it takes
``train_series_descriptions.csv``; the columns after them let the series selection fall back to
the headers (orientation, TE/TR, image type) when no description says "sagittal T2". Nothing in
the export is copied or rewritten.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstv.atomic import write_csv_atomic
from lstv.dicom import NotRegularFileError, folder_files, frame_geometry, open_regular
from lstv.dicom_geometry import plane_of
from lstv.dicom_limits import MAX_FRAMES
from lstv.errors import UsageError
from lstv.studies import join_paths

log = logging.getLogger(__name__)

INDEX_COLUMNS = (
    "study_id",
    "series_id",
    "series_description",
    "study_uid",
    "series_uid",
    "path",
    "orientation",
    "repetition_time",
    "echo_time",
    "n_instances",
    "n_frames",
    "inversion_time",
    "image_type",
    "scanning_sequence",
    "sequence_name",
    "acquisition_contrast",
    "modality",
    "sop_class",
    "series_number",
    "rows",
    "columns",
)
MAX_EXACT_ID = 2**53  # spreadsheets hold integers below this exactly
DICOMDIR = "DICOMDIR"


def uid_to_id(uid: str) -> int:
    """A stable positive integer below 2**53 for a DICOM UID.

    A UID that already is such an integer (RSNA's anonymised UIDs are the folder names) is kept,
    so an index of the RSNA tree has the RSNA IDs; any other UID is hashed with SHA-256.
    """
    uid = uid.strip()
    if uid.isascii() and uid.isdigit() and 0 < int(uid) < MAX_EXACT_ID:  # not "１２３"
        return int(uid)
    digest = hashlib.sha256(uid.encode("ascii", "replace")).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_EXACT_ID - 1) + 1


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _first_item(ds, keyword: str):
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _functional_value(ds, seq: str, attr: str):
    """An attribute of an Enhanced MR functional group (shared first, then the first frame)."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        group = _first_item(ds, groups)
        item = _first_item(group, seq) if group is not None else None
        if item is not None and attr in item:
            return item.get(attr)
    return None


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


@dataclass
class InstanceHeader:
    """What the index keeps of one file (small and picklable, for the process pool)."""

    path: str
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    series_description: str
    n_frames: int
    planes: tuple[str, ...]
    repetition_time: float | None
    echo_time: float | None
    inversion_time: float | None
    image_type: str
    scanning_sequence: str
    sequence_name: str
    acquisition_contrast: str
    modality: str
    sop_class: str
    series_number: str
    rows: int
    columns: int


def read_header(path: str) -> InstanceHeader | str:
    """The header of one file, or why it is left out (``not DICOM``, ``no image``, ...)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open_regular(path) as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
    except NotRegularFileError:
        return "not a regular file"
    except (InvalidDicomError, EOFError):
        return "not DICOM"
    except OSError as exc:  # permission denied, an I/O error: not the file's content
        return f"unreadable file ({(exc.strerror or type(exc).__name__).lower()})"
    except Exception:  # a DICOM preamble with a broken data set after it
        return "unreadable DICOM"
    try:
        if "Rows" not in ds or "Columns" not in ds:
            return "no image"
        study_uid = _text(ds.get("StudyInstanceUID"))
        series_uid = _text(ds.get("SeriesInstanceUID"))
        if not study_uid or not series_uid:
            return "no study or series UID"
        n_frames = int(_number(ds.get("NumberOfFrames")) or 1)
        # Every frame's plane (a localizer's few frames may sit anywhere in an enhanced file);
        # a file declaring more frames than any series holds is refused when read anyway.
        probe = range(n_frames) if n_frames <= MAX_FRAMES else (0, n_frames - 1)
        planes = tuple(sorted({plane_of(frame_geometry(ds, f)[1] or ()) for f in probe}))
        tr = _number(ds.get("RepetitionTime"))
        te = _number(ds.get("EchoTime"))
        if tr is None:
            timing = "MRTimingAndRelatedParametersSequence"
            tr = _number(_functional_value(ds, timing, "RepetitionTime"))
        if te is None:
            te = _number(_functional_value(ds, "MREchoSequence", "EffectiveEchoTime"))
        ti = _number(ds.get("InversionTime"))
        if ti is None:
            ti = _number(_functional_value(ds, "MRModifierSequence", "InversionTimes"))
        sop_class = ds.get("SOPClassUID")
        return InstanceHeader(
            path=path,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=_text(ds.get("SOPInstanceUID")) or path,
            patient_id=_text(ds.get("PatientID")),
            series_description=_text(ds.get("SeriesDescription")),
            n_frames=n_frames,
            planes=planes,
            repetition_time=tr,
            echo_time=te,
            inversion_time=ti,
            image_type=_text(ds.get("ImageType")),
            scanning_sequence=_text(ds.get("ScanningSequence")),
            sequence_name=_text(ds.get("SequenceName") or ds.get("PulseSequenceName")),
            acquisition_contrast=_text(ds.get("AcquisitionContrast")),
            modality=_text(ds.get("Modality")),
            sop_class=getattr(sop_class, "name", _text(sop_class)),
            series_number=_text(ds.get("SeriesNumber")),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
        )
    except Exception:  # a malformed value in an otherwise readable header
        return "unreadable DICOM"


def _read_headers(paths: list[str]) -> list[InstanceHeader | str]:
    """Headers of a chunk of files. Value validation is off while reading: it doubles the cost
    of a header, and exports are full of harmless non-conformant values (read as they are)."""
    from pydicom import config

    before = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        return [read_header(p) for p in paths]
    finally:
        config.settings.reading_validation_mode = before


def dicomdir_files(dicomdir: Path) -> list[Path] | None:
    """The instance files a DICOMDIR references, or None when it cannot be read."""
    import pydicom
    from pydicom.fileset import FileSet

    try:
        fileset = FileSet(pydicom.dcmread(dicomdir))
        return sorted({Path(instance.path) for instance in fileset})
    except Exception as exc:
        log.warning(
            "%s: unreadable DICOMDIR (%s); walking the folders instead", dicomdir, _why(exc)
        )
        return None


def _why(exc: Exception) -> str:
    """What is wrong with a DICOMDIR, in words (pydicom raises a bare KeyError of the offset
    when a record points where no record starts)."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], int):
        return (
            f"a directory record points to byte {exc.args[0]} of the DICOMDIR, where no record "
            "starts: the file is damaged"
        )
    return f"{type(exc).__name__}: {exc}"


def candidate_files(
    input_dir: Path, exclude: set[Path] = frozenset(), unreadable: dict | None = None
) -> list[Path]:
    """Every regular file under ``input_dir`` (any depth, any name, symlinks not followed);
    only those a top-level DICOMDIR references when there is a readable one. Folders that
    cannot be listed go into ``unreadable`` (relative path -> why), so they can be named."""
    input_dir = Path(input_dir)
    if (input_dir / DICOMDIR).is_file():
        files = dicomdir_files(input_dir / DICOMDIR)
        if files is not None:
            log.info("%s: %d instances listed in the DICOMDIR", input_dir, len(files))
            return [f for f in files if f.resolve() not in exclude]

    def note(exc: OSError) -> None:
        where = os.path.relpath(exc.filename, input_dir) if exc.filename else str(input_dir)
        if unreadable is not None:
            unreadable[where] = (exc.strerror or type(exc).__name__).lower()

    files = []
    for root, dirs, names in os.walk(input_dir, onerror=note):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if name == DICOMDIR or name.startswith(".") or not path.is_file():
                continue
            if path.is_symlink() or path.resolve() in exclude:
                continue
            files.append(path)
    return files


@dataclass
class IndexResult:
    """What ``lstv index`` found: the series rows and the files it left out, by reason."""

    rows: list[dict]
    n_files: int
    skipped: Counter = field(default_factory=Counter)
    n_duplicates: int = 0
    unreadable_folders: dict = field(default_factory=dict)  # relative path -> why

    def unreadable_text(self) -> str:
        """The folders that could not be listed, in a sentence ("" when none)."""
        folders = self.unreadable_folders
        if not folders:
            return ""
        named = ", ".join(f"{path}: {why}" for path, why in sorted(folders.items())[:5])
        more = f" and {len(folders) - 5} more" if len(folders) > 5 else ""
        plural = "folder" if len(folders) == 1 else "folders"
        return f"{len(folders)} {plural} could not be read ({named}{more})"

    @property
    def n_instances(self) -> int:
        return sum(int(r["n_instances"]) for r in self.rows)

    @property
    def n_studies(self) -> int:
        return len({r["study_id"] for r in self.rows})


def read_all_headers(
    files: list[Path], input_dir: Path, num_workers: int, progress: bool
) -> list[InstanceHeader | str]:
    """Headers of ``files`` (paths relative to ``input_dir``), in order, read by a pool."""
    from tqdm import tqdm

    rel = [os.path.relpath(f, input_dir) for f in files]
    absolute = [str(Path(input_dir) / r) for r in rel]
    chunk = 64
    chunks = [absolute[i : i + chunk] for i in range(0, len(absolute), chunk)]
    bar = tqdm(total=len(absolute), unit="file", desc="index", disable=not progress)
    results: list[InstanceHeader | str] = []
    if num_workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            results.extend(_read_headers(c))
            bar.update(len(c))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            for c, headers in zip(chunks, pool.map(_read_headers, chunks), strict=True):
                results.extend(headers)
                bar.update(len(c))
    bar.close()
    for r, header in zip(rel, results, strict=True):
        if isinstance(header, InstanceHeader):
            header.path = r
    return results


def _folder_sizes(input_dir: Path, folders: set[str]) -> Counter:
    """How many files :func:`lstv.dicom.folder_files` would read in each folder."""
    sizes = Counter()
    for folder in folders:
        try:
            sizes[folder] = len(folder_files(Path(input_dir) / folder))
        except ValueError:
            sizes[folder] = 0
    return sizes


def _series_path(members: list[InstanceHeader], folder_sizes: Counter) -> str:
    """The series' folder when it holds exactly the series' files, else the files."""
    folders = {str(Path(m.path).parent) for m in members}
    if len(folders) == 1:
        folder = folders.pop()
        if folder_sizes[folder] == len(members) and folder != ".":
            return join_paths([folder])
    return join_paths(sorted(m.path for m in members))


def _most_common(values) -> str:
    values = [v for v in values if v not in ("", None)]
    return Counter(values).most_common(1)[0][0] if values else ""


def _median(values) -> float | str:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else ""


def _study_keys(headers: list[InstanceHeader]):
    """What identifies a study: its StudyInstanceUID, or, where files of several patients
    (PatientID) carry the same one (a PACS or anonymiser that reused it), the UID and the
    patient, so two patients' series are never merged into one study."""
    patients: dict[str, set[str]] = {}
    for h in headers:
        patients.setdefault(h.study_uid, set()).add(h.patient_id)
    shared = {uid for uid, ids in patients.items() if len(ids - {""}) > 1}
    for uid in sorted(shared):
        log.warning(
            "StudyInstanceUID %s is shared by %d patients (different PatientID): indexed as %d "
            "separate studies; check the export",
            uid,
            len(patients[uid] - {""}),
            len(patients[uid]),
        )
    return lambda h: f"{h.study_uid}\\{h.patient_id}" if h.study_uid in shared else h.study_uid


def series_rows(headers: list[InstanceHeader], folder_sizes: Counter) -> tuple[list[dict], int]:
    """One row per series, sorted by study and series ID, and the number of duplicate
    instances (same SOPInstanceUID in several files) left out."""
    study_key = _study_keys(headers)
    by_series: dict[tuple[str, str], dict[str, InstanceHeader]] = {}
    duplicates = 0
    for h in headers:
        members = by_series.setdefault((study_key(h), h.series_uid), {})
        if h.sop_uid in members:
            duplicates += 1
            continue
        members[h.sop_uid] = h
    rows = []
    ids: dict[int, str] = {}
    for (key, series_uid), by_sop in by_series.items():
        members = sorted(by_sop.values(), key=lambda m: m.path)
        study_uid = members[0].study_uid
        study_id, series_id = uid_to_id(key), uid_to_id(series_uid)
        for number, uid in ((study_id, key), (series_id, series_uid)):
            if ids.setdefault(number, uid) != uid:
                raise ValueError(f"UIDs {uid} and {ids[number]} hash to the same ID {number}")
        planes = {p for m in members for p in m.planes}
        rows.append(
            {
                "study_id": study_id,
                "series_id": series_id,
                "series_description": _most_common(m.series_description for m in members),
                "study_uid": study_uid,
                "series_uid": series_uid,
                "path": _series_path(members, folder_sizes),
                "orientation": planes.pop() if len(planes) == 1 else "mixed",
                "repetition_time": _median(m.repetition_time for m in members),
                "echo_time": _median(m.echo_time for m in members),
                "n_instances": len(members),
                "n_frames": sum(m.n_frames for m in members),
                "inversion_time": _median(m.inversion_time for m in members),
                "image_type": _most_common(m.image_type for m in members),
                "scanning_sequence": _most_common(m.scanning_sequence for m in members),
                "sequence_name": _most_common(m.sequence_name for m in members),
                "acquisition_contrast": _most_common(m.acquisition_contrast for m in members),
                "modality": _most_common(m.modality for m in members),
                "sop_class": _most_common(m.sop_class for m in members),
                "series_number": _most_common(m.series_number for m in members),
                "rows": _most_common(m.rows for m in members),
                "columns": _most_common(m.columns for m in members),
            }
        )
    rows.sort(key=lambda r: (r["study_id"], r["series_id"]))
    return rows, duplicates


def index_tree(
    input_dir: str | Path,
    num_workers: int | None = None,
    progress: bool = False,
    exclude: set[Path] = frozenset(),
) -> IndexResult:
    """Read the headers of every file under ``input_dir`` and group them into series.

    Raises:
        FileNotFoundError: ``input_dir`` is not a folder.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input_dir not found: {input_dir}")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    unreadable: dict[str, str] = {}
    files = candidate_files(input_dir, {Path(p).resolve() for p in exclude}, unreadable)
    headers = read_all_headers(files, input_dir, num_workers, progress)
    found = [h for h in headers if isinstance(h, InstanceHeader)]
    skipped = Counter(h for h in headers if isinstance(h, str))
    folder_sizes = _folder_sizes(input_dir, {str(Path(h.path).parent) for h in found})
    rows, duplicates = series_rows(found, folder_sizes)
    result = IndexResult(rows, len(files), skipped, duplicates, unreadable)
    log.info(
        "%s: %d files, %d instances in %d series of %d studies",
        input_dir,
        len(files),
        result.n_instances,
        len(rows),
        result.n_studies,
    )
    for reason, count in sorted(skipped.items()):
        level = logging.WARNING if reason.startswith("unreadable file") else logging.INFO
        log.log(level, "skipped %d file(s): %s", count, reason)
    if unreadable:
        log.warning("%s: the studies in them are not in the index", result.unreadable_text())
    if duplicates:
        log.warning("left out %d duplicate instance(s) (same SOPInstanceUID)", duplicates)
    return result


def _is_previous_index(path: Path) -> bool:
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(header[: len(INDEX_COLUMNS)]) == INDEX_COLUMNS


def check_output(output: Path, input_dir: Path) -> None:
    """Refuse an output that would overwrite an input: an existing file inside ``input_dir``
    that is not an earlier index.

    Raises:
        UsageError: the output is inside the export and would replace one of its files.
    """
    output, root = Path(output).resolve(), Path(input_dir).resolve()
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a CSV file name")
    inside = root == output or root in output.parents
    if inside and output.exists() and not _is_previous_index(output):
        raise UsageError(
            f"--output {output} is a file of the export in --input_dir; refusing to overwrite "
            "an input (write the index elsewhere)"
        )


def write_index(rows: list[dict], output: Path) -> None:
    """The series CSV, written to a temporary file and renamed, so it is never half written."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(output, INDEX_COLUMNS, rows)


def build_index(
    input_dir: str | Path,
    output: str | Path,
    num_workers: int | None = None,
    progress: bool = True,
) -> IndexResult:
    """Index ``input_dir`` into the series CSV ``output`` (see :func:`index_tree`).

    Raises:
        FileNotFoundError: ``input_dir`` is missing.
        UsageError: ``output`` would overwrite a file of the export, or no DICOM image found.
    """
    check_output(Path(output), Path(input_dir))
    # A progress bar only for a person at a terminal, never in batch logs.
    progress = progress and sys.stderr.isatty()
    result = index_tree(input_dir, num_workers, progress, exclude={Path(output)})
    if not result.rows:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
        folders = result.unreadable_text()
        raise UsageError(
            f"no DICOM images under {input_dir} ({result.n_files} files"
            + (f": {reasons})" if reasons else ")")
            + (f"; {folders}" if folders else "")
        )
    write_index(result.rows, output)
    return result


def upload_series_files(folder: str | Path):
    """The series to analyse among uploaded files (the web demo): the one series
    :func:`lstv.studies.select_series` picks, as ``lstv infer`` would from an index of them,
    even when only one series was uploaded (a lone sagittal T1 gets no verdict).

    Returns:
        (files, task): the series' files and its :class:`lstv.studies.StudyTask` (its
        description and the rule that chose it).

    Raises:
        UsageError: no DICOM image, several studies, or no usable sagittal T2 series (the
            message lists what the upload had).
    """
    from lstv.rsna import SERIES_COLUMNS
    from lstv.studies import SeriesRecord, select_series

    folder = Path(folder)
    result = index_tree(folder, num_workers=1)
    if not result.rows:
        words = {"not DICOM": "not a readable DICOM file"}
        reasons = sorted(result.skipped.items())
        skipped = ", ".join(f"{n} {words.get(why, why)}" for why, n in reasons)
        raise UsageError(f"the upload holds no DICOM image ({skipped})")
    if result.n_studies > 1:
        raise UsageError(f"the upload holds {result.n_studies} studies: upload one study")
    extra = [c for c in INDEX_COLUMNS if c not in SERIES_COLUMNS]
    records = [
        SeriesRecord(
            r["study_id"],
            r["series_id"],
            r["series_description"],
            {c: "" if r[c] is None else str(r[c]) for c in extra},
        )
        for r in result.rows
    ]
    (task,) = select_series(records)
    if task.series_id is None:
        raise UsageError(f"no verdict: the upload {task.note.removeprefix('study ')}")
    log.info("upload: %d series, analysing %r", len(result.rows), task.series_description)
    return task.series_source(folder), task
