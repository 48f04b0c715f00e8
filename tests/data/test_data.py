import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from gsco.data.datasets import Preprocess, build_dataset
from gsco.data.readers import npz_filename, read_npz_split
from gsco.data.registry import DatasetError, get_dataset_info

from conftest import TOY_DATASETS, write_npz

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def info_of(name, toy_registry):
    return get_dataset_info(name, toy_registry)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
@pytest.mark.parametrize("img_size", [28, 64, 224])
@pytest.mark.parametrize("label_shape", ["n", "n1"])
def test_npz_every_task_type_and_size_layout(tmp_path, toy_registry, name, img_size, label_shape):
    entry = TOY_DATASETS[name]
    if entry["task"] == "multi-label, binary-class" and label_shape == "n":
        pytest.skip("multi-label labels are always (N, L)")
    info = info_of(name, toy_registry)
    path = write_npz(tmp_path, name, entry["task"], info.num_classes, img_size, entry["n_channels"],
                     label_shape=label_shape)
    assert path.name == (f"{name}.npz" if img_size == 28 else f"{name}_{img_size}.npz") == npz_filename(name, img_size)
    for mode, out in (("pad", max(224, img_size)), ("native", img_size), ("resize", 224)):
        ds = build_dataset(info, "test", tmp_path, img_size, Preprocess(mode, MEAN, STD, as_rgb=True))
        assert len(ds) == 24
        x, y = ds[3]
        assert x.shape == (3, out, out) and x.dtype == torch.float32
        raw = np.load(path)["test_labels"].reshape(24, -1)
        if info.multi_label:
            assert torch.equal(y, torch.tensor(raw[3], dtype=torch.float32))
        else:
            assert y == int(raw[3, 0])


def test_pad_protocol_normalises_then_zero_pads_centred(tmp_path, toy_registry):
    info = info_of("toy_binary", toy_registry)
    write_npz(tmp_path, "toy_binary", info.task, 2, 28, 1)
    ds = build_dataset(info, "train", tmp_path, 28, Preprocess("pad", MEAN, STD, as_rgb=True))
    x, _ = ds[0]
    raw = torch.from_numpy(ds.data.images[0]).float() / 255
    expected = (raw[None].expand(3, -1, -1) - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert torch.allclose(x[:, 98:126, 98:126], expected)  # (224 - 28) / 2 = 98 on each side
    mask = torch.ones(224, 224, dtype=torch.bool)
    mask[98:126, 98:126] = False
    assert torch.all(x[:, mask] == 0)


def test_grey_to_rgb_only_when_asked(tmp_path, toy_registry):
    info = info_of("toy_binary", toy_registry)
    write_npz(tmp_path, "toy_binary", info.task, 2, 28, 1)
    rgb = build_dataset(info, "val", tmp_path, 28, Preprocess("native", (0.5,) * 3, (0.5,) * 3, as_rgb=True))[0][0]
    grey = build_dataset(info, "val", tmp_path, 28, Preprocess("native", (0.5,) * 3, (0.5,) * 3, as_rgb=False))[0][0]
    assert rgb.shape == (3, 28, 28) and grey.shape == (1, 28, 28)
    assert torch.equal(rgb[0], rgb[2]) and torch.equal(rgb[0], grey[0])


@pytest.mark.e2e
def test_real_breastmnist_reads_with_official_sizes(shared_breastmnist):
    info = get_dataset_info("breastmnist")
    for split, n in (("train", 546), ("val", 78), ("test", 156)):
        data = read_npz_split(shared_breastmnist, split, info, 28)
        assert data.images.shape == (n, 28, 28) and data.labels.shape == (n, 1)
        assert set(np.unique(data.labels)) == {0, 1}


@pytest.fixture
def shared_breastmnist():
    from conftest import shared_path

    return shared_path("data", "medmnist", "breastmnist.npz")


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("corrupt, message", [
    ("missing", "not found"),
    ("truncated", "not a readable npz file"),
    ("no_key", "key 'test_labels' missing"),
    ("out_of_range", "label 7 at row 2 is out of range"),
    ("float_labels", "labels must be integers"),
    ("wrong_size", "expected 28x28 images, got 30x30"),
    ("wrong_channels", "has 1 channel(s), the file has 3"),
    ("count_mismatch", "24 images in 'test_images' but 23 labels"),
])
def test_bad_npz_files_name_the_file_and_key(tmp_path, toy_registry, corrupt, message):
    info = info_of("toy_binary", toy_registry)
    path = write_npz(tmp_path, "toy_binary", info.task, 2, 28, 1)
    arrays = _arrays(path)
    if corrupt == "missing":
        path.unlink()
    elif corrupt == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        if corrupt == "no_key":
            del arrays["test_labels"]
        elif corrupt == "out_of_range":
            arrays["test_labels"][2, 0] = 7
        elif corrupt == "float_labels":
            arrays["test_labels"] = arrays["test_labels"].astype(np.float32) + 0.5
        elif corrupt == "wrong_size":
            arrays["test_images"] = np.zeros((24, 30, 30), np.uint8)
        elif corrupt == "wrong_channels":
            arrays["test_images"] = np.zeros((24, 28, 28, 3), np.uint8)
        elif corrupt == "count_mismatch":
            arrays["test_labels"] = arrays["test_labels"][:23]
        np.savez(path, **arrays)
    with pytest.raises(DatasetError) as err:
        read_npz_split(path, "test", info, 28)
    assert message in str(err.value) and str(path) in str(err.value)


def test_multilabel_labels_are_checked(tmp_path, toy_registry):
    info = info_of("toy_multilabel", toy_registry)
    path = write_npz(tmp_path, "toy_multilabel", info.task, 4, 28, 1)
    arrays = _arrays(path)
    arrays["val_labels"] = arrays["val_labels"][:, :3]
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match="has 4 labels .* but the labels have 3 columns"):
        read_npz_split(path, "val", info, 28)
    arrays = _arrays(path)
    arrays["train_labels"][5, 1] = 2
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match="must be 0 or 1; row 5 column 1 is 2"):
        read_npz_split(path, "train", info, 28)


