"""The RSNA 2024 Lumbar Spine layout: file names, CSV columns, conditions, series descriptions.

What a user of the real data has on disk, and what the phantoms write::

    train_images/{study_id}/{series_id}/{instance_number}.dcm
    train_series_descriptions.csv   study_id, series_id, series_description
    train_label_coordinates.csv     study_id, series_id, instance_number, condition, level, x, y

One place for these names, so that the readers (studies, train, report) and the phantom writer
cannot drift apart.
"""

from __future__ import annotations

TRAIN_IMAGES = "train_images"
SERIES_CSV = "train_series_descriptions.csv"
LABELS_CSV = "train_label_coordinates.csv"

SERIES_COLUMNS = ("study_id", "series_id", "series_description")
LABEL_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")

SAGITTAL_T2 = "Sagittal T2/STIR"
SAGITTAL_T1 = "Sagittal T1"
AXIAL_T2 = "Axial T2"
SERIES_DESCRIPTIONS = (SAGITTAL_T2, SAGITTAL_T1, AXIAL_T2)

CONDITIONS = (
    "Spinal Canal Stenosis",
    "Left Neural Foraminal Narrowing",
    "Right Neural Foraminal Narrowing",
    "Left Subarticular Stenosis",
    "Right Subarticular Stenosis",
)
# The condition labelled on the sagittal T2 at the disc centres, one point per level.
DISC_CONDITION = "Spinal Canal Stenosis"
