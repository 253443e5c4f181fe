"""Writing a whole phantom dataset in the RSNA 2024 layout."""

from __future__ import annotations

import csv
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from lstv import rsna
from lstv.atomic import write_json_atomic
from lstv.errors import UsageError
from lstv.levels import LEVEL_KEYS, LEVELS
from lstv.phantom.anatomy import LSTV_SUBTYPES, l5_wedge_deg, s1_s2_remnant
from lstv.phantom.dicom_writer import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_LOSSLESS_SV1,
    MAX_STUDIES_PER_SEED,
    RLE_LOSSLESS,
    SeriesSpec,
    series_id_for,
    study_id_for,
    write_series_files,
)
from lstv.phantom.geometry import lumbosacral_angle_deg
from lstv.phantom.render import (
    render_axial,
    render_t1,
    render_t2,
    scanner_shift,
    study_rng,
)

log = logging.getLogger(__name__)

T2_DESCRIPTION = rsna.SAGITTAL_T2
T1_DESCRIPTION = rsna.SAGITTAL_T1
AXIAL_DESCRIPTION = rsna.AXIAL_T2
CONDITION = rsna.DISC_CONDITION
# lstv_labels.csv: the three columns every labels file has, then what only phantoms know.
LSTV_LABEL_COLUMNS = (
    "study_id",
    "lstv",
    "lstv_type",
    "lstv_subtype",
    "castellvi",
    *(f"pfirrmann_{key}" for key in LEVEL_KEYS),
    "l5_wedge_deg",
    "lumbosacral_angle_deg",
    "s1_s2_remnant",
)


@dataclass(frozen=True)
class PhantomDataset:
    """What :func:`write_phantom_dataset` wrote."""

    root: Path
    images_dir: Path
    series_csv: Path
    labels_csv: Path
    lstv_labels_csv: Path
    valid_ids_path: Path
    study_ids: tuple[int, ...]
    valid_ids: tuple[int, ...]


@dataclass(frozen=True)
class _StudyPlan:
    index: int
    study_id: int
    kind: str
    transfer_syntax: str
    shuffled: bool
    with_t1: bool
    with_axial: bool
    subtype: str = "normal"


def _balanced(rng: np.random.Generator, n: int, counts: dict[str, int], rest: str) -> list[str]:
    values = [v for v, c in counts.items() for _ in range(c)]
    values += [rest] * (n - len(values))
    return [values[i] for i in rng.permutation(n)]


def plan_studies(n: int, lstv_fraction: float, seed: int) -> list[_StudyPlan]:
    rng = np.random.default_rng([seed, 0xDA7A])
    n_lstv = int(round(n * lstv_fraction))
    n_sacral = n_lstv // 2 + (int(rng.integers(2)) if n_lstv % 2 else 0)
    kinds = _balanced(
        rng, n, {"sacralization": n_sacral, "lumbarization": n_lstv - n_sacral}, "normal"
    )
    n_rle, n_jpeg = int(round(n / 3)), int(round(n / 6))
    if n >= 3:
        n_rle, n_jpeg = max(n_rle, 1), max(n_jpeg, 1)
    syntaxes = _balanced(
        rng, n, {RLE_LOSSLESS: n_rle, JPEG_LOSSLESS_SV1: n_jpeg}, EXPLICIT_VR_LITTLE_ENDIAN
    )
    n_shuffled = max(1, int(round(n / 4))) if n >= 2 else 0
    shuffled = _balanced(rng, n, {"yes": n_shuffled}, "no")
    with_t1 = rng.random(n) < 0.35
    with_axial = rng.random(n) < 0.35
    if n >= 3:  # make sure series selection meets both kinds of extra series
        with_t1[int(rng.integers(n))] = True
        with_axial[int(rng.integers(n))] = True
    subtypes = ["normal"] * n
    for kind in ("sacralization", "lumbarization"):  # about half each
        members = [i for i in range(n) if kinds[i] == kind]
        first, second = LSTV_SUBTYPES[kind]
        n_first = len(members) // 2 + (int(rng.integers(2)) if len(members) % 2 else 0)
        for i, subtype in zip(
            members, _balanced(rng, len(members), {first: n_first}, second), strict=True
        ):
            subtypes[i] = subtype
    return [
        _StudyPlan(
            i,
            study_id_for(seed, i),
            kinds[i],
            syntaxes[i],
            shuffled[i] == "yes",
            bool(with_t1[i]),
            bool(with_axial[i]),
            subtypes[i],
        )
        for i in range(n)
    ]


