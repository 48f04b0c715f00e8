"""DICOM files, DICOM series folders and NIfTI volumes read into one form: a :class:`Scan` of modality values.

Reading uses the field's libraries and only glues them: pydicom decodes the pixels (its plugins for compressed
transfer syntaxes), applies the modality LUT (rescale slope / intercept -> Hounsfield units for CT) and the file's
own VOI LUT or window (:func:`file_voi`); nibabel reads NIfTI and turns it to the closest canonical (RAS+)
orientation. Every volume is held as ``values[z, row, col]`` in one display convention — an axial slice with the
patient's anterior at the top and the patient's right on the image's left (radiological), ``z`` from inferior to
superior — so one slicing code (:mod:`gsco.data.render`) serves both.

Patient-identifying values never leave this module: pydicom's warnings are logged with those values replaced, and
errors name the file and what is wrong, never a tag's value (:func:`scrub`).
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gsco.errors import GscoError

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# tags whose values identify a patient (DICOM PS3.15 basic profile, the patient and visit ones)
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
                    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
                    "MedicalRecordLocator", "AccessionNumber", "ReferringPhysicianName", "PerformingPhysicianName",
                    "OperatorsName", "InstitutionName", "InstitutionAddress", "StudyID", "IssuerOfPatientID")
PLUGINS_HINT = ("pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (our extra: pip install -e '.[dicom]'), "
                "or python-gdcm; pydicom uses whichever is installed")


class MedicalImageError(GscoError, ValueError):
    """A DICOM or NIfTI input that cannot be read; the message names the file, never a patient's data."""


@dataclass
class Scan:
    """Modality values of one image or volume, in the display convention of this module."""

    values: np.ndarray  # (z, rows, cols) float64 (modality values: HU for CT), or (z, rows, cols, 3) uint8 colour
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm between slices, rows, columns
    invert: bool = False  # MONOCHROME1: low values are bright
    voi: object = None  # the file's own VOI: f(values) -> (windowed values, (low, high)) — see file_voi
    source: str = ""
    kind: str = "dicom"  # dicom | nifti
    notes: list[str] = field(default_factory=list)

    @property
    def colour(self) -> bool:
        return self.values.ndim == 4

    @property
    def depth(self) -> int:
        return self.values.shape[0]


def is_medical(path: Path) -> bool:
    """A DICOM file (``.dcm``, or any file with DICOM's ``DICM`` preamble, as PACS exports name them ``IM0001``), a
    series folder or a NIfTI volume (what :func:`read_scan` reads)."""
    name = path.name.lower()
    return path.is_dir() or name.endswith(".dcm") or name.endswith(NIFTI_SUFFIXES) or has_dicom_preamble(path)


def has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_scan(path: Path) -> Scan:
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return read_nifti(path)
    return read_dicom(path)


