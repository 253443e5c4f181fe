"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def blob(shape, centre, sigma, height=1.0) -> np.ndarray:
    """A Gaussian bump of ``height`` at ``centre`` = (row, column) on a map of ``shape``."""
    ys, xs = np.indices(shape)
    return height * np.exp(-((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / (2 * sigma**2))


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV as dicts of text ([] when there is no file; a BOM is dropped)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def phantom_infer_config(dataset, output_dir: Path, checkpoint: Path, **settings):
    """An ``lstv infer`` config over a phantom dataset on the CPU, in-process and quiet;
    ``settings`` override any field."""
    from lstv.config import InferenceConfig

    base = dict(
        input_dir=dataset.images_dir,
        series_csv=dataset.series_csv,
        output_dir=output_dir,
        checkpoint=checkpoint,
        valid_ids=dataset.valid_ids_path,
        mode="prod",
        device="cpu",
        num_workers=0,
        quiet=True,
    )
    return InferenceConfig(**{**base, **settings})


def horizontal_overflow(tab) -> int:
    """How many CSS pixels a reader must scroll sideways to see everything: the page's excess
    over the viewport, or the largest excess of a box that scrolls sideways (0: none)."""
    return tab.evaluate(
        """() => Math.max(document.documentElement.scrollWidth - window.innerWidth,
            ...Array.from(document.querySelectorAll('*'), e => {
                const x = getComputedStyle(e).overflowX;
                return x === 'auto' || x === 'scroll' ? e.scrollWidth - e.clientWidth : 0;
            }))"""
    )


def infer_args(data, out, checkpoint, *extra, num_workers: int | str = 0) -> list[str]:
    """``lstv infer`` over a phantom dataset (anything with ``images_dir``, ``series_csv`` and
    ``valid_ids_path``) into ``out``, every study on the CPU, quiet; ``extra`` flags last."""
    return [
        "infer",
        "--input_dir", str(data.images_dir),
        "--series_csv", str(data.series_csv),
        "--output_dir", str(out),
        "--checkpoint", str(checkpoint),
        "--valid_ids", str(data.valid_ids_path),
        "--mode", "prod",
        "--device", "cpu",
        "--num_workers", str(num_workers),
        "--quiet",
        *extra,
    ]  # fmt: skip


def write_metrics(path, l5_s1_entropy, study_ids=None, extra=None):
    """A metrics CSV whose L5/S1 entropy is given; the other levels get fixed plain values
    (entropy 3.0 + 0.1 x level + 0.01 x row, confidence 1 / (1 + entropy))."""
    import math

    import pandas as pd

    from lstv.columns import METRIC_COLUMNS
    from lstv.levels import LEVEL_KEYS

    n = len(l5_s1_entropy)
    study_ids = study_ids or [str(100 + i) for i in range(n)]
    rows = []
    for i, e in enumerate(l5_s1_entropy):
        row = dict.fromkeys(METRIC_COLUMNS, "")
        row.update(
            study_id=study_ids[i],
            series_id=str(900 + i),
            series_description="Sagittal T2/STIR",
            n_slices=15,
            slice_index=7,
            image_height=512,
            image_width=512,
            lstv_flag=e > 5.0,
            risk_level="High" if e > 5.5 else "Low",
        )
        for j, k in enumerate(LEVEL_KEYS):
            ent = e if k == "l5_s1" else 3.0 + 0.1 * j + 0.01 * i
            row.update(
                {
                    f"{k}_entropy": ent,
                    f"{k}_normalized_entropy": ent / math.log(160 * 160),
                    f"{k}_spatial_entropy": ent / 3,
                    f"{k}_confidence": 1.0 / (1.0 + ent),
                }
            )
        rows.append(row)
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    for name, values in (extra or {}).items():
        df[name] = values
    df.to_csv(path, index=False)
    return path


# --- score references (lstv.score*, lstv.calibrate, lstv.scoring)

SHA_A = "a" * 64
SHA_B = "b" * 64


def normal_features(rng, n):
    """Raw features like a localizer's on normal studies: entropy ~9.6, small ratios."""
    from lstv.score_features import FEATURES

    cols = {
        "entropy": lambda: rng.normal(9.6, 0.02, n),
        "one_minus_confidence": lambda: np.exp(rng.normal(np.log(3e-4), 0.4, n)),
        "peak2": lambda: np.exp(rng.normal(np.log(0.04), 0.25, n)),
        "mass_out": lambda: np.exp(rng.normal(np.log(0.2), 0.15, n)),
        "top100_entropy": lambda: rng.normal(3.7, 0.04, n),
    }
    return np.column_stack([cols[name.split("_", 2)[2]]() for name in FEATURES])


def rows_from(raw, start_id=1000, **extra):
    """Metrics CSV rows (text cells) of raw feature values, as ``lstv infer`` writes them."""
    from lstv.score_features import FEATURES

    rows = []
    for i, values in enumerate(raw):
        row = {"study_id": str(start_id + i), "series_id": str(7000 + i)}
        for name, v in zip(FEATURES, values, strict=True):
            level, feature = name[:5], name[6:]
            if feature == "one_minus_confidence":
                row[f"{level}_confidence"] = repr(float(1.0 - v))
            else:
                row[name] = repr(float(v))
        row[f"{FEATURES[0][:5]}_peak2_dx_mm"] = "0.0"
        row.update(extra)
        rows.append(row)
    return rows


def write_run(folder, rows, sha=SHA_A):
    """A finished run's metrics CSV and manifest (checkpoint ``sha``) in ``folder``."""
    from lstv.rundir import Manifest, RunDir

    folder.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(folder / "lstv_uncertainty_metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    manifest = Manifest(
        checkpoint={"path": "m.pth", "sha256": sha},
        status="complete",
        finished_at="2026-01-01T00:00:00+00:00",
        extra={"k": 1},  # a key of a newer version: the rewrite must keep it
    )
    RunDir(folder).write_manifest(manifest)
    return folder / "lstv_uncertainty_metrics.csv"


# --- DICOM series (lstv.dicom and its checks)


def write_series(folder, n=5, shuffle=False, name_fn=None, spacing=4.0):
    """Copies of MR_small as a sagittal series along x, each slice marked by its position."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    order = np.random.default_rng(3).permutation(n) if shuffle else np.arange(n)
    for k in range(n):
        ds = base.copy()
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-10.0 + k * spacing, -50.0, 60.0]
        ds.InstanceNumber = int(order[k]) + 1
        pixels = base.pixel_array.copy()
        pixels[0, 0] = 1000 + 100 * k  # the slice's true position, readable after sorting
        ds.PixelData = pixels.tobytes()
        fname = name_fn(k, ds) if name_fn else f"{ds.InstanceNumber}.dcm"
        ds.save_as(folder / fname)
    return folder


def edit(files, **values):
    """Set header attributes of DICOM files (invalid values included, as broken exports do)."""
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns on NaN in a DS
        for f in files:
            ds = pydicom.dcmread(f)
            for name, value in values.items():
                setattr(ds, name, value)
            ds.save_as(f)


def files_of(folder):
    """The ``.dcm`` files of a series folder, sorted."""
    return sorted(folder.glob("*.dcm"))
