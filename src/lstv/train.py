"""``lstv train``: a point net trained on normal anatomy only, as the original localizer was.

Each training study contributes its centre sagittal slice (the slice the localizer reads at
inference) and its five disc labels. Targets are disc-shaped class masks around the labels;
the loss is cross-entropy over the six classes with the background down-weighted: the discs
cover well under 1% of the pixels, and with plain cross-entropy a resnet10t net was still at
the class prior (no pixel above 0.5) after 1,000 steps, where weight 0.05 localises every level
within a millimetre by step 100. Transitional studies and the hold-out IDs in
``valid_id.npy`` are never trained on: the hold-out normals measure localisation error in mm.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lstv import rsna
from lstv.config import TrainConfig
from lstv.errors import UsageError
from lstv.levels import LEVEL_KEYS, LEVEL_TO_CLASS, LEVELS
from lstv.studies import StudyTask, load_valid_ids, read_series_table, sagittal_t2_tasks

log = logging.getLogger(__name__)

LABEL_CONDITION = rsna.DISC_CONDITION


@dataclass
class LabelledSlice:
    """A centre slice at model size with its disc points (model pixels; NaN where unlabelled)."""

    study_id: int
    image: np.ndarray  # (S, S) uint8
    points: np.ndarray  # (5, 2) x, y
    mm_per_pixel: np.ndarray  # (2,) mm per model pixel along x and y


@dataclass
class TrainResult:
    checkpoint: Path
    n_train: int
    n_val: int
    losses: list[float]
    val_error_mm: dict[str, dict[str, float | None]] = field(default_factory=dict)
    risk_thresholds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # The same errors on the held-out normals with a degenerated (Pfirrmann >= 4) L4/L5 or
    # L5/S1, the confounder of an L5/S1 score; empty when the labels carry no grades.
    val_error_degenerated_mm: dict[str, dict[str, float | None]] = field(default_factory=dict)
    n_val_degenerated: int = 0

    def summary(self) -> str:
        lines = [
            f"trained on {self.n_train} normal studies for {len(self.losses)} steps in "
            f"{self.seconds:.0f} s; loss {np.mean(self.losses[:10]):.4f} -> "
            f"{np.mean(self.losses[-10:]):.4f}",
            f"validation on {self.n_val} held-out normal studies (error in mm, point found):",
        ]
        lines += [_error_line(level, e) for level, e in self.val_error_mm.items()]
        if self.val_error_degenerated_mm:
            lines.append(
                f"of which {self.n_val_degenerated} with a Pfirrmann >= 4 disc at L4/L5 or L5/S1:"
            )
            lines += [_error_line(level, e) for level, e in self.val_error_degenerated_mm.items()]
        if self.risk_thresholds:
            lines.append(f"risk bands set on the held-out normals: {self.risk_thresholds}")
        return "\n".join(lines)


def _error_line(level: str, e: dict) -> str:
    if e["median"] is None:
        return f"  {level:6s} no point found in any study"
    return f"  {level:6s} median {e['median']:.2f}  mean {e['mean']:.2f}  found {e['found']:.0%}"


def _rounded_medians(errors: dict) -> dict:
    """Per level, the median error in mm for the checkpoint's config; None (JSON null) for a
    level never found, never NaN, which a run manifest (strict JSON) cannot hold."""
    return {k: None if v["median"] is None else round(v["median"], 3) for k, v in errors.items()}


def read_disc_labels(path: Path) -> dict[int, dict[str, tuple[int, float, float]]]:
    """``train_label_coordinates.csv`` -> {study_id: {level: (instance_number, x, y)}}."""
    labels: dict[int, dict[str, tuple[int, float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["condition"].strip() != LABEL_CONDITION or row["level"] not in LEVEL_TO_CLASS:
                continue
            labels.setdefault(int(row["study_id"]), {})[row["level"]] = (
                int(row["instance_number"]),
                float(row["x"]),
                float(row["y"]),
            )
    return labels


def read_lstv_types(path: Path) -> dict[int, str]:
    """``lstv_labels.csv`` -> {study_id: lstv_type}; empty when the file is absent."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {
            int(r["study_id"]): r.get("lstv_type")
            or ("normal" if str(r["lstv"]).strip() in ("0", "False", "false") else "lstv")
            for r in csv.DictReader(f)
        }


