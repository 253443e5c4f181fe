"""Files written whole or not at all: a temporary file renamed over the target, strict JSON (no
NaN), CSVs from rows, and the checks around them (an output that is an input, a file's SHA-256).

Light on purpose: the standard library only. The run folder (:mod:`lstv.rundir`) and every
command that writes a result use these.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from lstv.errors import UsageError


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks (checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """An open temporary file that becomes ``path`` whole when the block ends, or never.

    The file is flushed, synced and renamed over ``path``; on any error it is removed and
    ``path`` is untouched, so readers see the old file or the whole new one, never half.

    Raises:
        OSError: the folder is missing or read-only, ``path`` is a folder, or the disk is
            full; the message names ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name to write")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        mode = {"mode": "wb"} if binary else {"mode": "w", "newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, **mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def atomic_write(path: str | Path, write: Callable[[IO[str]], None]) -> Path:
    """Fill a text file with ``write(file)`` through :func:`atomic_file`."""
    with atomic_file(path) as f:
        write(f)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON that is valid by the standard: NaN or infinity is an error, not ``NaN``."""
    text = json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
    return write_text_atomic(path, text)


def non_finite_keys(data: Any, key: str = "") -> list[str]:
    """The dotted keys (``checkpoint.config.val_median_error_mm.l5_s1``) of every NaN or
    infinite float in ``data``, walking dicts, lists and tuples."""
    if isinstance(data, float):
        return [] if math.isfinite(data) else [key or "(value)"]
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return []
    return [bad for k, v in items for bad in non_finite_keys(v, f"{key}.{k}" if key else str(k))]


def json_safe(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (JSON null): a figure that
    could not be computed is unknown, which strict JSON can say."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def csv_writer(columns: Iterable[str], rows: Iterable[dict | list]) -> Callable[[IO[str]], None]:
    """What writes a CSV with a header and rows (dicts keyed by column, or lists in column
    order) into an open file."""
    columns = list(columns)

    def write(f: IO[str]) -> None:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns] if isinstance(row, dict) else row)

    return write


def write_csv_atomic(path: str | Path, columns: Iterable[str], rows: Iterable[dict | list]) -> Path:
    """A CSV with a header and rows (dicts keyed by column, or lists in column order)."""
    return atomic_write(path, csv_writer(columns, rows))


def refuse_overwriting(output: str | Path, inputs: Iterable[str | Path | None], what: str) -> None:
    """Refuse to write ``output`` when it is one of ``inputs`` (same file, any spelling)."""
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"{what} {output} is a folder; give a file name")
    for given in inputs:
        if given is None:
            continue
        given = Path(given)
        if given.exists() and output.exists() and os.path.samefile(given, output):
            raise UsageError(f"{what} {output} is the input {given}: it would be overwritten")
