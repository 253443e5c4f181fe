"""Every column the project writes, once: its name, type, level template, unit and meaning.

``lstv_uncertainty_metrics.csv`` and ``audit_queue.csv`` are declared here as ordered groups of
:class:`Column`; the writers (:data:`lstv.results.METRIC_COLUMNS`, the audit queue), the
readers (:mod:`lstv.tables`), ``lstv evaluate``'s list of scores and the README's column table
all come from these declarations (``tests/test_columns.py`` keeps the README equal to them).

A per-level column is a template: ``{level}_entropy`` stands for ``l1_l2_entropy`` ..
``l5_s1_entropy``, and a group of per-level columns is written level by level (every column of
``l1_l2``, then of ``l2_l3``, ...), as round 1 wrote them. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lstv.levels import LEVEL_KEYS

LEVEL = "{level}"
DTYPES = ("id", "int", "float", "bool", "text")
# How lstv evaluate reads a column as a score (higher = more likely transitional):
HIGHER = "higher"  # as it is
LOWER = "lower"  # as 1 - value, named ``..._one_minus_...`` (a peak probability)


@dataclass(frozen=True)
class Column:
    """One column: ``name`` (a template with ``{level}`` for a per-level one), its type, unit
    and meaning; ``score`` says how ``lstv evaluate`` reads it ('' for not a score)."""

    name: str
    dtype: str
    meaning: str
    unit: str = ""
    score: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name}: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.score not in ("", HIGHER, LOWER):
            raise ValueError(f"column {self.name}: score {self.score!r} is not higher/lower")

    @property
    def per_level(self) -> bool:
        return LEVEL in self.name

    def at(self, level: str) -> Column:
        """The column of one level (``{level}_entropy`` at ``l5_s1`` -> ``l5_s1_entropy``)."""
        return replace(self, name=self.name.format(level=level))

    def names(self, levels=LEVEL_KEYS) -> list[str]:
        """The column's names in a CSV: one per level for a template, else its name."""
        return [self.name.format(level=k) for k in levels] if self.per_level else [self.name]


def _expand(groups: tuple[tuple[Column, ...], ...]) -> list[str]:
    names = []
    for group in groups:
        if group[0].per_level:
            names += [c.name.format(level=k) for k in LEVEL_KEYS for c in group]
        else:
            names += [c.name for c in group]
    return names


def _per_level(*columns: Column) -> tuple[Column, ...]:
    assert all(c.per_level for c in columns)
    return columns


# --------------------------------------------------------------------------- metrics CSV