def read_pfirrmann_grades(path: Path) -> dict[int, dict[str, int]]:
    """``lstv_labels.csv`` -> {study_id: {level key: Pfirrmann grade}}; empty without grades."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [f"pfirrmann_{key}" for key in LEVEL_KEYS]
    return {
        int(r["study_id"]): {key: int(r[c]) for key, c in zip(LEVEL_KEYS, columns, strict=True)}
        for r in rows
        if all((r.get(c) or "").strip() for c in columns)
    }


def is_degenerated(grades: dict[str, int]) -> bool:
    """A grade >= 4 disc at L4/L5 or L5/S1: the hard negatives of an L5/S1 score."""
    return max(grades.get("l4_l5", 1), grades.get("l5_s1", 1)) >= 4


def split_studies(data_dir: Path) -> tuple[list[StudyTask], list[StudyTask], dict]:
    """Normal studies with labels, split into training (not in valid_id.npy) and validation."""
    data_dir = Path(data_dir)
    labels = read_disc_labels(data_dir / rsna.LABELS_CSV)
    types = read_lstv_types(data_dir / "lstv_labels.csv")
    valid_ids = load_valid_ids(data_dir / "valid_id.npy") or set()
    tasks = [
        t
        for t in sagittal_t2_tasks(read_series_table(data_dir / rsna.SERIES_CSV))
        if t.series_id is not None
        and t.study_id in labels
        and types.get(t.study_id, "normal") == "normal"
    ]
    train = [t for t in tasks if t.study_id not in valid_ids]
    val = [t for t in tasks if t.study_id in valid_ids]
    return train, val, labels


def load_labelled_slices(
    tasks, images_dir: Path, labels: dict, image_size: int, num_workers: int, quiet: bool
) -> list[LabelledSlice]:
    from tqdm import tqdm

    from lstv.sample import Failure, SampleReader, iter_samples, original_to_model
    from lstv.uncertainty import model_pixel_mm

    out = []
    reader = SampleReader(tasks, images_dir, image_size)
    for item in tqdm(
        iter_samples(reader, num_workers),
        total=len(tasks),
        desc="read",
        disable=quiet or not sys.stderr.isatty(),
    ):
        if isinstance(item, Failure):
            log.warning("skipping study %s: %s", item.task.study_id, item.error)
            continue
        points = np.full((len(LEVELS), 2), np.nan, dtype=np.float32)
        for level, (_, x, y) in labels[item.task.study_id].items():
            points[LEVEL_TO_CLASS[level] - 1] = original_to_model(
                (x, y), image_size, item.slice_shape
            )
        row_mm, col_mm = model_pixel_mm(item.pixel_spacing, item.slice_shape, item.image.shape)
        out.append(
            LabelledSlice(
                study_id=item.task.study_id,
                image=item.image,
                points=points,
                mm_per_pixel=np.array([col_mm, row_mm]),
            )
        )
    return out


def random_affine(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 2x3 matrix: rotation, scale and shift about the image centre, within anatomy's range."""
    angle = rng.uniform(-12, 12)
    scale = rng.uniform(0.85, 1.15)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-12, 12, size=2)
    return matrix


