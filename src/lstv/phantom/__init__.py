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

Three kinds of study (:data:`LSTV_TYPES`):

* ``normal``: T8..T12 (those within the field of view), five lumbar vertebrae, a sacrum of five
  fused, tapering segments with thin vestigial S1/S2 and S2/S3 remnant discs, and a coccyx.
* ``sacralization``: L5 is partly fused to the sacrum. It is trapezoid (shorter posteriorly,
  narrower below), aligned with the sacrum, and the L5/S1 disc is a thin (1-3 mm), dim, partly
  bridged rudimentary disc or absent. Only four mobile lumbar discs look normal.
* ``lumbarization``: S1 is separated from S2 by a well-formed disc and is squared off like a
  lumbar body: six lumbar-type segments above a four-segment sacrum.

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
writes byte-identical files.

The package, along the steps of drawing a study: :mod:`~lstv.phantom.anatomy` (the column),
:mod:`~lstv.phantom.geometry` (curves and placement in the image), :mod:`~lstv.phantom.draw`
(one slice as a label map), :mod:`~lstv.phantom.tissues` and :mod:`~lstv.phantom.render` (signal,
noise, a series), :mod:`~lstv.phantom.dicom_writer` and :mod:`~lstv.phantom.dataset` (files).
"""

from lstv.phantom.anatomy import LSTV_TYPES, Anatomy, Disc, Vertebra, sample_anatomy
from lstv.phantom.dataset import (
    AXIAL_DESCRIPTION,
    CONDITION,
    T1_DESCRIPTION,
    T2_DESCRIPTION,
    PhantomDataset,
    _plan_studies,
    _valid_split,
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
from lstv.phantom.geometry import AXIAL_ORIENTATION, SAGITTAL_ORIENTATION, SeriesGeometry
from lstv.phantom.render import MAX_PIXEL, RenderedStudy, render_study, study_rng

__all__ = [
    "AXIAL_DESCRIPTION",
    "AXIAL_ORIENTATION",
    "CONDITION",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "JPEG_LOSSLESS_SV1",
    "LSTV_TYPES",
    "MAX_PIXEL",
    "MR_IMAGE_STORAGE",
    "RLE_LOSSLESS",
    "SAGITTAL_ORIENTATION",
    "T1_DESCRIPTION",
    "T2_DESCRIPTION",
    "Anatomy",
    "Disc",
    "PhantomDataset",
    "RenderedStudy",
    "SeriesGeometry",
    "Vertebra",
    "_plan_studies",
    "_valid_split",
    "render_study",
    "sample_anatomy",
    "series_id_for",
    "study_id_for",
    "study_rng",
    "write_phantom_dataset",
]
