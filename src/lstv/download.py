"""The RSNA 2024 data and hengck23's localizer, through the Kaggle CLI.

Steps 01 and 01b of ``slurm_scripts/`` (``lstv slurm download_data`` / ``download_model``), also
run on a login node. Both are safe to rerun: a finished download is skipped, a broken one
resumed, and nothing is put in place before it is checked. The Kaggle token is never read,
copied or printed here; only its presence and mode are checked.

Standard library only at import (the model check imports lstv's model inside its function), so
the login node's plain ``python3`` runs it.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lstv.errors import UsageError

log = logging.getLogger(__name__)

COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
MODEL_DATASET = "hengck23/rsna2024-demo-workflow"
MODEL_FILES = ("00002484.pth", "valid_id.npy")
MIN_CHECKPOINT_MB = 100  # the real checkpoint is about 130 MB

Runner = Callable[..., subprocess.CompletedProcess]


class DownloadError(RuntimeError):
    """A download cannot go on; the message says what to do."""


def kaggle_cli(env: Mapping[str, str], program: str = "kaggle") -> str:
    """The Kaggle CLI to call, once its token file is there.

    Args:
        env: the environment the CLI will get (``HOME``, ``KAGGLE_CONFIG_DIR``, ``PATH``).
        program: the CLI's name or path.

    Raises:
        DownloadError: no token (with the steps to get one) or no Kaggle CLI.
    """
    home = env.get("HOME") or str(Path.home())
    token = Path(env.get("KAGGLE_CONFIG_DIR") or f"{home}/.kaggle") / "kaggle.json"
    if not token.is_file():
        raise DownloadError(
            f"no Kaggle API token at {token}, so nothing can be downloaded. To fix: (1) on "
            "https://www.kaggle.com open Settings > API > Create New Token; (2) save the "
            "downloaded kaggle.json as ~/.kaggle/kaggle.json and run 'chmod 600 "
            "~/.kaggle/kaggle.json' (keep it out of the project folder); (3) accept the "
            f"competition rules at https://www.kaggle.com/competitions/{COMPETITION}/rules; "
            "(4) run this again."
        )
    if token.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; run 'chmod 600 %s'", token, token)
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        raise DownloadError(
            f"the Kaggle CLI {program!r} is not on PATH: 'pip install kaggle' "
            "(or set LSTV_KAGGLE to its path)"
        )
    return found


@dataclass(frozen=True)
class Kaggle:
    """How the Kaggle CLI is called: its name or path, its environment and the runner."""

    env: Mapping[str, str]
    program: str = "kaggle"
    run: Runner = subprocess.run

    def require(self) -> Kaggle:
        """This CLI found on PATH, once the token is there (:func:`kaggle_cli`): downloads
        call it first, so without a token they stop before anything is written."""
        return replace(self, program=kaggle_cli(self.env, self.program))

    def call(self, *args: str) -> bool:
        """Run ``kaggle ARGS``; True when it succeeded (its messages go to our stderr)."""
        return self.run([self.program, *args], env=self.env).returncode == 0


def extract_zip(archive: Path, dest: Path) -> tuple[int, int]:
    """Unpack ``archive`` into ``dest``, skipping members already there with the right size.

    Each file is written under a temporary name first, so an interrupted run never leaves a
    truncated file behind.

    Returns:
        (files written, files already there).

    Raises:
        DownloadError: a member would land outside ``dest``.
    """
    root = os.path.realpath(dest)
    written = skipped = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = os.path.realpath(os.path.join(root, info.filename))
            if not target.startswith(root + os.sep):
                raise DownloadError(f"{archive}: refusing to extract {info.filename!r} outside")
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
            elif os.path.isfile(target) and os.path.getsize(target) == info.file_size:
                skipped += 1
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target + ".part", "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.replace(target + ".part", target)
                written += 1
    return written, skipped


def check_rsna_layout(root: Path) -> tuple[int, int]:
    """Both RSNA tables are in ``root``, and images for every series the series table lists.

    Returns:
        (studies, series).

    Raises:
        DownloadError: naming what is missing.
    """
    for name in ("train_series_descriptions.csv", "train_label_coordinates.csv"):
        if not (root / name).is_file():
            raise DownloadError(f"{name} missing in {root}")
    with open(root / "train_series_descriptions.csv", newline="") as f:
        series = [(r["study_id"], r["series_id"]) for r in csv.DictReader(f)]
    missing = [
        f"{study}/{series_id}"
        for study, series_id in series
        if not any((root / "train_images" / study / series_id).glob("*"))
    ]
    if missing:
        raise DownloadError(
            f"{root}: {len(missing)} of {len(series)} series have no images, e.g. {missing[:3]}"
        )
    return len({study for study, _ in series}), len(series)


def download_competition(
    dest: Path,
    kaggle: Kaggle,
    competition: str = COMPETITION,
    force: bool = False,
    keep_zip: bool = False,
) -> None:
    """The competition data into ``dest``, checked; marked done by ``dest/.download_complete``.

    Without ``force`` a finished download is skipped. The Kaggle CLI resumes a partial zip and
    the extraction keeps files already unpacked, so a rerun continues where one stopped.

    Raises:
        DownloadError: no token or CLI, the download was refused, or the data is incomplete.
    """
    marker = dest / ".download_complete"
    if marker.is_file() and not force:
        log.info(
            "already complete (%s); set LSTV_FORCE_DOWNLOAD=1 to check and fetch again", marker
        )
        return
    kaggle = kaggle.require()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{competition}.zip"
    if not kaggle.call("competitions", "download", "-c", competition, "-p", str(dest)):
        raise DownloadError(
            "the Kaggle download failed. A 403 means the competition rules are not accepted "
            f"yet: https://www.kaggle.com/competitions/{competition}/rules (then run this "
            "again; it continues where it stopped)"
        )
    if not archive.is_file():
        raise DownloadError(f"the Kaggle CLI finished but {archive} is not there")
    log.info("extracting %s (files already there are kept)", archive)
    written, skipped = extract_zip(archive, dest)
    log.info("extracted %d files, %d already there", written, skipped)
    n_studies, n_series = check_rsna_layout(dest)
    log.info("%d studies, %d series: complete", n_studies, n_series)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    if not keep_zip:
        archive.unlink()
        log.info("removed %s (set LSTV_KEEP_ZIP=1 to keep it)", archive)


def check_model_files(checkpoint: str | Path, valid_ids: str | Path) -> list[str]:
    """Does ``checkpoint`` load strictly into the resnet50d point net, and is ``valid_ids`` a
    1-D array of integer study IDs?

    Returns:
        What was found, one line each.

    Raises:
        ValueError: either file is not what step 01b must install.
    """
    import numpy as np

    from lstv.atomic import file_sha256
    from lstv.model import (
        PointNet,
        extract_state_dict,
        load_state_dict_strict,
        read_checkpoint,
    )

    obj = read_checkpoint(checkpoint)
    state_dict = extract_state_dict(obj)
    load_state_dict_strict(PointNet(encoder="resnet50d"), state_dict)
    ids = np.load(valid_ids, allow_pickle=False)
    if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
        raise UsageError(
            f"{valid_ids}: expected a 1-D array of integer study IDs, got {ids.dtype} {ids.shape}"
        )
    return [
        f"checkpoint ok: {len(state_dict)} tensors load strictly into PointNet(resnet50d), "
        f"iteration {obj.get('iteration')}, sha256 {file_sha256(checkpoint)}",
        f"valid ids ok: {ids.size} study IDs ({ids.min()}..{ids.max()})",
    ]


def download_model(
    checkpoint: Path,
    valid_ids: Path,
    check: Callable[[Path, Path], bool],
    kaggle: Kaggle,
    dataset: str = MODEL_DATASET,
    force: bool = False,
    min_mb: int = MIN_CHECKPOINT_MB,
) -> None:
    """hengck23's ``00002484.pth`` -> ``checkpoint`` and ``valid_id.npy`` -> ``valid_ids``.

    Args:
        checkpoint, valid_ids: where the two files go.
        check: says whether a (checkpoint, IDs) pair is the localizer (it runs
            :func:`check_model_files` where lstv runs, so the image's torch does the loading).
        kaggle: how to call the Kaggle CLI.
        dataset: the Kaggle dataset holding both files.
        force: fetch again even when the files in place pass the checks.
        min_mb: the smallest believable checkpoint.

    Raises:
        DownloadError: no token or CLI, a refused download, or files that fail the checks
            (they are removed, never put in place).
    """

    def verify(ckpt: Path, ids: Path) -> bool:
        if not (ckpt.is_file() and ids.is_file()):
            return False
        size_mb = ckpt.stat().st_size // 1_000_000
        if size_mb < min_mb:
            log.warning(
                "%s is %d MB, expected about 130 MB (at least %d): incomplete?",
                ckpt,
                size_mb,
                min_mb,
            )
            return False
        return check(ckpt, ids)

    if not force and verify(checkpoint, valid_ids):
        log.info("already in place and valid; set LSTV_FORCE_DOWNLOAD=1 to fetch again")
        return
    kaggle = kaggle.require()
    # Downloads land next to the checkpoint (inside the project), then move into place.
    staging = checkpoint.parent / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    staged = [_fetch_dataset_file(kaggle, dataset, name, staging) for name in MODEL_FILES]
    if not verify(*staged):
        for path in staged:
            path.unlink(missing_ok=True)
        raise DownloadError("the downloaded files failed the check above and were removed; rerun")
    valid_ids.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staged[0], checkpoint)
    shutil.move(staged[1], valid_ids)
    if not any(staging.iterdir()):
        staging.rmdir()


def _fetch_dataset_file(kaggle: Kaggle, dataset: str, name: str, staging: Path) -> Path:
    path = staging / name
    if not path.is_file():
        if not kaggle.call("datasets", "download", "-d", dataset, "-f", name, "-p", str(staging)):
            raise DownloadError(
                f"could not download {name} from {dataset} (is the dataset visible to your "
                f"Kaggle account? https://www.kaggle.com/datasets/{dataset})"
            )
        zipped = staging / f"{name}.zip"  # Kaggle sends large single files zipped
        if zipped.is_file():
            extract_zip(zipped, staging)
            zipped.unlink()
    if not path.is_file():
        raise DownloadError(f"{name} not found after the download in {staging}")
    return path
