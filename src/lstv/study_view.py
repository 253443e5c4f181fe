"""One study as a person sees it: the review page, the web demo and the report all show this.

:func:`build_view` turns a study's series (its DICOM files) and its result row (a metrics CSV
row, or the demo's analysis of an upload) into a :class:`StudyView`:

* every slice as 16-bit data (the stored values after the modality rescale), windowed in the
  page from the DICOM window tags, with presets;
* the probability map of each level over the slice the model read (``(5, S, S)`` uint8; the
  model's input is the whole slice resized to a square, so a map stretches over the slice);
* all five predicted points in original pixels, as the CSV holds them;
* the score's reason, the seed's rule beside it, which series was analysed and why;
* each slice's number as its InstanceNumber and its position along the slice normal (mm).

:meth:`StudyView.meta` is the JSON the page's viewer (``lstv/web/static/viewer.js``) reads with
the raw arrays (:meth:`StudyView.volume_bytes`, :meth:`StudyView.heatmap_bytes`);
:func:`thumbnail_png` draws the same view as a still for the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstv import rsna
from lstv.levels import LEVEL_KEYS, LEVELS

LEVEL_COLOURS = ("#4e79a7", "#59a14f", "#edc948", "#00bfff", "#ff40a6")
# Below this contrast (peak over median, relative to the peak) a level map counts as flat.
FLAT_MAP_CONTRAST = 0.5
# The percentiles the localizer's own normalisation clips at (lstv.intensity), as a preset.
AUTO_PERCENTILES = (0.5, 99.5)
RULE_WORDS = {
    "description": "its description names a sagittal T2 (the seed's rule)",
    "description_pattern": "its description matches a sagittal T2 pattern",
    "headers": "its headers say sagittal and T2-weighted (TE/TR)",
    "upload": "it was the one series uploaded",
}


def overlay_alpha(prob: np.ndarray) -> np.ndarray | None:
    """Opacity in [0, 1] of a level map's overlay, or None for a map with no structure.

    The map is stretched between its median (the floor it sits on) and its peak, so that a
    diffuse, uncertain map stays as visible as a sharp one. A map whose peak rises less than
    ``FLAT_MAP_CONTRAST`` of itself above that floor localises nothing; painting it would only
    tint the whole slice, so it is left out (and the page says so).
    """
    prob = np.asarray(prob, dtype=float)
    peak = float(prob.max())
    floor = float(np.median(prob))
    if peak <= 0 or (peak - floor) < FLAT_MAP_CONTRAST * peak:
        return None
    return np.clip((prob - floor) / (peak - floor), 0.0, 1.0)


@dataclass
class StudyView:
    """What a person sees of one study; see the module docstring."""

    info: dict
    volume: np.ndarray  # (D, H, W) uint16; a pixel's value is stored + info["offset"]
    heatmaps: np.ndarray | None = None  # (5, S, S) uint8: the overlay opacity of each level
    notes: list[str] = field(default_factory=list)

    def meta(self) -> dict:
        d, h, w = self.volume.shape
        size = None if self.heatmaps is None else int(self.heatmaps.shape[-1])
        return self.info | {"shape": [d, h, w], "heatmap_size": size, "notes": self.notes}

    def volume_bytes(self) -> bytes:
        return self.volume.astype("<u2").tobytes()

    def heatmap_bytes(self) -> bytes:
        return b"" if self.heatmaps is None else self.heatmaps.astype(np.uint8).tobytes()


# --------------------------------------------------------------------------- building


def number(value) -> float:
    """A CSV cell or value as a float; NaN when empty or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite(value) -> float | None:
    """``value`` as a float for JSON, or None (JSON has no NaN)."""
    x = number(value)
    return x if math.isfinite(x) else None


def csv_point(row: Mapping, key: str) -> list[float] | None:
    """A level's point in original pixels, as the CSV holds it, or None."""
    x, y = number(row.get(f"{key}_x")), number(row.get(f"{key}_y"))
    return [round(x, 1), round(y, 1)] if math.isfinite(x) and math.isfinite(y) else None


def flat_row(result: Mapping[str, Mapping]) -> dict:
    """A metrics row's level columns from :func:`lstv.api.analyse_volume`'s nested result."""
    row = {}
    for key in LEVEL_KEYS:
        m = result[key]
        for name in ("entropy", "confidence", "normalized_entropy"):
            if name in m:
                row[f"{key}_{name}"] = m[name]
        if m.get("point") is not None:
            row[f"{key}_x"], row[f"{key}_y"] = m["point"]
    return row


