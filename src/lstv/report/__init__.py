"""``lstv report``: the self-contained HTML report of a run (:mod:`lstv.report.build`), its
thumbnails (:mod:`lstv.report.thumbnail`, the study view's picture) and its HTML
(:mod:`lstv.report.render`)."""

from lstv.report.build import MAX_REPORT_BYTES, build_report

__all__ = ["MAX_REPORT_BYTES", "build_report"]
