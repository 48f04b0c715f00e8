"""Download and check a benchmark in the layout our readers take.

    python -m gsco.data.prepare breastmnist --root data/medmnist                 # 28 px
    python -m gsco.data.prepare organmnist3d --root data/medmnist sizes=[28,64]
    python -m gsco.data.prepare medmnist --root data/medmnist source=/mnt/mirror  # all 18, from a local copy

MedMNIST (the 12 2D and 6 3D datasets; ``medmnist2d`` / ``medmnist3d`` / ``medmnist`` name the groups) at every
size they are published in: URLs, MD5 checksums, split sizes and licences are those of the ``medmnist`` package's
table. Each file is fetched into ``<name>.partial`` (an interrupted download resumes where the server allows),
checked against its MD5 and only then renamed to its final name, so a failed or damaged download never leaves a
file the readers would take; a file already in place with the right MD5 is left as it is (a second run does
nothing). Its split sizes are checked against the registry. ``source=`` takes a local folder holding the files, or
another URL to fetch them from, instead of MedMNIST's.

IU-Xray and MIMIC-CXR (``iu_xray``, ``mimic_cxr``) in R2Gen's layout are checked where the user put them (a zip is
extracted first): split sizes and every image the annotation names. VQA-RAD and SLAKE (``vqa_rad``, ``slake``) are
converted from the files their publishers distribute, which the user
downloads (``source=`` their folder), into MedDr evaluation metafiles ``root/<name>/<name>_<split>.jsonl`` with
closed and open questions marked (``answer_type``), the images copied beside them; split sizes are checked against
the published ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from gsco.config import ConfigError
from gsco.data.registry import MEDMNIST_2D, MEDMNIST_3D

logger = logging.getLogger(__name__)
CHUNK = 1 << 20
GROUPS = {"medmnist": MEDMNIST_2D + MEDMNIST_3D, "medmnist2d": MEDMNIST_2D, "medmnist3d": MEDMNIST_3D}


class PrepareError(RuntimeError):
    """A download or check that failed; the message says what is wrong and what to do (no partial file is left
    under the final name)."""


@dataclasses.dataclass(frozen=True)
class Download:
    filename: str  # under root
    url: str
    md5: str


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


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def origin_of(download: Download, source: str | None) -> str:
    """Where a file comes from: its published URL, ``source``/filename for another URL, or a local path."""
    if source is None:
        return download.url
    if "://" in source:
        return source.rstrip("/") + "/" + download.filename
    return str(Path(source) / download.filename)


def fetch(download: Download, root: Path, source: str | None = None, progress: bool = True) -> str:
    """``root/filename`` in place with the right MD5: ``present`` (nothing done), ``copied`` or ``downloaded``."""
    final = root / download.filename
    if final.is_file():
        found = md5_of(final)
        if found == download.md5:
            return "present"
        raise PrepareError(f"{final} is there but its MD5 is {found}, not the published {download.md5} (a re-saved "
                           "or another version's file?); move it away to fetch the published one")
    root.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    origin = origin_of(download, source)
    if "://" in origin:
        _download(origin, partial, progress)
        how = "downloaded"
    else:
        if not Path(origin).is_file():
            raise PrepareError(f"source {source}: {download.filename} is not there ({origin})")
        _copy(Path(origin), partial)
        how = "copied"
    found = md5_of(partial)
    if found != download.md5:
        partial.unlink()
        raise PrepareError(f"{origin}: MD5 {found}, expected {download.md5} (the medmnist package's table): the file "
                           f"is damaged or not the published one; nothing was written to {final}")
    partial.replace(final)
    return how


def _copy(origin: Path, partial: Path) -> None:
    with origin.open("rb") as src, partial.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)


def _download(url: str, partial: Path, progress: bool) -> None:
    """Stream ``url`` into ``partial``, continuing a partial file where the server honours a byte range."""
    from tqdm import tqdm

    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at the end: the partial file is complete
            return
        raise PrepareError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrepareError(f"{url} cannot be reached ({reason}); offline, download it elsewhere and give "
                           f"source=DIR (the folder holding {partial.name.removesuffix('.partial')})") from None
    resumed = have and getattr(response, "status", 200) == 206
    total = response.headers.get("Content-Length")
    mode = "ab" if resumed else "wb"
    with response, partial.open(mode) as out, tqdm(total=int(total) + (have if resumed else 0) if total else None,
                                                  initial=have if resumed else 0, unit="B", unit_scale=True,
                                                  desc=partial.name.removesuffix(".partial"), file=sys.stderr,
                                                  disable=not progress) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))


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


@dataclasses.dataclass(frozen=True)
class PublishedSource:
    """A benchmark made from the files its publisher distributes, which the user downloads (``source=``)."""

    name: str
    where: str  # what to download, from where, under which terms
    sizes: dict  # questions per split after conversion (English only for SLAKE)


VQA_SOURCES = {
    "vqa_rad": PublishedSource("vqa_rad", "'VQA_RAD Dataset Public.json' and the 'VQA_RAD Image Folder' from "
                         "https://osf.io/89kps/ (CC0 1.0)", {"train": 3064, "test": 451}),
    "slake": PublishedSource("slake", "Slake1.0 (train.json, validate.json, test.json and imgs/) from "
                       "https://www.med-vqa.com/slake/ (CC BY 4.0)", {"train": 4919, "val": 1053, "test": 1061}),
}


def vqa_rad_rows(source: Path) -> dict[str, list[dict]]:
    """VQA-RAD's public JSON: the test split is the questions whose phrase_type starts with ``test``."""
    from gsco.runtime import read_json

    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for q in read_json(source / "VQA_RAD Dataset Public.json", "VQA-RAD questions"):
        split = "test" if str(q["phrase_type"]).startswith("test") else "train"
        rows[split].append(_vqa_row(q["qid"], split, "VQA_RAD Image Folder", q["image_name"], q))
    return rows


