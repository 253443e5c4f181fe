"""``lstv review RUN_DIR``: a radiologist labels a run's audit queue with one key per study.

The page (``templates/review.html``, ``static/review.js`` and the shared study viewer) shows the
queue on the left in ranking order, the study in the centre and the verdict on the right. Each
verdict is written into the run's ``audit_queue.csv`` at once by :func:`lstv.audit.save_review`:
only the review columns of that row change, atomically, and only when the file is still the one
the page loaded (a file edited in a spreadsheet or saved from another tab is refused with a
message). The file is the state: a reload reads it again. The server binds 127.0.0.1 and makes
no request off the machine.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from flask import Response, jsonify, render_template, request

from lstv.errors import UsageError
from lstv.web.server import lstv_flask

log = logging.getLogger(__name__)

# Study views kept in memory (a view holds every slice of a series).
MAX_VIEWS = 4
# Columns of a queue row the page lists beside the study (the score hidden in blind mode).
SCORE_FIELDS = ("lstv_score", "lstv_score_flag", "lstv_score_reason", "risk_level", "lstv_flag")


class ReviewRun:
    """One run under review: its queue file, metrics rows, heatmaps and DICOM."""

    def __init__(self, run_dir: Path, data_dir: Path | None, reviewer: str, blind: bool):
        from lstv.audit import read_queue, write_audit_queue
        from lstv.rundir import RunDir
        from lstv.study_view import SeriesLocator
        from lstv.tables import read_metrics_csv
        from lstv.uncertainty import resolve_thresholds

        self.run = RunDir(run_dir)
        if not self.run.metrics_csv.is_file():
            raise UsageError(f"{run_dir} is not a run folder: no {self.run.metrics_csv.name}")
        self.queue_path = self.run.audit_queue_csv
        if not self.queue_path.is_file():
            write_audit_queue(self.run.metrics_csv, self.queue_path)
            log.info("no audit queue yet: wrote %s", self.queue_path)
        read_queue(self.queue_path)  # a file that is not a queue is refused at start
        manifest = self.run.read_manifest() if self.run.manifest_json.is_file() else None
        if data_dir is None and manifest and manifest.input_dir:
            data_dir = Path(manifest.input_dir)  # where the run read its studies
        self.locate = (
            SeriesLocator(data_dir, manifest.series_csv if manifest else None)
            if data_dir is not None and Path(data_dir).is_dir()
            else None
        )
        self.data_dir = data_dir
        self.thresholds = resolve_thresholds(self.run.run_thresholds())
        reference = (manifest.score_reference or {}) if manifest else {}
        self.score_threshold = reference.get("threshold") if isinstance(reference, dict) else None
        metrics = read_metrics_csv(self.run.metrics_csv).drop_duplicates("study_id")
        self.rows = {str(r["study_id"]): r.to_dict() for _, r in metrics.iterrows()}
        self.reviewer = reviewer
        self.blind = blind
        self.views: OrderedDict[str, object] = OrderedDict()
        self.lock = threading.Lock()

    def queue(self) -> dict:
        """The queue as the page lists it, its token, the progress and the next commands."""
        from lstv.audit import read_queue, verdict_of

        _, rows, token = read_queue(self.queue_path)
        listed = []
        for r in rows:
            reviewed = bool((r.get("lstv") or "").strip())
            item = {k: r.get(k, "") for k in ("rank", "study_id", "series_id", "study_instance_uid",
                                                "path", "lstv", "lstv_type", "reviewer", "notes")}
            item["verdict"] = verdict_of(r)
            if reviewed or not self.blind:
                item |= {k: r.get(k, "") for k in SCORE_FIELDS}
            listed.append(item)
        return {
            "rows": listed,
            "token": token,
            "file": str(self.queue_path),
            "reviewer": self.reviewer,
            "blind": self.blind,
            "commands": self.commands(),
        }

    def commands(self) -> list[str]:
        run, queue = self.run.path, self.queue_path
        return [
            f"lstv evaluate --csv {run / self.run.metrics_csv.name} --labels {queue} "
            f"--output_dir {run / 'evaluation'}",
            f"lstv calibrate --csv {run / self.run.metrics_csv.name} --labels {queue} "
            f"--output {run / 'score_reference.json'}",
        ]

    def view(self, study_id: str):
        """The study's :class:`lstv.study_view.StudyView`, built once and kept a while."""
        from lstv.dicom import read_series
        from lstv.study_view import build_view, load_heatmaps, safe_name

        with self.lock:
            if study_id in self.views:
                self.views.move_to_end(study_id)
                return self.views[study_id]
        row = self.rows.get(study_id)
        if row is None or not safe_name(study_id):
            raise KeyError(study_id)
        probs, image, note = load_heatmaps(self.run.heatmap(study_id))
        series, why = None, "no --data_dir, and the run's input folder is not here"
        if self.locate is not None:
            source = self.locate(study_id, str(row["series_id"]))
            why = f"its series is not under {self.data_dir}"
            if source is not None:
                try:
                    series = read_series(source)
                except ValueError as exc:
                    why = f"its DICOM could not be read ({exc})"
        if series is None and image is None:
            raise UsageError(f"study {study_id}: nothing to show: {why}; {note}")
        view = build_view(
            row, self.thresholds, series, probs, image, score_threshold=self.score_threshold
        )
        if series is None:
            view.notes.append(why)
        if note:
            view.notes.append(note)
        with self.lock:
            self.views[study_id] = view
            while len(self.views) > MAX_VIEWS:
                self.views.popitem(last=False)
        return view

    def reviewed(self, study_id: str) -> bool:
        from lstv.audit import read_queue

        _, rows, _ = read_queue(self.queue_path)
        return any(r["study_id"] == study_id and (r.get("lstv") or "").strip() for r in rows)


