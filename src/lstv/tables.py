"""Reading the project's tables back: the metrics CSV and a labels CSV (pandas).

Every application that reads results (report, audit, evaluate, calibrate) reads them here, so
the checks on the seed's contract columns and on labels are made once; so are the ranking of a
run's studies and the display of their scores that the report and the audit queue share.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lstv.columns import SEED_COLUMNS, metric_column
from lstv.errors import UsageError
from lstv.score_features import as_number

ID_COLUMNS = [c for c in SEED_COLUMNS if metric_column(c).dtype == "id"]  # joined as text
NORMAL_TYPE = "normal"
UNSURE = "unsure"  # a reviewer's verdict: skipped and counted by evaluate and calibrate
LSTV_TYPES = (NORMAL_TYPE, "sacralization", "lumbarization")
# Common spellings a reviewer types, mapped to the three types (British, adjectives, short).
TYPE_SPELLINGS = {
    "": "",
    "normal": NORMAL_TYPE,
    "none": NORMAL_TYPE,
    "no lstv": NORMAL_TYPE,
    "sacralization": "sacralization",
    "sacralisation": "sacralization",
    "sacralized": "sacralization",
    "sacralised": "sacralization",
    "sacral": "sacralization",
    "sacralized l5": "sacralization",
    "lumbarization": "lumbarization",
    "lumbarisation": "lumbarization",
    "lumbarized": "lumbarization",
    "lumbarised": "lumbarization",
    "lumbarized s1": "lumbarization",
    "lumbar": "lumbarization",
}
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def required_metric_columns() -> list[str]:
    """Columns every metrics CSV must have: the seed's contract (:data:`lstv.columns.SEED`)."""
    return list(SEED_COLUMNS)


def read_metrics_csv(csv_path: str | Path) -> pd.DataFrame:
    """Read and check ``lstv_uncertainty_metrics.csv``.

    Study and series IDs are kept as strings so that they join with labels exactly; the contract's
    numeric columns must parse as numbers.

    Args:
        csv_path: Path of the metrics CSV.

    Returns:
        The table, one row per analysed study.

    Raises:
        FileNotFoundError: The file does not exist.
        UsageError: The file is empty, has no rows, lacks contract columns or holds non-numbers
            in a numeric column.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics CSV not found: {path}")
    try:
        df = pd.read_csv(path, dtype=dict.fromkeys(ID_COLUMNS, str))
    except pd.errors.EmptyDataError as exc:
        raise UsageError(f"metrics CSV {path} is empty (no header, no rows)") from exc
    except pd.errors.ParserError as exc:
        raise UsageError(f"metrics CSV {path} is malformed: {exc}") from exc
    missing = [c for c in required_metric_columns() if c not in df.columns]
    if missing:
        raise UsageError(f"metrics CSV {path} lacks the contract columns: {', '.join(missing)}")
    if df.empty:
        raise UsageError(f"metrics CSV {path} has a header but no rows")
    for col in ID_COLUMNS:
        df[col] = df[col].astype(str).str.strip()
    # Contract columns and every entropy must be numbers; a "*_score" column only counts as a
    # score when it is numeric (score_columns), so a text column of that name is not an error.
    contract = [c for c in SEED_COLUMNS if metric_column(c).dtype == "float"]
    numeric = contract + [c for c in df.columns if c.endswith("_entropy")]
    for col in dict.fromkeys(numeric):
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"metrics CSV {path}: column {col!r} is not numeric ({exc})") from exc
    # Each conversion above left a block of its own: past 100 blocks (105 columns) pandas warns
    # that the frame is fragmented on the next column added; a copy joins them again.
    return df.copy()


def normalise_type(value: object) -> str:
    """An ``lstv_type`` cell as normal, sacralization, lumbarization or "" (not given).

    Raises:
        UsageError: Any other value (the caller names the row).
    """
    text = "" if value is None else " ".join(str(value).replace("_", " ").lower().split())
    if text in ("nan",):
        text = ""
    if text not in TYPE_SPELLINGS:
        raise UsageError(f"lstv_type {value!r} is not one of {', '.join(LSTV_TYPES)}")
    return TYPE_SPELLINGS[text]


def is_unsure(value: object) -> bool:
    """A label cell that holds the reviewer's "unsure" verdict."""
    return str(value).strip().lower() == UNSURE


