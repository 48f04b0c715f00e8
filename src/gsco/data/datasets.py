"""Torch datasets over the registry's splits, with the MedMNIST+ preprocessing protocols.

Preprocessing (``preprocess``):
- ``pad``: ToTensor -> Normalize(model mean/std) -> zero-pad centred to 224 (never resized) — MedMNIST+.
- ``native``: ToTensor -> Normalize; the network sees the image at its stored size.
- ``resize``: ToTensor -> bilinear resize to 224 -> Normalize.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gsco.config import ConfigError
from gsco.data.readers import SplitData, npz_filename, read_image, read_metafile_split, read_npz_split
from gsco.data.registry import DatasetError, DatasetInfo

logger = logging.getLogger(__name__)

PREPROCESS = ("pad", "native", "resize")
TARGET_SIZE = 224


class Preprocess:
    """uint8 (H,W) or (H,W,3) -> normalised float tensor (C,S,S); with ``volume``, uint8 (D,H,W) -> (1,D,H,W) at its
    stored size (padding or resizing a volume to 224^3 is not done)."""

    def __init__(self, mode: str, mean: Sequence[float], std: Sequence[float], as_rgb: bool, target: int = TARGET_SIZE,
                 volume: bool = False):
        if mode not in PREPROCESS:
            raise ConfigError(f"key 'preprocess': {mode!r} is not one of {PREPROCESS}")
        self.mode, self.as_rgb, self.target, self.volume = mode, as_rgb, target, volume
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
        if self.volume:
            return ((x - self.mean[0]) / self.std[0]).unsqueeze(0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        if self.as_rgb and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        if self.mode == "resize" and x.shape[-1] != self.target:
            x = F.interpolate(x[None], size=(self.target, self.target), mode="bilinear", antialias=True)[0]
        channels = x.shape[0]
        x = (x - self.mean[:channels]) / self.std[:channels]
        if self.mode == "pad":
            pad_h, pad_w = max(0, self.target - x.shape[1]), max(0, self.target - x.shape[2])
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
        return x

    def output_size(self, img_size: int) -> int:
        return img_size if self.mode == "native" or self.volume else max(img_size, self.target)


class ClassificationDataset(Dataset):
    """Images of one split with labels: ``(tensor, label)``; label is a class index or a 0/1 float vector."""

    def __init__(self, data: SplitData, info: DatasetInfo, transform: Preprocess, img_size: int, render=None):
        self.data, self.info, self.transform, self.img_size = data, info, transform, img_size
        self.render = render  # RenderSettings for DICOM / NIfTI files (None: the defaults)

    def __len__(self) -> int:
        return len(self.data)

    def image(self, index: int) -> np.ndarray:
        if isinstance(self.data.images, np.ndarray):
            return self.data.images[index]
        return read_image(self.data.images[index], self.img_size, self.transform.as_rgb, self.render)

    def __getitem__(self, index: int):
        x = self.transform(self.image(index))
        y = self.data.labels[index]
        label = torch.from_numpy(y.astype(np.float32)) if self.info.multi_label else int(y[0])
        return x, label


def split_file(info: DatasetInfo, split: str, data_path: str | Path, img_size: int) -> Path:
    """The file one split of a registered dataset is read from: its npz or its metafile."""
    data_path = Path(data_path)
    if info.format == "npz":
        return data_path / npz_filename(info.name, img_size)
    assert info.metafiles is not None
    if split not in info.metafiles:
        raise DatasetError(f"dataset {info.name!r} ({info.source}): no metafile for split {split!r}")
    meta = Path(info.metafiles[split])
    return meta if meta.is_absolute() else data_path / meta


def read_split(info: DatasetInfo, split: str, data_path: str | Path, img_size: int) -> SplitData:
    """Read one split of a registered dataset from ``data_path`` (no download, ever)."""
    data_path = Path(data_path)
    if info.format == "npz":
        data = read_npz_split(split_file(info, split, data_path, img_size), split, info, img_size)
    else:
        meta = split_file(info, split, data_path, img_size)
        root = Path(info.image_root) if info.image_root else None
        if root is not None and not root.is_absolute():
            root = data_path / root
        data = read_metafile_split(meta, info, root)
    expected = (info.n_samples or {}).get(split)
    if expected is not None and expected != len(data):
        # Subsets and re-splits are legitimate; say so once rather than fail.
        logger.warning("%s %s: %d samples, the registry says %d", data.source, split, len(data), expected)
    return data


def build_dataset(
    info: DatasetInfo,
    split: str,
    data_path: str | Path,
    img_size: int,
    preprocess: Preprocess,
    render=None,
) -> ClassificationDataset:
    """``render``: how DICOM / NIfTI images of a metafile become 8-bit images (a RenderSettings; None: defaults)."""
    return ClassificationDataset(read_split(info, split, data_path, img_size), info, preprocess, img_size, render)
