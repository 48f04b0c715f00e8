"""Readers for the two on-disk layouts: MedMNIST-style npz files and CSV/JSONL metafiles of image paths.

Both return a ``SplitData``: uint8 images (or paths, read lazily) and integer labels shaped ``(N, 1)`` for
single-label tasks and ``(N, L)`` for multi-label ones. Every problem is one ``DatasetError`` naming the file and
the key or line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from gsco.data.medical import MedicalImageError, is_medical
from gsco.data.registry import MEDMNIST_2D, MEDMNIST_3D, DatasetError, DatasetInfo
from gsco.data.render import open_plain_image, render
from gsco.runtime import reading

# image files the readers take; a DICOM series is a folder
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")


@dataclasses.dataclass
class SplitData:
    """One split: ``images`` is a uint8 array (N,H,W) / (N,H,W,3) / volumes (N,D,H,W), or a list of image paths."""

    images: np.ndarray | list[Path]
    labels: np.ndarray  # int64, (N, 1) or (N, L)
    ids: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def npz_filename(name: str, img_size: int) -> str:
    """MedMNIST+ naming: ``{name}.npz`` at 28 px, ``{name}_{size}.npz`` at 64/128/224."""
    return f"{name}.npz" if img_size == 28 else f"{name}_{img_size}.npz"


def check_labels(labels: np.ndarray, info: DatasetInfo, where: str) -> np.ndarray:
    """Return labels as int64 (N,1) or (N,L), or raise naming ``where`` and the first bad value."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise DatasetError(f"{where}: labels must be shaped (N,), (N,1) or (N,L), got {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DatasetError(f"{where}: labels must be integers, found non-integer values")
    elif labels.dtype.kind not in "iub":
        raise DatasetError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if info.multi_label:
        if labels.shape[1] != info.num_classes:
            raise DatasetError(
                f"{where}: multi-label dataset {info.name!r} has {info.num_classes} labels "
                f"({', '.join(info.label_names)}), but the labels have {labels.shape[1]} columns"
            )
        bad = np.argwhere((labels != 0) & (labels != 1))
        if len(bad):
            r, c = bad[0]
            raise DatasetError(f"{where}: multi-label values must be 0 or 1; row {r} column {c} is {labels[r, c]}")
    else:
        if labels.shape[1] != 1:
            raise DatasetError(f"{where}: single-label task {info.task!r} needs one label per image, "
                               f"got {labels.shape}")
        bad = np.flatnonzero((labels[:, 0] < 0) | (labels[:, 0] >= info.num_classes))
        if len(bad):
            raise DatasetError(
                f"{where}: label {labels[bad[0], 0]} at row {bad[0]} is out of range; dataset {info.name!r} has "
                f"{info.num_classes} classes (0..{info.num_classes - 1}: {', '.join(info.label_names)})"
            )
    return labels


def read_npz_split(path: Path, split: str, info: DatasetInfo, img_size: int | None = None) -> SplitData:
    """Read ``{split}_images`` / ``{split}_labels`` from a MedMNIST-layout npz, without pickles."""
    if not path.is_file():
        raise DatasetError(
            f"dataset file {path} not found (dataset {info.name!r}): "
            + (f"python -m gsco.data.prepare {info.name} --root {path.parent} fetches it, or set data_path"
               if info.name in MEDMNIST_2D + MEDMNIST_3D else "put the npz there or set data_path (see DATASET.md)")
        )
    img_key, lbl_key = f"{split}_images", f"{split}_labels"
    advice = "is it truncated or damaged? replace it with a fresh copy (DATASET.md)"
    with reading(path, "npz file", advice, DatasetError):
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            arrays = {key: npz[key] for key in (img_key, lbl_key) if key in keys}
    for key in (img_key, lbl_key):
        if key not in arrays:
            raise DatasetError(f"{path}: key {key!r} missing; the file has {sorted(keys)}")
    images, labels = arrays[img_key], arrays[lbl_key]

    where = f"{path} key {img_key!r}"
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: expected uint8 images, got {images.dtype}")
    if info.dims == 3:
        return _volume_split(path, images, labels, info, img_size, where, lbl_key)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DatasetError(f"{where}: expected images shaped (N,H,W) or (N,H,W,3), got {images.shape}")
    channels = 1 if images.ndim == 3 else 3
    if info.n_channels is not None and channels != info.n_channels:
        raise DatasetError(f"{where}: dataset {info.name!r} has {info.n_channels} channel(s), the file has {channels}")
    if img_size is not None and images.shape[1:3] != (img_size, img_size):
        raise DatasetError(f"{where}: expected {img_size}x{img_size} images, got {images.shape[1]}x{images.shape[2]}")
    labels = check_labels(labels, info, f"{path} key {lbl_key!r}")
    if len(labels) != len(images):
        raise DatasetError(f"{path}: {len(images)} images in {img_key!r} but {len(labels)} labels in {lbl_key!r}")
    return SplitData(images=images, labels=labels, ids=[str(i) for i in range(len(images))], source=str(path))


def _volume_split(path: Path, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, img_size: int | None,
                  where: str, lbl_key: str) -> SplitData:
    """A 3D dataset's split: uint8 volumes (N, D, H, W) (a trailing channel of 1 is dropped)."""
    if images.ndim == 5 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 4:
        raise DatasetError(f"{where}: dataset {info.name!r} is 3D; expected volumes shaped (N,D,H,W), got "
                           f"{images.shape}")
    if img_size is not None and images.shape[1:] != (img_size,) * 3:
        raise DatasetError(f"{where}: expected {img_size}x{img_size}x{img_size} volumes, got "
                           f"{'x'.join(map(str, images.shape[1:]))}")
    labels = check_labels(labels, info, f"{path} key {lbl_key!r}")
    if len(labels) != len(images):
        raise DatasetError(f"{path}: {len(images)} volumes but {len(labels)} labels")
    return SplitData(images=images, labels=labels, ids=[str(i) for i in range(len(images))], source=str(path))


def _parse_label(value: object, info: DatasetInfo, where: str) -> list[int]:
    """A metafile label: an index, a label name, or for multi-label a list / ';'-separated names or 0/1 flags."""
    names = {n.lower(): i for i, n in enumerate(info.label_names)}

    def one(v: object) -> int:
        if isinstance(v, bool):
            raise DatasetError(f"{where}: label {v!r} is not a class index or name")
        if isinstance(v, int):
            return v
        s = str(v).strip()
        if s.lstrip("-").isdigit():
            return int(s)
        if s.lower() in names:
            return names[s.lower()]
        raise DatasetError(f"{where}: label {s!r} is not one of {list(info.label_names)} nor a class index")

    if info.multi_label:
        items = value if isinstance(value, list) else [x for x in str(value).split(";") if x.strip()]
        flags = [0] * info.num_classes
        if len(items) == info.num_classes and all(str(x).strip() in ("0", "1") for x in items):
            return [int(str(x).strip()) for x in items]
        for item in items:
            idx = one(item)
            if not 0 <= idx < info.num_classes:
                raise DatasetError(f"{where}: label index {idx} out of range 0..{info.num_classes - 1}")
            flags[idx] = 1
        return flags
    idx = one(value)
    if not 0 <= idx < info.num_classes:
        raise DatasetError(
            f"{where}: label {idx} out of range; {info.num_classes} classes: {', '.join(info.label_names)}"
        )
    return [idx]


def read_metafile_split(path: Path, info: DatasetInfo, image_root: Path | None = None) -> SplitData:
    """Read a CSV (header with ``image`` and ``label``, optional ``id``) or JSONL (same keys) of image paths."""
    if not path.is_file():
        raise DatasetError(f"metafile {path} not found (dataset {info.name!r})")
    root = image_root or path.parent
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"image", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{path}: CSV header must have columns image,label[,id]; missing {sorted(missing)}")
            rows = [(i + 2, row) for i, row in enumerate(reader)]
    elif path.suffix.lower() in (".jsonl", ".json"):
        with path.open() as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict) or "image" not in row or "label" not in row:
                    raise DatasetError(f"{path} line {lineno}: expected an object with keys 'image' and 'label'")
                rows.append((lineno, row))
    else:
        raise DatasetError(f"metafile {path}: unsupported suffix {path.suffix!r}; use .csv or .jsonl")
    if not rows:
        raise DatasetError(f"metafile {path} has no rows")
    paths, labels, ids = [], [], []
    for lineno, row in rows:
        where = f"{path} line {lineno}"
        image = Path(str(row["image"]))
        image = image if image.is_absolute() else root / image
        if not image.name.lower().endswith(IMAGE_SUFFIXES) and not image.is_dir():
            raise DatasetError(f"{where}: image {image} has an unsupported suffix; expected one of "
                               f"{', '.join(IMAGE_SUFFIXES)} (or a DICOM series folder)")
        paths.append(image)
        labels.append(_parse_label(row["label"], info, where))
        ids.append(str(row.get("id") or image.stem))
    return SplitData(images=paths, labels=np.asarray(labels, dtype=np.int64), ids=ids, source=str(path))


