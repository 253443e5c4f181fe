"""Which series to run: RSNA layout, sagittal T2 selection, valid-ID filter, modes and shards."""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstv.config import MODES
from lstv.errors import UsageError
from lstv.rsna import SAGITTAL_T2, SERIES_COLUMNS

log = logging.getLogger(__name__)

# Separates the files in an index's ``path`` column (lstv.index writes it); a list whose names
# hold it is written as a JSON array instead (see join_paths).
PATH_SEPARATOR = ";"
# A column only an index has: its rows carry headers for the selection to fall back on.
INDEX_MARKER = "study_uid"


@dataclass(frozen=True)
class StudyTask:
    """One study to run; ``series_id`` is None when the study has no sagittal T2 series.

    ``path`` (from an index's ``path`` column) is the series' folder or its files, relative to
    the input folder; empty for the RSNA layout. ``selection_rule`` says why this series was
    chosen; ``note`` what the study had when none was.
    """

    study_id: int
    series_id: int | None
    series_description: str = ""
    path: str = field(default="", compare=False)
    selection_rule: str = field(default="", compare=False)
    note: str = field(default="", compare=False)

    def series_dir(self, images_dir: Path) -> Path:
        return Path(images_dir) / str(self.study_id) / str(self.series_id)

    def series_source(self, images_dir: Path) -> Path | list[Path]:
        """What :func:`lstv.dicom.read_series` reads: the RSNA folder (its ``.dcm`` files),
        or every file of the index's folder, or the index's files.

        Raises:
            UsageError: an index path that leads outside ``images_dir`` (``..``, an absolute
                path, a symlink out): ``infer`` and ``report`` read only inside the folder given.
        """
        from lstv.dicom import folder_files

        if not self.path:
            return self.series_dir(images_dir)
        paths = inside_paths(images_dir, split_paths(self.path))
        if len(paths) == 1 and paths[0].is_dir():
            return folder_files(paths[0])
        return paths


def join_paths(parts: list[str]) -> str:
    """An index's ``path`` cell for a folder or files: joined by ``;`` as ever, or, when a name
    holds a ``;`` (or could be read as JSON), a JSON array, so any legal file name survives."""
    parts = [str(p) for p in parts]
    if any(PATH_SEPARATOR in p or not p for p in parts) or parts[0].startswith("["):
        return json.dumps(parts, ensure_ascii=False)
    return PATH_SEPARATOR.join(parts)


def split_paths(text: str) -> list[str]:
    """The paths of an index's ``path`` cell (:func:`join_paths`; older indexes: ``;``)."""
    if text.startswith("["):
        try:
            parts = json.loads(text)
        except ValueError:
            parts = None  # an older index whose first name starts with "["
        if isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts):
            return parts
    return [p for p in text.split(PATH_SEPARATOR) if p]


def inside_paths(root: str | Path, parts: list[str]) -> list[Path]:
    """``root / part`` for each index path, refusing any that leads outside ``root`` once
    ``..`` and symlinks are resolved: an index names files of the export it was made from.

    Raises:
        UsageError: names the path and the folder.
    """
    root = Path(root)
    resolved_root = root.resolve()
    paths = []
    for part in parts:
        path = root / part
        resolved = path.resolve()
        if resolved != resolved_root and resolved_root not in resolved.parents:
            raise UsageError(
                f"index path {part!r} leads outside the folder {root} the run reads; "
                "lstv reads only files inside it (re-index the export from its top folder)"
            )
        paths.append(path)
    if not paths:
        raise UsageError("the index lists no path for this series")
    return paths


def is_sagittal_t2(description: str) -> bool:
    text = description.lower()
    return "sagittal" in text and "t2" in text


def parse_id(text) -> int:
    """A study or series ID written as ASCII digits, as an int.

    Python's ``int`` also takes ``"4773_9259"`` (47739259), full-width digits (``"１２３"``) and
    signs, each of which would name another study; those are refused here.

    Raises:
        UsageError: anything but ASCII digits (surrounding spaces allowed).
    """
    digits = text.strip() if isinstance(text, str) else ""
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"{text!r} is not a whole number written in digits 0-9")
    return int(digits)


