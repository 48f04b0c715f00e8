"""python -m gsco.data.prepare: MedMNIST files fetched from local paths and a local HTTP server, checked by MD5
and split sizes, atomic, resumable, and idempotent — on miniature files in MedMNIST's own npz layout."""

import hashlib
import json

import numpy as np
import pytest

from gsco.data.prepare.files import PrepareError
from gsco.data.prepare.medmnist import medmnist_table, npz_split_sizes, prepare_medmnist

from builders import RangeHandler


def miniature(folder, name="breastmnist", sizes=(28,), n=(6, 2, 3), volume=False):
    """Miniature MedMNIST npz files (real layout, few images) and a table entry naming their MD5s."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"n_samples": dict(zip(("train", "val", "test"), n)), "license": "CC BY 4.0"}
    rng = np.random.default_rng(0)
    for size in sizes:
        shape = (size,) * (3 if volume else 2)
        arrays = {}
        for split, count in zip(("train", "val", "test"), n):
            arrays[f"{split}_images"] = rng.integers(0, 255, (count, *shape), dtype=np.uint8)
            arrays[f"{split}_labels"] = rng.integers(0, 2, (count, 1))
        filename = f"{name}.npz" if size == 28 else f"{name}_{size}.npz"
        np.savez(folder / filename, **arrays)
        suffix = "" if size == 28 else f"_{size}"
        entry[f"url{suffix}"] = f"https://example.invalid/{filename}"
        entry[f"MD5{suffix}"] = hashlib.md5((folder / filename).read_bytes()).hexdigest()
    return {name: entry}


def test_the_table_is_the_medmnist_packages_and_agrees_with_the_registry():
    from gsco.data.registry import MEDMNIST_2D, MEDMNIST_3D, get_dataset_info

    table = medmnist_table()
    assert set(MEDMNIST_2D + MEDMNIST_3D) <= set(table)
    for name in MEDMNIST_2D + MEDMNIST_3D:
        assert table[name]["n_samples"] == get_dataset_info(name).n_samples
    assert table["breastmnist"]["MD5"] == "750601b1f35ba3300ea97c75c52ff8f6"


def test_local_folder_source_then_a_second_run_changes_nothing(tmp_path):
    table = miniature(tmp_path / "mirror", sizes=(28, 64))
    root = tmp_path / "data"
    rows = prepare_medmnist(["breastmnist"], root, [28, 64], source=str(tmp_path / "mirror"), table=table,
                            progress=False)
    assert [r["status"] for r in rows] == ["copied", "copied"]
    assert rows[0]["splits"] == {"train": 6, "val": 2, "test": 3} and rows[0]["licence"] == "CC BY 4.0"
    stamps = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    again = prepare_medmnist(["breastmnist"], root, [28, 64], source=str(tmp_path / "mirror"), table=table,
                             progress=False)
    assert [r["status"] for r in again] == ["present", "present"]
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == stamps  # nothing rewritten, no stray files


def test_download_over_http_resumes_a_partial_file(tmp_path, server):
    served, url = server
    table = miniature(served, "organmnist3d", n=(4, 2, 2), volume=True)
    root = tmp_path / "data"
    root.mkdir()
    whole = (served / "organmnist3d.npz").read_bytes()
    (root / "organmnist3d.npz.partial").write_bytes(whole[:1000])  # an interrupted download
    rows = prepare_medmnist(["organmnist3d"], root, [28], source=url, table=table, progress=False)
    assert rows[0]["status"] == "downloaded" and RangeHandler.sent == [len(whole) - 1000]  # only the rest was sent
    assert (root / "organmnist3d.npz").read_bytes() == whole and not list(root.glob("*.partial"))
    assert npz_split_sizes(root / "organmnist3d.npz") == {"train": 4, "val": 2, "test": 2}


def test_a_dropped_connection_keeps_the_partial_file_and_the_next_run_resumes_it(tmp_path, server):
    """It used to look like a damaged file: the MD5 check failed and deleted what had come."""
    from gsco.data.prepare.files import PrepareError

    served, url = server
    table = miniature(served, "organmnist3d", n=(4, 2, 2), volume=True)
    root = tmp_path / "data"
    whole = (served / "organmnist3d.npz").read_bytes()
    RangeHandler.drop_after = 1500
    with pytest.raises(PrepareError, match=r"the connection dropped \(1500 of \d+ bytes\); .*organmnist3d.npz.partial "
                                           r"\(1500 bytes\) is kept: run the same command again to resume"):
        prepare_medmnist(["organmnist3d"], root, [28], source=url, table=table, progress=False)
    assert (root / "organmnist3d.npz.partial").read_bytes() == whole[:1500] and not (root / "organmnist3d.npz").exists()
    rows = prepare_medmnist(["organmnist3d"], root, [28], source=url, table=table, progress=False)
    assert rows[0]["status"] == "downloaded" and RangeHandler.sent[-1] == len(whole) - 1500
    assert (root / "organmnist3d.npz").read_bytes() == whole and not list(root.glob("*.partial"))


def test_a_partial_file_from_a_server_that_then_ignores_ranges_is_fetched_again_whole(tmp_path, server):
    """Our own fault beyond the dropped connection: the next server (a mirror) answers the range request with the
    whole file (200): it is written from the start, never appended to what is there."""
    served, url = server
    table = miniature(served, "organmnist3d", n=(4, 2, 2), volume=True)
    root = tmp_path / "data"
    root.mkdir()
    whole = (served / "organmnist3d.npz").read_bytes()
    (root / "organmnist3d.npz.partial").write_bytes(whole[:700])
    RangeHandler.ignore_range = True
    rows = prepare_medmnist(["organmnist3d"], root, [28], source=url, table=table, progress=False)
    assert rows[0]["status"] == "downloaded" and RangeHandler.sent == [len(whole)]
    assert (root / "organmnist3d.npz").read_bytes() == whole and not list(root.glob("*.partial"))


def test_an_md5_mismatch_or_wrong_split_sizes_leave_no_file(tmp_path, server):
    served, url = server
    table = miniature(served)
    good_md5 = table["breastmnist"]["MD5"]
    table["breastmnist"]["MD5"] = "0" * 32
    root = tmp_path / "data"
    with pytest.raises(PrepareError,
                       match=r"MD5 [0-9a-f]{32}, expected 0{32} .*nothing was written to .*breastmnist.npz"):
        prepare_medmnist(["breastmnist"], root, [28], source=url, table=table, progress=False)
    assert list(root.iterdir()) == []  # neither the file nor its .partial
    table["breastmnist"]["MD5"], table["breastmnist"]["n_samples"]["test"] = good_md5, 5
    with pytest.raises(PrepareError, match="split sizes differ from the published ones: test: 3 .expected 5."):
        prepare_medmnist(["breastmnist"], root, [28], source=url, table=table, progress=False)
    with pytest.raises(PrepareError, match="is not there"):
        prepare_medmnist(["breastmnist"], tmp_path / "other", [28], source=str(tmp_path / "empty"), table=table,
                         progress=False)


@pytest.mark.e2e
def test_readme_prepare_commands_say_what_is_wrong_in_one_line(tmp_path):
    """The documented commands, run as users run them, on a mirror folder holding a re-saved BreastMNIST (our
    ../shared copy: real data, another MD5), an unreachable URL, and a wrong size."""
    import shutil

    from conftest import shared_path
    from doc_commands import run_documented

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(shared_path("data", "medmnist", "breastmnist.npz"), mirror / "breastmnist.npz")
    proc = run_documented("python -m gsco.data.prepare breastmnist --root data/medmnist",
                          replace={"data/medmnist": str(tmp_path / "root")}, append=[f"source={mirror}"], check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "expected 750601b1f35ba3300ea97c75c52ff8f6" in proc.stderr
    assert not list((tmp_path / "root").glob("*"))  # neither breastmnist.npz nor a .partial
    proc = run_documented("python -m gsco.data.prepare medmnist --root data/medmnist source=/mnt/mirror",
                          replace={"data/medmnist": str(tmp_path / "root"), "/mnt/mirror": "http://127.0.0.1:9"},
                          check=False)
    assert proc.returncode == 2 and "cannot be reached" in proc.stderr and "source=DIR" in proc.stderr
    proc = run_documented("python -m gsco.data.prepare organmnist3d --root data/medmnist sizes=[28,64]",
                          replace={"data/medmnist": str(tmp_path / "root"), "sizes=[28,64]": "sizes=[28,128]"},
                          check=False)
    assert proc.returncode == 2 and "organmnist3d is not published at 128 px (sizes: [28, 64])" in proc.stderr
    assert json.dumps(proc.stderr).count("Traceback") == 0


def test_dataset_md_lists_each_medmnist_dataset_with_the_sizes_and_licence_the_preparer_checks():
    import re

    from gsco.data.registry import MEDMNIST_2D, MEDMNIST_3D

    from conftest import REPO

    text = (REPO / "DATASET.md").read_text()
    rows = {m[0]: m[1:] for m in re.findall(r"^\| `(\w+)` \| ([\d, ]+) \| (\d+) / (\d+) / (\d+) \| ([^|]+) \|$", text,
                                            re.M)}
    table = medmnist_table()
    assert set(rows) == set(MEDMNIST_2D + MEDMNIST_3D)
    for name, (sizes, train, val, test, licence) in rows.items():
        entry = table[name]
        published = [s for s in (28, 64, 128, 224) if ("url" if s == 28 else f"url_{s}") in entry]
        assert [int(x) for x in sizes.split(",")] == published
        assert {"train": int(train), "val": int(val), "test": int(test)} == entry["n_samples"]
        assert licence.strip() == entry["license"]


def vqa_sources(folder):
    """Miniature VQA-RAD and SLAKE downloads in their publishers' JSON layouts, with tiny images."""
    from PIL import Image

    rad, slake = folder / "vqa_rad", folder / "Slake1.0"
    (rad / "VQA_RAD Image Folder").mkdir(parents=True)
    (slake / "imgs" / "xmlab1").mkdir(parents=True)
    for i in range(2):
        Image.new("L", (20, 20), 40 * i).save(rad / "VQA_RAD Image Folder" / f"synpic{i}.jpg")
    Image.new("L", (16, 16), 90).save(slake / "imgs" / "xmlab1" / "source.jpg")
    questions = [{"qid": 1, "image_name": "synpic0.jpg", "question": "Is there an effusion?", "answer": "No",
                  "answer_type": "CLOSED", "question_type": "PRES", "phrase_type": "freeform"},
                 {"qid": 2, "image_name": "synpic1.jpg", "question": "What organ is shown? ", "answer": "brain",
                  "answer_type": "OPEN ", "question_type": "ORGAN", "phrase_type": "test_freeform"},
                 {"qid": 3, "image_name": "synpic1.jpg", "question": "How many lesions?", "answer": 2,
                  "answer_type": "OPEN", "question_type": "COUNT", "phrase_type": "test_para"}]
    (rad / "VQA_RAD Dataset Public.json").write_text(json.dumps(questions))
    for file, n in (("train.json", 2), ("validate.json", 1), ("test.json", 1)):
        rows = [{"img_id": 1, "img_name": "xmlab1/source.jpg", "question": f"Q{k}?", "answer": "Yes",
                 "q_lang": "en", "answer_type": "CLOSED", "qid": 10 * n + k} for k in range(n)]
        rows.append({"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "图片里有什么?", "answer": "肺",
                     "q_lang": "zh", "answer_type": "OPEN", "qid": 999})
        (slake / file).write_text(json.dumps(rows, ensure_ascii=False))
    return rad, slake


