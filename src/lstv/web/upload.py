"""Uploads to the web demo: several ``.dcm`` files, or one ``.zip`` of them.

They are size-limited and written only into a folder the server made, under names the server
chooses; a bad upload (a broken, encrypted or oddly compressed zip, a zip that expands past the
limit) is an :class:`UploadError` with a message for the user.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from lstv.errors import UsageError

MAX_FILES = 400
# Compression methods Python's zipfile reads; others (deflate64, PPMd, ...) raise deep inside it.
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


class UploadError(UsageError):
    """An upload the demo will not analyse; the message is shown to the user."""


def save_upload(files, folder: Path, max_bytes: int) -> int:
    """Write uploaded DICOM files (or the members of one zip) as ``{i}.dcm`` in ``folder``.

    Client file names and zip member paths are never used as paths, so nothing can land
    outside ``folder``. Returns the number of files written.
    """
    written = 0
    total = 0

    def write(data: bytes) -> None:
        nonlocal written, total
        total += len(data)
        if total > max_bytes:
            raise UploadError(f"upload larger than {max_bytes // 2**20} MB")
        if written >= MAX_FILES:
            raise UploadError(f"more than {MAX_FILES} files")
        (folder / f"{written}.dcm").write_bytes(data)
        written += 1

    for upload in files:
        if not upload or not upload.filename:
            continue
        if upload.filename.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(upload.stream) as archive:
                    for member in zip_members(archive, max_bytes - total):
                        write(read_member(archive, member))
            except zipfile.BadZipFile as exc:
                raise UploadError(f"not a valid zip file: {exc}") from exc
        else:
            write(upload.read())
    if written == 0:
        raise UploadError("no files uploaded: choose the .dcm files of one series, or a .zip")
    return written


def zip_members(archive: zipfile.ZipFile, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The file members of an uploaded zip, checked before anything is extracted.

    Folders and macOS metadata (``__MACOSX/``, ``._*``) are skipped.

    Raises:
        UploadError: an encrypted member, an unsupported compression method, more than
            ``MAX_FILES`` files, or members that declare more than ``max_bytes`` in all (a zip
            bomb; zipfile never extracts more than a member declares).
    """
    members = [
        m
        for m in archive.infolist()
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and not m.filename.rsplit("/", 1)[-1].startswith("._")
    ]
    if len(members) > MAX_FILES:
        raise UploadError(f"the zip holds {len(members)} files, more than {MAX_FILES}")
    for m in members:
        if m.flag_bits & 0x1:
            raise UploadError(f"{m.filename}: the zip is encrypted; upload it without a password")
        if m.compress_type not in ZIP_METHODS:
            raise UploadError(
                f"{m.filename}: zip compression method {m.compress_type} is not supported; "
                f"use one of {', '.join(ZIP_METHODS.values())}"
            )
    declared = sum(m.file_size for m in members)
    if declared > max_bytes:
        raise UploadError(
            f"the zip expands to {declared / 2**20:,.0f} MB, more than the "
            f"{max_bytes / 2**20:,.0f} MB an upload may hold"
        )
    return members


def read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """One member's bytes; any extraction error is an :class:`UploadError`."""
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UploadError(f"{member.filename}: cannot extract it from the zip ({exc})") from exc