def identifying_values(ds) -> list[str]:
    """The patient-identifying values a dataset carries (to keep out of every message)."""
    values = []
    for keyword in IDENTIFYING_TAGS:
        value = ds.get(keyword)
        items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for item in items:
            text = str(item or "").strip()
            if len(text) >= 2:
                values += [text, *[p for p in re.split(r"[\^=]", text) if len(p) >= 2]]
    return sorted(set(values), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def _read_dataset(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            raise MedicalImageError(f"{path}: not a DICOM file (no DICOM preamble)") from None
        except Exception as exc:  # noqa: BLE001 - a damaged file of any kind is one error naming it
            raise MedicalImageError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    secrets = identifying_values(ds)
    for w in caught:
        logger.warning("%s: %s", path, scrub(str(w.message), secrets))
    return ds, secrets


def _pixels(ds, path: Path, secrets: list[str]) -> np.ndarray:
    """The stored pixel array (pydicom's decoders; a missing plugin is one error naming what to install)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise MedicalImageError(f"{path}: has no pixel data (not an image: SOP class "
                                f"{getattr(ds.get('SOPClassUID'), 'name', 'unknown')})")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - decoder errors vary by plugin
            message = scrub(str(exc), secrets)
            if syntax is not None and syntax.is_compressed and ("plugin" in message or "missing" in message
                                                               or "dependencies" in message):
                raise MedicalImageError(f"{path}: its pixel data is compressed ({syntax.name}) and no installed "
                                        f"decoder reads it: {PLUGINS_HINT}") from None
            raise MedicalImageError(f"{path}: its pixel data cannot be decoded ({type(exc).__name__}: "
                                    f"{message[:300]})") from None
    for w in caught:
        logger.warning("%s: %s", path, scrub(str(w.message), secrets))
    return arr


def file_voi(ds):
    """The dataset's own VOI (VOI LUT Sequence or window centre/width, as pydicom's ``apply_voi_lut`` applies it,
    the LUT first) as ``f(values) -> (windowed, (low, high))``; None when the file has neither. The output range
    of a LUT is its descriptor's (0 to 2^bits - 1, the values pydicom's LUT output can take); of a window, what the
    extremes map to (a window clips, so they give its ends)."""
    lut = ds.get("VOILUTSequence")
    if not lut and "WindowCenter" not in ds:
        return None
    from pydicom.pixels import apply_voi_lut

    def apply(values: np.ndarray):
        with warnings.catch_warnings():  # a LUT on float (rescaled) values: pydicom's own pipeline does the same
            warnings.filterwarnings("ignore", message=".*VOI LUT on a float input.*")
            windowed = apply_voi_lut(values, ds)
        if lut:
            return windowed, (0.0, float(2 ** int(lut[0].LUTDescriptor[2]) - 1))
        extremes = apply_voi_lut(np.array([-1e12, 1e12]), ds)
        return windowed, (float(np.min(extremes)), float(np.max(extremes)))

    return apply


def modality_values(ds, arr: np.ndarray, path: Path | str) -> np.ndarray:
    """pydicom's modality LUT (rescale slope / intercept, or a Modality LUT Sequence) as float64; rescale values
    that are not numbers are one error naming the file and the tag."""
    from pydicom.pixels import apply_modality_lut

    for tag in ("RescaleSlope", "RescaleIntercept"):
        value = ds.get(tag)
        try:
            _ = value is None or float(value)
        except (TypeError, ValueError):
            raise MedicalImageError(f"{path}: {tag} is {str(value)[:40]!r}, not a number; fix the tag or leave "
                                    "the file out") from None
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def _colour(ds, arr: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB from a colour or palette dataset (pydicom has already turned YBR into RGB)."""
    from pydicom.pixels import apply_color_lut

    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.dtype != np.uint8:
        top = float(2 ** int(ds.get("BitsStored", 16)) - 1) if arr.dtype.kind in "ui" else float(arr.max() or 1)
        arr = np.clip(np.asarray(arr, dtype=np.float64) / top * 255.0, 0, 255).round().astype(np.uint8)
    return arr


def _spacing(ds, between: float | None = None) -> tuple[float, float, float]:
    rows, cols = (float(v) for v in ds.get("PixelSpacing", None) or (1.0, 1.0))
    z = between or float(ds.get("SpacingBetweenSlices", None) or ds.get("SliceThickness", None) or 1.0)
    return (abs(z) or 1.0, rows or 1.0, cols or 1.0)


def read_dicom(path: Path) -> Scan:
    """One DICOM file: a single image (depth 1) or a multi-frame volume (frames in stored order)."""
    ds, secrets = _read_dataset(path)
    arr = _pixels(ds, path, secrets)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if photometric.startswith("MONOCHROME"):
        values = modality_values(ds, arr, path)
        values = values if frames > 1 else values[None]
        return Scan(values, _spacing(ds), photometric == "MONOCHROME1", file_voi(ds), str(path))
    colour = _colour(ds, arr)
    return Scan(colour if frames > 1 else colour[None], _spacing(ds), False, None, str(path))


def slice_position(ds) -> float | None:
    """Where a slice lies along its normal (ImagePositionPatient on the cross product of ImageOrientationPatient's
    row and column directions); None without those tags."""
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return None
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal))