def test_vqa_rad_and_slake_become_metafiles_with_closed_and_open_marked(tmp_path):
    from gsco.data.prepare.vqa import prepare_vqa

    rad, slake = vqa_sources(tmp_path / "downloads")
    root = tmp_path / "data"
    report = prepare_vqa("vqa_rad", root, str(rad), expected={"train": 1, "test": 2})
    assert [r["status"] for r in report] == ["written", "written"]
    test = [json.loads(line) for line in (root / "vqa_rad" / "vqa_rad_test.jsonl").read_text().splitlines()]
    assert test[0] == {"id": "2", "split": "test", "image": "images/synpic1.jpg", "question": "What organ is shown?",
                       "question_id": "2", "answer": "brain", "answer_type": "OPEN"}
    assert test[1]["answer"] == "2" and (root / "vqa_rad" / "images" / "synpic1.jpg").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (root / "vqa_rad").rglob("*")}
    assert [r["status"] for r in prepare_vqa("vqa_rad", root, str(rad), {"train": 1, "test": 2})] == ["present"] * 2
    assert {p: p.stat().st_mtime_ns for p in (root / "vqa_rad").rglob("*")} == stamps
    report = prepare_vqa("slake", root, str(slake), expected={"train": 2, "val": 1, "test": 1})  # English only
    assert [r["splits"] for r in report][1] == {"val": 1, "closed": 1, "open": 0}
    assert (root / "slake" / "images" / "xmlab1" / "source.jpg").is_file()
    with pytest.raises(PrepareError, match=r"gives \{'train': 1, 'test': 2\} questions per split, the published "
                                           r"sizes are \{'train': 3064, 'test': 451\}"):
        prepare_vqa("vqa_rad", tmp_path / "other", str(rad))
    with pytest.raises(PrepareError, match="download .*osf.io/89kps.* give source=FOLDER"):
        prepare_vqa("vqa_rad", tmp_path / "other", None)