def valid_split(plans: list[_StudyPlan], valid_fraction: float, seed: int) -> list[int]:
    """Held-out ids: ``valid_fraction`` of the studies, stratified by kind.

    Where both kinds exist (and there are at least three studies) at least one normal and one
    transitional study are held out, even if ``valid_fraction`` rounds to fewer.
    """
    n = len(plans)
    normal = [p.study_id for p in plans if p.kind == "normal"]
    lstv = [p.study_id for p in plans if p.kind != "normal"]
    n_valid = int(round(n * valid_fraction))
    if valid_fraction > 0:
        n_valid = max(n_valid, 2 if normal and lstv and n >= 3 else 1)
    if n_valid >= n:
        return sorted(p.study_id for p in plans)
    rng = np.random.default_rng([seed, 0x7A11D])
    n_lstv = int(round(n_valid * len(lstv) / n))
    if n_valid >= 2 and normal and lstv:
        n_lstv = min(max(n_lstv, 1), n_valid - 1)
    n_lstv = min(n_lstv, len(lstv))
    n_normal = min(n_valid - n_lstv, len(normal))
    n_lstv = n_valid - n_normal
    chosen = list(rng.choice(normal, n_normal, replace=False)) if n_normal else []
    chosen += list(rng.choice(lstv, n_lstv, replace=False)) if n_lstv else []
    return sorted(int(i) for i in chosen)


def _instance_numbers(rng: np.random.Generator, n: int, shuffled: bool) -> tuple[int, ...]:
    if not shuffled:
        return tuple(range(1, n + 1))
    while True:  # a permutation with no order along x, neither ascending nor descending
        perm = rng.permutation(n) + 1
        diffs = np.diff(perm)
        if not (np.all(diffs > 0) or np.all(diffs < 0)):
            return tuple(int(v) for v in perm)


def _write_study(
    images_dir: Path, plan: _StudyPlan, seed: int, shifted: bool = False
) -> tuple[list[tuple[int, int, str]], list[tuple], tuple]:
    """Render and write one study; returns its series rows, label rows and lstv_labels row.
    ``shifted``: the sagittal T2 as another scanner shows it (:func:`scanner_shift`)."""
    rng = study_rng(seed, plan.index)
    t2, anatomy, placement = render_t2(rng, plan.kind, plan.subtype)
    if shifted:
        t2 = replace(
            t2, volume=scanner_shift(t2.volume, np.random.default_rng([seed, plan.index, 0x5C]))
        )
    n_slices = t2.volume.shape[0]
    year, month, day = (
        int(rng.integers(2018, 2024)),
        int(rng.integers(1, 13)),
        int(rng.integers(1, 29)),
    )
    date = f"{year}{month:02d}{day:02d}"
    clock = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00"
    field_strength = float(rng.choice([1.5, 3.0]))
    study_dir = images_dir / str(plan.study_id)
    series_rows: list[tuple[int, int, str]] = []
    number = 1
    extra = []
    if plan.with_t1:
        t1 = render_t1(rng, anatomy, t2, placement)
        extra.append((1, T1_DESCRIPTION, "T1", t1.volume, t1.geometry))
    if plan.with_axial:
        vol, geom = render_axial(rng, anatomy, t2)
        if len(vol):
            extra.append((2, AXIAL_DESCRIPTION, "T2", vol, geom))
    t2_instances = _instance_numbers(rng, n_slices, plan.shuffled)
    series = [(0, T2_DESCRIPTION, "T2", t2.volume, t2.geometry, plan.transfer_syntax, t2_instances)]
    series += [
        (j, d, c, v, g, EXPLICIT_VR_LITTLE_ENDIAN, tuple(range(1, len(v) + 1)))
        for j, d, c, v, g in extra
    ]
    series.sort(key=lambda s: s[0] if s[0] else 1.5)  # T1, then T2, then axial, as scanned
    for j, description, contrast, volume, geometry, syntax, instances in series:
        series_id = series_id_for(seed, plan.index, j)
        spec = SeriesSpec(
            plan.study_id,
            series_id,
            number,
            description,
            contrast,
            syntax,
            instances,
            date,
            clock,
            field_strength,
        )
        write_series_files(study_dir / str(series_id), volume, geometry, spec, seed)
        series_rows.append((plan.study_id, series_id, description))
        number += 1
    t2_series = series_id_for(seed, plan.index, 0)
    mid_instance = t2_instances[t2.mid_index]
    label_rows = [
        (plan.study_id, t2_series, mid_instance, CONDITION, level, x, y)
        for level, (x, y) in t2.disc_centres.items()
    ]
    lstv_row = (
        plan.study_id,
        int(plan.kind != "normal"),
        plan.kind,
        t2.subtype,
        t2.castellvi,
        *(t2.grades[level] for level in LEVELS),
        f"{l5_wedge_deg(anatomy):.1f}",
        f"{lumbosacral_angle_deg(anatomy, placement):.1f}",
        s1_s2_remnant(anatomy),
    )
    return series_rows, label_rows, lstv_row


SETTINGS_JSON = "phantom_settings.json"
SCANNERS = ("default", "shifted")


def _refuse_other_dataset(root: Path, settings: dict) -> None:
    """A folder may be written again with the same settings (the files come out byte-identical);
    a folder holding another dataset, or anything in the RSNA layout, is never overwritten."""
    if not root.exists():
        return
    if not root.is_dir():
        raise UsageError(f"--output_dir {root} is a file, not a folder")
    recorded = root / SETTINGS_JSON
    if recorded.is_file():
        try:
            previous = json.loads(recorded.read_text())
        except ValueError:
            previous = None
        if previous == settings:
            return
        raise UsageError(
            f"{root} already holds a phantom dataset made with other settings ({previous}); "
            "choose another --output_dir"
        )
    names = (rsna.SERIES_CSV, rsna.TRAIN_IMAGES, "lstv_labels.csv")
    held = [n for n in names if (root / n).exists()]
    if held:
        raise UsageError(
            f"{root} already holds {', '.join(held)}; choose another --output_dir so they are kept"
        )


