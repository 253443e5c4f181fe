"""Disc levels in class order (lstv.levels): one list every module reads."""

from lstv.levels import LEVEL_KEYS, LEVEL_TO_CLASS, LEVELS, NUM_CLASSES


def test_keys_are_the_levels_in_csv_spelling_and_class_order():
    assert LEVELS[0] == "L1/L2" and LEVELS[-1] == "L5/S1"
    assert tuple(name.lower().replace("/", "_") for name in LEVELS) == LEVEL_KEYS
    assert len(LEVELS) + 1 == NUM_CLASSES  # class 0 is background
    assert [LEVEL_TO_CLASS[name] for name in LEVELS] == [1, 2, 3, 4, 5]