# The seed's contract (round 0): downstream scripts read these names; never rename them.
SEED = (
    (
        Column("study_id", "id", "the RSNA / DICOM study this row is about"),
        Column("series_id", "id", "the sagittal T2 series the model read"),
    ),
    _per_level(
        Column("{level}_confidence", "float", "peak probability of the level's map", score=LOWER),
        Column(
            "{level}_entropy",
            "float",
            "Shannon entropy of the level's map normalised to sum 1",
            "nats",
            HIGHER,
        ),
        Column(
            "{level}_spatial_entropy",
            "float",
            "entropy of the map's 10 x 10 block sums",
            "nats",
            HIGHER,
        ),
    ),
)
LEVEL_DETAILS = _per_level(
    Column(
        "{level}_normalized_entropy",
        "float",
        "entropy / ln(H x W) of the map, 0..1",
        score=HIGHER,
    ),
    Column("{level}_x", "float", "the level's point, empty when no pixel > 0.5", "pixels"),
    Column("{level}_y", "float", "the level's point, empty when no pixel > 0.5", "pixels"),
    Column("{level}_x_mm", "float", "the point in patient coordinates", "mm"),
    Column("{level}_y_mm", "float", "the point in patient coordinates", "mm"),
    Column("{level}_z_mm", "float", "the point in patient coordinates", "mm"),
    Column(
        "{level}_tta_mi",
        "float",
        "mutual information of shifted views (with --tta), empty without",
        "nats",
        HIGHER,
    ),
)
SERIES = (
    Column("series_description", "text", "the series' SeriesDescription"),
    Column("n_slices", "int", "slices in the series"),
    Column("slice_index", "int", "the slice the model read (0-based, the centre)"),
    Column("image_height", "int", "rows of the slice", "pixels"),
    Column("image_width", "int", "columns of the slice", "pixels"),
    Column("lstv_flag", "bool", "the seed's rule: L5/S1 entropy > 5.0 (the flag threshold)"),
    Column("risk_level", "text", "L5/S1 entropy High > 5.5, Medium 4.0-5.5, Low < 4.0"),
)
# Shape features of every level map (lstv.uncertainty.shape_features), for the score.
SHAPE = _per_level(
    Column(
        "{level}_peak2",
        "float",
        "second peak's height over the first, farther than 20 mm from it",
        score=HIGHER,
    ),
    Column("{level}_peak2_dx_mm", "float", "second peak's offset from the first, across", "mm"),
    Column("{level}_peak2_dy_mm", "float", "second peak's offset from the first, down", "mm"),
    Column(
        "{level}_mass_out",
        "float",
        "share of the map's mass outside its main blob",
        score=HIGHER,
    ),
    Column(
        "{level}_top100_entropy",
        "float",
        "entropy of the map's 100 strongest pixels",
        "nats",
        HIGHER,
    ),
)
# The calibrated score (lstv.score); empty without a reference.
SCORE = (
    Column(
        "lstv_score",
        "float",
        "distance from the reference's normal studies by its rule: robust Mahalanobis of the "
        "L5/S1 map features (rule mahalanobis, v2), or the largest robust |z| (max_abs_z, v1)",
        score=HIGHER,
    ),
    Column("lstv_score_driver", "text", "the feature that gave the score"),
    Column("lstv_score_flag", "bool", "score above the reference's threshold"),
    Column(
        "lstv_score_reason", "text", "the driver in plain words, with the normal value or range"
    ),
)
SELECTION = (
    Column(
        "selection_rule",
        "text",
        "why this series was run: description, description_pattern or headers",
    ),
)
# Geometry of the five predicted points in the slice plane (from their patient coordinates,
# lstv.score_features.geometry_features); empty where a point is missing.
GEOMETRY = (
    Column(
        "l5_s1_spacing_ratio",
        "float",
        "L4/L5 -> L5/S1 distance over the mean of the three spacings above it",
        "ratio",
    ),
    Column(
        "l4_l5_bend_deg",
        "float",
        "tilt of L4/L5 -> L5/S1 minus tilt of L3/L4 -> L4/L5 (positive: the lower segment "
        "leans posteriorly)",
        "degrees",
    ),
    Column(
        "l5_s1_along",
        "float",
        "L5/S1's offset from L4/L5 along the L3/L4 -> L4/L5 direction, over that spacing",
        "ratio",
    ),
    Column(
        "l5_s1_across",
        "float",
        "L5/S1's offset from L4/L5 across that direction (positive: posterior), over that "
        "spacing",
        "ratio",
    ),
)
# The model on the slices beside the centre (lstv infer --parasagittal K: centre +-1 .. +-K,
# lstv.uncertainty.parasagittal_features); empty with K = 0 or a series of one slice.
PARASAGITTAL = (
    Column(
        "parasagittal_slices",
        "int",
        "slices beside the centre the model also read (--parasagittal K: up to 2K; 0: none)",
    ),
    Column(
        "l4_l5_para_min_confidence",
        "float",
        "lowest peak probability of the L4/L5 map over the parasagittal slices",
        score=LOWER,
    ),
    Column(
        "l4_l5_para_mean_peak2",
        "float",
        "mean over the parasagittal slices of the L4/L5 map's second peak over its first",
        score=HIGHER,
    ),
    Column(
        "l5_s1_para_min_confidence",
        "float",
        "lowest peak probability of the L5/S1 map over the parasagittal slices",
        score=LOWER,
    ),
    Column(
        "l5_s1_para_mean_peak2",
        "float",
        "mean over the parasagittal slices of the L5/S1 map's second peak over its first",
        score=HIGHER,
    ),
    Column(
        "l5_s1_para_shift_mm",
        "float",
        "largest in-plane distance from the centre slice's L5/S1 point to a parasagittal "
        "slice's",
        "mm",
        HIGHER,
    ),
)
# How the study was acquired, from its 16-bit centre slice and header, not its anatomy
# (lstv.acquisition): the drift check tells a scanner change from a set rich in LSTV by them.
ACQUISITION = (
    Column(
        "acq_noise",
        "float",
        "noise of the centre slice (MAD of its Laplacian, as a white noise SD) over the body's "
        "median signal",
        "ratio",
    ),
    Column(
        "acq_sharpness",
        "float",
        "mean absolute Laplacian over mean absolute gradient of the centre slice: effective "
        "resolution",
        "ratio",
    ),
    Column(
        "acq_contrast",
        "float",
        "log of the body's 99th over its 90th intensity percentile on the centre slice",
        "log ratio",
    ),
    Column(
        "acq_bias_ratio",
        "float",
        "log of the body's median signal in the slice's right third over its left third "
        "(coil bias field)",
        "log ratio",
    ),
    Column("acq_pixel_spacing_mm", "float", "in-plane pixel spacing (header)", "mm"),
    Column(
        "acq_slice_spacing_mm",
        "float",
        "distance from the centre slice to its neighbour (header positions); empty for one "
        "slice",
        "mm",
    ),
)
# In file order: round 1's columns first, later ones appended so readers of those keep working.
METRICS = (
    *SEED, LEVEL_DETAILS, SERIES, SHAPE, SCORE, SELECTION, GEOMETRY, PARASAGITTAL, ACQUISITION
)

