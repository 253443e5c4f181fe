"""The report's HTML filters (lstv.report.render): numbers, p-values and score names."""

import math

from lstv.report.render import fmt_number, fmt_p, score_label


def test_fmt_helpers():
    assert (
        fmt_number(math.nan) == "—"
        and fmt_number(None) == "—"
        and fmt_number(1.23456, 3) == "1.235"
    )
    assert fmt_p(1e-5) == "< 0.001" and fmt_p(0.0412) == "0.041"
    assert score_label("l5_s1_one_minus_confidence") == "L5/S1 one minus confidence"
