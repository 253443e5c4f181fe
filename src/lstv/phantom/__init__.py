"""Synthetic sagittal T2 lumbar MRI studies, written as RSNA-layout DICOM.

The real RSNA 2024 images cannot be downloaded everywhere the project runs, so the tests, the
shipped phantom localizer, the demo and the benchmark use studies drawn here. Each study is a
sagittal T2 series of 15-20 slices with real geometry, drawn like a T2 image: vertebral bodies with
rounded corners and textured fatty marrow, bright hydrated discs with a darker annulus, a bright
CSF canal with the darker cord and cauda equina, laminae and spinous processes, paraspinal muscle
and subcutaneous fat, abdominal contents, lordosis, random size, tilt and field of view, a smooth
receive-coil bias field and Rician noise. Parasagittal slices are the same anatomy narrowed by the
lateral half-width of each structure (bodies and discs shrink, the canal gives way to pedicles and
foramina, the spinous process to muscle), which is what a 3-4 mm slab sees.

Three kinds of study (:data:`LSTV_TYPES`), each with a subtype (:data:`LSTV_SUBTYPES`):

* ``normal``: T8..T12, five lumbar vertebrae, a sacrum of five fused, tapering segments with thin
  vestigial S1/S2 and S2/S3 remnant discs, and a coccyx.
* ``sacralization``: L5 is fused to the sacrum, trapezoid (shorter posteriorly, narrower below)
  and aligned with it. ``sacralization_complete``: the L5/S1 disc is a thin (1-3 mm), dim, partly
  bridged rudimentary disc or absent, both transverse processes fused with the ala (Castellvi
  III). ``sacralization_partial``: a narrowed (3-7 mm), darker disc, one transverse process fused
  and the other free, enlarged or articulating (Castellvi III or IV).
* ``lumbarization``: S1 is squared off like a lumbar body, six lumbar-type segments above a
  four-segment sacrum; its S1/S2 disc is fully formed (``lumbarization_full``) or thin, dim and
  partly bridged (``lumbarization_rudimentary``), about half each; Castellvi none to III.

What makes them hard where real spines are hard: every disc carries a Pfirrmann grade (1-5:
height loss, a dark and blurred nucleus, bulge, Modic-like endplate bands, small osteophytes),
more often and worse at L4/L5 and L5/S1 (about half the studies have a grade >= 4 disc there, so
a narrow dark L5/S1 is no sign of a transitional spine); an occasional grade-1
spondylolisthesis at L4/L5 or L5/S1; disc height grows gradually from T10 down, T11/T12 and
T12/L1 within the lumbar range; and the top of the field of view cuts a vertebra from T10 to L1
(:data:`FOV_TOPS`), so the count from the top is not always visible. ``lstv_labels.csv`` carries
``study_id, lstv, lstv_type``, then ``lstv_subtype``, ``castellvi`` and ``pfirrmann_l1_l2`` ..
``pfirrmann_l5_s1`` (a completely sacralized L5/S1 is graded 5 for what it looks like), then the
drawn values of the cues below: ``l5_wedge_deg`` (the angle between the upper and lower
endplates of the vertebra counted as L5 from L1, positive when taller anteriorly),
``lumbosacral_angle_deg`` (Ferguson's: the upper endplate of the segment counted as S1 against
the image's horizontal) and ``s1_s2_remnant`` (``none``, ``faint``, ``residual``, ``full``).

Normal spines vary where a score reads, with the spread published for real ones, and each
transitional cue is drawn from a distribution that overlaps the normal one (constants in
:mod:`~lstv.phantom.anatomy`; measured with ``python benchmarks/phantom_cues.py --n 200``, mean
+- SD):

.. list-table:: Cues, their normal and transitional distributions, and the sources
   :header-rows: 1

   * - cue
     - normal
     - transitional
     - source
   * - lumbosacral (Ferguson's) angle, ``lumbosacral_angle_deg``
     - S1's upper endplate against the image's horizontal ~ N(44.5, 9.9), 18-71 (measured
       43.8 +- 9.3), correlated with the lordosis (r = 0.64); the pelvic tilt on the table is
       the image rotation that realises it
     - sacralized: as normal (S1 is the sacrum); a lumbarized S1 is mobile and squared, its
       endplate flatter (33 +- 9 rudimentary, 25 +- 9 full): the sacral slope is drawn at S2
     - Okpala 2014, 274 supine radiographs: 44.5 +- 9.9, range 18-71 (PMC4199170)
   * - lumbar lordosis
     - segment angles x N(1.2, 0.33): L1-S1 42 +- 10 degrees (measured 41.8 +- 9.9)
     - as normal
     - 30-80 degrees (Hegazy 2014, 93 MRIs); supine 37 +- 13, standing 50 +- 11 (627
       volunteers, PMC6680033)
   * - L5 tilt towards the sacrum
     - lordosis-driven, +- 1.2 degrees
     - +N(6, 2) degrees complete, +N(4, 2) partial: about 1.1 and 0.8 of the normal spread
     - L5 incidence 22.4 normal vs 32.8 sacralized, about 1.1 SD (Dominguez et al., Eur
       Spine J 2016, 147 volunteers)
   * - L5 wedge, ``l5_wedge_deg``
     - 5.4 +- 2.6 degrees (lordosis-driven + N(0, 2))
     - +N(2.5, 2) complete (8.0 +- 3.3), +N(1.5, 2) partial (7.0 +- 3.3)
     - a "rhombus-shaped" sacralized L5 (Tokgoz 2014, 1049 MRIs); no published wedge angle
       found, so the overlap is set to about one SD
   * - L5 height and taper
     - height x (1 + N(0, 0.025)); taper 0.97 + N(0, 0.03)
     - height x N(0.95, 0.03) complete, N(0.965, 0.03) partial; taper N(0.87, 0.04),
       N(0.91, 0.04)
     - none found; overlap about one to two SD
   * - L5/S1 disc height
     - N(10, 1.6) mm before degeneration (L1/L2..L4/L5 SD 1.0 mm); Pfirrmann 4-5 lowers it
       to 25-78%
     - complete: rudimentary, 1-3 mm or absent; partial: 5-7 mm, grade 3-4; both overlap the
       degenerated normals
     - L5/S1 middle height 11.3 +- 1.7 mm, L4/L5 10.8 +- 1.0 (40 adults, "Age-related
       changes in height and wedging of L4/L5 and L5/S1")
   * - S1/S2 remnant, ``s1_s2_remnant``
     - none 25%, a faint line 36%, a small residual disc (2.5-4.2 mm) 39%
     - lumbarized: ``residual`` (rudimentary) or ``full`` (well-formed), about half each
     - an S1/S2 disc persisted in 39% of 56 adult sacra (Nayak et al., J Can Chiropr Assoc
       2016); a lumbarized S1 has a well-formed S1-2 disc (Tokgoz 2014)

Not spread by the literature, and so still a strong cue of the drawing: the distance from L4/L5
to L5/S1 over the mean spacing above it (disc centres of the drawn column) is 0.95 +- 0.05 in
normals, 0.88 +- 0.04 in partial and 0.84 +- 0.04 in complete sacralization, about two SD apart,
because the rudimentary or narrowed L5/S1 disc is drawn as the defining anatomy.

So a sacralized L5 is no longer always shorter, trapezoid and tilted by a fixed share of the
way to S1: what separates it from a normal L5 beyond the literature's overlap is the defining
anatomy (a rudimentary or narrowed L5/S1 disc, fused transverse processes), and for
lumbarization a squared S1 with a disc below it, which a residual S1/S2 disc in a normal spine
now resembles.

Label convention for transitional studies (``train_label_coordinates.csv``): levels are counted
from the top, as a radiologist reading a whole-spine localiser would, with L1 the first vertebra
below the last rib-bearing vertebra T12.

* Sacralization: L1/L2 .. L4/L5 are the four normal discs; L5/S1 is labelled at the centre of
  the thin rudimentary disc (or of the bony bridge where it is absent) between the fused L5 and
  the sacrum.
* Lumbarization: L1/L2 .. L5/S1 are the five discs counting down from L1 (so "L5/S1" is the disc
  between L5 and the lumbarized S1); the extra, well-formed S1/S2 disc below is not labelled.

Every study has one ``Sagittal T2/STIR`` series, labelled on its mid-sagittal slice (index
``D // 2`` in slice-normal order, see :func:`render_study`); some also have a small ``Sagittal
T1`` and/or ``Axial T2`` series so that series selection is exercised. About a third of the
T2 series are RLE Lossless, a sixth JPEG Lossless SV1 (encoded with python-gdcm: pydicom has no
encoder for it), the rest explicit VR little endian; about a quarter have instance numbers
shuffled against geometry. UIDs and every random draw derive from the seed, so the same seed
writes byte-identical files, whatever the number of ``workers``.

The package, along the steps of drawing a study: :mod:`~lstv.phantom.anatomy` (the column),
:mod:`~lstv.phantom.geometry` (curves and placement in the image), :mod:`~lstv.phantom.draw`
(one slice as a label map), :mod:`~lstv.phantom.tissues` and :mod:`~lstv.phantom.render`
(signal, noise, a series), :mod:`~lstv.phantom.dicom_writer` and :mod:`~lstv.phantom.dataset`
(files). Other export layouts belong next to them, as modules of this package.
"""