def create_review_app(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    reviewer: str = "",
    blind: bool = False,
):
    """The review app of one run folder.

    Args:
        run_dir: An ``lstv infer`` output folder; its ``audit_queue.csv`` is written first
            when it has none.
        data_dir: Where the run's DICOM lies (the RSNA ``train_images`` root or an export an
            index lists); default: the run's input folder from its manifest. Without DICOM the
            page shows the saved model input.
        reviewer: The name written in the ``reviewer`` column.
        blind: Hide the score and reason of a study until it has a verdict.

    Raises:
        UsageError: ``run_dir`` holds no metrics CSV, or its queue is not an audit queue.
    """
    from lstv.audit import StaleQueueError, review_values, save_review

    review = ReviewRun(Path(run_dir), Path(data_dir) if data_dir else None, reviewer, blind)
    app = lstv_flask(__name__)

    @app.get("/")
    def index():
        return render_template("review.html", run=str(review.run.path), blind=blind)

    @app.get("/api/queue")
    def queue():
        return jsonify(review.queue())

    @app.get("/api/study/<study_id>")
    def study(study_id):
        try:
            meta = review.view(study_id).meta()
        except KeyError:
            return jsonify(error=f"study {study_id} is not in this run"), 404
        except ValueError as exc:
            return jsonify(error=str(exc)), 422
        if blind and not review.reviewed(study_id):
            meta = meta | {"primary": None, "seed": None, "blind": True}
        return jsonify(meta)

    @app.get("/api/study/<study_id>/<part>")
    def study_data(study_id, part):
        if part not in ("volume", "heatmaps"):
            return jsonify(error="no such part"), 404
        try:
            view = review.view(study_id)
        except KeyError:
            return jsonify(error=f"study {study_id} is not in this run"), 404
        except ValueError as exc:
            return jsonify(error=str(exc)), 422
        data = view.volume_bytes() if part == "volume" else view.heatmap_bytes()
        return Response(data, mimetype="application/octet-stream")

    @app.post("/api/review")
    def save():
        body = request.get_json(silent=True) or {}
        try:
            values = review_values(
                str(body.get("verdict", "")),
                str(body.get("reviewer", reviewer)),
                str(body.get("notes", "")),
            )
            token = save_review(
                review.queue_path, str(body.get("study_id", "")), values, str(body.get("token"))
            )
        except StaleQueueError as exc:
            return jsonify(error=str(exc), stale=True), 409
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        log.info("study %s: %s", body.get("study_id"), body.get("verdict") or "verdict undone")
        return jsonify(token=token)

    return app


__all__ = ["create_review_app"]