def read_series_table(path: str | Path) -> list[tuple[int, int, str]]:
    """Rows of ``train_series_descriptions.csv`` as (study_id, series_id, description).

    A UTF-8 byte-order mark (as spreadsheet programs write) is accepted.

    Raises:
        FileNotFoundError: the CSV is missing.
        UsageError: not UTF-8 text, a column is missing, an ID is not written in digits, or a
            field is too long (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"series CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            try:
                return _series_rows(reader, path)
            except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte, ...
                line = reader.reader.line_num
                raise UsageError(
                    f"{path} line {line}: not a readable CSV row ({exc}; a field may hold at "
                    f"most {csv.field_size_limit() // 1024} KiB)"
                ) from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _series_rows(reader: csv.DictReader, path: Path) -> list[tuple[int, int, str]]:
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in SERIES_COLUMNS if c not in header]
    if missing:
        raise UsageError(
            f"{path}: missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(SERIES_COLUMNS)} (found {', '.join(header) or 'no header'})"
        )
    reader.fieldnames = header
    rows = []
    for row in reader:
        try:
            ids = parse_id(row["study_id"]), parse_id(row["series_id"])
        except ValueError as exc:
            raise UsageError(
                f"{path} line {reader.line_num}: study_id and series_id must be whole numbers "
                f"in digits 0-9 ({exc})"
            ) from exc
        rows.append((*ids, row["series_description"] or ""))
    return rows


def sagittal_t2_tasks(rows: list[tuple[int, int, str]]) -> list[StudyTask]:
    """One task per study, sorted by study ID.

    Where a study has several sagittal T2 series, the one described exactly "Sagittal T2/STIR"
    wins, then the lowest series ID, so reruns and shards agree.
    """
    by_study: dict[int, list[tuple[int, str]]] = {}
    for study_id, series_id, description in rows:
        candidates = by_study.setdefault(study_id, [])
        if is_sagittal_t2(description):
            candidates.append((series_id, description))
    tasks = []
    for study_id in sorted(by_study):
        candidates = by_study[study_id]
        if not candidates:
            tasks.append(StudyTask(study_id, None))
            continue
        series_id, description = min(
            candidates, key=lambda c: (c[1].strip().lower() != SAGITTAL_T2.lower(), c[0])
        )
        tasks.append(StudyTask(study_id, series_id, description))
    return tasks


# Series selection beyond the seed's rule, for exports that are not RSNA's. Descriptions are
# matched as lower-case words (split at anything but letters and digits).
RULE_DESCRIPTION = "description"  # the seed's rule: "sagittal" and "t2" in the description
RULE_PATTERN = "description_pattern"  # SAG T2, T2 SAG, t2_tse_sag_384, Sag T2 FRFSE, ...
RULE_HEADERS = "headers"  # sagittal orientation and T2 weighting from TE/TR
_SAGITTAL_WORD = re.compile(r"(?<![a-z])(sag|sagittal|sagital|sagitt?)(?![a-z])|^sag|sag(?=t2)")
_T2_WORD = re.compile(r"(?<![0-9])t2(?![0-9])")
_REJECT_WORDS = {
    "t1": "T1",
    "stir": "STIR",
    "tirm": "STIR",
    "flair": "FLAIR",
    "ir": "inversion recovery",
    "localizer": "localizer",
    "localiser": "localizer",
    "loc": "localizer",
    "scout": "localizer",
    "survey": "localizer",
    "3plane": "localizer",
    "tracker": "localizer",
    "derived": "derived",
    "mpr": "derived",
    "mip": "derived",
    "reformat": "derived",
    "dwi": "diffusion",
    "adc": "diffusion",
    "myelo": "myelography",
}
# T2 weighting from the timing, in ms (spin-echo T2: long TE and long TR).
T2_MIN_ECHO_TIME = 60.0
T2_MIN_REPETITION_TIME = 1500.0


@dataclass(frozen=True)
class SeriesRecord:
    """One row of a series CSV; ``headers`` holds an index's extra columns (empty for RSNA)."""

    study_id: int
    series_id: int
    series_description: str
    headers: dict = field(default_factory=dict, compare=False)

    def header(self, name: str) -> str:
        return str(self.headers.get(name, "") or "").strip()

    def number(self, name: str) -> float | None:
        try:
            return float(self.header(name))
        except ValueError:
            return None

    @property
    def n_slices(self) -> int:
        value = self.number("n_frames") or self.number("n_instances")
        return int(value) if value else 0

    def summary(self) -> str:
        """What the series is, for a failure row: description, plane, TE/TR."""
        parts = [repr(self.series_description or "(no description)")]
        if self.header("orientation"):
            parts.append(self.header("orientation"))
        te, tr = self.number("echo_time"), self.number("repetition_time")
        if te is not None and tr is not None:
            parts.append(f"TE {te:g}/TR {tr:g}")
        return " ".join(parts)


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def description_rejection(description: str) -> str | None:
    """Why a description rules a series out (T1, STIR, localizer, derived...), or None."""
    words = _words(description)
    for word in words:
        if word in _REJECT_WORDS:
            return _REJECT_WORDS[word]
        if re.fullmatch(r"t1\w*", word) and not word.startswith("t12"):
            return "T1"
        if "stir" in word or "tirm" in word:
            return "STIR"
    return None