def is_true(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def verdicts(row: Mapping, thresholds, score_threshold: float | None = None) -> dict:
    """The primary verdict (the calibrated score when the run has one) and the seed's
    entropy rule, labelled as secondary. ``thresholds`` are the run's risk bands."""
    entropy = number(row.get("l5_s1_entropy"))
    seed = {
        "label": "Seed's entropy rule (secondary)" if finite(row.get("lstv_score")) is not None
        else "Seed's entropy rule",
        "entropy": finite(entropy),
        "risk": thresholds.risk(entropy) if math.isfinite(entropy) else "Unknown",
        "flag": bool(math.isfinite(entropy) and thresholds.flag(entropy)),
        "rule": f"L5/S1 entropy above {thresholds.flag_entropy:g} flags",
    }
    score = finite(row.get("lstv_score"))
    if score is None:
        return {"primary": None, "seed": seed}
    primary = {
        "label": "Calibrated LSTV score",
        "score": round(score, 2),
        "flag": is_true(row.get("lstv_score_flag")),
        "threshold": score_threshold,
        "reason": str(row.get("lstv_score_reason") or ""),
    }
    return {"primary": primary, "seed": seed}


def slice_positions(series) -> list[float]:
    """Each slice's position along the slice normal (mm), in volume order."""
    normal = np.cross(series.orientations[:, :3], series.orientations[:, 3:])
    return [round(float(p), 2) for p in np.einsum("ij,ij->i", series.positions, normal)]


def raw_volume(series) -> tuple[np.ndarray, float, list[dict]]:
    """The series' stored pixels after the modality rescale, as (uint16 volume, offset) so that
    value = stored + offset, and the DICOM window presets ``{name, center, width}``.

    The files are those :func:`lstv.dicom.read_series` read (its ``paths``, in volume order);
    a multi-frame file's frames are matched to slices by their position.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from lstv.dicom import frame_geometry
    from lstv.dicom_limits import decode_pixels

    by_path: dict[Path, tuple] = {}
    for path in dict.fromkeys(series.paths):
        ds = pydicom.dcmread(path)
        pixels = apply_modality_lut(decode_pixels(ds, path.name), ds).astype(np.float64)
        frames = pixels[None] if int(ds.get("NumberOfFrames") or 1) == 1 else pixels
        where = [np.asarray(frame_geometry(ds, f)[0], float) for f in range(len(frames))]
        by_path[path] = (ds, frames, where)
    slices = []
    for i, path in enumerate(series.paths):
        _, frames, where = by_path[path]
        f = int(np.argmin([np.abs(p - series.positions[i]).sum() for p in where]))
        slices.append(frames[f])
    data = np.stack(slices)
    offset = float(min(0.0, np.floor(data.min())))
    volume = np.clip(np.rint(data - offset), 0, 65535).astype(np.uint16)
    windows = dicom_windows(by_path[series.paths[len(series.paths) // 2]][0])
    return volume, offset, windows


def dicom_windows(ds) -> list[dict]:
    """The WindowCenter/WindowWidth pairs a file declares (several values: several presets)."""
    from pydicom.multival import MultiValue

    centres, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centres is None or widths is None:
        return []
    centres = list(centres) if isinstance(centres, MultiValue) else [centres]
    widths = list(widths) if isinstance(widths, MultiValue) else [widths]
    explanations = ds.get("WindowCenterWidthExplanation")
    names = list(explanations) if isinstance(explanations, MultiValue) else [explanations]
    out = []
    for i, (c, w) in enumerate(zip(centres, widths, strict=False)):
        if number(w) > 0:
            name = names[i] if i < len(names) and names[i] else f"DICOM window {i + 1}"
            out.append({"name": str(name), "center": float(c), "width": float(w)})
    return out


def presets(volume: np.ndarray, offset: float, dicom: list[dict]) -> list[dict]:
    """Three window presets for keys 1-3: the file's window tags first, then the percentile
    window the localizer's normalisation uses, then the full range."""
    lo, hi = np.percentile(volume, AUTO_PERCENTILES) + offset
    full_lo, full_hi = float(volume.min()) + offset, float(volume.max()) + offset
    auto = {"name": "auto (0.5-99.5 %)", "center": (lo + hi) / 2, "width": max(hi - lo, 1.0)}
    full = {
        "name": "full range",
        "center": (full_lo + full_hi) / 2,
        "width": max(full_hi - full_lo, 1.0),
    }
    out = (dicom + [auto, full])[:3]
    return [dict(p, center=round(p["center"], 2), width=round(p["width"], 2)) for p in out]


def heatmap_levels(probs: np.ndarray | None) -> tuple[np.ndarray | None, list[str]]:
    """(5, S, S) uint8 overlay opacities from the (6, S, S) maps (class 0 is background),
    and a note naming the levels whose map is flat (nothing localised, nothing painted)."""
    if probs is None:
        return None, []
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] != len(LEVEL_KEYS) + 1:
        return None, [f"heatmaps of shape {probs.shape}, not (6, S, S): not shown"]
    out, flat = [], []
    for i, name in enumerate(LEVELS):
        alpha = overlay_alpha(probs[i + 1])
        if alpha is None:
            flat.append(name)
            alpha = np.zeros(probs.shape[1:])
        out.append(np.rint(alpha * 255).astype(np.uint8))
    notes = [f"flat map, nothing localised: {', '.join(flat)}"] if flat else []
    return np.stack(out), notes