def write_phantom_dataset(
    output_dir: str | Path,
    n_studies: int = 20,
    lstv_fraction: float = 0.3,
    seed: int = 0,
    valid_fraction: float = 0.25,
    progress: bool = False,
    workers: int = 1,
    scanner: str = "default",
) -> PhantomDataset:
    """Write ``n_studies`` phantom studies in the RSNA 2024 layout.

    Args:
        output_dir: the dataset root (created if needed).
        n_studies: number of studies (1..100000).
        lstv_fraction: fraction of transitional studies, split about evenly between
            sacralization and lumbarization.
        seed: non-negative seed; the same seed writes byte-identical files, different seeds
            disjoint study and series ids.
        valid_fraction: fraction of studies listed in ``valid_id.npy`` (stratified so that
            normal and transitional studies are both held out; 1.0 holds out every study).
        progress: show a progress bar on stderr.
        workers: processes that render and write studies; every study draws from its own
            generator (:func:`study_rng`), so the files are byte-identical for any count.
        scanner: ``default``, or ``shifted``: every sagittal T2 as another scanner would show
            it (coarser, another gamma, a stronger bias field, more noise), to test a score
            reference fitted on one scanner against another.

    Returns:
        The paths written and the study ids.

    Raises:
        UsageError: an argument out of range.
    """
    if not 1 <= n_studies <= MAX_STUDIES_PER_SEED:
        raise UsageError(f"n_studies must be in 1..{MAX_STUDIES_PER_SEED}, got {n_studies}")
    if not 0.0 <= lstv_fraction <= 1.0:
        raise UsageError(f"lstv_fraction must be in [0, 1], got {lstv_fraction}")
    if not 0.0 <= valid_fraction <= 1.0:
        raise UsageError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    if scanner not in SCANNERS:
        raise UsageError(f"scanner must be one of {SCANNERS}, got {scanner!r}")
    root = Path(output_dir)
    settings = {
        "n_studies": n_studies,
        "lstv_fraction": lstv_fraction,
        "seed": seed,
        "valid_fraction": valid_fraction,
        **({"scanner": scanner} if scanner != "default" else {}),
    }
    _refuse_other_dataset(root, settings)
    images_dir = root / rsna.TRAIN_IMAGES
    images_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / SETTINGS_JSON, settings)
    plans = plan_studies(n_studies, lstv_fraction, seed)
    series_rows, label_rows, lstv_rows = [], [], []
    with _study_writer(images_dir, seed, min(workers, len(plans)), scanner == "shifted") as write:
        results = write(plans)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(plans), desc="phantom studies", unit="study")
        for s_rows, l_rows, lstv_row in results:  # in plan order, whatever the worker count
            series_rows += s_rows
            label_rows += l_rows
            lstv_rows.append(lstv_row)
    series_csv = root / rsna.SERIES_CSV
    labels_csv = root / rsna.LABELS_CSV
    lstv_csv = root / "lstv_labels.csv"
    valid_path = root / "valid_id.npy"
    _write_csv(series_csv, rsna.SERIES_COLUMNS, series_rows)
    _write_csv(
        labels_csv,
        rsna.LABEL_COLUMNS,
        [(*r[:5], f"{r[5]:.6f}", f"{r[6]:.6f}") for r in label_rows],
    )
    _write_csv(lstv_csv, LSTV_LABEL_COLUMNS, lstv_rows)
    valid_ids = valid_split(plans, valid_fraction, seed)
    np.save(valid_path, np.array(valid_ids, dtype=np.int64))
    log.info(
        "wrote %d phantom studies (%d transitional, %d held out) to %s",
        len(plans),
        sum(p.kind != "normal" for p in plans),
        len(valid_ids),
        root,
    )
    return PhantomDataset(
        root=root,
        images_dir=images_dir,
        series_csv=series_csv,
        labels_csv=labels_csv,
        lstv_labels_csv=lstv_csv,
        valid_ids_path=valid_path,
        study_ids=tuple(p.study_id for p in plans),
        valid_ids=tuple(valid_ids),
    )


def _one_thread() -> None:
    """One OpenCV thread per writer: parallelism comes from the worker processes."""
    import cv2

    cv2.setNumThreads(1)


@contextmanager
def _study_writer(images_dir: Path, seed: int, workers: int, shifted: bool = False):
    """A function plans -> iterator of :func:`_write_study` results, in plan order."""
    if workers <= 1:
        import cv2

        threads = cv2.getNumThreads()
        _one_thread()
        try:
            yield lambda plans: (_write_study(images_dir, plan, seed, shifted) for plan in plans)
        finally:
            cv2.setNumThreads(threads)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may hold threads (torch, a web server) that fork would copy.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        yield lambda plans: pool.map(
            partial(_write_study, images_dir, seed=seed, shifted=shifted), plans, chunksize=1
        )


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
