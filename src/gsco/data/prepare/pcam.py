"""PatchCamelyon -> PCam200: GSCo's pathology benchmark, 200 test patches drawn from PCam's test split, with
training and validation patches for the specialists drawn from PCam's own.

The six PCam files (``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``, published gzipped on Zenodo
record 2546921) are fetched into ``root/pcam/``, decompressed and checked against the MD5s of the decompressed
files (the ones kaiko-ai/eva checks its Zenodo downloads against) and PCam's split sizes. The draw: for split k
(0 train, 1 val, 2 test) ``numpy.random.default_rng([seed, k])`` picks ceil(n/2) normal and floor(n/2) tumor
patches without replacement, kept in PCam's order; each split has its own stream, so the 200 test patches do not
depend on how many training patches are drawn. ``all`` takes the whole split.

Writes ``root/pcam200.npz`` (``pcam200_{size}.npz``) in MedMNIST's layout for the specialists — patches resized
from 96 px (bicubic), labels 0 normal / 1 tumor, and ``{split}_indices``: each patch's index in its PCam split —
and, for MedDr, the test patches as they are (96 px PNG) under ``root/pcam200/images`` with the evaluation
metafile ``root/pcam200/test.jsonl``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from gsco.data.prepare.files import Download, PrepareError, PublishedSource, fetch, write_if_changed

logger = logging.getLogger(__name__)
PCAM = PublishedSource("pcam200", "PatchCamelyon from Zenodo record 2546921 (CC0 1.0)",
                       {"train": 262144, "val": 32768, "test": 32768})
PCAM_URL = "https://zenodo.org/records/2546921/files/{}.gz?download=1"
PCAM_CHECKSUMS = "the decompressed PCam files' MD5s, as kaiko-ai/eva checks its Zenodo downloads"
PCAM_MD5 = {  # split: (x MD5, y MD5) of the decompressed .h5 files
    "train": ("01844da899645b4d6f84946d417ba453", "0781386bf6c2fb62d58ff18891466aca"),
    "valid": ("81cf9680f1724c40673f10dc88e909b1", "94d8aacc249253159ce2a2e78a86e658"),
    "test": ("2614b2e6717d6356be141d9d6dbfcb7e", "11ed647efe9fe457a4eb45df1dba19ba"),
}
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # ours: PCam's
PCAM200_DRAW = {"train": 20000, "val": 2000, "test": 200}
CHUNK_ROWS = 512


def pcam_downloads(md5: dict | None = None) -> dict[str, tuple[Download, Download]]:
    """split (ours) -> the (images, labels) files under ``root``."""
    md5 = md5 or PCAM_MD5
    out = {}
    for ours, theirs in SPLITS.items():
        names = [f"camelyonpatch_level_2_split_{theirs}_{xy}.h5" for xy in "xy"]
        out[ours] = tuple(Download(f"pcam/{name}", PCAM_URL.format(name), checksum, PCAM_CHECKSUMS, gzipped=True)
                          for name, checksum in zip(names, md5[theirs]))
    return out


def draw(labels: np.ndarray, n: int | str, seed: int, stream: int) -> np.ndarray:
    """The indices of ``n`` patches, half of each class (normal gets the odd one), in PCam's order."""
    if n == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, stream])
    picks = []
    for label, k in ((0, n - n // 2), (1, n // 2)):
        pool = np.flatnonzero(labels == label)
        if k > len(pool):
            raise PrepareError(f"pcam200: {k} patches of class {label} asked, the split has {len(pool)}")
        picks.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(picks))


def _read_labels(y_file: Path, x_file: Path, split: str, expected: int) -> np.ndarray:
    import h5py

    with h5py.File(y_file, "r") as fy, h5py.File(x_file, "r") as fx:
        labels, shape = np.asarray(fy["y"]).reshape(-1), fx["x"].shape
    if len(labels) != expected or shape != (expected, 96, 96, 3):
        raise PrepareError(f"pcam200: {x_file.name} holds {shape[0]} patches shaped {shape[1:]} and {y_file.name} "
                           f"{len(labels)} labels; PCam's {split} split has {expected} patches of 96x96x3")
    return labels.astype(np.uint8)


def _write_npz(path: Path, x_files: dict[str, Path], labels: dict[str, np.ndarray], picked: dict[str, np.ndarray],
               size: int, progress: bool) -> None:
    """The npz written member by member (no split is held in memory whole) into ``path.partial``, then renamed."""
    import h5py
    from PIL import Image
    from tqdm import tqdm

    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for split, idx in picked.items():
            shape = (len(idx), size, size, 3)
            with archive.open(f"{split}_images.npy", "w", force_zip64=True) as member, \
                    h5py.File(x_files[split], "r") as fx:
                np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
                for start in tqdm(range(0, len(idx), CHUNK_ROWS), desc=f"pcam200 {split}", disable=not progress):
                    rows = fx["x"][idx[start:start + CHUNK_ROWS]]
                    if size != 96:
                        rows = np.stack([np.asarray(Image.fromarray(r).resize((size, size), Image.Resampling.BICUBIC))
                                         for r in rows])
                    member.write(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())
            for key, array in ((f"{split}_labels", labels[split][idx].reshape(-1, 1)), (f"{split}_indices", idx)):
                with archive.open(f"{key}.npy", "w") as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    partial.replace(path)


def _npz_holds(path: Path, picked: dict[str, np.ndarray], size: int) -> bool:
    """Whether ``path`` is the npz this draw writes (its indices and image size), so it is left alone."""
    from gsco.data.prepare.medmnist import npz_split_sizes

    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            same = all(f"{s}_indices" in npz.files and np.array_equal(npz[f"{s}_indices"], idx)
                       for s, idx in picked.items())
        return same and npz_split_sizes(path) == {s: len(i) for s, i in picked.items()} and \
            _image_side(path) == size
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def _image_side(path: Path) -> int:
    with zipfile.ZipFile(path) as archive, archive.open("test_images.npy") as f:
        np.lib.format.read_magic(f)
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
    return int(shape[1])


def _test_metafile(root: Path, x_file: Path, labels: np.ndarray, idx: np.ndarray) -> bool:
    """The test patches as PNG and MedDr's evaluation metafile ``root/pcam200/test.jsonl``; True when any file
    was (re)written."""
    import h5py
    from PIL import Image

    from gsco.data.diagnosis_questions import diagnosis_question
    from gsco.data.registry import get_dataset_info

    info = get_dataset_info("pcam200")
    out, changed, rows = root / "pcam200", False, []
    with h5py.File(x_file, "r") as fx:
        patches = fx["x"][idx]
    for i, (index, patch) in enumerate(zip(idx, patches)):
        buffer = io.BytesIO()
        Image.fromarray(patch).save(buffer, format="PNG")
        changed |= write_if_changed(out / "images" / f"test_{i}.png", buffer.getvalue())
        answer = info.label_names[int(labels[index])]
        rows.append({"id": f"pcam200_test_{i}", "split": "test", "image": f"images/test_{i}.png",
                     "question": diagnosis_question(info), "question_id": f"pcam200_test_{i}", "answer": answer,
                     "options": list(info.label_names), "pcam_index": int(index)})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    return write_if_changed(out / "test.jsonl", text.encode()) or changed


def prepare_pcam200(root: Path, source: str | None = None, sizes: list[int] = (224,), seed: int = 0,
                    draw_sizes: dict | None = None, md5: dict | None = None, expected: dict | None = None,
                    progress: bool = True) -> list[dict]:
    """PCam's files in place and checked, then PCam200 drawn and written where missing or different (a second
    run changes nothing). ``draw_sizes``: patches per split (an int or ``all``); ``md5`` / ``expected`` replace
    the published checksums and split sizes (for miniatures)."""
    from gsco.data.readers import npz_filename

    draw_sizes = {**PCAM200_DRAW, **(draw_sizes or {})}
    expected = expected or PCAM.sizes
    files = pcam_downloads(md5)
    rows = [{"dataset": "pcam", "file": str(root / d.filename), "status": fetch(d, root, source, progress),
             "splits": {split: expected[split]}, "licence": PCAM.licence}
            for split, pair in files.items() for d in pair]
    labels, picked = {}, {}
    for stream, split in enumerate(SPLITS):
        x, y = (root / d.filename for d in files[split])
        labels[split] = _read_labels(y, x, split, expected[split])
        picked[split] = draw(labels[split], draw_sizes[split], seed, stream)
    x_files = {split: root / files[split][0].filename for split in SPLITS}
    for size in sizes:
        path = root / npz_filename("pcam200", size)
        status = "present" if _npz_holds(path, picked, size) else "written"
        if status == "written":
            _write_npz(path, x_files, labels, picked, size, progress)
        logger.info("pcam200 %d px: %s", size, status)
        rows.append({"dataset": "pcam200", "size": size, "file": str(path), "status": status,
                     "splits": {s: len(i) for s, i in picked.items()}, "licence": PCAM.licence})
    meta_changed = _test_metafile(root, x_files["test"], labels["test"], picked["test"])
    tumors = int(labels["test"][picked["test"]].sum())
    rows.append({"dataset": "pcam200", "file": str(root / "pcam200" / "test.jsonl"),
                 "status": "written" if meta_changed else "present",
                 "splits": {"test": len(picked["test"]), "normal": len(picked["test"]) - tumors, "tumor": tumors},
                 "licence": PCAM.licence})
    return rows
