"""``lstv report``: the self-contained HTML report of a run (:mod:`lstv.report.build`); its
thumbnails are the study view's (:mod:`lstv.study_view`)."""

from lstv.report.build import (
    MAX_REPORT_BYTES,
    _fmt,
    _fmt_p,
    _score_label,
    _thumbnail,
    build_report,
)

__all__ = ["MAX_REPORT_BYTES", "_fmt", "_fmt_p", "_score_label", "_thumbnail", "build_report"]
