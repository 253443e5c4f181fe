"""The RSNA 2024 layout (lstv.rsna): the phantom writer and the readers use its names, so a
phantom dataset is laid out as the real data is and the readers find it."""

import csv

from lstv import rsna
from lstv.levels import LEVELS
from lstv.studies import read_series_table, sagittal_t2_tasks
from lstv.train import read_disc_labels


def header(path):
    with open(path, newline="") as f:
        return tuple(next(csv.reader(f)))


def test_a_phantom_dataset_is_laid_out_as_the_real_data(phantom_dataset):
    root = phantom_dataset.root
    assert phantom_dataset.images_dir == root / rsna.TRAIN_IMAGES
    assert phantom_dataset.series_csv == root / rsna.SERIES_CSV
    assert phantom_dataset.labels_csv == root / rsna.LABELS_CSV
    assert header(phantom_dataset.series_csv) == rsna.SERIES_COLUMNS
    assert header(phantom_dataset.labels_csv) == rsna.LABEL_COLUMNS
    # train_images/{study_id}/{series_id}/{instance_number}.dcm
    files = sorted(phantom_dataset.images_dir.glob("*/*/*.dcm"))
    assert files and all(f.stem.isdigit() for f in files)


def test_descriptions_and_conditions_are_rsna_s(phantom_dataset):
    with open(phantom_dataset.series_csv, newline="") as f:
        descriptions = {row["series_description"] for row in csv.DictReader(f)}
    assert rsna.SAGITTAL_T2 in descriptions and descriptions <= set(rsna.SERIES_DESCRIPTIONS)
    with open(phantom_dataset.labels_csv, newline="") as f:
        conditions = {row["condition"] for row in csv.DictReader(f)}
    assert conditions == {rsna.DISC_CONDITION} and rsna.DISC_CONDITION in rsna.CONDITIONS


def test_the_readers_find_each_phantom_study_s_sagittal_t2_and_its_disc_labels(phantom_dataset):
    tasks = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))
    assert len(tasks) == 8
    for task in tasks:
        assert sorted(task.series_dir(phantom_dataset.images_dir).glob("*.dcm"))
    labels = read_disc_labels(phantom_dataset.labels_csv)  # the disc condition's points
    assert set(labels) == {t.study_id for t in tasks}
    assert all(set(levels) == set(LEVELS) for levels in labels.values())