def parse_lstv_label(value: object) -> float:
    """Map a label cell to 1.0 (transitional), 0.0 (normal) or NaN (not reviewed yet).

    Accepts 0/1, true/false, yes/no (any case); an empty cell means unreviewed.

    Raises:
        UsageError: Any other value.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = str(value).strip().lower()
    if text in ("", "nan", "none"):
        return math.nan
    if text.endswith(".0"):  # a column of 0/1 with a blank is read as float
        text = text[:-2]
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    raise UsageError(f"lstv label {value!r} is not one of 0/1, true/false, yes/no")


def read_labels(labels_path: str | Path) -> tuple[pd.DataFrame, int]:
    """Read a labels CSV (``study_id, lstv`` and optionally ``lstv_type``).

    Also reads a filled ``audit_queue.csv``: extra columns are ignored and rows whose ``lstv``
    is still empty (not reviewed) are dropped. A row whose ``lstv`` is ``unsure`` is skipped
    and counted in ``labels.attrs["n_unsure"]``. ``lstv_type`` is normal, sacralization or
    lumbarization; common spellings (sacralisation, lumbarized, ...) are mapped to those.

    Returns:
        (labels, n_unreviewed): ``labels`` has ``study_id`` (str), ``lstv`` (int 0/1) and
        ``lstv_type`` ("normal", "sacralization", "lumbarization" or "" when not given);
        ``n_unreviewed`` counts rows not reviewed yet (not the unsure ones).

    Raises:
        UsageError: Missing columns, a bad label or type (naming the row), a study labelled
            twice with different values, or an ``lstv_type`` that contradicts ``lstv``.
    """
    path = Path(labels_path)
    if not path.is_file():
        raise FileNotFoundError(f"labels CSV not found: {path}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise UsageError(f"labels CSV {path} is empty") from exc
    except pd.errors.ParserError as exc:
        raise UsageError(f"labels CSV {path} is malformed: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in ("study_id", "lstv") if c not in raw.columns]
    if missing:
        raise UsageError(f"labels CSV {path} lacks the columns: {', '.join(missing)}")
    unsure = raw["lstv"].map(is_unsure)
    n_unsure = int((unsure & (raw["study_id"].str.strip() != "")).sum())
    raw = raw[~unsure]
    labels = pd.DataFrame({"study_id": raw["study_id"].str.strip()})
    labels["lstv"] = [
        _cell(path, i, parse_lstv_label, v) for i, v in zip(raw.index, raw["lstv"], strict=True)
    ]
    types = raw["lstv_type"] if "lstv_type" in raw.columns else pd.Series([""] * len(raw))
    labels["lstv_type"] = [
        _cell(path, i, normalise_type, v) for i, v in zip(raw.index, types, strict=True)
    ]
    reviewed = labels["lstv"].notna() & (labels["study_id"] != "")
    n_unreviewed = int((~reviewed).sum())
    labels = labels[reviewed].copy()
    labels["lstv"] = labels["lstv"].astype(int)
    # Study IDs stay strings, but must be what int() would read the same way everywhere:
    # "4773_9259" and full-width digits would silently match no study, or another one.
    not_digits = [
        (i, v)
        for i, v in zip(labels.index, labels["study_id"], strict=True)
        if not (v.isascii() and v.isdigit())
    ]
    if not_digits:
        i, value = not_digits[0]
        raise UsageError(
            f"labels CSV {path} row {i + 2}: study_id {value!r} is not a whole number in digits "
            f"0-9 ({len(not_digits)} such rows)"
        )

    bad = labels[
        ((labels["lstv"] == 0) & ~labels["lstv_type"].isin(["", NORMAL_TYPE]))
        | ((labels["lstv"] == 1) & (labels["lstv_type"] == NORMAL_TYPE))
    ]
    if not bad.empty:
        row = bad.iloc[0]
        raise UsageError(
            f"labels CSV {path}: study {row['study_id']} has lstv={row['lstv']} but "
            f"lstv_type={row['lstv_type']!r} ({len(bad)} such rows)"
        )
    dup = labels.drop_duplicates(["study_id", "lstv", "lstv_type"])
    conflicts = dup["study_id"][dup["study_id"].duplicated()]
    if not conflicts.empty:
        raise UsageError(
            f"labels CSV {path}: studies labelled twice with different values: "
            f"{', '.join(sorted(set(conflicts))[:10])}"
        )
    labels = dup.reset_index(drop=True)
    labels.attrs["n_unsure"] = n_unsure
    return labels, n_unreviewed


def _cell(path: Path, index: int, parse, value):
    """``parse(value)``; its ValueError names the file and the row (line 1 is the header)."""
    try:
        return parse(value)
    except ValueError as exc:
        raise UsageError(f"labels CSV {path} row {index + 2}: {exc}") from exc


def ranking_score(metrics: pd.DataFrame) -> str:
    """The column a table of runs is ranked by: ``lstv_score`` when any study has one, else
    the seed's ``l5_s1_entropy``.

    ``metrics`` is a DataFrame of the metrics CSV (as :func:`read_metrics_csv` reads it).
    """
    if "lstv_score" in metrics.columns:
        values = pd.to_numeric(metrics["lstv_score"], errors="coerce")
        if values.notna().any():
            return "lstv_score"
    return "l5_s1_entropy"


def score_fields(row) -> dict:
    """A study's score, flag and reason as display values ('' when it has no score)."""
    value = as_number(row.get("lstv_score")) if hasattr(row, "get") else math.nan
    if not math.isfinite(value):
        return {"lstv_score": math.nan, "lstv_score_flag": False, "lstv_score_reason": ""}
    flag = str(row.get("lstv_score_flag", "")).strip().lower() in ("true", "1", "yes")
    reason = row.get("lstv_score_reason", "")
    reason = "" if not isinstance(reason, str) else reason
    return {"lstv_score": value, "lstv_score_flag": flag, "lstv_score_reason": reason}