def _metafile_registry(tmp_path, suffix, task="multi-class", labels=("cat", "dog", "bird")):
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump({"pets": {
        "task": task, "label_names": list(labels), "format": "metafile",
        "metafiles": {s: f"{s}{suffix}" for s in ("train", "val", "test")}, "image_root": "images"}}))
    return get_dataset_info("pets", reg)


def _write_images(tmp_path, n=4):
    from PIL import Image

    (tmp_path / "images").mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(tmp_path / "images" / f"im{i}.png")


def test_csv_and_jsonl_metafiles(tmp_path):
    _write_images(tmp_path)
    info = _metafile_registry(tmp_path, ".csv")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("id,image,label\na,im0.png,0\nb,im1.png,dog\nc,im2.png,Bird\n")
    ds = build_dataset(info, "train", tmp_path, 28, Preprocess("native", MEAN, STD, as_rgb=True))
    assert [ds[i][1] for i in range(3)] == [0, 1, 2] and ds.data.ids == ["a", "b", "c"]
    assert ds[1][0].shape == (3, 28, 28)  # read, then bicubic-resized to img_size

    info = _metafile_registry(tmp_path, ".jsonl", task="multi-label, binary-class")
    for split in ("train", "val", "test"):
        rows = [{"image": "im0.png", "label": ["cat", "bird"]}, {"image": "im3.png", "label": "dog"},
                {"image": "im1.png", "label": [0, 1, 1]}]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = build_dataset(info, "val", tmp_path, 28, Preprocess("pad", MEAN, STD, as_rgb=True))
    assert ds.data.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert ds[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize("content, message", [
    ("image,label\nim0.png,0\nim1.png,fish\n", "test.csv line 3: label 'fish' is not one of"),
    ("image,label\nim0.png,5\n", "test.csv line 2: label 5 out of range"),
    ("path,label\nim0.png,0\n", "CSV header must have columns image,label"),
    ("image,label\nim0.txt,0\n", "line 2: image"),
])
def test_bad_metafile_rows_name_the_line(tmp_path, content, message):
    _write_images(tmp_path)
    info = _metafile_registry(tmp_path, ".csv")
    (tmp_path / "test.csv").write_text(content)
    with pytest.raises(DatasetError, match=message):
        build_dataset(info, "test", tmp_path, 28, Preprocess("native", MEAN, STD, as_rgb=True))


def test_unreadable_image_is_named(tmp_path):
    _write_images(tmp_path)
    info = _metafile_registry(tmp_path, ".csv")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "test.csv").write_text("image,label\nbroken.png,0\n")
    ds = build_dataset(info, "test", tmp_path, 28, Preprocess("native", MEAN, STD, as_rgb=True))
    with pytest.raises(DatasetError, match="broken.png cannot be read"):
        ds[0]


def test_dicom_images_are_read(tmp_path):
    from pydicom.data import get_testdata_file

    _write_images(tmp_path)
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "images" / "ct.dcm")
    info = _metafile_registry(tmp_path, ".csv")
    (tmp_path / "test.csv").write_text("image,label\nct.dcm,cat\n")
    ds = build_dataset(info, "test", tmp_path, 64, Preprocess("native", MEAN, STD, as_rgb=True))
    image = ds.image(0)
    assert image.shape == (64, 64, 3) and image.min() < 20 and image.max() > 200  # min-max windowed to 0..255