def build_view(
    row: Mapping,
    thresholds,
    series=None,
    probs: np.ndarray | None = None,
    model_image: np.ndarray | None = None,
    score_threshold: float | None = None,
    model_slice: int | None = None,
) -> StudyView:
    """The view of one study.

    Args:
        row: The study's metrics row (CSV cells or numbers): IDs, per-level entropy,
            confidence and point (original pixels), score and reason, series description,
            selection rule, slice index.
        thresholds: The run's :class:`lstv.uncertainty.RiskThresholds`.
        series: The :class:`lstv.dicom.Series` the model read, or None (no DICOM at hand: the
            view then shows ``model_image``, the saved model input, as its one slice).
        probs: The (6, S, S) probability maps, or None.
        model_image: The (S, S) model input, used only without ``series``.
        score_threshold: The calibrated score's flag threshold, when known.
        model_slice: The slice the model read; default: the row's ``slice_index``, else the
            series' centre.
    """
    heatmaps, notes = heatmap_levels(probs)
    points = {key: csv_point(row, key) for key in LEVEL_KEYS}
    if series is not None:
        volume, offset, windows = raw_volume(series)
        saved = finite(row.get("slice_index"))
        index = model_slice if model_slice is not None else series.centre_index
        if model_slice is None and saved is not None:
            index = int(saved)
        slices = [
            {"instance": int(n), "position_mm": p}
            for n, p in zip(series.instance_numbers, slice_positions(series), strict=True)
        ]
        source = "DICOM"
    elif model_image is not None:
        volume, offset, windows = np.asarray(model_image, dtype=np.uint16)[None], 0.0, []
        size = volume.shape[-1]
        height, width = number(row.get("image_height")), number(row.get("image_width"))
        if math.isfinite(height) and math.isfinite(width) and height > 0 and width > 0:
            # The points are in original pixels; the model input is that slice resized.
            points = {
                k: p and [round(p[0] * size / width, 1), round(p[1] * size / height, 1)]
                for k, p in points.items()
            }
        index = 0
        slices = [{"instance": None, "position_mm": None}]
        source = "model input"
        notes.append("the model's 160-pixel input, not the DICOM (no --data_dir given)")
    else:
        raise ValueError("a study view needs its series or the saved model input")
    index = min(max(index, 0), volume.shape[0] - 1)
    rule = str(row.get("selection_rule") or "")
    info = {
        "study_id": str(row.get("study_id", "")),
        "series_id": str(row.get("series_id", "")),
        "description": str(row.get("series_description") or ""),
        "selection_rule": rule,
        "selection_why": RULE_WORDS.get(rule, ""),
        "source": source,
        "offset": offset,
        "windows": presets(volume, offset, windows),
        "model_slice": index,
        "slices": slices,
        "levels": [
            {
                "key": key,
                "name": name,
                "colour": LEVEL_COLOURS[i],
                "point": points[key],
                "entropy": finite(row.get(f"{key}_entropy")),
                "confidence": finite(row.get(f"{key}_confidence")),
            }
            for i, (key, name) in enumerate(zip(LEVEL_KEYS, LEVELS, strict=True))
        ],
        **verdicts(row, thresholds, score_threshold),
    }
    return StudyView(info, volume, heatmaps, notes)


