"""``lstv serve``: a small web demo that analyses one uploaded sagittal T2 series.

Uploads (several ``.dcm`` files, or one ``.zip`` of them) are size-limited, written only into a
fresh temporary directory under names the server chooses, and deleted after the analysis. The
server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import tempfile
import zipfile
from pathlib import Path

from flask import Flask, jsonify, render_template, request

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 200
MAX_FILES = 400


class UploadError(ValueError):
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
                    for member in archive.infolist():
                        if member.is_dir():
                            continue
                        if member.file_size > max_bytes:
                            raise UploadError(f"{member.filename}: member too large")
                        write(archive.read(member))
            except zipfile.BadZipFile as exc:
                raise UploadError(f"not a valid zip file: {exc}") from exc
        else:
            write(upload.read())
    if written == 0:
        raise UploadError("no files uploaded: choose the .dcm files of one series, or a .zip")
    return written


def analyse_folder(predictor, folder: Path, image_size: int, thresholds) -> dict:
    """Read the series in ``folder`` and run it: metrics, risk and the figure as base64 PNG."""
    from lstv.api import analyse_volume
    from lstv.dicom import read_series
    from lstv.inference import model_input
    from lstv.uncertainty import risk_level
    from lstv.visualize import figure_png, heatmap_figure

    series = read_series(folder)
    result = analyse_volume(predictor, series.volume, image_size)
    probs = result.pop("probs")
    centre = series.centre_index
    image = model_input(series.volume[centre], image_size)
    model_points = {}
    height, width = series.volume.shape[1:]
    for key, m in result.items():
        point = m["point"]
        model_points[key] = dict(
            m,
            point=None
            if point is None
            else (point[0] * image_size / width, point[1] * image_size / height),
        )
    title = f"slice {centre + 1} of {series.volume.shape[0]}"
    png = figure_png(heatmap_figure(image, probs, model_points, title))
    l5_s1 = result["l5_s1"]["entropy"]
    return {
        "n_slices": int(series.volume.shape[0]),
        "levels": {
            key: {k: v for k, v in m.items() if k != "point"}
            | {"point": None if m["point"] is None else [round(c, 1) for c in m["point"]]}
            for key, m in result.items()
        },
        "risk_level": risk_level(l5_s1, thresholds),
        "lstv_flag": bool(l5_s1 > thresholds.flag_entropy),
        "thresholds": dataclasses.asdict(thresholds),
        "figure_png_base64": base64.b64encode(png).decode("ascii"),
    }


def create_app(
    predictor, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, image_size: int = 160
) -> Flask:
    """The demo app around an already loaded predictor (see :func:`lstv.api.load_model`)."""
    from lstv.uncertainty import resolve_thresholds

    app = Flask(__name__)
    # The checkpoint's own risk bands when it carries them, as lstv infer does.
    info = getattr(predictor, "info", None)
    thresholds = resolve_thresholds((info.config if info else {}).get("risk_thresholds"))
    max_bytes = max_upload_mb * 2**20
    # Flask refuses larger requests with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = max_bytes + 2**20

    def run_upload() -> dict:
        with tempfile.TemporaryDirectory(prefix="lstv-upload-") as tmp:
            save_upload(request.files.getlist("files"), Path(tmp), max_bytes)
            return analyse_folder(predictor, Path(tmp), image_size, thresholds)

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

    @app.errorhandler(413)
    def too_large(_):
        message = f"upload larger than {max_upload_mb} MB"
        if request.path.startswith("/api/"):
            return jsonify(error=message), 413
        return render_template("index.html", max_upload_mb=max_upload_mb, error=message), 413

    return app
