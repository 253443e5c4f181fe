"""A hospital-style export of phantom studies: what a PACS or a patient CD gives a radiologist.

The RSNA-layout phantom DICOM (``lstv phantom``) is read back and copies are written as an export
from a hospital would be: nested patient / study / series folders, file names without an
extension, a DICOMDIR (written by pydicom's :class:`~pydicom.fileset.FileSet`), series
descriptions in the spellings of several vendors (``SAG T2``, ``T2 SAG``, ``t2_tse_sag_384``,
``Sag T2 FRFSE``), T1 and axial series that the selection must reject, and one sagittal T2 in
five (at least one) stored as a single Enhanced MR multi-frame file whose only hint is in its
headers (``T2W_TSE``: no "sag" in the description). The pixels and the geometry are those of
the source files, so a study gives the same volume from both layouts.

``hospital_labels.csv`` (next to the export, not in it) holds the labels under the study IDs
``lstv index`` gives the export.
"""

from __future__ import annotations

import copy
import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstv import rsna
from lstv.atomic import write_csv_atomic

log = logging.getLogger(__name__)

EXPORT_DIR = "hospital_export"
LABELS_CSV = "hospital_labels.csv"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
ENHANCED_DESCRIPTION = "T2W_TSE"  # a Philips-style name with no plane: the headers decide
# The sagittal T2 of study k is described T2_DESCRIPTIONS[k % 5] (None: Enhanced MR; in an
# export of fewer than five studies the last one is the Enhanced MR).
T2_DESCRIPTIONS = ("SAG T2", "T2 SAG", "t2_tse_sag_384", "Sag T2 FRFSE", None)
T1_DESCRIPTIONS = ("SAG T1", "t1_tse_sag")
AXIAL_DESCRIPTIONS = ("AX T2", "t2_tse_tra")
# Per-slice attributes that an Enhanced MR file keeps in its functional groups instead.
_PER_FRAME = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SliceLocation",
    "EchoTime",
    "RepetitionTime",
    "WindowCenter",
    "WindowWidth",
)


@dataclass(frozen=True)
class HospitalExport:
    """What :func:`write_hospital_export` wrote."""

    root: Path
    labels_csv: Path
    n_studies: int
    n_files: int
    enhanced_series_uids: tuple[str, ...]


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _descriptions(k: int, n_studies: int, description: str) -> str | None:
    if description == rsna.SAGITTAL_T2:
        if k == n_studies - 1 < len(T2_DESCRIPTIONS) - 1:
            return None
        return T2_DESCRIPTIONS[k % len(T2_DESCRIPTIONS)]
    if description == rsna.SAGITTAL_T1:
        return T1_DESCRIPTIONS[k % len(T1_DESCRIPTIONS)]
    return AXIAL_DESCRIPTIONS[k % len(AXIAL_DESCRIPTIONS)]


def enhanced_mr(datasets: list) -> object:
    """One Enhanced MR Image Storage data set holding the frames of single-frame MR images.

    Frames keep the order of ``datasets``; each frame's position goes into its per-frame
    functional group, orientation, pixel spacing and MR timing into the shared group. Pixels
    are stored uncompressed (explicit VR little endian).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    first = datasets[0]
    frames = np.stack([np.asarray(d.pixel_array, dtype="<u2") for d in datasets])
    ds = copy.deepcopy(first)
    for keyword in (*_PER_FRAME, "PixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    sop_uid = _uid("enhanced", first.SeriesInstanceUID)
    ds.SOPClassUID = ENHANCED_MR_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.AcquisitionContrast = "T2"
    ds.PulseSequenceName = str(first.get("SequenceName", "TSE"))
    ds.NumberOfFrames = len(datasets)

    shared = Dataset()
    measures, orientation, timing, echo = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.get("SliceThickness", "4")
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    timing.RepetitionTime = float(first.RepetitionTime)
    echo.EffectiveEchoTime = float(first.EchoTime)
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    shared.MREchoSequence = Sequence([echo])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k, d in enumerate(datasets):
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = d.ImagePositionPatient
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        item.PlanePositionSequence = Sequence([position])
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _series_datasets(folder: Path) -> list:
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))


def write_hospital_export(source_root: str | Path, output_dir: str | Path) -> HospitalExport:
    """Copy the RSNA-layout phantom under ``source_root`` into a hospital-style export.

    Args:
        source_root: a folder ``lstv phantom`` wrote (``train_images/``, the series CSV and
            ``lstv_labels.csv``).
        output_dir: where ``hospital_export/`` (with its DICOMDIR) and ``hospital_labels.csv``
            go; an existing export there is an error.

    Raises:
        FileNotFoundError: the source has no series CSV.
        FileExistsError: ``output_dir/hospital_export`` exists already.
    """
    from pydicom.fileset import FileSet

    from lstv.index import uid_to_id
    from lstv.studies import read_series_table

    source_root, output_dir = Path(source_root), Path(output_dir)
    export = output_dir / EXPORT_DIR
    if export.exists():
        raise FileExistsError(f"{export} exists: choose another --output_dir")
    rows = read_series_table(source_root / rsna.SERIES_CSV)
    studies = sorted({study_id for study_id, _, _ in rows})
    fileset = FileSet()
    fileset.ID = "LSTV_PHANTOM"
    study_uids: dict[int, str] = {}
    enhanced = []
    for k, study_id in enumerate(studies):
        for _, series_id, description in sorted(r for r in rows if r[0] == study_id):
            folder = source_root / rsna.TRAIN_IMAGES / str(study_id) / str(series_id)
            datasets = _series_datasets(folder)
            study_uids[study_id] = str(datasets[0].StudyInstanceUID)
            new_description = _descriptions(k, len(studies), description)
            if new_description is None:
                datasets = [enhanced_mr(datasets)]
                new_description = ENHANCED_DESCRIPTION
                enhanced.append(str(datasets[0].SeriesInstanceUID))
            for ds in datasets:
                ds.SeriesDescription = new_description
                ds.ProtocolName = new_description
                fileset.add(ds)
    output_dir.mkdir(parents=True, exist_ok=True)
    fileset.write(export)
    labels = _write_labels(source_root, output_dir / LABELS_CSV, study_uids, uid_to_id)
    n_files = sum(1 for p in export.rglob("*") if p.is_file())
    log.info("hospital export of %d studies (%d files) in %s", len(studies), n_files, export)
    return HospitalExport(export, labels, len(studies), n_files, tuple(enhanced))


def _write_labels(source_root: Path, path: Path, study_uids: dict[int, str], uid_to_id) -> Path:
    """The phantom's labels keyed by the study IDs ``lstv index`` gives the export."""
    with open(source_root / "lstv_labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    for row in rows:
        row["study_id"] = uid_to_id(study_uids[int(row["study_id"])])
    return write_csv_atomic(path, columns, rows)
