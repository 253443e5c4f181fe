import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstv.studies import (
    StudyTask,
    filter_valid,
    load_valid_ids,
    parse_id,
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


# Series selection beyond the seed's rule (issue 13).

RSNA_DESCRIPTIONS = ("Sagittal T2/STIR", "Sagittal T1", "Axial T2")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 10**9), st.sampled_from(RSNA_DESCRIPTIONS)),
        max_size=12,
        unique_by=lambda r: r[1],
    )
)
def test_rsna_selection_is_unchanged(rows):
    from lstv.studies import SeriesRecord, select_series

    old = sagittal_t2_tasks(rows)
    new = select_series([SeriesRecord(*r) for r in rows])
    assert new == old
    assert [t.selection_rule for t in new] == ["description" if t.series_id else "" for t in old]


def index_record(series_id, description, study_id=1, **headers):
    from lstv.studies import SeriesRecord

    base = {
        "orientation": "sagittal",
        "echo_time": "100",
        "repetition_time": "3000",
        "n_instances": "15",
        "n_frames": "15",
        "image_type": "ORIGINAL\\PRIMARY\\M\\ND",
        "modality": "MR",
        "path": f"P/S/{series_id}",
    }
    return SeriesRecord(study_id, series_id, description, {**base, **headers})


@pytest.mark.parametrize(
    "description", ["SAG T2", "T2 SAG", "t2_tse_sag_384", "Sag T2 FRFSE", "T2W_TSE_SAG", "sagT2"]
)
def test_hospital_descriptions_are_selected(description):
    from lstv.studies import choose_series

    records = [
        index_record(1, "SAG T1", echo_time="10", repetition_time="500"),
        index_record(2, "AX T2", orientation="axial"),
        index_record(3, description),
        index_record(4, "SAG STIR", inversion_time="150"),
        index_record(5, "3-plane localizer", orientation="mixed"),
    ]
    chosen, rule = choose_series(records)
    assert (chosen.series_id, rule) == (3, "description_pattern")


@pytest.mark.parametrize(
    "description", ["SAG T1", "Sag STIR", "SAG T2 TIRM", "Localizer", "T2_SAG_MPR", "AX T2", ""]
)
def test_description_patterns_reject(description):
    from lstv.studies import is_sagittal_t2_pattern

    assert not is_sagittal_t2_pattern(description)


def test_headers_choose_when_descriptions_say_nothing():
    from lstv.studies import choose_series

    records = [
        index_record(10, "series 1", echo_time="12", repetition_time="550"),  # T1
        index_record(11, "series 2", orientation="axial"),
        index_record(12, "series 3", n_frames="12"),
        index_record(13, "series 4", n_frames="20"),  # most slices wins
        index_record(14, "series 5", n_frames="30", inversion_time="160"),  # STIR
        index_record(15, "series 6", n_frames="40", image_type="DERIVED\\SECONDARY\\MPR"),
        index_record(16, "series 7", n_frames="40", image_type="ORIGINAL\\PRIMARY\\LOCALIZER"),
        index_record(17, "series 8", n_frames="40", scanning_sequence="GR", echo_time="70"),
    ]
    chosen, rule = choose_series(records)
    assert (chosen.series_id, rule) == (13, "headers")
    # Equal slices: the lowest ID, whatever the order of the rows.
    tie = [index_record(21, "a"), index_record(20, "b")]
    assert choose_series(tie)[0].series_id == choose_series(tie[::-1])[0].series_id == 20
    # Enhanced MR states its contrast; the timing then lives in functional groups.
    enhanced = index_record(30, "", echo_time="", repetition_time="", acquisition_contrast="T2")
    assert choose_series([enhanced]) == (enhanced, "headers")
    t1 = index_record(31, "", echo_time="", repetition_time="", acquisition_contrast="T1")
    assert choose_series([t1]) == (None, "")


def test_a_study_without_a_usable_series_says_what_it_had(tmp_path):
    from lstv.studies import study_tasks

    csv = write_csv(
        tmp_path / "index.csv",
        "study_id,series_id,series_description,study_uid,series_uid,path,orientation,"
        "repetition_time,echo_time,n_instances,n_frames\n"
        "7,1,SAG T1,1.2,1.2.1,a,sagittal,500,10,15,15\n"
        "7,2,AX T2,1.2,1.2.2,b,axial,3000,100,30,30\n"
        "8,3,,1.3,1.3.1,c;d,sagittal,3000,100,15,15\n",
    )
    first, second = study_tasks(csv)
    assert first.series_id is None
    assert "'SAG T1' sagittal TE 10/TR 500" in first.note
    assert "'AX T2' axial TE 100/TR 3000" in first.note
    assert (second.series_id, second.selection_rule, second.path) == (3, "headers", "c;d")
    assert second.series_source(tmp_path) == [tmp_path / "c", tmp_path / "d"]