@pytest.mark.e2e
def test_prepared_vqa_rad_runs_through_inference_meddr_sh(tmp_path):
    """DATASET.md's commands on the miniature downloads: prepare refuses a source of another size in one line; the
    metafile it writes (sizes as the miniature) is what inference_meddr.sh evaluates, closed and open apart."""
    from gsco.data.prepare.vqa import prepare_vqa

    from doc_commands import run_documented

    rad, slake = vqa_sources(tmp_path / "downloads")
    for command, source in (("python -m gsco.data.prepare vqa_rad --root data source=downloads/vqa_rad", rad),
                            ("python -m gsco.data.prepare slake --root data source=downloads/Slake1.0", slake)):
        proc = run_documented(command, replace={"--root data": f"--root {tmp_path / 'data'}",
                                                f"source=downloads/{source.name}": f"source={source}"}, check=False)
        assert proc.returncode == 2 and "questions per split, the published sizes are" in proc.stderr
        assert proc.stderr.count("\n") == 1 and not (tmp_path / "data").exists()
    prepare_vqa("vqa_rad", tmp_path / "data", str(rad), expected={"train": 1, "test": 2})
    run_documented("METAFILE=data/vqa_rad/vqa_rad_test.jsonl TASK=vqa bash inference_meddr.sh",
                   replace={"data/vqa_rad": str(tmp_path / "data" / "vqa_rad")},
                   env={"OUT_DIR": str(tmp_path / "eval")}, append=["device=cpu", "max_new_tokens=3"])
    metrics = json.loads(next((tmp_path / "eval").glob("*_metrics.json")).read_text())
    assert metrics["metrics"]["n_closed"] == 0 and metrics["metrics"]["n_open"] == 2


