"""The calibrated LSTV score: how far a study's L4/L5 and L5/S1 maps lie from normal studies'.

Each study gets robust, two-sided z-scores of a few map features against a *reference* of normal
studies run through the same checkpoint: per feature the median and 1.4826 x MAD of the
reference (falling back to IQR / 1.349, then the standard deviation, then 1 when a spread is
zero). The score is the largest |z|, its driver the feature that gave it, and the flag says
whether it exceeds a threshold fitted on the reference itself (the leave-one-out maximum of the
reference's scores, or a quantile of them for a chosen specificity).

The reference is a small JSON file (``lstv calibrate``) that names the SHA-256 of the checkpoint
whose maps it describes: every feature's scale belongs to one checkpoint, so using it with
another is an error. A checkpoint may carry its own reference in its ``config`` (key
``lstv_reference``); that one needs no check. Pure numpy plus the run folder's CSV helpers: no
torch, so the CLI stays quick.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SCORE_LEVELS = ("l4_l5", "l5_s1")
LEVEL_FEATURES = ("entropy", "one_minus_confidence", "peak2", "mass_out", "top100_entropy")
FEATURES = tuple(f"{level}_{name}" for level in SCORE_LEVELS for name in LEVEL_FEATURES)
# Features bounded below by 0 whose normal values crowd near 0 with a long right tail: on a log
# scale their normal spread is symmetric enough for a median and MAD, and a rise from 0.001 to
# 0.01 counts as much as one from 0.01 to 0.1 (measured, see README "Calibrated score").
LOG_LEVEL_FEATURES = ("one_minus_confidence", "peak2", "mass_out")
LOG_OFFSET = 1e-4
MAD_TO_SD = 1.4826
IQR_TO_SD = 1.349
CONFIG_KEY = "lstv_reference"
REFERENCE_FORMAT = "lstv-score-reference"
REFERENCE_VERSION = 1
MIN_REFERENCE_STUDIES = 3
FEW_REFERENCE_STUDIES = 20
SCORE_COLUMNS = ("lstv_score", "lstv_score_driver", "lstv_score_flag", "lstv_score_reason")
_LEVEL_NAMES = {"l1_l2": "L1/L2", "l2_l3": "L2/L3", "l3_l4": "L3/L4", "l4_l5": "L4/L5"}
_LEVEL_NAMES["l5_s1"] = "L5/S1"


def split_feature(name: str) -> tuple[str, str]:
    """``l5_s1_peak2`` -> (``l5_s1``, ``peak2``)."""
    level, feature = name[:5], name[6:]
    if level not in _LEVEL_NAMES or name[5:6] != "_" or not feature:
        raise ValueError(f"{name!r} is not a per-level feature name like 'l5_s1_peak2'")
    return level, feature


def required_columns(features=FEATURES) -> list[str]:
    """CSV columns the features are computed from (``one_minus_confidence`` from confidence)."""
    cols = []
    for name in features:
        level, feature = split_feature(name)
        cols.append(f"{level}_confidence" if feature == "one_minus_confidence" else name)
    return list(dict.fromkeys(cols))


def _number(text) -> float:
    if text is None:
        return math.nan
    if isinstance(text, int | float | np.floating):
        return float(text)
    text = str(text).strip()
    return float(text) if text else math.nan


def feature_matrix(rows: list[dict], features=FEATURES, source: str = "metrics CSV") -> np.ndarray:
    """(n, F) raw feature values of CSV rows (dicts of text or numbers); NaN where empty.

    Raises:
        ValueError: a row lacks a needed column, or a value is not a number; names ``source``.
    """
    out = np.full((len(rows), len(features)), math.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(features):
            level, feature = split_feature(name)
            col = f"{level}_confidence" if feature == "one_minus_confidence" else name
            if col not in row:
                raise ValueError(f"{source} has no column {col!r} (needed for {name})")
            try:
                value = _number(row[col])
            except ValueError as exc:
                raise ValueError(f"{source}: {col} = {row[col]!r} is not a number") from exc
            out[i, j] = 1.0 - value if feature == "one_minus_confidence" else value
    return out


def robust_location_scale(values) -> tuple[float, float, str]:
    """Median and a robust spread of ``values`` (NaN ignored), with the rule that gave it.

    The spread is 1.4826 x MAD; where that is 0, IQR / 1.349; then the standard deviation; then
    1. All three estimate the standard deviation of a normal distribution.

    Raises:
        ValueError: no finite value.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite value to fit a median and spread on")
    centre = float(np.median(v))
    mad = MAD_TO_SD * float(np.median(np.abs(v - centre)))
    if mad > 0:
        return centre, mad, "mad"
    q1, q3 = np.percentile(v, [25, 75])
    if q3 - q1 > 0:
        return centre, float(q3 - q1) / IQR_TO_SD, "iqr"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    if sd > 0:
        return centre, sd, "std"
    return centre, 1.0, "one"


