"""Tissue labels and their relative MR signal.

Each slice is first drawn as a label map (:mod:`lstv.phantom.draw`), then mapped to signal per
contrast (:mod:`lstv.phantom.render`).
"""

AIR, SKIN, FAT, MUSCLE, ABDOMEN, LIVER, MARROW, CORTEX, POST_BONE, ANNULUS = range(10)
CSF, CORD, EPIDURAL_FAT, LIGAMENT, VESSEL, BLADDER, FACET_FLUID, NERVE = range(10, 18)
# Degenerative endplate changes (Modic 1 oedema, 2 fatty, 3 sclerosis).
MODIC_OEDEMA, MODIC_FAT, SCLEROSIS = range(18, 21)
NUCLEUS0 = 32  # one label per disc, so each disc has its own hydration
BLUR0 = 64  # per disc, the blurred nucleus/annulus border of a degenerated disc
BOWEL0 = 96  # one label per bowel loop
N_LABELS = 256

# fmt: off
# Relative signal of each tissue (CSF ~ 1). T2 fast spin echo: fluid and fat bright, marrow
# intermediate, muscle, cortex, ligaments and flowing blood dark.
T2_SIGNAL = {
    AIR: 0.01, SKIN: 0.30, FAT: 0.72, MUSCLE: 0.20, ABDOMEN: 0.50, LIVER: 0.20, MARROW: 0.46,
    CORTEX: 0.07, POST_BONE: 0.40, ANNULUS: 0.30, CSF: 1.0, CORD: 0.36, EPIDURAL_FAT: 0.70,
    LIGAMENT: 0.10, VESSEL: 0.06, BLADDER: 0.95, FACET_FLUID: 0.75, NERVE: 0.32,
    MODIC_OEDEMA: 0.72, MODIC_FAT: 0.62, SCLEROSIS: 0.12,
}
# T1 spin echo, for the small extra "Sagittal T1" series: fat and marrow bright, fluid dark.
T1_SIGNAL = {
    AIR: 0.01, SKIN: 0.45, FAT: 1.0, MUSCLE: 0.38, ABDOMEN: 0.80, LIVER: 0.50, MARROW: 0.80,
    CORTEX: 0.07, POST_BONE: 0.72, ANNULUS: 0.30, CSF: 0.16, CORD: 0.48, EPIDURAL_FAT: 0.95,
    LIGAMENT: 0.12, VESSEL: 0.08, BLADDER: 0.12, FACET_FLUID: 0.20, NERVE: 0.45,
    MODIC_OEDEMA: 0.35, MODIC_FAT: 0.98, SCLEROSIS: 0.12,
}
# Fraction of each tissue's signal modulated by the texture field (fatty marrow is speckled).
TEXTURE = {
    MARROW: 0.22, MODIC_FAT: 0.15, MODIC_OEDEMA: 0.10, POST_BONE: 0.18, ABDOMEN: 0.12,
    MUSCLE: 0.10, FAT: 0.06, LIVER: 0.05,
}
# fmt: on
