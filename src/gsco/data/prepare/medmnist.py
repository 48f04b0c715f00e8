"""MedMNIST (the 12 2D and 6 3D datasets) at every size they are published in: URLs, MD5 checksums, split sizes and
licences are those of the ``medmnist`` package's table."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from gsco.config import ConfigError
from gsco.data.prepare.files import Download, PrepareError, fetch
from gsco.data.registry import MEDMNIST_2D, MEDMNIST_3D

logger = logging.getLogger(__name__)
GROUPS = {"medmnist": MEDMNIST_2D + MEDMNIST_3D, "medmnist2d": MEDMNIST_2D, "medmnist3d": MEDMNIST_3D}


def medmnist_table() -> dict:
    """The ``medmnist`` package's dataset table (URLs, MD5s, split sizes, licences)."""
    from medmnist.info import INFO

    return INFO


def medmnist_downloads(name: str, sizes: list[int], table: dict) -> list[Download]:
    from gsco.data.readers import npz_filename

    entry = table[name]
    downloads = []
    for size in sizes:
        suffix = "" if size == 28 else f"_{size}"
        if f"url{suffix}" not in entry:
            published = [s for s in (28, 64, 128, 224) if ("url" if s == 28 else f"url_{s}") in entry]
            raise ConfigError(f"key 'sizes': {name} is not published at {size} px (sizes: {published})")
        downloads.append(Download(npz_filename(name, size), entry[f"url{suffix}"], entry[f"MD5{suffix}"]))
    return downloads


def npz_split_sizes(path: Path) -> dict[str, int]:
    """``{split: N}`` from the ``{split}_images`` headers of an npz, without reading the arrays."""
    sizes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith("_images.npy"):
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, _ = read(f)
                sizes[member.removesuffix("_images.npy")] = int(shape[0])
    return sizes


def check_split_sizes(path: Path, expected: dict[str, int]) -> dict[str, int]:
    """The file's split sizes, which must be ``expected`` (the table's; the registry holds the same, tested)."""
    found = npz_split_sizes(path)
    wrong = {s: (found.get(s), n) for s, n in expected.items() if found.get(s) != n}
    if wrong:
        shown = ", ".join(f"{s}: {got} (expected {want})" for s, (got, want) in wrong.items())
        raise PrepareError(f"{path}: split sizes differ from the published ones: {shown}")
    return found


def prepare_medmnist(names: list[str], root: Path, sizes: list[int], source: str | None = None,
                     table: dict | None = None, progress: bool = True) -> list[dict]:
    """Every (dataset, size) file in place and checked; one row per file: name, size, file, status, splits."""
    table = table if table is not None else medmnist_table()
    rows = []
    for name in names:
        for size, download in zip(sizes, medmnist_downloads(name, sizes, table)):
            status = fetch(download, root, source, progress)
            splits = check_split_sizes(root / download.filename, table[name]["n_samples"])
            logger.info("%s %d px: %s (%s)", name, size, status, ", ".join(f"{s} {n}" for s, n in splits.items()))
            rows.append({"dataset": name, "size": size, "file": str(root / download.filename), "status": status,
                         "splits": splits, "licence": table[name].get("license", "")})
    return rows


