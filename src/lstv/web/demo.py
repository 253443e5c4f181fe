"""``lstv serve``: a small web demo that analyses one uploaded study or sagittal T2 series.

Uploads are handled by :mod:`lstv.web.upload` and deleted after the analysis; the pixels they
declare are checked against :class:`lstv.dicom_limits.DecodeLimits` before decoding. The series
analysed is the one ``lstv infer`` would choose (:func:`lstv.index.upload_series_files`): an
upload without a sagittal T2 gets a message, never a verdict. The result is shown in the study
viewer (:mod:`lstv.study_view`); a visitor without DICOM at hand can run the example study, a
phantom written on first use. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Response, jsonify, render_template, request

from lstv.levels import DEFAULT_IMAGE_SIZE
from lstv.web.server import lstv_flask
from lstv.web.upload import UploadError, save_upload

if TYPE_CHECKING:
    from lstv.dicom_limits import DecodeLimits

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 200
# Analyses run at once (each holds a core for up to seconds); more are refused with 503.
DEFAULT_MAX_ANALYSES = 2
BUSY_RETRY_AFTER_S = 10
# Views kept for the viewer to fetch (one per analysis); the oldest goes first.
MAX_VIEWS = 8
EXAMPLE_SEED = 19


class ServerBusy(Exception):
    """Every analysis slot is taken: the request is refused (503), not queued."""


def analyse_folder(
    predictor,
    folder: Path,
    image_size: int,
    thresholds,
    limits: DecodeLimits | None = None,
    reference=None,
):
    """Read the series to analyse in ``folder`` and run it.

    Returns ``(summary, view)``: the JSON summary (metrics, risk, score, which series and why)
    and the :class:`lstv.study_view.StudyView` the page shows. ``limits`` bounds what decoding
    the upload may allocate (default: ``DecodeLimits.from_env``). ``reference`` (a
    :class:`lstv.score.Reference` of the same checkpoint) adds the calibrated LSTV score.

    Raises:
        UsageError: No sagittal T2 series among the files (no verdict), or an unreadable one.
    """
    from lstv.api import analyse_volume
    from lstv.dicom import read_series
    from lstv.index import upload_series_files
    from lstv.study_view import build_view, finite, flat_row

    files, task = upload_series_files(folder)
    series = read_series(files, limits)
    centre = series.centre_index
    result = analyse_volume(
        predictor, series.volume, image_size, series.pixel_spacings[centre], reference
    )
    score = result.score
    row = {
        "study_id": str(task.study_id),
        "series_id": str(task.series_id),
        "series_description": task.series_description,
        "selection_rule": task.selection_rule,
        **flat_row(result),
        **score,
    }
    threshold = None if reference is None else reference.threshold
    view = build_view(row, thresholds, series, result.probs, score_threshold=threshold)
    summary = {
        "n_slices": int(series.volume.shape[0]),
        "series": {
            "description": task.series_description,
            "rule": task.selection_rule,
            "why": view.info["selection_why"],
        },
        "levels": {
            key: {k: finite(v) if isinstance(v, float) else v for k, v in m.items() if k != "point"}
            | {"point": None if m["point"] is None else [round(c, 1) for c in m["point"]]}
            for key in result.levels
            for m in [result[key]]  # points in original pixels
        },
        # the seed's rule as the study view words it (a NaN entropy is "Unknown", not flagged)
        "risk_level": view.info["seed"]["risk"],
        "lstv_flag": view.info["seed"]["flag"],
        **{k: None if v == "" else v for k, v in score.items()},
        "lstv_score_threshold": threshold,
        "thresholds": dataclasses.asdict(thresholds),
    }
    return summary, view


def example_study(folder: Path) -> Path:
    """The example study's folder: one phantom study (sagittal T2, maybe T1 and axial),
    written under ``folder`` on first use."""
    from lstv.phantom import write_phantom_dataset

    dataset = write_phantom_dataset(folder, n_studies=1, seed=EXAMPLE_SEED, valid_fraction=1.0)
    return dataset.images_dir / str(dataset.study_ids[0])


def create_app(
    predictor,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    image_size: int = DEFAULT_IMAGE_SIZE,
    decode_limits: DecodeLimits | None = None,
    reference: Path | None = None,
    max_analyses: int = DEFAULT_MAX_ANALYSES,
):
    """The demo app around an already loaded predictor (see :func:`lstv.api.load_model`).

    At most ``max_analyses`` uploads are analysed at once; a request beyond that is refused
    at once with 503 and ``Retry-After`` rather than queued (each analysis holds a core).

    ``decode_limits`` bounds the pixels one upload may decode (default: ``DecodeLimits()``
    with the ``LSTV_MAX_*_DECODE_MB`` environment variables applied). ``reference`` is a
    score reference JSON of the same checkpoint (``lstv calibrate``); default: the one the
    checkpoint carries, if any.
    """
    from lstv.dicom_limits import DecodeLimits
    from lstv.scoring import resolve_reference
    from lstv.uncertainty import resolve_thresholds

    app = lstv_flask(__name__)
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
    views: OrderedDict[str, object] = OrderedDict()
    lock = threading.Lock()
    example: dict[str, Path] = {}

    def analyse(folder: Path) -> dict:
        if not slots.acquire(blocking=False):
            raise ServerBusy(f"the server is busy with {max_analyses} analyses; try again shortly")
        try:
            summary, view = analyse_folder(
                predictor, folder, image_size, thresholds, decode_limits, score.reference
            )
        finally:
            slots.release()
        key = secrets.token_urlsafe(12)
        with lock:
            views[key] = view
            while len(views) > MAX_VIEWS:
                views.popitem(last=False)
        return summary | {"view": f"api/view/{key}"}

    def run_upload() -> dict:
        with tempfile.TemporaryDirectory(prefix="lstv-upload-") as tmp:
            save_upload(request.files.getlist("files"), Path(tmp), max_bytes)
            return analyse(Path(tmp))

    def run_example() -> dict:
        with lock:
            if "folder" not in example:
                tmp = Path(tempfile.mkdtemp(prefix="lstv-example-"))
                example["folder"] = example_study(tmp)
        return analyse(example["folder"])

    def page(status: int = 200, **context):
        return render_template("index.html", max_upload_mb=max_upload_mb, **context), status

    @app.get("/")
    def index():
        return page()

    @app.post("/analyse")
    def analyse_form():
        try:
            result = run_upload()
        except ValueError as exc:  # UploadError and SeriesReadError
            return page(400, error=str(exc))
        return page(result=result)

    @app.post("/api/analyse")
    def api_analyse():
        try:
            return jsonify(run_upload())
        except ValueError as exc:
            return jsonify(error=str(exc)), 400

    @app.post("/api/example")
    def api_example():
        return jsonify(run_example())

    @app.get("/api/view/<key>")
    def view_meta(key):
        view = views.get(key)
        return jsonify(view.meta()) if view else (jsonify(error="no such view"), 404)

    @app.get("/api/view/<key>/<part>")
    def view_data(key, part):
        view = views.get(key)
        if view is None or part not in ("volume", "heatmaps"):
            return jsonify(error="no such view"), 404
        data = view.volume_bytes() if part == "volume" else view.heatmap_bytes()
        return Response(data, mimetype="application/octet-stream")

    @app.errorhandler(ServerBusy)
    def busy(exc):
        retry = {"Retry-After": str(BUSY_RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return jsonify(error=str(exc)), 503, retry
        return (*page(503, error=str(exc)), retry)

    @app.errorhandler(413)
    def too_large(_):
        message = f"upload larger than {max_upload_mb} MB"
        if request.path.startswith("/api/"):
            return jsonify(error=message), 413
        return page(413, error=message)

    @app.errorhandler(500)
    def internal_error(error):
        # The cause goes to the log, never to the page: a short message and no traceback.
        log.error("analysis failed: %s", getattr(error, "original_exception", error))
        message = "the analysis failed on the server; the server log says why"
        if request.path.startswith("/api/"):
            return jsonify(error=message), 500
        return page(500, error=message)

    return app


__all__ = ["ServerBusy", "UploadError", "analyse_folder", "create_app", "example_study"]