def _fit_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    fits = [robust_location_scale(x[:, j]) for j in range(x.shape[1])]
    return (
        np.array([f[0] for f in fits]),
        np.array([f[1] for f in fits]),
        [f[2] for f in fits],
    )


def _max_abs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest |z| over the finite entries and its column (NaN, -1 when none)."""
    a = np.where(np.isfinite(z), np.abs(z), -np.inf)
    idx = np.argmax(a, axis=1)
    best = a[np.arange(len(a)), idx]
    missing = ~np.isfinite(best)
    return np.where(missing, np.nan, best), np.where(missing, -1, idx)


@dataclass(frozen=True)
class Reference:
    """A fitted reference: per-feature centre and spread on the (log-)transformed scale."""

    checkpoint_sha256: str | None
    features: tuple[str, ...]
    log_features: tuple[str, ...]
    centre: dict[str, float]
    scale: dict[str, float]
    scale_rule: dict[str, str]
    n: int
    threshold: float
    threshold_rule: str
    target_specificity: float | None = None
    reference_studies: str = ""
    created_at: str = ""
    lstv_version: str = ""
    log_offset: float = LOG_OFFSET
    extra: dict = field(default_factory=dict)

    # -- scoring

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw (n, F) feature values onto the fitted scale (log for the skewed ones)."""
        x = np.array(raw, dtype=float, copy=True)
        for j, name in enumerate(self.features):
            if name in self.log_features:
                x[:, j] = np.log(np.maximum(x[:, j], 0.0) + self.log_offset)
        return x

    def z_scores(self, raw: np.ndarray) -> np.ndarray:
        """(n, F) signed robust z-scores of raw feature values."""
        centre = np.array([self.centre[f] for f in self.features])
        scale = np.array([self.scale[f] for f in self.features])
        return (self.transform(raw) - centre) / scale

    def score(self, raw: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Score, driver name ('' when no feature is known) and flag of each row."""
        best, idx = _max_abs(self.z_scores(raw))
        drivers = [self.features[i] if i >= 0 else "" for i in idx]
        return best, drivers, np.isfinite(best) & (np.nan_to_num(best) > self.threshold)

    def normal_value(self, feature: str) -> float:
        """The reference's median of ``feature`` on the raw scale."""
        c = self.centre[feature]
        return math.exp(c) - self.log_offset if feature in self.log_features else c

    # -- serialisation

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        data["features"] = list(self.features)
        data["log_features"] = list(self.log_features)
        return {"format": REFERENCE_FORMAT, "version": REFERENCE_VERSION, **extra, **data}

    @classmethod
    def from_dict(cls, data: dict, source: str = "reference") -> Reference:
        """Read a reference written by :meth:`to_dict`; a ValueError naming ``source``."""
        if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"{source} is not an LSTV score reference (written by lstv calibrate)")
        if data.get("version") != REFERENCE_VERSION:
            raise ValueError(
                f"{source} is reference version {data.get('version')}; this lstv reads "
                f"version {REFERENCE_VERSION}: fit it again with lstv calibrate"
            )
        names = set(cls.__dataclass_fields__) - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names | {"format", "version"}}
        try:
            ref = cls(**known, extra=extra)
            features = tuple(ref.features)
            for name in features:
                split_feature(name)
                if not (math.isfinite(ref.centre[name]) and ref.scale[name] > 0):
                    raise ValueError(f"feature {name} has no finite centre and positive scale")
            threshold = float(ref.threshold)
            if not math.isfinite(threshold):
                raise ValueError(f"threshold {ref.threshold} is not a finite number")
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{source} is not a valid reference: {exc}") from exc
        return ref.__class__(
            **{**known, "features": features, "log_features": tuple(ref.log_features)},
            extra=extra,
        )

    def save(self, path: str | Path) -> Path:
        from lstv.rundir import write_json_atomic

        return write_json_atomic(path, self.to_dict())


