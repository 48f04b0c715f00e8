"""The preparers of sources in h5 (PatchCamelyon -> PCam200), parquet (PathVQA) and CSV (PMC-VQA), on miniature
files in each source's own format, from local folders and a local HTTP server: checksums, split sizes, the
documented PCam200 draw, atomic writes, and a second run that changes nothing."""

import gzip
import hashlib
import io
import json

import numpy as np
import pytest

from gsco.data.prepare.files import PrepareError

from conftest import REPO

PCAM_N = {"train": 12, "val": 6, "test": 8}
PCAM_NAMES = {"train": "train", "val": "valid", "test": "test"}


def pcam_miniature(folder, gzipped=True):
    """PCam's six files (x: (N,96,96,3) uint8, y: (N,1,1,1) uint8, as published) for PCAM_N patches, and the
    MD5s of the decompressed files."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng, md5 = np.random.default_rng(1), {}
    for split, n in PCAM_N.items():
        theirs, sums = PCAM_NAMES[split], []
        arrays = {"x": rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8),
                  "y": (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)}
        for key, array in arrays.items():
            path = folder / f"camelyonpatch_level_2_split_{theirs}_{key}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset(key, data=array)
            sums.append(hashlib.md5(path.read_bytes()).hexdigest())
            if gzipped:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
        md5[theirs] = tuple(sums)
    return md5


def h5(path, key):
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f[key])


def test_pcam200_from_gzipped_files_is_the_documented_draw(tmp_path):
    from PIL import Image

    from gsco.data.prepare.pcam import prepare_pcam200
    from gsco.data.readers import open_image, read_npz_split
    from gsco.data.registry import get_dataset_info

    md5 = pcam_miniature(tmp_path / "downloads")
    root, draw = tmp_path / "data", {"train": 4, "val": 2, "test": 4}
    rows = prepare_pcam200(root, str(tmp_path / "downloads"), [28], seed=3, draw_sizes=draw, md5=md5,
                           expected=PCAM_N, progress=False)
    assert [r["status"] for r in rows] == ["copied"] * 6 + ["written", "written"]
    assert rows[-1]["splits"] == {"test": 4, "normal": 2, "tumor": 2} and rows[-1]["licence"] == "CC0 1.0"
    for split, theirs in PCAM_NAMES.items():  # decompressed in place, checked, no .gz or .partial left
        assert hashlib.md5((root / "pcam" / f"camelyonpatch_level_2_split_{theirs}_x.h5").read_bytes()).hexdigest() \
            == md5[theirs][0]
    assert sorted(p.suffix for p in (root / "pcam").iterdir()) == [".h5"] * 6

    with np.load(root / "pcam200.npz", allow_pickle=False) as npz:
        for stream, (split, theirs) in enumerate(PCAM_NAMES.items()):
            idx, labels = npz[f"{split}_indices"], h5(root / "pcam" / f"camelyonpatch_level_2_split_{theirs}_y.h5", "y")
            # the draw as DATASET.md states it: default_rng([seed, k]) picks the normals, then the tumors
            rng = np.random.default_rng([3, stream])
            k = draw[split]
            by_hand = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels.reshape(-1) == c), size=m,
                                                         replace=False) for c, m in ((0, k - k // 2), (1, k // 2))]))
            assert np.array_equal(idx, by_hand)
            assert np.array_equal(npz[f"{split}_labels"].reshape(-1), labels.reshape(-1)[idx])
            patches = h5(root / "pcam" / f"camelyonpatch_level_2_split_{theirs}_x.h5", "x")[idx]
            resized = [np.asarray(Image.fromarray(p).resize((28, 28), Image.Resampling.BICUBIC)) for p in patches]
            assert np.array_equal(npz[f"{split}_images"], np.stack(resized))
    test = read_npz_split(root / "pcam200.npz", "test", get_dataset_info("pcam200"), 28)  # the specialists' reader
    assert test.images.shape == (4, 28, 28, 3)

    meta = [json.loads(line) for line in (root / "pcam200" / "test.jsonl").read_text().splitlines()]
    test_idx = np.load(root / "pcam200.npz")["test_indices"]
    test_x = h5(root / "pcam" / "camelyonpatch_level_2_split_test_x.h5", "x")
    assert [r["pcam_index"] for r in meta] == test_idx.tolist()
    assert [r["answer"] for r in meta] == [["normal", "tumor"][i % 2] for i in test_idx]  # y = index % 2
    assert meta[0]["options"] == ["normal", "tumor"] and "'normal', 'tumor'" in meta[0]["question"]
    shown = open_image(root / "pcam200" / meta[1]["image"])
    assert np.array_equal(np.asarray(shown), test_x[test_idx[1]])  # MedDr sees the patch as published (96 px)

    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    again = prepare_pcam200(root, str(tmp_path / "downloads"), [28], seed=3, draw_sizes=draw, md5=md5,
                            expected=PCAM_N, progress=False)
    assert {r["status"] for r in again} == {"present"}
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps

    more = prepare_pcam200(root, str(tmp_path / "downloads"), [28], seed=3, draw_sizes={**draw, "train": "all"},
                           md5=md5, expected=PCAM_N, progress=False)
    assert more[6]["status"] == "written" and more[7]["status"] == "present"  # the test draw does not move
    with np.load(root / "pcam200.npz") as npz:
        assert npz["train_indices"].tolist() == list(range(12)) and np.array_equal(npz["test_indices"], test_idx)


def test_pcam_over_http_with_a_bad_checksum_or_a_truncated_gzip_leaves_nothing(tmp_path, server):  # noqa: F811
    from gsco.data.prepare.pcam import prepare_pcam200

    served, url = server
    md5 = pcam_miniature(served)
    root = tmp_path / "data"
    wrong = {**md5, "valid": ("0" * 32, md5["valid"][1])}
    with pytest.raises(PrepareError, match=r"split_valid_x.h5.gz: MD5 [0-9a-f]{32}, expected 0{32} \(the "
                                           r"decompressed PCam files' MD5s.*nothing was written to"):
        prepare_pcam200(root, url, [28], md5=wrong, expected=PCAM_N, progress=False,
                        draw_sizes={"train": 2, "val": 2, "test": 2})
    assert sorted(p.name for p in (root / "pcam").iterdir()) == [  # the files before it, none of the bad one
        "camelyonpatch_level_2_split_train_x.h5", "camelyonpatch_level_2_split_train_y.h5"]
    packed = served / "camelyonpatch_level_2_split_valid_x.h5.gz"
    packed.write_bytes(packed.read_bytes()[:-100])
    with pytest.raises(PrepareError, match="split_valid_x.h5.gz: not a complete gzip file"):
        prepare_pcam200(root, url, [28], md5=md5, expected=PCAM_N, progress=False)
    assert not list(root.rglob("*.partial")) and not (root / "pcam200.npz").exists()
    plain = pcam_miniature(tmp_path / "plain", gzipped=False)  # a folder of decompressed files is a source too
    with pytest.raises(PrepareError, match="pcam200: .*_train_x.h5 holds 12 patches .* PCam's train split has "
                                           "262144 patches of 96x96x3"):
        prepare_pcam200(tmp_path / "other", str(tmp_path / "plain"), md5=plain, progress=False)


def path_vqa_miniature(folder):
    """PathVQA's Hugging Face layout: data/{train,validation,test}-0000i-of-0000n.parquet with columns image
    (struct of bytes and path), question, answer."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images = []
    for shade in (40, 200):
        buffer = io.BytesIO()
        Image.new("RGB", (12, 12), (shade, 90, 90)).save(buffer, format="JPEG")
        images.append(buffer.getvalue())
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shards = {"train": [[("yes", 0), ("fibrosis", 1)], [(" No", 0)]], "validation": [[("yes", 1)]],
              "test": [[("necrosis ", 1), ("no", 1)]]}
    for stem, parts in shards.items():
        for i, part in enumerate(parts):
            table = pa.table({"image": [{"bytes": images[k], "path": None} for _, k in part],
                              "question": [f"question {stem} {i} {j}?" for j in range(len(part))],
                              "answer": [a for a, _ in part]})
            pq.write_table(table, folder / "data" / f"{stem}-{i:05d}-of-{len(parts):05d}-abc.parquet")
    return images