def slake_rows(source: Path) -> dict[str, list[dict]]:
    """SLAKE's train / validate / test JSON, English questions only (``q_lang`` en)."""
    from gsco.runtime import read_json

    rows: dict[str, list[dict]] = {}
    for split, file in (("train", "train.json"), ("val", "validate.json"), ("test", "test.json")):
        questions = read_json(source / file, "SLAKE questions")
        rows[split] = [_vqa_row(q["qid"], split, "imgs", q["img_name"], q) for q in questions if q["q_lang"] == "en"]
    return rows


def _vqa_row(qid, split: str, folder: str, image: str, q: dict) -> dict:
    kind = str(q["answer_type"]).strip().upper()
    if kind not in ("OPEN", "CLOSED"):
        raise PrepareError(f"question {qid}: answer_type {q['answer_type']!r}, expected OPEN or CLOSED")
    return {"id": str(qid), "split": split, "image": f"images/{image}", "question": str(q["question"]).strip(),
            "question_id": str(qid), "answer": str(q["answer"]).strip(), "answer_type": kind,
            "_from": f"{folder}/{image}"}


def prepare_vqa(name: str, root: Path, source: str | None, expected: dict | None = None) -> list[dict]:
    """``root/<name>/<name>_<split>.jsonl`` (MedDr evaluation metafiles, OPEN / CLOSED marked) and the images they
    name under ``root/<name>/images``; written only where missing or different (a second run changes nothing)."""
    spec = VQA_SOURCES[name]
    if source is None or "://" in source or not Path(source).is_dir():
        raise PrepareError(f"{name}: download {spec.where} yourself and give source=FOLDER (the folder holding them)")
    source_dir, out = Path(source), root / name
    try:
        rows = (vqa_rad_rows if name == "vqa_rad" else slake_rows)(source_dir)
    except KeyError as exc:
        raise PrepareError(f"{name}: a question in {source_dir} lacks the field {exc}; is it {spec.where}?") from None
    expected = expected or spec.sizes
    found = {split: len(r) for split, r in rows.items()}
    if found != expected:
        raise PrepareError(f"{name}: {source_dir} gives {found} questions per split, the published sizes are "
                           f"{expected}; another version of the files?")
    report = []
    for split, split_rows in rows.items():
        copied = 0
        for row in split_rows:
            image, target = source_dir / row.pop("_from"), out / row["image"]
            if not target.is_file() or target.stat().st_size != image.stat().st_size:
                if not image.is_file():
                    raise PrepareError(f"{name}: {image} (question {row['id']}) is missing from the source")
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy(image, target.with_name(target.name + ".partial"))
                target.with_name(target.name + ".partial").replace(target)
                copied += 1
        metafile = out / f"{name}_{split}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
        status = "present" if metafile.is_file() and metafile.read_text() == text and not copied else "written"
        if status == "written":
            partial = metafile.with_name(metafile.name + ".partial")
            partial.write_text(text)
            partial.replace(metafile)
        closed = sum(r["answer_type"] == "CLOSED" for r in split_rows)
        report.append({"dataset": name, "file": str(metafile), "status": status,
                       "splits": {split: len(split_rows), "closed": closed, "open": len(split_rows) - closed},
                       "licence": spec.where.rsplit("(", 1)[-1].rstrip(")")})
    return report