METRIC_COLUMNS = _expand(METRICS)
SEED_COLUMNS = _expand(SEED)
SCORE_COLUMNS = tuple(c.name for c in SCORE)
SHAPE_FEATURES = tuple(c.name.removeprefix("{level}_") for c in SHAPE)
PARASAGITTAL_COLUMNS = tuple(c.name for c in PARASAGITTAL)
ACQUISITION_COLUMNS = tuple(c.name for c in ACQUISITION)


def metric_column(name: str) -> Column | None:
    """The declaration of a metrics CSV column by its name in the file (``l5_s1_entropy``, a
    per-level one, comes back named so); None for a column this lstv does not write."""
    return _BY_NAME.get(name)


_BY_NAME = {
    n: (c if not c.per_level else replace(c, name=n))
    for group in METRICS
    for c in group
    for n in c.names()
}


# --------------------------------------------------------------------------- audit queue

# What a reviewer fills in (lstv review and a spreadsheet write only these).
REVIEW = (
    Column("lstv", "text", "1 transitional, 0 normal, unsure (skipped and counted), empty not "
           "reviewed yet"),
    Column("lstv_type", "text", "normal, sacralization or lumbarization (common spellings mapped)"),
    Column("reviewer", "text", "who reviewed the study"),
    Column("notes", "text", "free text"),
)
# The IDs first, then the review columns, then where to find the study and why it ranks.
AUDIT = (
    Column("rank", "int", "1 = review first (highest score)"),
    metric_column("study_id"),
    metric_column("series_id"),
    Column("study_instance_uid", "text", "StudyInstanceUID, to find the study in PACS"),
    *REVIEW,
    Column("path", "text", "where the study's series lies (the index's path, or its folder)"),
    *(
        metric_column(n)
        for n in (
            "l5_s1_entropy",
            "l4_l5_entropy",
            "l5_s1_confidence",
            "risk_level",
            "lstv_flag",
            "lstv_score",
            "lstv_score_flag",
            "lstv_score_reason",
        )
    ),
)
AUDIT_COLUMNS = tuple(c.name for c in AUDIT)
REVIEW_COLUMNS = tuple(c.name for c in REVIEW)


# --------------------------------------------------------------------------- documentation


def markdown_table(columns) -> str:
    """A README table of ``columns`` (templates as they are): column, type, unit, meaning."""
    lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.dtype} | {c.unit} | {c.meaning} |" for c in columns]
    return "\n".join(lines) + "\n"