def r2gen_zip(folder, n=(2, 1, 1)):
    """A miniature of R2Gen's iu_xray archive: iu_xray/annotation.json + iu_xray/images/<id>/{0,1}.png."""
    import zipfile

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    data, files = {}, {}
    for split, count in zip(("train", "val", "test"), n):
        data[split] = []
        for i in range(count):
            sid = f"CXR{split}{i}"
            data[split].append({"id": sid, "report": "The lungs are clear.", "split": split,
                                "image_path": [f"{sid}/0.png", f"{sid}/1.png"]})
            for view in (0, 1):
                image = folder / "img.png"
                Image.new("L", (8, 8), 30 * view).save(image)
                files[f"iu_xray/images/{sid}/{view}.png"] = image.read_bytes()
    with zipfile.ZipFile(folder / "iu_xray.zip", "w") as archive:
        archive.writestr("iu_xray/annotation.json", json.dumps(data))
        for name, blob in files.items():
            archive.writestr(name, blob)
    return folder / "iu_xray.zip"


def test_iu_xray_archive_is_extracted_only_when_checked(tmp_path):
    import shutil
    import zipfile

    from gsco.data.prepare.reports import prepare_report_data

    archive = r2gen_zip(tmp_path / "downloads")
    root = tmp_path / "data"
    with pytest.raises(PrepareError, match=r"studies per split, the published sizes are \{'train': 2069"):
        prepare_report_data("iu_xray", root, str(archive))
    assert not root.exists() or not list(root.iterdir())  # nothing extracted under any name
    sizes = {"train": 2, "val": 1, "test": 1}
    row = prepare_report_data("iu_xray", root, str(archive), sizes)[0]
    assert row["status"] == "extracted" and row["image_root"] == str(root / "iu_xray" / "images")
    assert (root / "iu_xray" / "images" / "CXRtest0" / "1.png").is_file() and not (root / "iu_xray.partial").exists()
    assert prepare_report_data("iu_xray", root, str(archive), sizes)[0]["status"] == "present"
    shutil.copytree(root / "iu_xray", tmp_path / "folder")
    (tmp_path / "folder" / "images" / "CXRval0" / "0.png").unlink()
    with pytest.raises(PrepareError, match="1 images the annotation names are missing .e.g. CXRval0/0.png"):
        prepare_report_data("iu_xray", root, str(tmp_path / "folder"), sizes)
    (tmp_path / "broken.zip").write_bytes(b"PK not a zip")
    with pytest.raises(PrepareError, match="broken.zip"):
        prepare_report_data("iu_xray", tmp_path / "other", str(tmp_path / "broken.zip"), sizes)
    assert zipfile.is_zipfile(archive)


@pytest.mark.e2e
def test_report_prepare_commands_check_in_one_line(tmp_path):
    from doc_commands import run_documented

    archive = r2gen_zip(tmp_path / "downloads")
    proc = run_documented("python -m gsco.data.prepare iu_xray --root data source=downloads/iu_xray.zip",
                          replace={"--root data": f"--root {tmp_path / 'data'}",
                                   "source=downloads/iu_xray.zip": f"source={archive}"}, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "the published sizes are" in proc.stderr
    proc = run_documented("python -m gsco.data.prepare mimic_cxr --root data source=/data/mimic_cxr",
                          replace={"--root data": f"--root {tmp_path / 'data'}",
                                   "/data/mimic_cxr": str(tmp_path / "nowhere")}, check=False)
    assert proc.returncode == 2 and "mimic_cxr: download R2Gen's mimic_cxr annotation.json" in proc.stderr
    assert "PhysioNet" in proc.stderr and not list((tmp_path / "data").rglob("*"))  # nothing left behind
