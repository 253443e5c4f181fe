"""The report's HTML: the Jinja template rendered with the filters that format its numbers."""

from __future__ import annotations

import math

from lstv.levels import LEVEL_KEYS, LEVELS

TEMPLATE = "report.html.j2"


def fmt_number(value: object, digits: int = 2) -> str:
    """Number with ``digits`` decimals; a dash for missing values."""
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "—"
    return f"{number:.{digits}f}"


def fmt_p(value: object) -> str:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def score_label(name: str) -> str:
    for key, level in zip(LEVEL_KEYS, LEVELS, strict=True):
        if name.startswith(key + "_"):
            return f"{level} {name[len(key) + 1 :].replace('_', ' ')}"
    return name.replace("_", " ")


def render_html(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lstv.report", "templates"),
        autoescape=True,  # the template is .html.j2, which select_autoescape would miss
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_number
    env.filters["pval"] = fmt_p
    env.filters["score_label"] = score_label
    return env.get_template(TEMPLATE).render(**context)