def read_dicom_series(folder: Path) -> Scan:
    """A folder of one series' slices, sorted by position along the slice normal (InstanceNumber where positions
    are missing); each slice through its own modality LUT; the middle slice's VOI for the volume. Files that are
    not DICOM (a DICOMDIR, notes) are passed over."""
    headers = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != "DICOMDIR"):
        try:
            ds, _ = _read_dataset(path, stop_before_pixels=True)
        except MedicalImageError:
            continue
        if "PixelData" in ds or "Rows" in ds:
            headers.append((path, ds))
    if not headers:
        raise MedicalImageError(f"{folder}: no DICOM image files in this folder")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        numbers = sorted({str(ds.get("SeriesNumber", "?")) for _, ds in headers})
        raise MedicalImageError(f"{folder}: holds {len(series)} series (series numbers {', '.join(numbers)}); "
                                "give the folder of one series")
    positions = [slice_position(ds) for _, ds in headers]
    if None not in positions:
        order = sorted(range(len(headers)), key=lambda i: positions[i])
    else:
        order = sorted(range(len(headers)), key=lambda i: int(headers[i][1].get("InstanceNumber", 0) or 0))
    slices, datasets = [], []
    for i in order:
        ds, secrets = _read_dataset(headers[i][0])
        arr = _pixels(ds, headers[i][0], secrets)
        if arr.ndim != 2:
            raise MedicalImageError(f"{headers[i][0]}: a series folder takes single-frame greyscale slices; "
                                    "give a multi-frame file on its own")
        slices.append(modality_values(ds, arr, headers[i][0]))
        datasets.append(ds)
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise MedicalImageError(f"{folder}: slices of different sizes {sorted(shapes)}")
    between = float(np.median(np.diff(sorted(positions)))) if None not in positions and len(slices) > 1 else None
    middle = datasets[len(datasets) // 2]
    return Scan(np.stack(slices), _spacing(middle, between), middle.get("PhotometricInterpretation") == "MONOCHROME1",
                file_voi(middle), str(folder))


def read_nifti(path: Path) -> Scan:
    """A NIfTI volume in its closest canonical (RAS+) orientation, scaled by its header's slope / intercept; a 4D
    series gives its first volume (noted, and said when rendered)."""
    try:
        import nibabel as nib
    except ImportError:
        raise MedicalImageError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
    notes = []
    try:
        image = nib.load(str(path))
        if len(image.shape) == 4:  # fMRI, DWI, ...: only the first volume is read (a slice of the file)
            notes.append(f"a 4D series of {image.shape[3]} volumes: its first volume is shown")
            image = image.slicer[..., 0]
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several kinds for damaged files
        raise MedicalImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise MedicalImageError(f"{path}: a {data.ndim}-dimensional NIfTI image; expected 2D, 3D or 4D")
    zooms = [float(z) for z in image.header.get_zooms()[:3]] + [1.0] * (3 - len(image.header.get_zooms()[:3]))
    return Scan(canonical_to_display(data), (zooms[2], zooms[1], zooms[0]), False, None, str(path), "nifti", notes)


def nifti_voxels(path: Path) -> int:
    """How many voxels :func:`read_nifti` would hold (the header's shape, a 4D series' first volume): cheap, so a
    caller can refuse a file that decompresses to more than it will hold before reading it."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:  # noqa: BLE001
        raise MedicalImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return int(np.prod(shape[:3], dtype=np.int64))


def canonical_to_display(data: np.ndarray) -> np.ndarray:
    """RAS+ ``data[x, y, z]`` -> ``values[z, row, col]``: rows from anterior to posterior, columns from the patient's
    right to left (an axial slice as radiologists view it), z from inferior to superior."""
    return np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))


def display_to_canonical(values: np.ndarray) -> np.ndarray:
    """The inverse of :func:`canonical_to_display`: ``values[z, row, col]`` -> RAS+ ``data[x, y, z]``."""
    return np.ascontiguousarray(values.transpose(2, 1, 0)[::-1, ::-1, :])


def write_nifti(path: Path, values: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    """A volume held as ``values[z, row, col]`` (e.g. a MedMNIST 3D volume, D x H x W) written as NIfTI in RAS+
    orientation, so that reading it back (:func:`read_nifti`) gives ``values`` again."""
    import nibabel as nib

    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(display_to_canonical(values), affine), str(path))
