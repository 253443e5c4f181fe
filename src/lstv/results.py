"""The run's outputs: metrics CSV, failures, manifest and heatmaps; appended, resumable, atomic."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np

from lstv.levels import LEVEL_KEYS
from lstv.uncertainty import RiskThresholds, risk_level

log = logging.getLogger(__name__)

METRICS_CSV = "lstv_uncertainty_metrics.csv"
FAILURES_CSV = "failures.csv"
MANIFEST_JSON = "run_manifest.json"
HEATMAP_DIR = "heatmaps"

SEED_COLUMNS = ["study_id", "series_id"] + [
    f"{k}_{m}" for k in LEVEL_KEYS for m in ("confidence", "entropy", "spatial_entropy")
]
LEVEL_EXTRA_COLUMNS = ("normalized_entropy", "x", "y", "x_mm", "y_mm", "z_mm", "tta_mi")
METRIC_COLUMNS = (
    SEED_COLUMNS
    + [f"{k}_{m}" for k in LEVEL_KEYS for m in LEVEL_EXTRA_COLUMNS]
    + [
        "series_description",
        "n_slices",
        "slice_index",
        "image_height",
        "image_width",
        "lstv_flag",
        "risk_level",
    ]
)
FAILURE_COLUMNS = ["study_id", "series_id", "stage", "error"]


def metrics_row(
    study_id: int,
    series_id: int,
    series_description: str,
    metrics: dict[str, dict],
    sample,
    thresholds: RiskThresholds,
    tta_mi: np.ndarray | None = None,
) -> dict:
    """One CSV row from per-level metrics (model-pixel points) and the slice's geometry.

    ``sample`` is a :class:`lstv.pipeline.Sample`: it gives the original slice size and the
    pixel-to-patient mapping of the slice the model read.
    """
    height, width = sample.slice_shape
    size = sample.image.shape[-1]
    row: dict = {"study_id": study_id, "series_id": series_id}
    for i, key in enumerate(LEVEL_KEYS):
        m = metrics[key]
        row[f"{key}_confidence"] = m["confidence"]
        row[f"{key}_entropy"] = m["entropy"]
        row[f"{key}_spatial_entropy"] = m["spatial_entropy"]
        row[f"{key}_normalized_entropy"] = m["normalized_entropy"]
        point = m["point"]
        if point is None:
            coords = [""] * 5
        else:
            x, y = point[0] * width / size, point[1] * height / size
            coords = [x, y, *sample.pixel_to_patient(x, y)]
        for name, value in zip(("x", "y", "x_mm", "y_mm", "z_mm"), coords, strict=True):
            row[f"{key}_{name}"] = value
        row[f"{key}_tta_mi"] = "" if tta_mi is None else float(tta_mi[i])
    l5_s1_entropy = metrics["l5_s1"]["entropy"]
    row.update(
        series_description=series_description,
        n_slices=sample.n_slices,
        slice_index=sample.slice_index,
        image_height=height,
        image_width=width,
        lstv_flag=bool(l5_s1_entropy > thresholds.flag_entropy),
        risk_level=risk_level(l5_s1_entropy, thresholds),
    )
    return row


def _drop_partial_last_line(path: Path) -> None:
    """An interrupted append can leave half a line: cut the file back to its last newline."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data_end = path.read_bytes().rfind(b"\n") + 1
        f.truncate(data_end)
        log.warning("%s ended in a partial row (interrupted run): dropped it", path)


class CsvAppender:
    """Appends rows to a CSV with a fixed header, flushing each row to disk."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = list(columns)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists:
            _drop_partial_last_line(self.path)
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise ValueError(
                    f"{self.path} has other columns than this version writes; "
                    "use a new --output_dir (or move the old file away)"
                )
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - held for the run
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise")
        if not exists:
            self._writer.writeheader()
            self._flush()

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def completed_study_ids(output_dir: Path) -> set[int]:
    """Studies with a complete row in the metrics CSV (a rerun skips them)."""
    path = Path(output_dir) / METRICS_CSV
    if not path.is_file():
        return set()
    done = set()
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        for row in reader:
            if header and len(row) == len(header):
                done.add(int(row[0]))
    return done


def read_failures(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv_atomic(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def prune_failures(output_dir: Path, retried: set[int]) -> None:
    """Keep failures of studies not run again; the retried ones get a fresh verdict."""
    path = Path(output_dir) / FAILURES_CSV
    kept = [r for r in read_failures(path) if int(r["study_id"]) not in retried]
    write_csv_atomic(path, FAILURE_COLUMNS, kept)


def run_thresholds(output_dir: Path) -> dict | None:
    """The risk bands recorded in a run's manifest, or None without a readable one."""
    path = Path(output_dir) / MANIFEST_JSON
    try:
        bands = json.loads(path.read_text()).get("thresholds")
    except (OSError, ValueError):
        return None
    return bands if isinstance(bands, dict) else None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def save_heatmaps(
    output_dir: Path, study_id: int, series_id: int, probs: np.ndarray, sample
) -> Path:
    """``heatmaps/{study_id}.npz``: the maps, the model input and where it came from."""
    folder = Path(output_dir) / HEATMAP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{study_id}.npz"
    tmp = folder / f"{study_id}.tmp.npz"
    np.savez_compressed(
        tmp,
        probs=probs.astype(np.float32),
        image=sample.image,
        slice_index=np.int64(sample.slice_index),
        original_shape=np.asarray(sample.slice_shape, dtype=np.int64),
        series_id=np.int64(series_id),
    )
    tmp.replace(path)
    return path