def test_rsna_csv_has_no_header_fallback(tmp_path):
    from lstv.studies import study_tasks

    csv = write_csv(
        tmp_path / "s.csv",
        "study_id,series_id,series_description\n1,10,Sagittal T1\n1,20,Axial T2\n2,5,SAG T2\n",
    )
    no_series, pattern = study_tasks(csv)
    assert no_series.series_id is None
    had = "(had: 'Sagittal T1'; 'Axial T2')"
    assert no_series.note == f"study has no sagittal T2 series {had}"
    assert (pattern.series_id, pattern.selection_rule) == (5, "description_pattern")
    assert pattern.series_source(tmp_path) == tmp_path / "2" / "5"


def test_an_original_image_is_preferred_to_a_derived_one():
    from lstv.studies import choose_series

    derived = index_record(1, "SAG T2", n_frames="30", image_type="DERIVED\\PRIMARY\\M")
    original = index_record(2, "SAG T2", n_frames="15")
    assert choose_series([derived, original]) == (original, "description_pattern")
    assert choose_series([derived]) == (derived, "description_pattern")


@pytest.mark.parametrize("description", ["SAG T1W", "SAG T1W TSE", "T1W_TSE_SAG", "sag_t1wi_fs"])
def test_a_t1_weighted_description_is_never_taken_as_t2(description):
    """``T1W``, ``T1WI`` rule a series out as T1, even when its headers look T2-weighted (the
    description is the scanner operator's word; a mislabelled header does not overrule it).

    Mutant ``t1\\w*`` -> ``t1\\d+`` in ``description_rejection``: fails (``SAG T1W`` is
    chosen by the header rule); without it: passes."""
    from lstv.studies import choose_series, description_rejection

    assert description_rejection(description) == "T1"
    t1w = index_record(1, description, n_frames="30")  # more slices than the T2
    t2 = index_record(2, "series 2")
    assert choose_series([t1w, t2]) == (t2, "headers")
    assert choose_series([t1w]) == (None, "")


def test_choose_series_prefers_the_exact_rsna_description_over_a_lower_series_id():
    """``lstv infer`` selects with ``choose_series``: the exact "Sagittal T2/STIR" wins over any
    other sagittal T2 description, whatever the series IDs, as the seed's rule says.

    Mutant (the key without the exact-description term, so the lowest series ID wins): fails;
    without it: passes."""
    from lstv.studies import SeriesRecord, choose_series

    other = SeriesRecord(1, 5, "Sagittal T2 FSE")
    exact = SeriesRecord(1, 9, " SAGITTAL T2/STIR ")  # any case and padding
    for records in ([other, exact], [exact, other]):
        assert choose_series(records) == (exact, "description")
    lower = SeriesRecord(1, 3, "Sagittal T2 FSE")
    assert choose_series([other, lower]) == (lower, "description")


# --- index paths (issue 17) -------------------------------------------------------------------