def test_path_vqa_parquet_becomes_metafiles_with_its_images_once(tmp_path):
    from gsco.data.prepare.vqa import prepare_vqa

    images = path_vqa_miniature(tmp_path / "path-vqa")
    root, sizes = tmp_path / "data", {"train": 3, "val": 1, "test": 2}
    report = prepare_vqa("path_vqa", root, str(tmp_path / "path-vqa"), expected=sizes)
    assert [r["splits"] for r in report] == [{"train": 3, "closed": 2, "open": 1}, {"val": 1, "closed": 1, "open": 0},
                                             {"test": 2, "closed": 1, "open": 1}]
    train = [json.loads(line) for line in (root / "path_vqa" / "path_vqa_train.jsonl").read_text().splitlines()]
    assert [(r["question_id"], r["answer"], r["answer_type"]) for r in train] == [
        ("train-0", "yes", "CLOSED"), ("train-1", "fibrosis", "OPEN"), ("train-2", "No", "CLOSED")]
    assert train[0]["image"] == train[2]["image"] != train[1]["image"] and train[0]["image"].endswith(".jpg")
    assert (root / "path_vqa" / train[1]["image"]).read_bytes() == images[1]
    assert len(list((root / "path_vqa" / "images").iterdir())) == 2  # one file per distinct image
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert {r["status"] for r in prepare_vqa("path_vqa", root, str(tmp_path / "path-vqa"), sizes)} == {"present"}
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    with pytest.raises(PrepareError, match=r"path_vqa: .* gives \{'train': 3, 'val': 1, 'test': 2\} questions per "
                                           r"split, the published sizes are \{'train': 19654, 'val': 6259"):
        prepare_vqa("path_vqa", tmp_path / "other", str(tmp_path / "path-vqa"))
    (tmp_path / "path-vqa" / "data" / "test-00000-of-00001-abc.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(PrepareError, match="test-00000-of-00001-abc.parquet: not a PathVQA parquet shard"):
        prepare_vqa("path_vqa", tmp_path / "other", str(tmp_path / "path-vqa"), sizes)
    assert not (tmp_path / "other").exists()


def pmc_vqa_miniature(folder, columns=None):
    """PMC-VQA's version-1 files: train.csv, test.csv, test_clean.csv (its columns, choices written ``A:...``) and
    the unzipped images/ folder."""
    import csv

    from PIL import Image

    columns = columns or ["index", "Figure_path", "Caption", "Question", "Answer", "Choice A", "Choice B",
                          "Choice C", "Choice D", "Answer_label"]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), (10, 20, 30)).save(folder / "images" / "PMC1064097_F1.jpg")
    rows = [{"index": 0, "Figure_path": "PMC1064097_F1.jpg", "Caption": "A PET scan, with commas, and \"quotes\"",
             "Question": " What is the uptake pattern in the breast? ", "Answer": "Focal uptake pattern",
             "Choice A": "A:Diffuse uptake pattern", "Choice B": "B:Focal uptake pattern",
             "Choice C": " C: No uptake pattern", "Choice D": "D:Cannot determine from the information given",
             "Answer_label": "B"},
            {"index": 1, "Figure_path": "PMC1064097_F1.jpg", "Caption": "", "Question": "Is a lesion seen?",
             "Answer": "Yes", "Choice A": "A:Yes", "Choice B": "B:No", "Choice C": "C:Unclear", "Choice D": "D:None",
             "Answer_label": "A"}]
    for name, n in (("train", 2), ("test", 1), ("test_clean", 1)):
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows[:n])