def open_image(path: str | Path, settings=None) -> Image.Image:
    """Open one image fully decoded: an ordinary file (PNG/JPEG/TIFF/…; 16-bit, 32-bit and float images as 8-bit
    grey scaled by their real range, :func:`gsco.data.render.minmax`), or a DICOM file or series folder or a NIfTI
    volume rendered as :mod:`gsco.data.render` renders it (``settings``: a :class:`~gsco.data.render.RenderSettings`;
    default: the file's own window, the middle axial slice). Any failure is one DatasetError naming the file."""
    path = Path(path)
    if is_medical(path):
        try:
            return render(path, settings)
        except MedicalImageError as exc:
            raise DatasetError(f"image {exc}") from None
    return open_plain_image(path)


def read_image(path: Path, img_size: int, as_rgb: bool, render=None) -> np.ndarray:
    """Read one image file as uint8 (H,W) or (H,W,3), bicubic-resized to a square (``render``: RenderSettings for
    DICOM / NIfTI)."""
    return image_array(open_image(path, render), img_size, as_rgb)


def image_array(img: Image.Image, img_size: int, as_rgb: bool, grey: bool = False) -> np.ndarray:
    """An opened image as the readers hand it on: RGB (``as_rgb``, or a colour image), else grey (a grey image, or
    any image with ``grey``: a one-channel model's input), bicubic-resized to a square of ``img_size``."""
    img = img.convert("L" if grey or (not as_rgb and img.mode in ("1", "L", "LA")) else "RGB")
    if img.size != (img_size, img_size):
        img = img.resize((img_size, img_size), Image.Resampling.BICUBIC)
    return np.array(img, dtype=np.uint8)


def expand_to_square(image: np.ndarray) -> np.ndarray:
    """Channel-first uint8 image centred on a square canvas of the ImageNet mean colour, as InternVL pads."""
    c, h, w = image.shape
    if h == w:
        return image
    side = max(h, w)
    fill = np.array([int(m * 255) for m in IMAGENET_MEAN][:c], dtype=image.dtype).reshape(c, 1, 1)
    canvas = np.broadcast_to(fill, (c, side, side)).copy()
    top, left = (side - h) // 2, (side - w) // 2
    canvas[:, top:top + h, left:left + w] = image
    return canvas