def augment(rng: np.random.Generator, s: LabelledSlice) -> tuple[np.ndarray, np.ndarray]:
    """Geometric and intensity augmentation of one slice and its points."""
    size = s.image.shape[0]
    matrix = random_affine(rng, size)
    image = cv2.warpAffine(
        s.image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    gamma = rng.uniform(0.7, 1.5)
    image = (255 * (image / 255.0) ** gamma * rng.uniform(0.8, 1.1)).clip(0, 255)
    points = s.points @ matrix[:, :2].T + matrix[:, 2]
    return image.astype(np.uint8), points


def disc_mask(points: np.ndarray, size: int, radius_px: float) -> np.ndarray:
    """Class mask: background 0, class i+1 on the pixels within ``radius_px`` of point i."""
    mask = np.zeros((size, size), dtype=np.uint8)
    ys, xs = np.mgrid[:size, :size]
    for i, (x, y) in enumerate(points):
        if np.isfinite(x) and np.isfinite(y):
            mask[(xs - x) ** 2 + (ys - y) ** 2 <= radius_px**2] = i + 1
    return mask


def make_batch(
    rng, slices: list[LabelledSlice], batch_size: int, radius_mm: float, augmented: bool = True
):
    idx = rng.integers(0, len(slices), size=batch_size) if augmented else range(batch_size)
    images, masks = [], []
    for i in idx:
        s = slices[i % len(slices)]
        image, points = augment(rng, s) if augmented else (s.image, s.points)
        radius_px = max(radius_mm / float(np.mean(s.mm_per_pixel)), 1.0)
        images.append(image)
        masks.append(disc_mask(points, image.shape[0], radius_px))
    return np.stack(images), np.stack(masks)


def localisation_errors(
    predictor, slices: list[LabelledSlice]
) -> dict[str, dict[str, float | None]]:
    """Per level: median and mean distance (mm) from the predicted point to the label, and the
    share of studies where a point was found (a missing point does not enter the distances).
    A level with no point in any study has no distance: median and mean are None, not NaN,
    so the figures can go into a checkpoint's config and from there into a run's manifest."""
    from lstv.uncertainty import level_point

    dists: dict[str, list[float]] = {k: [] for k in LEVEL_KEYS}
    found = dict.fromkeys(LEVEL_KEYS, 0)
    for start in range(0, len(slices), 16):
        chunk = slices[start : start + 16]
        probs = predictor(np.stack([s.image for s in chunk]))
        for s, p in zip(chunk, probs, strict=True):
            for i, key in enumerate(LEVEL_KEYS):
                point = level_point(p[i + 1])
                if point is None or not np.all(np.isfinite(s.points[i])):
                    continue
                found[key] += 1
                delta = (np.asarray(point) - s.points[i]) * s.mm_per_pixel
                dists[key].append(float(np.hypot(*delta)))
    n = max(len(slices), 1)
    return {
        key: {
            "median": float(np.median(d)) if d else None,
            "mean": float(np.mean(d)) if d else None,
            "found": found[key] / n,
        }
        for key, d in dists.items()
    }


def l5_s1_entropies(predictor, slices: list[LabelledSlice]) -> np.ndarray:
    """The L5/S1 entropy of each slice's maps, the score the risk bands cut."""
    from lstv.uncertainty import shannon_entropy

    probs = [
        predictor(np.stack([s.image for s in slices[i : i + 16]]))
        for i in range(0, len(slices), 16)
    ]
    return np.array([shannon_entropy(p[len(LEVELS)]) for p in np.concatenate(probs)])


def train(config: TrainConfig) -> TrainResult:
    """Train a point net on the normal studies of ``config.data_dir`` and save the checkpoint."""
    import torch
    from tqdm import tqdm

    from lstv.inference import Predictor, resolve_device
    from lstv.model import PointNet, save_checkpoint

    started = time.perf_counter()
    data_dir = Path(config.data_dir)
    train_tasks, val_tasks, labels = split_studies(data_dir)
    if not train_tasks:
        raise UsageError(f"no labelled normal studies outside valid_id.npy in {data_dir}")
    images_dir = data_dir / rsna.TRAIN_IMAGES
    read = dict(
        images_dir=images_dir,
        labels=labels,
        image_size=config.image_size,
        num_workers=config.num_workers,
        quiet=config.quiet,
    )
    train_slices = load_labelled_slices(train_tasks, **read)
    val_slices = load_labelled_slices(val_tasks, **read)
    log.info("training on %d normal studies, validating on %d", len(train_slices), len(val_slices))

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    init = {}
    if config.init_from:  # fine-tuning: the weights of an earlier localizer, same encoder
        from lstv.model import load_checkpoint

        model, info = load_checkpoint(config.init_from, encoder=config.encoder, device=device)
        model.train()
        init = {"init_from": Path(config.init_from).name, "init_from_sha256": info.sha256}
    else:
        model = PointNet(encoder=config.encoder).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.1
    )
    class_weights = torch.tensor([config.background_weight] + [1.0] * len(LEVELS), device=device)
    losses = []
    model.train()
    bar = tqdm(range(config.steps), desc="train", disable=config.quiet or not sys.stderr.isatty())
    log_every = max(config.steps // 20, 1)  # progress in batch logs, where no bar is drawn
    for step in bar:
        images, masks = make_batch(rng, train_slices, config.batch_size, config.disc_radius_mm)
        x = torch.from_numpy(images[:, None]).to(device)
        y = torch.from_numpy(masks.astype(np.int64)).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y, weight=class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % log_every == 0:
            log.info("step %d/%d loss %.4f", step + 1, config.steps, np.mean(losses[-log_every:]))
    model.eval()
    predictor = Predictor(model, device)
    errors = localisation_errors(predictor, val_slices) if val_slices else {}
    grades = read_pfirrmann_grades(data_dir / "lstv_labels.csv")
    degenerated = [s for s in val_slices if is_degenerated(grades.get(s.study_id, {}))]
    degenerated_errors = localisation_errors(predictor, degenerated) if degenerated else {}
    # A small net's maps have another entropy scale than the real checkpoint's: bands set on
    # the held-out normals travel with the checkpoint, and lstv infer uses them by default.
    bands = {}
    if val_slices:
        from lstv.uncertainty import normal_calibrated_thresholds

        calibrated = normal_calibrated_thresholds(l5_s1_entropies(predictor, val_slices))
        bands = {k: round(v, 4) for k, v in asdict(calibrated).items()}
    band_config = {
        "risk_thresholds": bands,
        "risk_thresholds_from": f"L5/S1 entropy of {len(val_slices)} held-out normal studies: "
        "Medium above the 95th percentile, High above the maximum",
    }
    save_checkpoint(
        model,
        config.output,
        iteration=config.steps,
        epoch=config.steps * config.batch_size // max(len(train_slices), 1),
        image_size=config.image_size,
        half=True,
        extra_config={
            "trained_on": "lstv phantom normal studies",
            "seed": config.seed,
            "steps": config.steps,
            "disc_radius_mm": config.disc_radius_mm,
            "background_weight": config.background_weight,
            "lr": config.lr,
            **init,
            "val_median_error_mm": _rounded_medians(errors),
            "val_median_error_mm_degenerated": _rounded_medians(degenerated_errors),
            **(band_config if bands else {}),
        },
    )
    return TrainResult(
        checkpoint=Path(config.output),
        n_train=len(train_slices),
        n_val=len(val_slices),
        losses=losses,
        val_error_mm=errors,
        risk_thresholds=bands,
        seconds=time.perf_counter() - started,
        val_error_degenerated_mm=degenerated_errors,
        n_val_degenerated=len(degenerated),
    )