def test_pmc_vqa_csv_becomes_metafiles_with_its_choices(tmp_path):
    from gsco.data.prepare.vqa import prepare_vqa

    pmc_vqa_miniature(tmp_path / "PMC-VQA")
    root, sizes = tmp_path / "data", {"train": 2, "test": 1, "test_clean": 1}
    report = prepare_vqa("pmc_vqa", root, str(tmp_path / "PMC-VQA"), expected=sizes)
    assert [r["file"].rsplit("/", 1)[-1] for r in report] == ["pmc_vqa_train.jsonl", "pmc_vqa_test.jsonl",
                                                              "pmc_vqa_test_clean.jsonl"]
    train = [json.loads(line) for line in (root / "pmc_vqa" / "pmc_vqa_train.jsonl").read_text().splitlines()]
    assert train[0] == {"id": "train-0", "split": "train", "image": "images/PMC1064097_F1.jpg",
                        "question": "What is the uptake pattern in the breast?", "question_id": "train-0",
                        "answer": "Focal uptake pattern", "answer_type": "OPEN",
                        "options": ["Diffuse uptake pattern", "Focal uptake pattern", "No uptake pattern",
                                    "Cannot determine from the information given"], "answer_label": "B"}
    assert train[1]["answer_type"] == "CLOSED" and train[1]["options"][0] == "Yes"
    assert (root / "pmc_vqa" / "images" / "PMC1064097_F1.jpg").read_bytes() == \
        (tmp_path / "PMC-VQA" / "images" / "PMC1064097_F1.jpg").read_bytes()
    assert {r["status"] for r in prepare_vqa("pmc_vqa", root, str(tmp_path / "PMC-VQA"), sizes)} == {"present"}
    with pytest.raises(PrepareError, match=r"the published sizes are \{'train': 152603, 'test': 33430, "
                                           r"'test_clean': 2000\}"):
        prepare_vqa("pmc_vqa", tmp_path / "other", str(tmp_path / "PMC-VQA"))
    pmc_vqa_miniature(tmp_path / "renamed", columns=["Figure_path", "Question", "Anwser", "Choice A", "Choice B",
                                                     "Choice C", "Choice D", "Answer_label"])
    with pytest.raises(PrepareError, match=r"renamed/train.csv: no column Answer \(PMC-VQA's columns: Figure_path"):
        prepare_vqa("pmc_vqa", tmp_path / "other", str(tmp_path / "renamed"), sizes)
    (tmp_path / "PMC-VQA" / "images" / "PMC1064097_F1.jpg").unlink()
    with pytest.raises(PrepareError, match="PMC1064097_F1.jpg .question train-0. is missing from the source"):
        prepare_vqa("pmc_vqa", tmp_path / "other", str(tmp_path / "PMC-VQA"), sizes)