def slice_label(view: StudyView, index: int) -> str:
    """How a slice is named everywhere: its InstanceNumber, its place and its position."""
    s = view.info["slices"][index]
    n = len(view.info["slices"])
    if s["instance"] is None:
        return "model input"
    return f"image {s['instance']} ({index + 1}/{n}, {s['position_mm']:+.1f} mm)"


# --------------------------------------------------------------------------- finding a series


def safe_name(name: str) -> bool:
    """A CSV value used as a file name must not step out of its folder."""
    return bool(name) and Path(name).name == name and name not in (".", "..")


class SeriesLocator:
    """Where a study's series lies under ``--data_dir``: the RSNA layout
    (``train_images/{study}/{series}``), or, for a run over an ``lstv index`` CSV (the
    manifest's ``series_csv``), the folder or files the index lists, relative to ``--data_dir``.
    """

    def __init__(self, data_dir: str | Path, series_csv: str | None):
        from lstv.studies import is_index, study_tasks

        self.data_dir = Path(data_dir)
        images = self.data_dir / rsna.TRAIN_IMAGES
        self.rsna_root = images if images.is_dir() else self.data_dir
        self.tasks = {}
        if series_csv and Path(series_csv).is_file() and is_index(series_csv):
            self.tasks = {(str(t.study_id), str(t.series_id)): t for t in study_tasks(series_csv)}

    def __call__(self, study_id: str, series_id: str) -> Path | list[Path] | None:
        task = self.tasks.get((study_id, series_id))
        if task is not None:  # an index path that leaves data_dir raises (one rule with infer)
            return task.series_source(self.data_dir)
        if not (safe_name(study_id) and safe_name(series_id)):
            return None
        folder = self.rsna_root / study_id / series_id
        return folder if folder.is_dir() else None


def load_heatmaps(path: Path) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(probs, model input, note) from a run's ``heatmaps/{study}.npz``; Nones and why not."""
    if not path.is_file():
        return None, None, "no heatmaps saved for this study (lstv infer --save_heatmaps)"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz["probs"], np.float32), np.asarray(npz["image"]), ""
    except (OSError, ValueError, KeyError) as exc:
        return None, None, f"heatmap file unreadable: {exc}"


# --------------------------------------------------------------------------- a still


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def windowed(view: StudyView, index: int, preset: int = 0) -> np.ndarray:
    """One slice as uint8 grey through a window preset, as the page draws it."""
    w = view.info["windows"][preset]
    values = view.volume[index].astype(np.float64) + view.info["offset"]
    low = w["center"] - w["width"] / 2
    return (np.clip((values - low) / w["width"], 0, 1) * 255).astype(np.uint8)


def thumbnail_png(view: StudyView, levels=("l4_l5", "l5_s1"), max_side: int = 512) -> bytes:
    """The model's slice with the maps and points of ``levels`` drawn over it, as a PNG."""
    import cv2

    index = view.info["model_slice"]
    grey = windowed(view, index)
    h, w = grey.shape
    scale = min(1.0, max_side / max(h, w))
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    rgb = cv2.resize(np.repeat(grey[..., None], 3, axis=2), (out_w, out_h)).astype(np.float64)
    by_key = {lv["key"]: (i, lv) for i, lv in enumerate(view.info["levels"])}
    for key in levels:
        i, lv = by_key[key]
        colour = np.array(hex_rgb(lv["colour"]), dtype=np.float64)
        if view.heatmaps is not None and view.heatmaps[i].any():
            alpha = cv2.resize(view.heatmaps[i].astype(np.float32) / 255, (out_w, out_h))
            alpha = 0.6 * alpha[..., None]
            rgb = rgb * (1 - alpha) + colour * alpha
    image = np.clip(rgb, 0, 255).astype(np.uint8)
    for key in levels:
        _, lv = by_key[key]
        if lv["point"] is not None:
            centre = (round(lv["point"][0] * scale), round(lv["point"][1] * scale))
            cv2.circle(image, centre, max(3, out_w // 60), hex_rgb(lv["colour"]), 2)
            cv2.circle(image, centre, 1, (255, 255, 255), -1)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the thumbnail as PNG")
    return png.tobytes()
