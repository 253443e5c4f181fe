"""The output folder of a run: its file names, CSV columns, manifest and lock.

Everything that reads or writes a run folder (``lstv infer``, ``merge``, ``report``, ``audit``,
``evaluate``, ``score``, the demo, the benchmarks and the tests) goes through this module, so a
file name, a column or a manifest field has one owner. How a file is written whole is
:mod:`lstv.atomic`; how a CSV is read back and appended to, :mod:`lstv.csv_files`. Light on
purpose: no numpy, no torch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from lstv.atomic import non_finite_keys, write_csv_atomic, write_json_atomic, write_text_atomic
from lstv.config import MODES, InferenceConfig
from lstv.csv_files import CsvAppender, read_csv_rows
from lstv.errors import RunDirBusyError, UsageError

log = logging.getLogger(__name__)

METRICS_CSV = "lstv_uncertainty_metrics.csv"
FAILURES_CSV = "failures.csv"
MANIFEST_JSON = "run_manifest.json"
HEATMAP_DIR = "heatmaps"
VISUALIZATION_DIR = "visualizations"
REPORT_HTML = "report.html"
AUDIT_QUEUE_CSV = "audit_queue.csv"
EVALUATION_DIR = "evaluation"
LOCK_FILE = ".lstv.lock"
# Names the staged files of a replacement of several files at once (RunDir.replace_together):
# its existence is the commit point.
COMMIT_JOURNAL = ".lstv.commit.json"

FAILURE_COLUMNS = ["study_id", "series_id", "stage", "error"]

# Run statuses: a run is "running" while it owns the folder, then one of the others.
STATUSES = ("running", "complete", "interrupted", "failed")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- the manifest --------------------------------------------------------------------------

MANIFEST_VERSION = 2

# Settings that change what a row holds: a resumed run and the shards of one run must agree.
RESULT_SETTINGS = (
    "image_size",
    "thresholds",
    "mode",
    "seed",
    "n_trial",
    "tta",
    "parasagittal",
    "validation_filter",
    "score_reference_sha256",
)

# Fields of InferenceConfig that a manifest records as they were given.
CONFIG_SETTINGS = (
    "image_size", "mode", "seed", "n_trial", "num_parts", "part_id", "tta", "parasagittal"
)


@dataclass(frozen=True)
class Manifest:
    """``run_manifest.json``: what a run was asked, what it used and how far it got.

    One ``lstv infer`` (or one shard of it) writes one; ``lstv merge`` writes one that lists
    its shards. Unknown keys in a file are kept in ``extra`` so nothing a newer version wrote
    is lost on a round trip.
    """

    command: str = ""
    lstv_version: str = ""
    versions: dict = field(default_factory=dict)
    device: str = ""
    checkpoint: dict = field(default_factory=dict)  # path, sha256, config
    image_size: int = InferenceConfig.image_size
    thresholds: dict = field(default_factory=dict)
    thresholds_source: str = ""
    mode: str = InferenceConfig.mode
    seed: int = InferenceConfig.seed
    n_trial: int = InferenceConfig.n_trial
    num_parts: int = InferenceConfig.num_parts
    part_id: int = InferenceConfig.part_id
    tta: bool = InferenceConfig.tta
    parasagittal: int = InferenceConfig.parasagittal
    validation_filter: bool = False
    valid_ids: str | None = None
    input_dir: str = ""
    series_csv: str = ""
    score_reference: dict | None = None  # path, sha256, source; or None with score_note
    score_reference_sha256: str | None = None
    score_note: str = ""
    score_drift: dict | None = None  # lstv.score_drift.drift_check of the run against its reference
    selected_study_ids: list = field(default_factory=list)
    n_selected: int = 0
    n_completed: int = 0
    n_failed: int = 0
    status: str = "running"
    started_at: str | None = None
    finished_at: str | None = None
    pid: int | None = None
    shards: list | None = None  # merged runs: one entry per shard
    n_heatmaps: int | None = None
    merged_at: str | None = None
    schema_version: int = MANIFEST_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"manifest mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.status not in STATUSES:
            raise ValueError(f"manifest status must be one of {STATUSES}, not {self.status!r}")
        if self.num_parts < 1 or not 0 <= self.part_id < self.num_parts:
            raise ValueError(f"manifest part {self.part_id} of {self.num_parts} is impossible")

    @classmethod
    def from_config(cls, config: InferenceConfig, **recorded) -> Manifest:
        """The manifest of an ``lstv infer`` run with ``config``: its settings as given, and
        ``recorded`` (what the run found: checkpoint, device, thresholds, studies, ...)."""
        settings = {name: getattr(config, name) for name in CONFIG_SETTINGS}
        return cls(
            command=config.command or "lstv infer",
            valid_ids=str(config.valid_ids) if config.valid_ids else None,
            input_dir=str(config.input_dir),
            series_csv=str(config.series_csv),
            **settings,
            **recorded,
        )

    @property
    def checkpoint_sha256(self) -> str | None:
        return (self.checkpoint or {}).get("sha256")

    def settings(self) -> dict:
        """The settings that change results, with the checkpoint's SHA-256."""
        values = {key: getattr(self, key) for key in RESULT_SETTINGS}
        values["checkpoint_sha256"] = self.checkpoint_sha256
        return values

    def differences(self, other: Manifest) -> list[str]:
        """Human-readable differences in the settings that change results."""
        mine, theirs = self.settings(), other.settings()
        return [
            f"{key}: {mine[key]!r} vs {theirs[key]!r}" for key in mine if mine[key] != theirs[key]
        ]

    def replace(self, **changes) -> Manifest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
        if self.shards is None:
            for key in ("shards", "n_heatmaps", "merged_at"):
                data.pop(key)
        return {**self.extra, **data}

    def check_writable(self, path: str | Path = MANIFEST_JSON) -> None:
        """Raise a ValueError naming each key whose value JSON cannot hold (NaN, infinity):
        a run checks this before it writes anything, so a refusal leaves no file behind."""
        bad = non_finite_keys(self.to_dict())
        if bad:
            raise UsageError(
                f"{path}: the manifest would hold NaN or infinity, which JSON cannot, at "
                + ", ".join(bad)
            )

    def to_json(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.to_text(path))

    def to_text(self, path: str | Path = MANIFEST_JSON) -> str:
        """The manifest as the JSON text of ``run_manifest.json``."""
        self.check_writable(path)
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise UsageError(f"{source} is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        for key in ("num_parts", "part_id", "n_selected", "n_completed", "n_failed"):
            if key in known and not (isinstance(known[key], int) and known[key] >= 0):
                raise UsageError(f"{source} has no integer {key!r} (found {known[key]!r})")
        known.setdefault("schema_version", 1)
        try:
            return cls(**known, extra=extra)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | Path) -> Manifest:
        """Read a manifest; a clear ValueError (naming the file) when it is missing or bad."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, str(path))


# --- the folder ----------------------------------------------------------------------------


class RunDir:
    """One run's output folder: where each file lives and how it is read and written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    metrics_csv = property(lambda self: self.path / METRICS_CSV)
    failures_csv = property(lambda self: self.path / FAILURES_CSV)
    manifest_json = property(lambda self: self.path / MANIFEST_JSON)
    heatmaps = property(lambda self: self.path / HEATMAP_DIR)
    visualizations = property(lambda self: self.path / VISUALIZATION_DIR)
    report_html = property(lambda self: self.path / REPORT_HTML)
    audit_queue_csv = property(lambda self: self.path / AUDIT_QUEUE_CSV)
    evaluation = property(lambda self: self.path / EVALUATION_DIR)
    lock_file = property(lambda self: self.path / LOCK_FILE)

    def heatmap(self, study_id: int | str) -> Path:
        return self.heatmaps / f"{study_id}.npz"

    def create(self) -> None:
        """Make the folder, with a clear error when the path is a file or cannot be made."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--output_dir {self.path} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create --output_dir {self.path}: {exc.strerror}") from exc
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UsageError(f"--output_dir {self.path} is not writable")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one run; a second run is refused with a clear message.

        An advisory ``flock`` on ``.lstv.lock``: the kernel drops it when the process dies, so a
        killed run never leaves the folder locked.
        """
        import fcntl

        self.create()
        handle = open(self.lock_file, "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirBusyError(
                f"{self.path} is in use by another lstv run ({holder}); wait for it to finish "
                "or choose another --output_dir"
            ) from exc
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {utc_now()}\n")
            handle.flush()
            self.settle()  # what a killed writer committed takes its place
            self.remove_stale_temporaries()
            yield
        finally:
            with contextlib.suppress(OSError):
                handle.truncate(0)
            handle.close()

    # -- manifest

    def read_manifest(self) -> Manifest | None:
        """The folder's manifest, or None when there is none (a ValueError when it is bad)."""
        self.settle()
        if not self.manifest_json.is_file():
            return None
        return Manifest.from_json(self.manifest_json)

    # -- several files replaced as one

    def replace_together(self, writes: dict[Path, Callable[[IO[str]], None]]) -> None:
        """Replace several files of the folder (``path -> write(file)``) as one change.

        Each new file is written and synced under a temporary name; then one small journal
        naming them is written atomically (the commit point); then each takes its place. A
        kill before the journal changes nothing; a kill after it is finished by whoever next
        reads the manifest or takes the lock (:meth:`settle`). So the metrics CSV and the
        manifest of ``lstv score`` always agree.
        """
        staged: dict[Path, Path] = {}
        try:
            for path, write in writes.items():
                fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{path.name}.", suffix=".tmp")
                staged[path] = Path(tmp)
                with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
            plan = [[staged[p].name, Path(p).name] for p in writes]
            write_json_atomic(self.path / COMMIT_JOURNAL, {"replace": plan})
        except BaseException:
            for tmp in staged.values():
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise
        self.settle()

    def settle(self) -> None:
        """Finish a :meth:`replace_together` that passed its commit point but was stopped
        before all its files took their place (idempotent; safe beside another settle)."""
        journal = self.path / COMMIT_JOURNAL
        try:
            # pairs of names; a hand-edited journal of any other shape is unreadable
            plan = [
                (str(staged), str(target))
                for staged, target in json.loads(journal.read_text(encoding="utf-8"))["replace"]
            ]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); left as it is", journal, exc)
            return
        names = [name for pair in plan for name in pair]
        if any(Path(name).name != name or name in ("", "..") for name in names):
            log.warning("%s names a path outside the run folder; left as it is", journal)
            return
        for staged, target in plan:
            with contextlib.suppress(FileNotFoundError):  # done already
                os.replace(self.path / staged, self.path / target)
        with contextlib.suppress(FileNotFoundError):
            journal.unlink()

    def remove_stale_temporaries(self) -> None:
        """Temporary files a killed writer of this folder's results left behind (only ever
        called by the lock's holder: no other writer of these files can be at work)."""
        for name in (METRICS_CSV, FAILURES_CSV, MANIFEST_JSON, COMMIT_JOURNAL):
            for stale in self.path.glob(f".{name}.*.tmp"):
                log.info("removing %s, left by a writer that was stopped", stale.name)
                with contextlib.suppress(OSError):
                    stale.unlink()

    def unfinished(self) -> str | None:
        """``"an unfinished run (...)"`` saying how far the run got, or None when its manifest
        says it completed (or there is no readable manifest: nothing to say)."""
        try:
            manifest = self.read_manifest()
        except ValueError:
            return None
        if manifest is None or manifest.status == "complete" or manifest.shards is not None:
            return None
        if manifest.status == "running":
            how = (
                "still in progress: another lstv run holds the folder"
                if self.is_locked()
                else "its process ended before it finished"
            )
        else:
            how = f"{manifest.status}, {manifest.n_completed} of {manifest.n_selected} studies done"
        return f"an unfinished run ({how})"

    def is_locked(self) -> bool:
        """Whether a run holds the folder now (without taking or creating the lock)."""
        import fcntl

        try:
            handle = open(self.lock_file)  # noqa: SIM115 - closed below
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def write_manifest(self, manifest: Manifest) -> Path:
        return manifest.to_json(self.manifest_json)

    def run_thresholds(self) -> dict | None:
        """The risk bands the run recorded, or None without a readable manifest."""
        try:
            manifest = self.read_manifest()
        except ValueError as exc:
            log.warning("%s", exc)
            return None
        if manifest is None or not manifest.thresholds:
            return None
        return manifest.thresholds

    # -- metrics and failures

    def files_with_rows(self) -> list[Path]:
        """The metrics and failure CSVs that hold at least one row: a file with only its header
        (a run stopped before its first study, e.g. by a full disk) holds no result."""
        found = []
        for path in (self.metrics_csv, self.failures_csv):
            if not path.is_file():
                continue
            with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
                reader = csv.reader(f)
                try:
                    next(reader, None)
                    has_row = any(row for row in reader)
                except csv.Error:
                    has_row = True  # unreadable is not empty
            if has_row:
                found.append(path)
        return found

    def completed_study_ids(self) -> set[str]:
        """Studies with a whole row in the metrics CSV (a rerun skips them), as text."""
        _, rows = read_csv_rows(self.metrics_csv) if self.metrics_csv.is_file() else ([], [])
        whole = (r for r in rows if None not in r and None not in r.values())
        return {r["study_id"] for r in whole if r.get("study_id")}

    def read_failures(self) -> list[dict[str, str]]:
        header, rows = read_csv_rows(self.failures_csv)
        if header and header != FAILURE_COLUMNS:
            raise UsageError(f"{self.failures_csv} columns {header} != {FAILURE_COLUMNS}")
        return rows

    def keep_failures_except(self, retried: set[str]) -> None:
        """Drop the failure rows of studies about to run again; keep all the others."""
        if not self.failures_csv.is_file():
            return
        rows = self.read_failures()
        kept = [r for r in rows if r["study_id"] not in retried]
        if len(kept) != len(rows):
            write_csv_atomic(self.failures_csv, FAILURE_COLUMNS, kept)

    def metrics_appender(self, columns: list[str]) -> CsvAppender:
        """Appends rows with ``columns`` (``lstv.results.METRIC_COLUMNS`` for ``lstv infer``)."""
        return CsvAppender(self.metrics_csv, list(columns))

    def failures_appender(self) -> CsvAppender:
        return CsvAppender(self.failures_csv, FAILURE_COLUMNS)
