import numpy as np
import pytest

from lstv.studies import (
    StudyTask,
    filter_valid,
    load_valid_ids,
    read_series_table,
    sagittal_t2_tasks,
    select_mode,
    shard,
)


def write_csv(path, text):
    path.write_text(text)
    return path


def test_sagittal_t2_selection_is_deterministic(tmp_path):
    csv = write_csv(
        tmp_path / "s.csv",
        (
            "study_id,series_id,series_description\n"
            "1,30,Sagittal T2/STIR\n1,10,Sagittal T1\n1,20,Axial T2\n"
            "2,50,sagittal t2 fse\n2,40,Sagittal T2/STIR\n2,45,Sagittal T2/STIR\n"
            "3,60,Axial T2\n"
        ),
    )
    tasks = sagittal_t2_tasks(read_series_table(csv))
    assert tasks == [
        StudyTask(1, 30, "Sagittal T2/STIR"),
        StudyTask(2, 40, "Sagittal T2/STIR"),  # exact description first, then lowest id
        StudyTask(3, None),  # no sagittal T2: kept so it becomes a failure row
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("study_id,series_description\n1,x\n", "missing column"),
        ("study_id,series_id,series_description\n1,abc,Sagittal T2\n", "line 2"),
    ],
)
def test_malformed_csv_names_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_series_table(write_csv(tmp_path / "bad.csv", text))


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="series CSV"):
        read_series_table(tmp_path / "nope.csv")


def test_valid_id_file_in_the_real_format(tmp_path):
    # The same format as hengck23's valid_id.npy (int64); a copy lives in ../shared/reference.
    ids = np.array([4003253, 4646740, 7143189], dtype=np.int64)
    np.save(tmp_path / "valid_id.npy", ids)
    valid = load_valid_ids(tmp_path / "valid_id.npy")
    assert valid == {4003253, 4646740, 7143189}
    tasks = [StudyTask(4003253, 1), StudyTask(5, 2)]
    assert filter_valid(tasks, valid) == [StudyTask(4003253, 1)]
    assert load_valid_ids(tmp_path / "absent.npy") is None
    assert filter_valid(tasks, None) == tasks


def test_reference_valid_ids_load(tmp_path):
    from pathlib import Path

    ref = Path(__file__).resolve().parents[2] / "shared" / "reference" / "valid_id.npy"
    if not ref.is_file():
        pytest.skip(f"reference file not present: {ref}")
    valid = load_valid_ids(ref)
    assert len(valid) == 283


def test_trial_sampling_is_seeded():
    tasks = [StudyTask(i, i) for i in range(100)]
    a = select_mode(tasks, "trial", n_trial=10, seed=1)
    assert a == select_mode(tasks, "trial", n_trial=10, seed=1)
    assert a != select_mode(tasks, "trial", n_trial=10, seed=2)
    assert len(a) == 10 and len(set(a)) == 10
    assert select_mode(tasks[:3], "trial", n_trial=10) == tasks[:3]


def test_debug_and_prod_modes():
    tasks = [StudyTask(i, i) for i in range(5)]
    assert select_mode(tasks, "prod") == tasks
    assert select_mode(tasks, "debug", debug_study_id=3) == [StudyTask(3, 3)]
    assert select_mode(tasks, "debug") == [StudyTask(0, 0)]
    with pytest.raises(ValueError, match="not among"):
        select_mode(tasks, "debug", debug_study_id=99)
    with pytest.raises(ValueError, match="mode"):
        select_mode(tasks, "fast")


def test_shards_are_disjoint_and_complete():
    tasks = [StudyTask(i, i) for i in range(17)]
    parts = [shard(tasks, 3, i) for i in range(3)]
    flat = [t for p in parts for t in p]
    assert sorted(flat, key=lambda t: t.study_id) == tasks
    assert len(flat) == len(set(flat))
    with pytest.raises(ValueError):
        shard(tasks, 3, 3)