REPORT_SOURCES = {  # the R2Gen layout: annotation.json {train, val, test: [{id, report, image_path, split}]} + images/
    "iu_xray": PublishedSource("iu_xray", "R2Gen's iu_xray (annotation.json and images/, as its README links them; "
                         "IU X-ray from Open-i, CC BY-NC-ND 4.0)", {"train": 2069, "val": 296, "test": 590}),
    "mimic_cxr": PublishedSource("mimic_cxr", "R2Gen's mimic_cxr annotation.json with the MIMIC-CXR-JPG images under "
                           "images/ (PhysioNet credentialed access: PhysioNet Credentialed Health Data License 1.5.0)",
                           {"train": 270790, "val": 2130, "test": 3858}),
}


def prepare_report_data(name: str, root: Path, source: str | None, expected: dict | None = None) -> list[dict]:
    """IU-Xray / MIMIC-CXR in the R2Gen layout from what the user downloaded: a zip is extracted into
    ``root/<name>.partial``, checked, and only then renamed to ``root/<name>``; a folder is checked where it is. The
    checks: the annotation's split sizes and every image it names."""
    import shutil

    spec = REPORT_SOURCES[name]
    if source is None or "://" in source or not Path(source).exists():
        raise PrepareError(f"{name}: download {spec.where} yourself and give source=FOLDER or source=FILE.zip")
    given, target = Path(source), root / name
    if given.is_dir():
        return [_check_report_data(name, given, "in place", expected)]
    if (target / "annotation.json").is_file():
        return [_check_report_data(name, target, "present", expected)]
    partial = root / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(given) as archive:
            archive.extractall(partial)
        inner = next((p.parent for p in sorted(partial.rglob("annotation.json"))), partial)
        row = _check_report_data(name, inner, "extracted", expected)
    except (PrepareError, zipfile.BadZipFile) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise PrepareError(f"{given}: {exc}") from None
    inner.replace(target)
    shutil.rmtree(partial, ignore_errors=True)
    return [{**row, "file": str(target / "annotation.json"), "image_root": str(target / "images")}]