def is_sagittal_t2_pattern(description: str) -> bool:
    """A sagittal T2 description in any of the usual spellings (``SAG T2``, ``T2 SAG``,
    ``t2_tse_sag_384``, ``Sag T2 FRFSE``, ``T2W_TSE_SAG``), and nothing that rules it out."""
    text = " ".join(_words(description))
    has_t2 = _T2_WORD.search(text) is not None
    has_sag = _SAGITTAL_WORD.search(text) is not None
    return has_t2 and has_sag and description_rejection(description) is None


def header_rejection(record: SeriesRecord) -> str | None:
    """Why an index's headers rule a series out for the header rule, or None when it is a
    sagittal T2-weighted primary series."""
    image_type = _image_type(record)
    modality = record.header("modality").upper()
    if modality and modality != "MR":
        return f"modality {modality}"
    if "LOCALIZER" in image_type:
        return "localizer"
    if image_type & {"DERIVED", "SECONDARY"}:
        return "derived"
    from_description = description_rejection(record.series_description)
    if from_description:
        return from_description
    orientation = record.header("orientation")
    if orientation != "sagittal":
        return f"{orientation or 'unknown'} orientation"
    scanning = set(record.header("scanning_sequence").upper().split("\\")) - {""}
    sequence = record.header("sequence_name").lower()
    inversion = record.number("inversion_time")
    if "IR" in scanning or (inversion or 0) > 0 or "tir" in sequence or "stir" in sequence:
        return "inversion recovery (STIR-like)"
    contrast = record.header("acquisition_contrast").upper()
    if contrast and contrast not in ("T2", "MIXED", "UNKNOWN"):
        return f"{contrast} contrast"
    if contrast == "T2":
        return None
    te, tr = record.number("echo_time"), record.number("repetition_time")
    if te is None or tr is None:
        return "no echo or repetition time"
    if te < T2_MIN_ECHO_TIME or tr < T2_MIN_REPETITION_TIME:
        return f"not T2-weighted (TE {te:g} ms, TR {tr:g} ms)"
    if scanning and scanning <= {"GR"}:
        return "gradient echo"
    return None


def _image_type(record: SeriesRecord) -> set[str]:
    return {t.strip().upper() for t in record.header("image_type").split("\\")}


def _pattern_rejection(record: SeriesRecord) -> str | None:
    """The headers that rule out a series a description pattern matched: only what is known
    (a derived image, e.g. losslessly recompressed, stays; an original one is preferred)."""
    if "LOCALIZER" in _image_type(record):
        return "localizer"
    if record.header("orientation") in ("axial", "coronal", "mixed"):
        return f"{record.header('orientation')} orientation"
    return None


def choose_series(records: list[SeriesRecord]) -> tuple[SeriesRecord | None, str]:
    """The series to run in one study and the rule that chose it (``""`` when none).

    The seed's rule first (exact "Sagittal T2/STIR", then the lowest series ID), so RSNA
    studies keep their selection; then description patterns; then, for an index, the headers.
    Ties after the seed's rule go to an original rather than a derived image, then to the
    series with most slices, then the lowest ID.
    """
    seed = [r for r in records if is_sagittal_t2(r.series_description)]
    if seed:
        exact = SAGITTAL_T2.lower()
        best = min(seed, key=lambda r: (r.series_description.strip().lower() != exact, r.series_id))
        return best, RULE_DESCRIPTION
    by_slices = sorted(records, key=lambda r: (-r.n_slices, r.series_id))
    patterns = [
        r
        for r in by_slices
        if is_sagittal_t2_pattern(r.series_description) and _pattern_rejection(r) is None
    ]
    if patterns:
        derived = {"DERIVED", "SECONDARY"}
        return min(patterns, key=lambda r: bool(_image_type(r) & derived)), RULE_PATTERN
    for r in by_slices:
        if r.headers and header_rejection(r) is None:
            return r, RULE_HEADERS
    return None, ""


def _no_series_note(records: list[SeriesRecord]) -> str:
    had = [r.summary() for r in sorted(records, key=lambda r: r.series_id)]
    more = f"; and {len(had) - 12} more" if len(had) > 12 else ""
    return "study has no sagittal T2 series (had: " + "; ".join(had[:12]) + more + ")"


def select_series(records: list[SeriesRecord]) -> list[StudyTask]:
    """One task per study, sorted by study ID, with the series :func:`choose_series` picks;
    a study without one keeps a task with ``series_id`` None and a note of what it had."""
    by_study: dict[int, list[SeriesRecord]] = {}
    for r in records:
        by_study.setdefault(r.study_id, []).append(r)
    tasks = []
    for study_id in sorted(by_study):
        chosen, rule = choose_series(by_study[study_id])
        if chosen is None:
            tasks.append(StudyTask(study_id, None, note=_no_series_note(by_study[study_id])))
            continue
        tasks.append(
            StudyTask(
                study_id,
                chosen.series_id,
                chosen.series_description,
                path=chosen.header("path"),
                selection_rule=rule,
            )
        )
    return tasks


