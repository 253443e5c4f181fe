"""``lstv serve``: a small web demo that analyses one uploaded sagittal T2 series.

Uploads (several ``.dcm`` files, or one ``.zip`` of them) are size-limited, written only into a
fresh temporary directory under names the server chooses, and deleted after the analysis; the
pixels they declare are checked against :class:`lstv.dicom.DecodeLimits` before decoding. A bad
upload (a broken, encrypted or oddly compressed zip, a zip that expands past the limit) is a
400 with a message. Every answer carries security headers, and the server names no version.
The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, jsonify, render_template, request
from werkzeug.serving import WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from lstv.dicom import DecodeLimits

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 200
# Analyses run at once (each holds a core for up to seconds); more are refused with 503.
DEFAULT_MAX_ANALYSES = 2
BUSY_RETRY_AFTER_S = 10
MAX_FILES = 400
# Compression methods Python's zipfile reads; others (deflate64, PPMd, ...) raise deep inside it.
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# No scripts, nothing remote: the pages are one inline stylesheet and data: images.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class UploadError(ValueError):
    """An upload the demo will not analyse; the message is shown to the user."""


class ServerBusy(Exception):
    """Every analysis slot is taken: the request is refused (503), not queued."""


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


def analyse_folder(
    predictor,
    folder: Path,
    image_size: int,
    thresholds,
    limits: DecodeLimits | None = None,
    reference=None,
) -> dict:
    """Read the series in ``folder`` and run it: metrics, risk and the figure as base64 PNG.

    ``limits`` bounds what decoding the upload may allocate (default: ``DecodeLimits.from_env``).
    ``reference`` (a :class:`lstv.score.Reference` of the same checkpoint) adds the
    calibrated LSTV score, its flag and its reason in plain words.
    """
    import math

    from lstv.api import analyse_volume
    from lstv.dicom import read_series
    from lstv.index import upload_series_files
    from lstv.inference import model_input
    from lstv.visualize import figure_png, heatmap_figure

    # One series as uploaded, or the one lstv infer would pick from a whole study's export.
    series = read_series(upload_series_files(folder), limits)
    centre = series.centre_index
    result = analyse_volume(
        predictor, series.volume, image_size, series.pixel_spacings[centre], reference
    )
    image = model_input(series.volume, image_size)
    title = f"slice {centre + 1} of {series.volume.shape[0]}"
    png = figure_png(heatmap_figure(image, result.probs, result.levels, title))
    l5_s1 = result.levels["l5_s1"]["entropy"]

    def plain(value):  # JSON has no NaN: a second peak that was not found is null
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {
        "n_slices": int(series.volume.shape[0]),
        "levels": {
            key: {k: plain(v) for k, v in m.items() if k != "point"}
            | {"point": None if m["point"] is None else [round(c, 1) for c in m["point"]]}
            for key in result.levels
            for m in [result[key]]  # original pixels
        },
        "risk_level": thresholds.risk(l5_s1),
        "lstv_flag": thresholds.flag(l5_s1),
        **{k: None if v == "" else v for k, v in result.score.items()},
        "lstv_score_threshold": None if reference is None else reference.threshold,
        "thresholds": dataclasses.asdict(thresholds),
        "figure_png_base64": base64.b64encode(png).decode("ascii"),
    }


def create_app(
    predictor,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    image_size: int = 160,
    decode_limits: DecodeLimits | None = None,
    reference: Path | None = None,
    max_analyses: int = DEFAULT_MAX_ANALYSES,
) -> Flask:
    """The demo app around an already loaded predictor (see :func:`lstv.api.load_model`).

    At most ``max_analyses`` uploads are analysed at once; a request beyond that is refused
    at once with 503 and ``Retry-After`` rather than queued (each analysis holds a core).

    ``decode_limits`` bounds the pixels one upload may decode (default: ``DecodeLimits()``
    with the ``LSTV_MAX_*_DECODE_MB`` environment variables applied). ``reference`` is a
    score reference JSON of the same checkpoint (``lstv calibrate``); default: the one the
    checkpoint carries, if any.
    """
    from lstv.dicom import DecodeLimits
    from lstv.scoring import resolve_reference
    from lstv.uncertainty import resolve_thresholds

    app = DemoFlask(__name__)
    # The checkpoint's own risk bands when it carries them, as lstv infer does.
    info = getattr(predictor, "info", None)
    thresholds = resolve_thresholds((info.config if info else {}).get("risk_thresholds"))
    sha, config = (info.sha256, info.config) if info else (None, {})
    score = resolve_reference(reference, sha, config)
    max_bytes = max_upload_mb * 2**20
    decode_limits = decode_limits or DecodeLimits.from_env()
    # Flask refuses larger requests with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = max_bytes + 2**20
    app.config["LSTV_MAX_ANALYSES"] = max_analyses
    slots = threading.BoundedSemaphore(max_analyses)

    def run_upload() -> dict:
        if not slots.acquire(blocking=False):
            raise ServerBusy(f"the server is busy with {max_analyses} analyses; try again shortly")
        try:
            with tempfile.TemporaryDirectory(prefix="lstv-upload-") as tmp:
                save_upload(request.files.getlist("files"), Path(tmp), max_bytes)
                return analyse_folder(
                    predictor, Path(tmp), image_size, thresholds, decode_limits, score.reference
                )
        finally:
            slots.release()

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/")
    def index():
        return render_template("index.html", max_upload_mb=max_upload_mb)

    @app.post("/analyse")
    def analyse():
        try:
            result = run_upload()
        except ValueError as exc:  # UploadError and SeriesReadError
            return render_template("index.html", max_upload_mb=max_upload_mb, error=str(exc)), 400
        return render_template("result.html", result=result)

    @app.post("/api/analyse")
    def api_analyse():
        try:
            return jsonify(run_upload())
        except ValueError as exc:
            return jsonify(error=str(exc)), 400

    @app.errorhandler(ServerBusy)
    def busy(exc):
        retry = {"Retry-After": str(BUSY_RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return jsonify(error=str(exc)), 503, retry
        page = render_template("index.html", max_upload_mb=max_upload_mb, error=str(exc))
        return page, 503, retry

    @app.errorhandler(413)
    def too_large(_):
        message = f"upload larger than {max_upload_mb} MB"
        if request.path.startswith("/api/"):
            return jsonify(error=message), 413
        return render_template("index.html", max_upload_mb=max_upload_mb, error=message), 413

    @app.errorhandler(500)
    def internal_error(error):
        # The cause goes to the log, never to the page: a short message and no traceback.
        log.error("analysis failed: %s", getattr(error, "original_exception", error))
        message = "the analysis failed on the server; the server log says why"
        if request.path.startswith("/api/"):
            return jsonify(error=message), 500
        return render_template("index.html", max_upload_mb=max_upload_mb, error=message), 500

    return app


class QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without its ``Server: Werkzeug/x Python/y`` version banner."""

    def version_string(self) -> str:
        return "lstv"


class DemoFlask(Flask):
    """Flask whose ``run`` (``lstv serve``) uses :class:`QuietRequestHandler`."""

    def run(self, host=None, port=None, debug=None, load_dotenv=True, **options) -> None:
        options.setdefault("request_handler", QuietRequestHandler)
        super().run(host, port, debug, load_dotenv, **options)


def make_demo_server(app: Flask, host: str, port: int):
    """A threaded server for the demo that names no software version (``serve_forever`` it)."""
    return make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)