from lstv.phantom.anatomy import (
    CASTELLVI_TYPES,
    LSTV_SUBTYPES,
    LSTV_TYPES,
    Anatomy,
    Degeneration,
    Disc,
    Vertebra,
)
from lstv.phantom.dataset import (
    AXIAL_DESCRIPTION,
    CONDITION,
    LSTV_LABEL_COLUMNS,
    T1_DESCRIPTION,
    T2_DESCRIPTION,
    PhantomDataset,
    write_phantom_dataset,
)
from lstv.phantom.dicom_writer import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_LOSSLESS_SV1,
    MR_IMAGE_STORAGE,
    RLE_LOSSLESS,
    series_id_for,
    study_id_for,
)
from lstv.phantom.geometry import (
    AXIAL_ORIENTATION,
    FOV_TOPS,
    SAGITTAL_ORIENTATION,
    SeriesGeometry,
)
from lstv.phantom.population import sample_anatomy
from lstv.phantom.render import MAX_PIXEL, RenderedStudy, render_study, study_rng

__all__ = [
    "AXIAL_DESCRIPTION",
    "AXIAL_ORIENTATION",
    "CASTELLVI_TYPES",
    "CONDITION",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "FOV_TOPS",
    "JPEG_LOSSLESS_SV1",
    "LSTV_LABEL_COLUMNS",
    "LSTV_SUBTYPES",
    "LSTV_TYPES",
    "MAX_PIXEL",
    "MR_IMAGE_STORAGE",
    "RLE_LOSSLESS",
    "SAGITTAL_ORIENTATION",
    "T1_DESCRIPTION",
    "T2_DESCRIPTION",
    "Anatomy",
    "Degeneration",
    "Disc",
    "PhantomDataset",
    "RenderedStudy",
    "SeriesGeometry",
    "Vertebra",
    "render_study",
    "sample_anatomy",
    "series_id_for",
    "study_id_for",
    "study_rng",
    "write_phantom_dataset",
]