def _check_report_data(name: str, folder: Path, status: str, expected: dict | None) -> dict:
    from gsco.runtime import read_json

    spec = REPORT_SOURCES[name]
    annotation = next((p for p in (folder / "annotation.json", folder / name / "annotation.json") if p.is_file()), None)
    if annotation is None:
        raise PrepareError(f"{folder}: no annotation.json (expected {spec.where})")
    data = read_json(annotation, "R2Gen annotation")
    found = {split: len(data.get(split, [])) for split in ("train", "val", "test")}
    if found != (expected or spec.sizes):
        raise PrepareError(f"{annotation}: {found} studies per split, the published sizes are "
                           f"{expected or spec.sizes}; another version of the files?")
    images = annotation.parent / "images"
    missing = [p for split in data.values() for row in split for p in row["image_path"] if not (images / p).is_file()]
    if missing:
        raise PrepareError(f"{images}: {len(missing)} images the annotation names are missing (e.g. {missing[0]})")
    return {"dataset": name, "file": str(annotation), "status": status, "splits": found,
            "licence": spec.where.rsplit("(", 1)[-1].rstrip(")"), "image_root": str(images)}


@dataclasses.dataclass
class PrepareConfig:
    name: list[str] = dataclasses.field(default_factory=list)  # datasets (or medmnist, medmnist2d, medmnist3d)
    root: str = "data/medmnist"  # the folder the files go to (the specialists' data_path)
    sizes: list[int] = dataclasses.field(default_factory=lambda: [28])  # MedMNIST: 28, 64, 128, 224 (3D: 28, 64)
    source: str | None = None  # a local folder holding the files, or a URL to fetch them from (null: MedMNIST's)

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("give a dataset: python -m gsco.data.prepare NAME --root DIR (NAME: a MedMNIST dataset, "
                              "medmnist, medmnist2d or medmnist3d)")
        others = (*VQA_SOURCES, *REPORT_SOURCES)
        unknown = [n for n in self.name if n not in GROUPS and n not in GROUPS["medmnist"] and n not in others]
        if unknown:
            raise ConfigError(f"{unknown}: no preparer; choose MedMNIST datasets ({', '.join(GROUPS['medmnist'])}), "
                              f"a group ({', '.join(GROUPS)}) or {', '.join(others)}; DATASET.md says how to get the "
                              "others")

    def datasets(self) -> list[str]:
        names: list[str] = []
        for n in self.name:
            names += [m for m in GROUPS.get(n, (n,)) if m not in names]
        return names


def _prepare_and_print(cfg: PrepareConfig) -> None:
    names = cfg.datasets()
    medmnist = [n for n in names if n not in VQA_SOURCES and n not in REPORT_SOURCES]
    rows = prepare_medmnist(medmnist, Path(cfg.root), cfg.sizes, cfg.source) if medmnist else []
    for name in names:
        if name in VQA_SOURCES:
            rows += prepare_vqa(name, Path(cfg.root), cfg.source)
        elif name in REPORT_SOURCES:
            rows += prepare_report_data(name, Path(cfg.root), cfg.source)
    for row in rows:
        splits = " / ".join(f"{k} {n}" for k, n in row["splits"].items())
        print(f"{row['status']:10s} {row['file']}  ({splits}; {row['licence']})")
        if "image_root" in row:
            print(f"           annotation={row['file']} image_root={row['image_root']}")


def main(argv: list[str] | None = None) -> int:
    """Dataset names may come first as plain words; ``--root DIR`` is ``root=DIR``."""
    from gsco.cli import command

    args, rest, names = list(sys.argv[1:] if argv is None else argv), [], []
    while args:
        arg = args.pop(0)
        if arg == "--root" and args:
            rest.append(f"root={args.pop(0)}")
        elif arg == "--config" and args:
            rest += [arg, args.pop(0)]
        elif "=" not in arg and not arg.startswith("-"):
            names.append(arg)
        else:
            rest.append(arg)
    if names:
        rest.append(f"name=[{','.join(names)}]")
    return command(PrepareConfig, _prepare_and_print, description=__doc__.split("\n\n")[0],
                   errors=(PrepareError, ValueError, RuntimeError))(rest)


if __name__ == "__main__":
    sys.exit(main())