def read_series_records(path: str | Path) -> list[SeriesRecord]:
    """The rows of a series CSV: RSNA's ``train_series_descriptions.csv`` or an ``lstv index``
    CSV, whose extra columns (path, orientation, TE/TR...) go into ``headers``.

    Raises:
        FileNotFoundError: the CSV is missing.
        UsageError: a column is missing or an ID is not an integer (names the line).
    """
    rows = read_series_table(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if INDEX_MARKER not in header:
            return [SeriesRecord(*row) for row in rows]
        reader.fieldnames = header
        extra = [c for c in header if c not in SERIES_COLUMNS]
        return [
            SeriesRecord(*row, headers={c: (line.get(c) or "") for c in extra})
            for row, line in zip(rows, reader, strict=True)
        ]


def study_tasks(series_csv: str | Path) -> list[StudyTask]:
    """The task of each study of a series CSV (RSNA or index), see :func:`select_series`."""
    return select_series(read_series_records(series_csv))


def is_index(series_csv: str | Path) -> bool:
    """Whether a series CSV was written by ``lstv index`` (it has a ``study_uid`` column)."""
    with open(series_csv, newline="", encoding="utf-8-sig") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    return INDEX_MARKER in header


def load_valid_ids(path: str | Path | None) -> set[int] | None:
    """The hold-out study IDs (``valid_id.npy``), or None when the file is absent."""
    if path is None or not Path(path).is_file():
        return None
    try:
        ids = np.asarray(np.load(path, allow_pickle=False))
    except Exception as exc:  # numpy raises several types for pickles, text and truncation
        raise UsageError(f"{path}: not a numpy array of study IDs ({exc})") from exc
    if ids.dtype.kind in "iu":
        return {int(i) for i in ids.ravel()}
    if ids.dtype == np.float64 and np.all(np.isfinite(ids) & (ids == np.round(ids))):
        return {int(i) for i in ids.ravel()}
    # float32 holds 24 bits: 10-digit study IDs lose their last digits and match other studies.
    raise UsageError(
        f"{path}: holds {ids.dtype} values, not whole-number study IDs (save them as int64)"
    )


def hold_out_ids(
    path: str | Path | None, tasks: list[StudyTask], series_csv: str | Path
) -> set[int] | None:
    """The hold-out IDs to filter ``tasks`` by, or None for no filter: the file is absent, or
    the series CSV is an index of an export none of whose studies the list names (the list is
    of RSNA studies; an index of the RSNA tree keeps the RSNA IDs, and so the filter)."""
    valid_ids = load_valid_ids(path)
    if valid_ids is None or not is_index(series_csv):
        return valid_ids
    if any(t.study_id in valid_ids for t in tasks):
        return valid_ids
    log.warning(
        "%s: none of its %d studies is among the %d RSNA hold-out IDs of %s, so it is not an "
        "RSNA export: the hold-out filter does not apply",
        series_csv,
        len(tasks),
        len(valid_ids),
        path,
    )
    return None


def filter_valid(tasks: list[StudyTask], valid_ids: set[int] | None) -> list[StudyTask]:
    if valid_ids is None:
        return list(tasks)
    return [t for t in tasks if t.study_id in valid_ids]


def select_mode(
    tasks: list[StudyTask],
    mode: str,
    n_trial: int = 10,
    seed: int = 42,
    debug_study_id: int | None = None,
) -> list[StudyTask]:
    """Trial: ``n_trial`` studies sampled with ``seed``; debug: one study; prod: all."""
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "prod":
        return list(tasks)
    if mode == "debug":
        if debug_study_id is None:
            return list(tasks[:1])
        chosen = [t for t in tasks if t.study_id == int(debug_study_id)]
        if not chosen:
            raise UsageError(f"debug study {debug_study_id} is not among the selected studies")
        return chosen
    if n_trial < 1:
        raise UsageError(f"n_trial must be at least 1, got {n_trial}")
    if n_trial >= len(tasks):
        return list(tasks)
    picks = np.random.default_rng(seed).choice(len(tasks), size=n_trial, replace=False)
    return [tasks[i] for i in sorted(picks)]


def shard(tasks: list[StudyTask], num_parts: int = 1, part_id: int = 0) -> list[StudyTask]:
    """Part ``part_id`` of ``num_parts``: ``tasks[part_id::num_parts]``, disjoint and complete."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise UsageError(f"need 0 <= part_id < num_parts, got part {part_id} of {num_parts}")
    return list(tasks[part_id::num_parts])
