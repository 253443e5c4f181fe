"""CSV files read back and appended to: rows as text with errors that name the file and line,
an appender that keeps every finished row through a kill, and the repair of a half-written last
row. The standard library only."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from lstv.errors import UsageError

log = logging.getLogger(__name__)


def read_csv_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (UTF-8, a BOM accepted), or ([], []) when it is absent.

    Raises:
        UsageError: not UTF-8, or a row the csv module refuses (a field over
            ``csv.field_size_limit()``, a NUL byte), naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        with csv_errors_as_value_errors(path, reader.reader):
            rows = list(reader)
        return list(reader.fieldnames or []), rows


@contextlib.contextmanager
def csv_errors_as_value_errors(path: Path, reader):
    """Turn what reading ``path`` with the csv ``reader`` raises into ValueErrors naming the
    file and line: ``csv.Error`` is no ValueError, so the CLI would show a traceback."""
    try:
        yield
    except csv.Error as exc:
        raise UsageError(
            f"{path} line {reader.line_num}: not a readable CSV row ({exc}; a field may hold "
            f"at most {csv.field_size_limit() // 1024} KiB)"
        ) from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def drop_partial_last_row(path: Path) -> None:
    """An interrupted append can leave half a row: cut the file back to its last whole row.

    A row ends at a newline outside quotes (a quoted field may hold a newline), so the file is
    scanned as CSV rather than cut at the last newline byte.
    """
    data = Path(path).read_bytes()
    if not data or data.endswith(b"\n") and _quotes_balanced(data):
        return
    end = _last_complete_row_end(data)
    with open(path, "rb+") as f:
        f.truncate(end)
    log.warning("%s ended in a partial row (interrupted run): dropped it", path)


def _quotes_balanced(data: bytes) -> bool:
    return data.count(b'"') % 2 == 0


def _last_complete_row_end(data: bytes) -> int:
    """Byte offset just past the last newline that ends a row (outside quotes)."""
    in_quotes = False
    end = 0
    for i, byte in enumerate(data):
        if byte == 0x22:  # '"'; a doubled quote inside quotes toggles twice, as it should
            in_quotes = not in_quotes
        elif byte == 0x0A and not in_quotes:
            end = i + 1
    return end


class CsvAppender:
    """Appends rows to a CSV with a fixed header, flushing each row to disk."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = list(columns)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists:
            check_header(self.path, self.columns)
            drop_partial_last_row(self.path)
        with self._naming_the_file():
            self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise")
            if not exists:
                self._writer.writeheader()
                self._flush()

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """A full disk or an I/O error says which file it could not write."""
        try:
            yield
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _flush(self) -> None:
        with self._naming_the_file():
            self._file.flush()
            os.fsync(self._file.fileno())

    def write(self, row: dict, sync: bool = True) -> None:
        """Append one row, handed to the OS at once (a killed run keeps it); with ``sync`` also
        on the disk (a power cut keeps it). An fsync costs milliseconds, so a run writing many
        rows in a batch passes ``sync=False`` and calls :meth:`sync` once per batch."""
        with self._naming_the_file():
            self._writer.writerow(row)
            if sync:
                self._flush()
            else:
                self._file.flush()

    def sync(self) -> None:
        """Everything written so far is on the disk."""
        self._flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_header(path: Path, columns: list[str]) -> None:
    """Refuse to append to a CSV written by another version (other columns)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    if header != list(columns):
        raise UsageError(
            f"{path} has other columns than this version writes; "
            "use a new --output_dir (or move the old file away)"
        )
