"""IU-Xray and MIMIC-CXR in R2Gen's layout (``annotation.json`` {train, val, test: [{id, report, image_path,
split}]} + ``images/``), from what the user downloaded under their own credentials."""

from __future__ import annotations

import zipfile
from pathlib import Path

from gsco.data.prepare.files import PrepareError, PublishedSource, check_sizes, user_folder

REPORT_SOURCES = {
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

    given, target = user_folder(REPORT_SOURCES[name], source, "FOLDER or source=FILE.zip"), root / name
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
    check_sizes(spec, found, annotation, expected, "studies")
    images = annotation.parent / "images"
    missing = [p for split in data.values() for row in split for p in row["image_path"] if not (images / p).is_file()]
    if missing:
        raise PrepareError(f"{images}: {len(missing)} images the annotation names are missing (e.g. {missing[0]})")
    return {"dataset": name, "file": str(annotation), "status": status, "splits": found,
            "licence": spec.licence, "image_root": str(images)}

