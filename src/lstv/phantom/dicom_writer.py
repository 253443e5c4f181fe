"""DICOM writing: ids, UIDs, headers and pixel data in three transfer syntaxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstv.phantom.geometry import SeriesGeometry

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

MAX_STUDIES_PER_SEED = 100_000
# Study and series ids are a bijection of k = (seed, index) modulo a prime P just below 9.99e9
# (an affine map, then cubing, which permutes Z_P because gcd(3, P - 1) = 1), offset into 7-10
# digits: distinct pairs give distinct ids, so different seeds never share an id.
_ID_PRIME = 9_989_999_933
_ID_OFFSET = 1_000_000
_STUDY_ID_MUL, _STUDY_ID_ADD = 2_654_435_761, 1_234_567_891
_SERIES_ID_MUL, _SERIES_ID_ADD = 2_246_822_519, 3_266_489_917


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["lstv-phantom", *map(str, parts)]))


def _scrambled_id(k: int, mul: int, add: int) -> int:
    return _ID_OFFSET + pow((k * mul + add) % _ID_PRIME, 3, _ID_PRIME)


def study_id_for(seed: int, index: int) -> int:
    """The study id of study ``index`` of seed ``seed`` (7-10 digits, unique per pair)."""
    return _scrambled_id(seed * MAX_STUDIES_PER_SEED + index, _STUDY_ID_MUL, _STUDY_ID_ADD)


def series_id_for(seed: int, index: int, series: int) -> int:
    """The series id of series ``series`` (0..3) of study ``index`` of seed ``seed``."""
    k = (seed * MAX_STUDIES_PER_SEED + index) * 4 + series
    return _scrambled_id(k, _SERIES_ID_MUL, _SERIES_ID_ADD)


@dataclass(frozen=True)
class SeriesSpec:
    """Per-series DICOM header values."""

    study_id: int
    series_id: int
    series_number: int
    description: str
    contrast: str
    transfer_syntax: str
    instance_numbers: tuple[int, ...]
    study_date: str
    study_time: str
    field_strength: float


def _gdcm_jpeg_lossless(frame: np.ndarray) -> bytes:
    """JPEG Lossless SV1 codestream of one 12-bit frame (pydicom has no encoder for it)."""
    try:
        import gdcm
    except ImportError as exc:  # a declared dependency; say which one if it is missing
        raise RuntimeError(
            "JPEG Lossless phantoms need python-gdcm (pip install python-gdcm)"
        ) from exc

    # ImageWriter owns the image; keep it alive while the converter reads it.
    writer = gdcm.ImageWriter()
    image = writer.GetImage()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((frame.shape[1], frame.shape[0], 1))
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.MONOCHROME2)
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ImplicitVRLittleEndian))
    image.SetPixelFormat(gdcm.PixelFormat(1, 16, 12, 11, 0))
    elem = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    elem.SetByteStringValue(np.ascontiguousarray(frame, "<u2").tobytes())
    image.SetDataElement(elem)
    converter = gdcm.ImageChangeTransferSyntax()
    converter.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    converter.SetInput(image)
    if not converter.Change():
        raise RuntimeError("python-gdcm could not encode JPEG Lossless SV1")
    fragments = converter.GetOutput().GetDataElement().GetSequenceOfFragments()
    if fragments is None or fragments.GetNumberOfFragments() != 1:
        raise RuntimeError("python-gdcm returned an unexpected JPEG Lossless encapsulation")
    buffer = fragments.GetFragment(0).GetByteValue().GetBuffer()
    return buffer.encode("utf-8", "surrogateescape")


def _rle_plugin() -> str:
    """A fixed RLE encoder, so that files are byte-identical run to run on one installation."""
    from pydicom.pixels import get_encoder
    from pydicom.uid import RLELossless

    available = get_encoder(RLELossless).available_plugins
    for name in ("pylibjpeg", "gdcm", "pydicom"):
        if name in available:
            return name
    return ""


def _base_dataset(
    spec: SeriesSpec,
    geometry: SeriesGeometry,
    frame_of_reference: str,
    study_uid: str,
    series_uid: str,
):
    from pydicom.dataset import Dataset, FileMetaDataset

    import lstv

    t2 = spec.contrast == "T2"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = spec.study_time
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "lstv phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LUMBAR SPINE"
    ds.SeriesDescription = spec.description
    ds.ManufacturerModelName = "synthetic"
    ds.PatientName = f"PHANTOM^{spec.study_id}"
    ds.PatientID = str(spec.study_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "LSPINE"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "OSP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "tse2d1" if t2 else "se2d1"
    ds.SliceThickness = f"{geometry.slice_thickness:g}"
    ds.RepetitionTime = "3500" if t2 else "550"
    ds.EchoTime = "95" if t2 else "12"
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = f"{42.577 * spec.field_strength:.3f}"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = f"{spec.field_strength:g}"
    ds.SpacingBetweenSlices = f"{geometry.spacing_between_slices:g}"
    ds.EchoTrainLength = "17" if t2 else "3"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "190"
    ds.SoftwareVersions = f"lstv {lstv.__version__}"
    ds.ProtocolName = spec.description
    ds.ReceiveCoilName = "SPINE"
    ds.TransmitCoilName = "BODY"
    ds.AcquisitionMatrix = [0, geometry.cols, geometry.rows, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = "150" if t2 else "90"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [f"{v:g}" for v in geometry.orientation]
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geometry.rows
    ds.Columns = geometry.cols
    ds.PixelSpacing = [f"{geometry.pixel_spacing:g}"] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def write_series_files(
    series_dir: Path, volume: np.ndarray, geometry: SeriesGeometry, spec: SeriesSpec, seed: int
) -> None:
    """Write one file per slice, ``{InstanceNumber}.dcm``, in the spec's transfer syntax."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    series_dir.mkdir(parents=True, exist_ok=True)
    study_uid = _uid(seed, spec.study_id, "study")
    series_uid = _uid(seed, spec.study_id, spec.series_id, "series")
    frame_uid = _uid(seed, spec.study_id, "frame-of-reference")
    ds = _base_dataset(spec, geometry, frame_uid, study_uid, series_uid)
    normal = np.cross(geometry.orientation[:3], geometry.orientation[3:])
    rle_plugin = _rle_plugin() if spec.transfer_syntax == RLE_LOSSLESS else ""
    # One display window for the series, as scanners write it.
    lo, median, hi = np.percentile(volume[:, ::4, ::4], (1, 50, 99.5))
    ds.WindowCenter = int(median + 400)
    ds.WindowWidth = int(max(hi - lo, 100))
    for k, instance in enumerate(spec.instance_numbers):
        frame = np.ascontiguousarray(volume[k], "<u2")
        sop_uid = _uid(seed, spec.study_id, spec.series_id, instance)
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [f"{v:.3f}" for v in geometry.positions[k]]
        ds.SliceLocation = f"{float(np.dot(geometry.positions[k], normal)):.3f}"
        if spec.transfer_syntax == RLE_LOSSLESS:
            ds.LossyImageCompression = "00"
            ds.compress(RLELossless, frame, encoding_plugin=rle_plugin, generate_instance_uid=False)
        elif spec.transfer_syntax == JPEG_LOSSLESS_SV1:
            ds.LossyImageCompression = "00"
            ds.PixelData = encapsulate([_gdcm_jpeg_lossless(frame)])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = JPEG_LOSSLESS_SV1
        else:
            ds.PixelData = frame.tobytes()
            ds["PixelData"].VR = "OW"
            ds["PixelData"].is_undefined_length = False
            ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        ds.save_as(series_dir / f"{instance}.dcm", enforce_file_format=True)
