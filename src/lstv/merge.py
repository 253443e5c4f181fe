"""Join the outputs of a sharded run (``lstv infer --num_parts N --part_id i``) into one.

Each shard folder holds what one ``lstv infer`` wrote: ``lstv_uncertainty_metrics.csv``,
``failures.csv``, ``run_manifest.json`` and maybe ``heatmaps/``. The merge refuses anything that
would make the joined table silently wrong: a missing or duplicated part, shards of different
splits or settings, an unfinished shard, or a study seen twice. Rows are copied as text, so the
merged numbers are byte for byte those the shards wrote.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from lstv import __version__
from lstv.atomic import write_csv_atomic
from lstv.csv_files import csv_errors_as_value_errors
from lstv.errors import UsageError
from lstv.rundir import FAILURE_COLUMNS, MANIFEST_JSON, METRICS_CSV, Manifest, RunDir, utc_now

log = logging.getLogger(__name__)

_PART_DIR = re.compile(r"part_(\d+)$")


def _read_manifest(shard: Path) -> Manifest:
    run = RunDir(shard)
    if not run.manifest_json.is_file():
        raise UsageError(
            f"shard {shard} has no {MANIFEST_JSON}: its task never started or wrote elsewhere"
        )
    return Manifest.from_json(run.manifest_json)


def _read_rows(path: Path, what: str) -> tuple[list[str] | None, list[list[str]]]:
    """Header and rows of a CSV as text (``None``, [] when the file is absent)."""
    if not path.is_file():
        return None, []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        with csv_errors_as_value_errors(path, reader):
            header = next(reader, None)
            rows = [row for row in reader if row]
    if header is None:
        return None, []
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise UsageError(
                f"{what} {path} line {i} has {len(row)} fields, the header {len(header)}"
            )
    return header, rows


def _study_sort_key(study_id: str) -> tuple[int, int, str]:
    # RSNA study IDs are integers: sort them as numbers, anything else after them as text.
    return (0, int(study_id), "") if study_id.isdigit() else (1, 0, study_id)


def _check_parts(manifests: list[tuple[Path, dict]], expected_parts: int | None) -> int:
    nums = {m.num_parts for _, m in manifests}
    if len(nums) != 1:
        detail = ", ".join(f"{p.name}: {m.num_parts}" for p, m in manifests)
        raise UsageError(f"shards come from different splits (num_parts {detail})")
    num_parts = nums.pop()
    if expected_parts is not None and num_parts != expected_parts:
        raise UsageError(f"expected {expected_parts} parts, the shards say num_parts={num_parts}")
    seen: dict[int, Path] = {}
    for path, m in manifests:
        part = m.part_id
        if not 0 <= part < num_parts:
            raise UsageError(f"shard {path} has part_id {part}, outside 0..{num_parts - 1}")
        if part in seen:
            raise UsageError(f"part {part} appears twice: {seen[part]} and {path}")
        named = _PART_DIR.search(path.name)
        if named and int(named.group(1)) != part:
            raise UsageError(f"shard folder {path} holds part {part} (its manifest says so)")
        seen[part] = path
    missing = sorted(set(range(num_parts)) - set(seen))
    if missing:
        raise UsageError(
            f"missing part(s) {missing} of {num_parts}: rerun those array tasks, then merge again"
        )
    return num_parts


def _check_finished(path: Path, m: Manifest) -> None:
    if m.status != "complete":
        raise UsageError(f"shard {path} is not complete (status {m.status!r}): rerun it to resume")
    if not m.finished_at:
        raise UsageError(f"shard {path} has not finished (no finished_at): rerun it to resume")


def _check_same_settings(manifests: list[tuple[Path, Manifest]]) -> None:
    first_path, first = manifests[0]
    for path, m in manifests[1:]:
        if m.checkpoint_sha256 != first.checkpoint_sha256:
            raise UsageError(
                f"shards ran different checkpoints: {first_path.name} sha256 "
                f"{first.checkpoint_sha256}, {path.name} sha256 {m.checkpoint_sha256}"
            )
        differences = first.differences(m)
        if differences:
            raise UsageError(
                f"shards disagree on {'; '.join(differences)} ({first_path.name} vs {path.name})"
            )


def merge_shards(
    shard_dirs: Iterable[str | Path],
    output_dir: str | Path,
    *,
    expected_parts: int | None = None,
) -> dict:
    """Join shard outputs into ``output_dir``; return the merged manifest.

    Writes ``lstv_uncertainty_metrics.csv`` (rows sorted by study ID, the shards' columns),
    ``failures.csv``, ``run_manifest.json`` (with one entry per shard) and copies
    ``heatmaps/*.npz`` of every shard into ``output_dir/heatmaps``. Shard folders are only read.

    Args:
        shard_dirs: One output folder per shard (each from ``lstv infer --num_parts N
            --part_id i``), in any order.
        output_dir: Where the merged files go; created if needed. May be the shards' parent,
            not one of the shards.
        expected_parts: Number of shards the run was split into; checked against the shards'
            manifests when given.

    Returns:
        The merged manifest (also written to ``output_dir/run_manifest.json``).

    Raises:
        UsageError: no shards, a missing or duplicated part, shards of different splits or
            settings, an unfinished shard, a study in more than one row, or CSVs whose columns
            differ.
    """
    shards = [Path(p) for p in shard_dirs]
    out = Path(output_dir)
    _check_folders(shards, out, expected_parts)
    manifests = [(shard, _read_manifest(shard)) for shard in shards]
    num_parts = _check_parts(manifests, expected_parts)
    for path, m in manifests:
        _check_finished(path, m)
    _check_same_settings(manifests)
    manifests.sort(key=lambda item: item[1].part_id)

    joined = _Joined()
    for path, m in manifests:
        joined.add(path, m)
    if joined.header is None:
        raise UsageError(f"none of the {len(shards)} shards has a {METRICS_CSV}")

    out.mkdir(parents=True, exist_ok=True)
    merged_dir = RunDir(out)
    write_csv_atomic(merged_dir.metrics_csv, joined.header, joined.sorted_rows())
    write_csv_atomic(merged_dir.failures_csv, FAILURE_COLUMNS, joined.sorted_failures())
    n_heatmaps = _copy_heatmaps([p for p, _ in manifests], merged_dir.heatmaps)
    merged = _merged_manifest([m for _, m in manifests], num_parts, joined, n_heatmaps)
    merged_dir.write_manifest(merged)
    log.info(
        "merged %d shards: %d studies, %d failures, %d heatmaps -> %s",
        num_parts,
        len(joined.rows),
        len(joined.failures),
        n_heatmaps,
        out,
    )
    return merged.to_dict()


def _check_folders(shards: list[Path], out: Path, expected_parts: int | None) -> None:
    if not shards:
        raise UsageError("no shard folders to merge")
    if expected_parts is not None and expected_parts < 1:
        raise UsageError(f"expected_parts must be >= 1, got {expected_parts}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} is a file, not a folder")
    resolved_out = out.resolve()
    for shard in shards:
        if not shard.is_dir():
            raise UsageError(f"shard folder not found: {shard}")
        if shard.resolve() == resolved_out:
            raise UsageError(f"output_dir {out} is one of the shards; merge into another folder")


class _Joined:
    """The shards' rows and failures, joined as text, with every study accounted for once."""

    def __init__(self):
        self.header: list[str] | None = None
        self.header_from: Path | None = None
        self.rows: list[list[str]] = []
        self.failures: list[list[str]] = []
        self.owner: dict[str, Path] = {}  # study -> the shard that holds it
        self.shard_entries: list[dict] = []

    def add(self, path: Path, m: Manifest) -> None:
        run = RunDir(path)
        rows = self._metrics_rows(run)
        done = set()
        for row in rows:
            study = row[0]
            if study in self.owner:
                where = "twice in" if self.owner[study] == path else f"in {self.owner[study]} and"
                raise UsageError(f"study {study} appears {where} {path}")
            self.owner[study] = path
            done.add(study)
        fail_header, failures = _read_rows(run.failures_csv, "failures CSV")
        if fail_header is not None and fail_header != FAILURE_COLUMNS:
            raise UsageError(f"{run.failures_csv} columns {fail_header} != {FAILURE_COLUMNS}")
        failed = {r[0] for r in failures}
        for study in failed:
            other = self.owner.get(study)
            if other is not None and other != path:
                raise UsageError(f"study {study} appears in {other} and {path}")
        for study in failed - done:
            self.owner[study] = path
        _check_accounted(path, m, done | failed)
        self.rows.extend(rows)
        self.failures.extend(failures)
        self.shard_entries.append(
            {
                "path": str(path.resolve()),
                "part_id": m.part_id,
                "n_selected": m.n_selected,
                "n_completed": len(rows),
                "n_failed": len(failures),
                "device": m.device,
                "versions": m.versions,
                "started_at": m.started_at,
                "finished_at": m.finished_at,
            }
        )

    def _metrics_rows(self, run: RunDir) -> list[list[str]]:
        header, rows = _read_rows(run.metrics_csv, "metrics CSV")
        if header is None:
            return rows
        if self.header is None:
            self.header, self.header_from = header, run.path
        elif header != self.header:
            raise UsageError(
                f"{run.metrics_csv} has other columns than {RunDir(self.header_from).metrics_csv}"
            )
        if header[0] != "study_id":
            raise UsageError(f"{run.metrics_csv} does not start with a study_id column")
        return rows

    def sorted_rows(self) -> list[list[str]]:
        return sorted(self.rows, key=lambda r: _study_sort_key(r[0]))

    def sorted_failures(self) -> list[list[str]]:
        return sorted(self.failures, key=lambda r: _study_sort_key(r[0]))


def _check_accounted(path: Path, m: Manifest, accounted: set[str]) -> None:
    """Every selected study must end as a row or a failure, and nothing else may appear."""
    if not (m.selected_study_ids or m.n_selected == 0):
        return
    expected = {str(s) for s in m.selected_study_ids}
    if accounted != expected:
        missing = sorted(expected - accounted, key=_study_sort_key)
        extra = sorted(accounted - expected, key=_study_sort_key)
        raise UsageError(
            f"shard {path} does not match its manifest: missing studies {missing[:10]}, "
            f"unexpected studies {extra[:10]}"
        )


def _merged_manifest(
    manifests: list[Manifest], num_parts: int, joined: _Joined, n_heatmaps: int
) -> Manifest:
    """The first shard's settings, with the counts and times of all of them."""
    starts = [m.started_at for m in manifests if m.started_at]
    ends = [m.finished_at for m in manifests if m.finished_at]
    return manifests[0].replace(
        command="lstv merge",
        lstv_version=__version__,
        merged_at=utc_now(),
        num_parts=num_parts,
        part_id=0,
        selected_study_ids=sorted(
            (s for m in manifests for s in m.selected_study_ids), key=lambda s: int(s)
        ),
        n_selected=sum(m.n_selected for m in manifests),
        n_completed=len(joined.rows),
        n_failed=len(joined.failures),
        n_heatmaps=n_heatmaps,
        status="complete",
        started_at=min(starts) if starts else None,
        finished_at=max(ends) if ends else None,
        shards=joined.shard_entries,
        pid=None,
    )


def _copy_heatmaps(shards: list[Path], dest: Path) -> int:
    sources = [p for shard in shards for p in sorted(RunDir(shard).heatmaps.glob("*.npz"))]
    # Half-written files of an interrupted task are named *.tmp.npz; they are not results.
    sources = _plain_files([p for p in sources if not p.name.endswith(".tmp.npz")])
    if not sources:
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources:
        shutil.copy2(src, dest / src.name)
    return len(sources)


def _plain_files(paths: list[Path]) -> list[Path]:
    """``paths`` that are regular files, not symlinks: a shard's symlink could point anywhere
    (another user's data, a device), and the merge copies only what the shard itself wrote."""
    kept = []
    for p in paths:
        if p.is_symlink() or p.parent.is_symlink() or not p.is_file():
            log.warning("not merging %s: a symlink or not a regular file", p)
            continue
        kept.append(p)
    return kept
