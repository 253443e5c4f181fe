"""Which series to run: RSNA layout, sagittal T2 selection, valid-ID filter, modes and shards."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstv.rsna import SAGITTAL_T2, SERIES_COLUMNS

log = logging.getLogger(__name__)

MODES = ("trial", "debug", "prod")


@dataclass(frozen=True)
class StudyTask:
    """One study to run; ``series_id`` is None when the study has no sagittal T2 series."""

    study_id: int
    series_id: int | None
    series_description: str = ""

    def series_dir(self, images_dir: Path) -> Path:
        return Path(images_dir) / str(self.study_id) / str(self.series_id)


def is_sagittal_t2(description: str) -> bool:
    text = description.lower()
    return "sagittal" in text and "t2" in text


def read_series_table(path: str | Path) -> list[tuple[int, int, str]]:
    """Rows of ``train_series_descriptions.csv`` as (study_id, series_id, description).

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: a column is missing or an ID is not an integer (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"series CSV not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in SERIES_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; expected "
                f"{', '.join(SERIES_COLUMNS)} (found {', '.join(header) or 'no header'})"
            )
        reader.fieldnames = header
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (int(row["study_id"]), int(row["series_id"]), row["series_description"] or "")
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{path} line {line}: study_id and series_id must be integers"
                ) from exc
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


def load_valid_ids(path: str | Path | None) -> set[int] | None:
    """The hold-out study IDs (``valid_id.npy``), or None when the file is absent."""
    if path is None or not Path(path).is_file():
        return None
    ids = np.load(path, allow_pickle=False)
    return {int(i) for i in np.asarray(ids).ravel()}


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
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "prod":
        return list(tasks)
    if mode == "debug":
        if debug_study_id is None:
            return list(tasks[:1])
        chosen = [t for t in tasks if t.study_id == int(debug_study_id)]
        if not chosen:
            raise ValueError(f"debug study {debug_study_id} is not among the selected studies")
        return chosen
    if n_trial < 1:
        raise ValueError(f"n_trial must be at least 1, got {n_trial}")
    if n_trial >= len(tasks):
        return list(tasks)
    picks = np.random.default_rng(seed).choice(len(tasks), size=n_trial, replace=False)
    return [tasks[i] for i in sorted(picks)]


def shard(tasks: list[StudyTask], num_parts: int = 1, part_id: int = 0) -> list[StudyTask]:
    """Part ``part_id`` of ``num_parts``: ``tasks[part_id::num_parts]``, disjoint and complete."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"need 0 <= part_id < num_parts, got part {part_id} of {num_parts}")
    return list(tasks[part_id::num_parts])