def load_reference(path: str | Path) -> Reference:
    """A reference JSON file, or the one a checkpoint (``.pth``) carries in its config.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not a reference, or the checkpoint carries none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference not found: {path}")
    if path.suffix in (".pth", ".pt"):
        from lstv.model import checkpoint_config, file_sha256, read_checkpoint

        config = checkpoint_config(read_checkpoint(path))
        if CONFIG_KEY not in config:
            raise ValueError(f"checkpoint {path} carries no {CONFIG_KEY!r} in its config")
        ref = Reference.from_dict(config[CONFIG_KEY], f"{path} ({CONFIG_KEY})")
        # The embedded reference describes this very file: check runs against its SHA-256.
        return _with_sha(ref, file_sha256(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"reference {path} is not valid JSON: {exc}") from exc
    return Reference.from_dict(data, f"reference {path}")


def _with_sha(ref: Reference, sha256: str) -> Reference:
    from dataclasses import replace

    return replace(ref, checkpoint_sha256=sha256)


def check_checkpoint(ref: Reference, checkpoint_sha256: str | None, source: str) -> None:
    """Refuse a reference fitted on another checkpoint than the one that made the maps.

    Raises:
        ValueError: naming both SHA-256s.
    """
    if not ref.checkpoint_sha256:
        raise ValueError(f"{source} names no checkpoint SHA-256: fit it again with lstv calibrate")
    if checkpoint_sha256 != ref.checkpoint_sha256:
        raise ValueError(
            f"{source} was fitted on checkpoint SHA-256 {ref.checkpoint_sha256}, but these maps "
            f"come from checkpoint SHA-256 {checkpoint_sha256}: a reference holds only for its "
            "own checkpoint; fit one with lstv calibrate on this checkpoint's normal studies"
        )


# --------------------------------------------------------------------------- fitting


def leave_one_out_scores(x: np.ndarray) -> np.ndarray:
    """Score of each reference study against a reference fitted on all the others.

    ``x`` is (n, F) on the transformed scale. The maximum of these is the flag threshold under
    which no reference study would have been flagged by a reference that did not contain it.
    """
    n = len(x)
    scores = np.empty(n)
    for i in range(n):
        centre, scale, _ = _fit_columns(np.delete(x, i, axis=0))
        scores[i] = _max_abs(((x[i] - centre) / scale)[None])[0][0]
    return scores


def fit_reference(
    raw: np.ndarray,
    checkpoint_sha256: str | None,
    *,
    features=FEATURES,
    target_specificity: float | None = None,
    reference_studies: str = "",
    extra: dict | None = None,
) -> Reference:
    """Fit centre, spread and flag threshold on ``raw`` (n, F) features of normal studies.

    Args:
        raw: feature values (see :func:`feature_matrix`), one row per reference study.
        checkpoint_sha256: the checkpoint whose maps they come from.
        features: the names of ``raw``'s columns.
        target_specificity: None for the leave-one-out maximum of the reference's scores;
            else the flag threshold is that quantile of them (e.g. 0.95 flags about 5% of
            studies like the reference).
        reference_studies: which studies these are, in words, for the JSON.
        extra: more provenance for the JSON (source CSV, labels file).

    Raises:
        ValueError: fewer than 3 studies, a feature with no finite value, or a specificity
            outside (0, 1].
    """
    from lstv import __version__
    from lstv.rundir import utc_now

    raw = np.asarray(raw, dtype=float)
    features = tuple(features)
    if raw.ndim != 2 or raw.shape[1] != len(features):
        raise ValueError(f"expected ({len(features)}) feature columns, got shape {raw.shape}")
    if len(raw) < MIN_REFERENCE_STUDIES:
        raise ValueError(
            f"a reference needs at least {MIN_REFERENCE_STUDIES} studies, got {len(raw)}"
        )
    if target_specificity is not None and not 0 < target_specificity <= 1:
        raise ValueError(f"target specificity must be in (0, 1], got {target_specificity}")
    if len(raw) < FEW_REFERENCE_STUDIES:
        log.warning(
            "only %d reference studies: the medians and spreads will be rough (20 or more "
            "are better)",
            len(raw),
        )
    logs = tuple(f for f in features if split_feature(f)[1] in LOG_LEVEL_FEATURES)
    draft = Reference(
        checkpoint_sha256, features, logs, {}, {}, {}, len(raw), math.inf, "", log_offset=LOG_OFFSET
    )
    x = draft.transform(raw)
    centre, scale, rules = _fit_columns(x)
    loo = leave_one_out_scores(x)
    finite = loo[np.isfinite(loo)]
    if target_specificity is None:
        threshold = float(finite.max())
        rule = "leave-one-out maximum of the reference studies' scores"
    else:
        threshold = float(np.quantile(finite, target_specificity))
        rule = (
            f"quantile {target_specificity:g} of the reference studies' leave-one-out scores "
            f"(target specificity {target_specificity:g})"
        )
    return Reference(
        checkpoint_sha256=checkpoint_sha256,
        features=features,
        log_features=logs,
        centre={f: float(c) for f, c in zip(features, centre, strict=True)},
        scale={f: float(s) for f, s in zip(features, scale, strict=True)},
        scale_rule=dict(zip(features, rules, strict=True)),
        n=len(raw),
        threshold=threshold,
        threshold_rule=rule,
        target_specificity=target_specificity,
        reference_studies=reference_studies,
        created_at=utc_now(),
        lstv_version=__version__,
        extra=dict(extra or {}),
    )


def run_checkpoint_sha256(csv_path: Path) -> tuple[str, dict]:
    """The SHA-256 of the checkpoint that wrote a run's CSV, from its ``run_manifest.json``.

    Raises:
        ValueError: no readable manifest, or one without a checkpoint SHA-256.
    """
    from lstv.rundir import MANIFEST_JSON

    path = Path(csv_path).parent / MANIFEST_JSON
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(
            f"{path} not found: the checkpoint of {csv_path} is unknown, and a reference must "
            "name the checkpoint its maps came from"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    checkpoint = manifest.get("checkpoint") if isinstance(manifest, dict) else None
    sha = checkpoint.get("sha256") if isinstance(checkpoint, dict) else None
    if not sha:
        raise ValueError(f"{path} records no checkpoint SHA-256")
    return str(sha), manifest


def _read_run_csv(csv_path: Path, features) -> tuple[list[str], list[dict]]:
    from lstv.rundir import read_csv_rows

    if not Path(csv_path).is_file():
        raise FileNotFoundError(f"metrics CSV not found: {csv_path}")
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in required_columns(features) if c not in header]
    if missing:
        raise ValueError(
            f"{csv_path} lacks the feature columns {', '.join(missing)}: it was written by an "
            "lstv without shape features; run lstv infer again to get them"
        )
    if not rows:
        raise ValueError(f"{csv_path} has a header but no rows")
    return header, rows


def reference_rows(
    rows: list[dict], labels_path: str | Path | None, csv_path: Path
) -> tuple[list[dict], str]:
    """The rows a reference is fitted on: labelled normal studies, or all with a warning."""
    if labels_path is None:
        log.warning(
            "no --labels: the reference is fitted on all %d studies of %s. Robust statistics "
            "(median, MAD) tolerate a few LSTV among them but not many; fit it on studies a "
            "radiologist confirmed normal (a filled-in audit_queue.csv) when you can",
            len(rows),
            csv_path,
        )
        return rows, f"all {len(rows)} studies of {csv_path.name} (no labels)"
    from lstv.tables import read_labels

    labels, n_unreviewed = read_labels(labels_path)
    normal = set(labels.loc[labels["lstv"] == 0, "study_id"])
    chosen = [r for r in rows if str(r["study_id"]).strip() in normal]
    found = {str(r["study_id"]).strip() for r in chosen}
    if len(normal - found):
        log.warning(
            "%d studies labelled normal in %s are not in %s (failed or not run)",
            len(normal - found),
            labels_path,
            csv_path,
        )
    if not chosen:
        raise ValueError(
            f"no study of {csv_path} is labelled normal (lstv = 0) in {labels_path}"
            + (f" ({n_unreviewed} rows not reviewed yet)" if n_unreviewed else "")
        )
    return chosen, f"{len(chosen)} studies labelled normal in {Path(labels_path).name}"


def calibrate(
    csv_path: str | Path,
    output: str | Path,
    labels_path: str | Path | None = None,
    target_specificity: float | None = None,
) -> Reference:
    """``lstv calibrate``: fit a reference on a run's normal studies and write it as JSON.

    Args:
        csv_path: the run's ``lstv_uncertainty_metrics.csv`` (with shape features); its
            ``run_manifest.json`` must name the checkpoint.
        output: the reference JSON to write (never one of the inputs).
        labels_path: ``study_id, lstv[, lstv_type]`` (or a filled-in ``audit_queue.csv``):
            only the studies labelled normal form the reference. Without it, all studies do.
        target_specificity: see :func:`fit_reference`.

    Raises:
        ValueError: missing feature columns, no manifest, no normal study, too few studies.
    """
    from lstv.rundir import refuse_overwriting

    csv_path = Path(csv_path)
    refuse_overwriting(output, [csv_path, labels_path], "--output")
    _, rows = _read_run_csv(csv_path, FEATURES)
    sha, _ = run_checkpoint_sha256(csv_path)
    chosen, described = reference_rows(rows, labels_path, csv_path)
    raw = feature_matrix(chosen, FEATURES, str(csv_path))
    complete = np.isfinite(raw).all(axis=1)
    if not complete.all():
        log.warning("%d reference studies lack some features; left out", int((~complete).sum()))
    ref = fit_reference(
        raw[complete],
        sha,
        target_specificity=target_specificity,
        reference_studies=described,
        extra={
            "source_csv": str(csv_path),
            "labels": str(labels_path) if labels_path else None,
        },
    )
    ref.save(output)
    log.info(
        "reference of %d studies written to %s: flag threshold %.3f (%s)",
        ref.n,
        output,
        ref.threshold,
        ref.threshold_rule,
    )
    return ref


# --------------------------------------------------------------------------- explaining


def _signed(value: float) -> str:
    return f"{value:+.1f}"


def describe(driver: str, value: float, z: float, ref: Reference, row: dict | None = None) -> str:
    """The driver of a score in plain words, e.g. "L5/S1 map has a second peak 23 mm below
    the first (0.81 of the peak; normal studies 0.02), z = +9.4".

    Args:
        driver: the feature name.
        value: the study's raw value of it.
        z: its signed z-score.
        ref: the reference (for the normal value).
        row: the study's CSV row, for the second peak's offset.
    """
    level, feature = split_feature(driver)
    name = _LEVEL_NAMES[level]
    normal = ref.normal_value(driver)
    high = z > 0
    tail = f", z = {_signed(z)}"
    if feature == "peak2":
        if not high:
            return (
                f"{name} map has less of a second peak than normal studies "
                f"({value:.2f} of the peak; normal {normal:.2f}){tail}"
            )
        where = "away from the first"
        dx = _number((row or {}).get(f"{level}_peak2_dx_mm"))
        dy = _number((row or {}).get(f"{level}_peak2_dy_mm"))
        if math.isfinite(dx) and math.isfinite(dy):
            if abs(dy) >= abs(dx):
                where = f"{abs(dy):.0f} mm {'below' if dy > 0 else 'above'} the first"
            else:
                where = f"{math.hypot(dx, dy):.0f} mm from the first"
        return (
            f"{name} map has a second peak {where} ({value:.2f} of the peak; "
            f"normal {normal:.2f}){tail}"
        )
    if feature == "entropy":
        how = "more spread out" if high else "more concentrated"
        return f"{name} map {how} than normal (entropy {value:.2f}; normal {normal:.2f}){tail}"
    if feature == "one_minus_confidence":
        how = "lower" if high else "higher"
        return (
            f"{name} peak probability {how} than normal ({1 - value:.4f}; "
            f"normal {1 - normal:.4f}){tail}"
        )
    if feature == "mass_out":
        how = "More" if high else "Less"
        return (
            f"{how} of the {name} map's mass lies outside its main blob than normal "
            f"({100 * value:.1f}%; normal {100 * normal:.1f}%){tail}"
        )
    if feature == "top100_entropy":
        how = "spread over more than one spot" if high else "more concentrated than normal"
        return (
            f"{name} map's 100 strongest pixels {how} (entropy {value:.2f}; "
            f"normal {normal:.2f}){tail}"
        )
    return f"{name} {feature.replace('_', ' ')} {value:.3g} (normal {normal:.3g}){tail}"


def score_rows(rows: list[dict], ref: Reference, source: str = "metrics") -> list[dict]:
    """The score columns (:data:`SCORE_COLUMNS`) of each row; empty where no feature is known."""
    if not rows:
        return []
    raw = feature_matrix(rows, ref.features, source)
    z = ref.z_scores(raw)
    best, idx = _max_abs(z)
    out = []
    for i, row in enumerate(rows):
        if idx[i] < 0:
            out.append(dict.fromkeys(SCORE_COLUMNS, ""))
            continue
        driver = ref.features[idx[i]]
        out.append(
            {
                "lstv_score": round(float(best[i]), 4),
                "lstv_score_driver": driver,
                "lstv_score_flag": bool(best[i] > ref.threshold),
                "lstv_score_reason": describe(driver, raw[i, idx[i]], z[i, idx[i]], ref, row),
            }
        )
    return out


# --------------------------------------------------------------------------- using it in a run


@dataclass(frozen=True)
class ScoreSetup:
    """The reference a run scores with (None: no score) and what the manifest says about it."""

    reference: Reference | None
    manifest: dict  # score_reference (dict or None), score_reference_sha256, score_note


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve_reference(
    reference_path: str | Path | None, checkpoint_sha256: str | None, checkpoint_config: dict
) -> ScoreSetup:
    """The reference for a run: ``--reference`` (checked against the run's checkpoint), else
    the one the checkpoint carries, else none (and the manifest says why).

    Raises:
        FileNotFoundError, ValueError: a given reference is missing, invalid or fitted on
            another checkpoint.
    """
    if reference_path is not None:
        path = Path(reference_path)
        ref = load_reference(path)
        check_checkpoint(ref, checkpoint_sha256, f"reference {path}")
        return ScoreSetup(ref, _manifest_entry(ref, str(path), file_sha256(path), "file"))
    embedded = (checkpoint_config or {}).get(CONFIG_KEY)
    if embedded is not None:
        ref = Reference.from_dict(embedded, f"checkpoint config {CONFIG_KEY!r}")
        digest = hashlib.sha256(json.dumps(embedded, sort_keys=True).encode()).hexdigest()
        return ScoreSetup(ref, _manifest_entry(ref, "checkpoint config", digest, "checkpoint"))
    note = (
        "no score reference: lstv_score columns are empty. Pass --reference REFERENCE.json "
        "(from lstv calibrate on this checkpoint's normal studies), or use a checkpoint that "
        f"carries one ({CONFIG_KEY!r} in its config); lstv score adds the columns later"
    )
    return ScoreSetup(
        None, {"score_reference": None, "score_reference_sha256": None, "score_note": note}
    )


def _manifest_entry(ref: Reference, path: str, digest: str, source: str) -> dict:
    return {
        "score_reference": {
            "path": path,
            "source": source,
            "sha256": digest,
            "checkpoint_sha256": ref.checkpoint_sha256,
            "n": ref.n,
            "reference_studies": ref.reference_studies,
            "threshold": ref.threshold,
            "threshold_rule": ref.threshold_rule,
            "features": list(ref.features),
            "created_at": ref.created_at,
        },
        "score_reference_sha256": digest,
        "score_note": f"lstv_score against {ref.n} reference studies ({source}: {path})",
    }


def rescore_run(csv_path: str | Path, reference_path: str | Path) -> dict:
    """``lstv score``: (re)write the score columns of a finished run without the net.

    Every other column and row is kept as it was (text for text); score columns are added at
    the end when the CSV lacks them. The CSV and the manifest are replaced atomically, under
    the run folder's lock.

    Returns:
        Counts: ``n_rows``, ``n_scored``, ``n_flagged``, and the ``threshold``.

    Raises:
        FileNotFoundError, ValueError: no CSV or reference, the CSV lacks feature columns, no
            manifest, or the reference belongs to another checkpoint.
    """
    from lstv.rundir import MANIFEST_JSON, RunDir, write_csv_atomic, write_json_atomic

    csv_path = Path(csv_path)
    ref = load_reference(reference_path)
    header, _ = _read_run_csv(csv_path, ref.features)
    sha, _ = run_checkpoint_sha256(csv_path)
    check_checkpoint(ref, sha, f"reference {reference_path}")
    with RunDir(csv_path.parent).lock():
        header, rows = _read_run_csv(csv_path, ref.features)  # as it is now, under the lock
        _, manifest = run_checkpoint_sha256(csv_path)
        columns = header + [c for c in SCORE_COLUMNS if c not in header]
        scores = score_rows(rows, ref, str(csv_path))
        for row, score in zip(rows, scores, strict=True):
            row.update(score)
        write_csv_atomic(csv_path, columns, rows)
        entry = _manifest_entry(
            ref, str(reference_path), file_sha256(Path(reference_path)), "lstv score"
        )
        manifest.update(entry)
        write_json_atomic(csv_path.parent / MANIFEST_JSON, manifest)
    n_scored = sum(1 for s in scores if s["lstv_score"] != "")
    n_flagged = sum(1 for s in scores if s["lstv_score_flag"] is True)
    log.info("%d of %d rows scored, %d flagged, in %s", n_scored, len(rows), n_flagged, csv_path)
    return {
        "n_rows": len(rows),
        "n_scored": n_scored,
        "n_flagged": n_flagged,
        "threshold": ref.threshold,
    }


# --------------------------------------------------------------------------- ranking


def ranking_score(metrics) -> str:
    """The column a table of runs is ranked by: ``lstv_score`` when any study has one, else
    the seed's ``l5_s1_entropy``.

    ``metrics`` is a pandas DataFrame of the metrics CSV (as read by ``lstv.evaluate``).
    """
    import pandas as pd

    if "lstv_score" in metrics.columns:
        values = pd.to_numeric(metrics["lstv_score"], errors="coerce")
        if values.notna().any():
            return "lstv_score"
    return "l5_s1_entropy"


def score_fields(row) -> dict:
    """A study's score, flag and reason as display values ('' when it has no score)."""
    value = _number(row.get("lstv_score")) if hasattr(row, "get") else math.nan
    if not math.isfinite(value):
        return {"lstv_score": math.nan, "lstv_score_flag": False, "lstv_score_reason": ""}
    flag = str(row.get("lstv_score_flag", "")).strip().lower() in ("true", "1", "yes")
    reason = row.get("lstv_score_reason", "")
    reason = "" if not isinstance(reason, str) else reason
    return {"lstv_score": value, "lstv_score_flag": flag, "lstv_score_reason": reason}


def score_study(metrics: dict[str, dict], ref: Reference) -> dict:
    """The score columns of one study from :func:`lstv.uncertainty.study_metrics` output
    (measured with the pixel size, so the shape features are there)."""
    row = {}
    for level, values in metrics.items():
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if isinstance(value, int | float):
                row[f"{level}_{name}"] = value
    return score_rows([row], ref, "study metrics")[0]


def embed_reference(checkpoint: str | Path, reference: str | Path, output: str | Path) -> Path:
    """Write a copy of ``checkpoint`` that carries ``reference`` in its ``config``.

    The reference must have been fitted on this very checkpoint (its SHA-256 is checked);
    tensors are saved as they were read (float16 stays float16), and ``output`` is written
    whole before it appears, so a checkpoint can be moved into place afterwards.

    Raises:
        ValueError: the reference is of another checkpoint, or ``output`` is an input.
    """
    import torch

    from lstv.model import file_sha256 as checkpoint_sha256
    from lstv.model import read_checkpoint
    from lstv.rundir import atomic_file, refuse_overwriting

    checkpoint, output = Path(checkpoint), Path(output)
    refuse_overwriting(output, [checkpoint, reference], "output checkpoint")
    ref = load_reference(reference)
    check_checkpoint(ref, checkpoint_sha256(checkpoint), f"reference {reference}")
    obj = read_checkpoint(checkpoint)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ValueError(f"{checkpoint} is not a checkpoint in the original layout")
    obj["config"] = {**dict(obj.get("config") or {}), CONFIG_KEY: ref.to_dict()}
    with atomic_file(output, binary=True) as f:
        torch.save(obj, f)
    log.info("%s written with the reference of %d studies from %s", output, ref.n, reference)
    return output
