"""Disc levels the localizer predicts, in class order (class 0 is background)."""

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
LEVEL_KEYS = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
NUM_CLASSES = len(LEVELS) + 1
LEVEL_TO_CLASS = {name: i + 1 for i, name in enumerate(LEVELS)}
DEFAULT_IMAGE_SIZE = 160
# Slices each side of the centre the model also reads (lstv infer --parasagittal): the
# prototype of issue 18 measured its agreement cues on +-1 and +-2; more than 10 a side leaves
# the lumbar spine in any sagittal series.
DEFAULT_PARASAGITTAL = 2
MAX_PARASAGITTAL = 10