@pytest.mark.e2e
def test_documented_pcam_path_vqa_and_pmc_vqa_commands(tmp_path):
    """DATASET.md's commands as users run them, on the miniatures: PCam offline says where to put the files; with
    the published checksums it refuses the miniature in one line and leaves no file; PathVQA and PMC-VQA refuse
    their sizes in one line."""
    from doc_commands import run_documented

    pcam_miniature(tmp_path / "downloads" / "pcam")
    path_vqa_miniature(tmp_path / "downloads" / "path-vqa")
    pmc_vqa_miniature(tmp_path / "downloads" / "PMC-VQA")
    data = tmp_path / "data"
    proc = run_documented("python -m gsco.data.prepare pcam200 --root data", replace={"--root data": f"--root {data}"},
                          append=["source=http://127.0.0.1:9"], check=False)  # Zenodo, as an offline machine sees it
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "cannot be reached" in proc.stderr and "source=DIR (the folder holding camelyonpatch_level_2_split_train_x" \
        in proc.stderr
    for command, message in (
            ("python -m gsco.data.prepare pcam200 --root data source=downloads/pcam", "MD5s, as kaiko-ai/eva"),
            ("python -m gsco.data.prepare path_vqa --root data source=downloads/path-vqa", "published sizes"),
            ("python -m gsco.data.prepare pmc_vqa --root data source=downloads/PMC-VQA", "published sizes")):
        proc = run_documented(command, replace={"--root data": f"--root {data}",
                                                "source=downloads": f"source={tmp_path / 'downloads'}"}, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not [p for p in data.rglob("*") if p.is_file()]


def test_the_pcam200_metafile_is_what_the_reference_config_evaluates(tmp_path):
    """configs/meddr/reference/pcam200.yaml with METAFILE / IMAGE_ROOT as its header gives them: every prepared
    test patch becomes one diagnosis item asked with the reference's PCam200 prompt."""
    from gsco.config import load_config
    from gsco.data.prepare.pcam import prepare_pcam200
    from gsco.recipes.evaluate import EvalConfig, read_metafile

    md5 = pcam_miniature(tmp_path / "pcam")
    prepare_pcam200(tmp_path / "data", str(tmp_path / "pcam"), [28], draw_sizes={"train": 2, "val": 2, "test": 4},
                    md5=md5, expected=PCAM_N, progress=False)
    cfg = load_config(EvalConfig, REPO / "configs/meddr/reference/pcam200.yaml",
                      {"metafile": str(tmp_path / "data" / "pcam200" / "test.jsonl"),
                       "image_root": str(tmp_path / "data" / "pcam200")})
    items = read_metafile(cfg)
    assert len(items) == 4 and all(it.image.is_file() and it.options == ["normal", "tumor"] for it in items)
    assert {it.annotation for it in items} == {"normal", "tumor"} and "decide if the case is normal or tumor" in \
        items[0].question


def test_dataset_md_states_the_sizes_each_preparer_checks():
    import re

    from gsco.data.prepare.pcam import PCAM
    from gsco.data.prepare.reports import REPORT_SOURCES
    from gsco.data.prepare.vqa import VQA_SOURCES

    text = (REPO / "DATASET.md").read_text()
    for name, spec in {**VQA_SOURCES, **REPORT_SOURCES}.items():
        row = re.search(rf"^\| `{name}` \|.*\|([^|]+)\|$", text, re.M)
        assert row and all(str(n) in row.group(1) for n in spec.sizes.values()), name
        assert f"python -m gsco.data.prepare {name} --root data source=" in text
    assert " / ".join(str(n) for n in PCAM.sizes.values()) in text and "default_rng([seed, k])" in text