def test_index_paths_outside_the_input_folder_are_refused_by_one_rule(tmp_path):
    """17.10: infer read ``../`` and absolute index paths that report refused."""
    root = tmp_path / "export"
    (root / "ser").mkdir(parents=True)
    (root / "ser" / "IM1").write_bytes(b"x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "IM1").write_bytes(b"x")
    (root / "link").symlink_to(outside)
    assert StudyTask(1, 2, path="ser").series_source(root) == [root / "ser" / "IM1"]
    refusal = (
        r"outside the folder .*export the run reads; "
        r".*\(re-index the export from its top folder\)$"
    )
    for path in ("../elsewhere", str(outside), "ser;../elsewhere/IM1", "link"):
        with pytest.raises(ValueError, match=refusal):
            StudyTask(1, 2, path=path).series_source(root)


@pytest.mark.parametrize(
    "names",
    [["a;b/IM1"], ["x/IM;1", "x/IM2"], ["[1]/IM1", "[1]/IM2"], ["s p/é;\n"], ["folder;x"]],
)
def test_index_paths_survive_any_legal_file_name(names):
    """17.5: the index joined file names with ``;``, so a ``;`` in a name broke its study."""
    from lstv.studies import join_paths, split_paths

    assert split_paths(join_paths(names)) == names


def test_old_index_paths_are_still_read():
    from lstv.studies import split_paths

    assert split_paths("PAT0/SER1") == ["PAT0/SER1"]
    assert split_paths("a/IM1;a/IM2;b/IM3") == ["a/IM1", "a/IM2", "b/IM3"]
    assert split_paths("[x]/IM1;[x]/IM2") == ["[x]/IM1", "[x]/IM2"]  # not JSON: the old way


# -------------------- input parsing
# Issue 9, messages: CSV and ID parsing that gives clear errors instead of tracebacks or silently
# wrong matches, and an audit queue that a spreadsheet cannot run as formulas.


HEADER = "study_id,series_id,series_description\n"


@pytest.mark.parametrize("text, value", [("123", 123), (" 42 ", 42), ("0007", 7)])
def test_ids_in_ascii_digits_parse(text, value):
    assert parse_id(text) == value


@pytest.mark.parametrize("text", ["4773_9259", "１２３", "+12", "-3", "1e3", "12.0", "", None])
def test_ids_int_would_accept_or_misread_are_refused(text):
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_id(text)


def test_series_csv_with_a_bom_is_read(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text(HEADER + "1,10,Sagittal T2/STIR\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_series_table(path) == [(1, 10, "Sagittal T2/STIR")]


@pytest.mark.parametrize("bad_id", ["4773_9259", "１２３"])
def test_series_csv_refuses_ids_int_would_misread(tmp_path, bad_id):
    path = tmp_path / "series.csv"
    path.write_text(HEADER + "1,10,Sagittal T2/STIR\n" + f"{bad_id},11,Sagittal T2/STIR\n")
    with pytest.raises(ValueError, match=rf"{path} line 3: .*{bad_id}"):
        read_series_table(path)


def test_series_csv_field_over_the_csv_limit_is_a_clear_error(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text(HEADER + '1,10,"' + "x" * (csv.field_size_limit() + 10) + '"\n')
    with pytest.raises(ValueError, match=rf"{path} line 2: .*at most 128 KiB"):
        read_series_table(path)


def test_series_csv_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "series.csv"
    path.write_bytes(HEADER.encode() + b"1,10,Sagittal T2 \xff\xfe\n")
    with pytest.raises(ValueError, match=rf"{path} is not UTF-8"):
        read_series_table(path)


def test_valid_ids_that_are_a_pickle_name_the_file(tmp_path):
    path = tmp_path / "valid_id.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=rf"{path}: not a numpy array of study IDs"):
        load_valid_ids(path)


def test_valid_ids_that_are_text_name_the_file(tmp_path):
    path = tmp_path / "valid_id.npy"
    path.write_text("123\n456\n")
    with pytest.raises(ValueError, match=rf"{path}: not a numpy array"):
        load_valid_ids(path)


def test_float32_valid_ids_are_refused(tmp_path):
    path = tmp_path / "valid_id.npy"
    np.save(path, np.array([4736760728, 8579676193], dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{path}: holds float32 values"):
        load_valid_ids(path)


def test_whole_float64_and_integer_valid_ids_load(tmp_path):
    path = tmp_path / "valid_id.npy"
    np.save(path, np.array([4736760728.0, 12.0]))
    assert load_valid_ids(path) == {4736760728, 12}
    np.save(path, np.array([4736760728], dtype=np.int64))
    assert load_valid_ids(path) == {4736760728}


# -------------------- mutation survivors (issue 20): selection, sampling and shards


def test_trial_defaults_are_ten_studies_drawn_with_seed_42():
    tasks = [StudyTask(i, i) for i in range(100)]
    assert select_mode(tasks, "trial") == select_mode(tasks, "trial", n_trial=10, seed=42)
    assert len(select_mode(tasks, "trial")) == 10
    assert select_mode(tasks, "trial") != select_mode(tasks, "trial", n_trial=10, seed=43)


def test_trial_draws_without_replacement_and_one_study_is_allowed():
    tasks = [StudyTask(i, i) for i in range(100)]
    picked = select_mode(tasks, "trial", n_trial=90, seed=0)
    assert len(set(picked)) == 90 and picked == sorted(picked, key=lambda t: t.study_id)
    assert len(select_mode(tasks, "trial", n_trial=1)) == 1
    with pytest.raises(ValueError, match=r"^n_trial must be at least 1, got 0$"):
        select_mode(tasks, "trial", n_trial=0)


def test_prod_runs_every_study_and_a_bad_mode_names_the_modes():
    tasks = [StudyTask(i, i) for i in range(25)]
    assert select_mode(tasks, "prod") == tasks
    with pytest.raises(ValueError, match=r"^mode must be one of trial, debug, prod, got 'fast'$"):
        select_mode(tasks, "fast")


def test_one_part_is_every_task_and_a_bad_part_is_named():
    tasks = [StudyTask(i, i) for i in range(7)]
    assert shard(tasks) == tasks
    assert shard(tasks, 1, 0) == tasks
    with pytest.raises(ValueError, match=r"^need 0 <= part_id < num_parts, got part 3 of 3$"):
        shard(tasks, 3, 3)


def test_seed_rule_prefers_the_exact_description_over_a_lower_series_id():
    rows = [(1, 10, "sagittal t2 fse"), (1, 20, " SAGITTAL T2/STIR "), (1, 5, "Sagittal T1")]
    assert sagittal_t2_tasks(rows) == [StudyTask(1, 20, " SAGITTAL T2/STIR ")]


@pytest.mark.parametrize(
    ("description", "reason"),
    [("SAG T2 STIRFSE", "STIR"), ("T2 SAG TIRM2D", "STIR"), ("SAG T2 T12-S1", None)],
)
def test_description_rejection_of_words_holding_stir_or_tirm(description, reason):
    from lstv.studies import description_rejection, is_sagittal_t2_pattern

    assert description_rejection(description) == reason
    assert is_sagittal_t2_pattern(description) is (reason is None)


@pytest.mark.parametrize(
    "headers",
    [
        {"orientation": "axial"},
        {"orientation": "coronal"},
        {"orientation": "mixed"},
        {"image_type": "ORIGINAL\\PRIMARY\\LOCALIZER"},
    ],
)
def test_a_description_match_with_headers_that_rule_it_out_is_not_taken(headers):
    from lstv.studies import choose_series

    ruled_out = index_record(1, "SAG T2", n_frames="40", **headers)
    kept = index_record(2, "SAG T2", n_frames="15")
    assert choose_series([ruled_out, kept]) == (kept, "description_pattern")


def test_an_original_image_is_preferred_to_a_secondary_one():
    from lstv.studies import choose_series

    secondary = index_record(1, "SAG T2", n_frames="30", image_type="ORIGINAL\\SECONDARY")
    original = index_record(2, "SAG T2", n_frames="15")
    assert choose_series([secondary, original]) == (original, "description_pattern")


# -------------------- mutation survivors (issue 20): index detection and the hold-out filter

INDEX_HEADER = "study_id,series_id,series_description,study_uid,path\n"


def test_is_index_reads_the_header_only(tmp_path):
    """An index has a ``study_uid`` column, wherever it is and however a spreadsheet padded or
    marked it (a byte-order mark before a first ``study_uid``); RSNA's CSV and an empty file
    are not indexes."""
    from lstv.studies import is_index

    assert is_index(write_csv(tmp_path / "index.csv", INDEX_HEADER + "1,2,SAG T2,1.2,a\n"))
    assert not is_index(write_csv(tmp_path / "rsna.csv", HEADER + "1,2,Sagittal T2/STIR\n"))
    assert not is_index(write_csv(tmp_path / "empty.csv", ""))
    first = tmp_path / "bom.csv"
    first.write_text(" study_uid ,study_id,series_id,series_description\n", encoding="utf-8-sig")
    assert is_index(first)


def test_hold_out_ids_apply_to_rsna_and_to_an_index_that_names_them(tmp_path):
    from lstv.studies import hold_out_ids

    np.save(tmp_path / "valid_id.npy", np.array([4003253, 7], dtype=np.int64))
    ids = tmp_path / "valid_id.npy"
    rsna = write_csv(tmp_path / "rsna.csv", HEADER + "5,2,Sagittal T2/STIR\n")
    index = write_csv(tmp_path / "index.csv", INDEX_HEADER + "5,2,SAG T2,1.2,a\n")
    some = [StudyTask(5, 2), StudyTask(7, 3)]
    # RSNA's CSV: the list applies even when it names none of the studies.
    assert hold_out_ids(ids, [StudyTask(5, 2)], rsna) == {4003253, 7}
    # An index of the RSNA tree keeps the RSNA IDs: one study among them is enough.
    assert hold_out_ids(ids, some, index) == {4003253, 7}
    assert hold_out_ids(None, some, index) is None
    assert hold_out_ids(tmp_path / "absent.npy", some, rsna) is None


def test_hold_out_ids_do_not_apply_to_an_export_none_of_whose_studies_they_name(tmp_path, caplog):
    """A hospital export indexed with its own IDs: the RSNA list would drop every study, so it
    does not apply, and the warning says why (the file, its studies, the list's size)."""
    import logging

    from lstv.studies import hold_out_ids

    ids = tmp_path / "valid_id.npy"
    np.save(ids, np.array([4003253, 7, 8], dtype=np.int64))
    index = write_csv(tmp_path / "index.csv", INDEX_HEADER + "5,2,SAG T2,1.2,a\n")
    with caplog.at_level(logging.WARNING, logger="lstv.studies"):
        assert hold_out_ids(ids, [StudyTask(5, 2), StudyTask(6, 2)], index) is None
    assert caplog.messages == [
        f"{index}: none of its 2 studies is among the 3 RSNA hold-out IDs of {ids}, so it is "
        "not an RSNA export: the hold-out filter does not apply"
    ]


# -------------------- mutation survivors (issue 20): index paths and records


def test_join_paths_writes_plain_names_joined_and_others_as_readable_json():
    """Names without ``;`` are joined by ``;`` as older indexes were (a first name starting
    with ``[`` only in the first place would read as JSON); an empty name or a ``;`` makes a
    JSON array that keeps the names as written (the index is a CSV people open)."""
    from lstv.studies import join_paths, split_paths

    assert join_paths(["a/IM1", "a/IM2"]) == "a/IM1;a/IM2"
    assert join_paths(["PAT0/SER1"]) == "PAT0/SER1"
    assert join_paths(["a/IM1", "[b]/IM2"]) == "a/IM1;[b]/IM2"
    assert join_paths(["[b]/IM2", "a/IM1"]) == '["[b]/IM2", "a/IM1"]'
    assert join_paths(["é/IM;1"]) == '["é/IM;1"]'
    assert join_paths(["", "a"]) == '["", "a"]'
    for names in (["a/IM1", "[b]/IM2"], ["", "a"]):
        assert split_paths(join_paths(names)) == names


def test_an_index_path_cell_with_no_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"^the index lists no path for this series$"):
        StudyTask(1, 2, path=";").series_source(tmp_path)


def write_index(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(INDEX_HEADER.strip().split(","))
        writer.writerows(rows)
    return path


def test_index_records_keep_their_headers_as_written(tmp_path):
    """An index's extra columns go into ``headers`` exactly: a name with a carriage return
    (legal on Linux) is not turned into a line feed, a byte-order mark is not part of the
    first column's name, and a short row's missing cells are empty (an empty ``path`` means
    the RSNA layout, so anything else would read another folder)."""
    from lstv.studies import read_series_records, study_tasks

    index = write_index(
        tmp_path / "index.csv", [[1, 2, "SAG T2", "1.2", "a\rb/IM1"]], encoding="utf-8-sig"
    )
    (record,) = read_series_records(index)
    assert (record.study_id, record.series_id, record.series_description) == (1, 2, "SAG T2")
    assert record.headers == {"study_uid": "1.2", "path": "a\rb/IM1"}
    short = tmp_path / "short.csv"
    short.write_text(INDEX_HEADER + "1,2,Sagittal T2/STIR\n")
    (record,) = read_series_records(short)
    assert record.headers == {"study_uid": "", "path": ""}
    (task,) = study_tasks(short)
    assert task.series_source(tmp_path) == tmp_path / "1" / "2"


# -------------------- mutation survivors (issue 20): the header rule, rule by rule


@pytest.mark.parametrize(
    "headers",
    [
        {"modality": "CT"},
        {"image_type": "DERIVED\\PRIMARY\\M"},
        {"image_type": "ORIGINAL\\SECONDARY"},
        {"scanning_sequence": "SE\\IR"},
        {"inversion_time": "1"},
        {"sequence_name": "*tir2d1_16"},  # Siemens TIRM
        {"scanning_sequence": "GR\\"},  # gradient echo, with an empty value
        {"acquisition_contrast": "PROTON_DENSITY"},
        {"echo_time": ""},
        {"repetition_time": ""},
        {"echo_time": "59.9"},
        {"repetition_time": "1499"},
    ],
)
def test_the_header_rule_rules_out_each_kind_of_series(headers):
    """Each header that says "not a sagittal T2-weighted primary MR series" rules it out on
    its own (the base record passes)."""
    from lstv.studies import header_rejection

    assert header_rejection(index_record(1, "series 1", **headers)) is not None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"modality": "mr"},
        {"echo_time": "60", "repetition_time": "1500"},  # the thresholds are T2-weighted
        {"acquisition_contrast": "MIXED"},
        {"acquisition_contrast": "unknown"},
        {"inversion_time": "0"},
        {"scanning_sequence": "SE\\"},
    ],
)
def test_the_header_rule_keeps_a_sagittal_t2_weighted_series(headers):
    from lstv.studies import header_rejection

    assert header_rejection(index_record(1, "series 1", **headers)) is None


# -------------------- mutation survivors (issue 20): reading the series CSV, the note


def test_a_series_csv_missing_columns_says_what_it_expected_and_found(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", "study_id,description\n1,x\n")
    expected = (
        rf"^{bad}: missing column\(s\) series_id, series_description; expected "
        r"study_id, series_id, series_description \(found study_id, description\)$"
    )
    with pytest.raises(ValueError, match=expected):
        read_series_table(bad)
    empty = write_csv(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match=r"\(found no header\)$"):
        read_series_table(empty)


def test_series_csv_cells_are_read_as_written(tmp_path):
    """A description with a line break inside its quotes keeps its carriage return, and a
    short row (no description cell) reads as an empty description."""
    path = tmp_path / "series.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([HEADER.strip().split(","), [1, 10, "SAG\r\nT2"], [2, 20]])
    assert read_series_table(path) == [(1, 10, "SAG\r\nT2"), (2, 20, "")]


def test_valid_ids_that_are_not_whole_numbers_are_refused(tmp_path):
    """A float64 list must hold whole, finite IDs: 1.5 would become study 1."""
    path = tmp_path / "valid_id.npy"
    for values in ([4736760728.0, 1.5], [4736760728.0, np.inf], [np.nan]):
        np.save(path, np.array(values))
        with pytest.raises(ValueError, match=rf"{path}: holds float64 values, not whole-number"):
            load_valid_ids(path)


def test_old_index_paths_that_read_as_json_but_not_as_a_list_of_names():
    """An older index's cell that happens to be JSON, but not a non-empty list of names, is
    still its ``;``-joined names."""
    from lstv.studies import split_paths

    assert split_paths("[1]") == ["[1]"]
    assert split_paths("[]") == ["[]"]
    assert split_paths("[1];[2]") == ["[1]", "[2]"]


def test_one_index_file_is_read_as_a_file_not_a_folder(tmp_path):
    (tmp_path / "ser").mkdir()
    (tmp_path / "ser" / "IM1").write_bytes(b"x")
    (tmp_path / "ser" / "IM2").write_bytes(b"x")
    assert StudyTask(1, 2, path="ser/IM2").series_source(tmp_path) == [tmp_path / "ser" / "IM2"]
    both = StudyTask(1, 2, path="ser;ser/IM1").series_source(tmp_path)
    assert both == [tmp_path / "ser", tmp_path / "ser" / "IM1"]


def test_the_note_of_a_study_without_a_series_lists_twelve_and_counts_the_rest():
    """The note names at most 12 series, by series ID, then how many more there were; a
    series without a description or without TR says so instead of failing."""
    from lstv.studies import SeriesRecord, select_series

    def note(n, **headers):
        records = [SeriesRecord(1, i, f"AX T2 {i}", headers) for i in range(n, 0, -1)]
        (task,) = select_series(records)
        assert task.series_id is None
        return task.note

    twelve = note(12)
    assert twelve.endswith("'AX T2 11'; 'AX T2 12')")
    assert "more" not in twelve
    assert note(13).endswith("'AX T2 12'; and 1 more)")
    assert "'AX T2 13'" not in note(14) and note(14).endswith("; and 2 more)")
    (task,) = select_series([SeriesRecord(1, 1, "", {"orientation": "axial", "echo_time": "90"})])
    assert task.note == "study has no sagittal T2 series (had: '(no description)' axial)"
