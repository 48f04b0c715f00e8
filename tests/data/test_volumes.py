"""3D datasets: MedMNIST-layout volume npz files, MONAI 3D specialists behind the timm interface, and GSCo on
volumes (NIfTI case images the generalist sees as a montage)."""

import json

import numpy as np
import pytest
import torch

from conftest import REPO

OPTIONS = ["liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart", "lung-right",
           "lung-left", "spleen", "pancreas"]


def organ_volumes(folder, n=(22, 11, 11), size=28):
    """organmnist3d.npz in MedMNIST's layout: uint8 volumes (N, D, H, W), labels (N, 1); a bright cube whose
    position follows the label, over noise."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = np.arange(count) % len(OPTIONS)
        volumes = rng.integers(0, 60, (count, size, size, size), dtype=np.uint8)
        for i, label in enumerate(labels):
            at = 2 + 2 * label
            volumes[i, at:at + 6, 8:14, 8:14] = 220
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = volumes, labels[:, None]
    np.savez(folder / "organmnist3d.npz", **arrays)
    return folder


def test_a_volume_classifier_offers_the_timm_interface_and_its_features():
    from gsco.specialists.models import create_volume_specialist, features_from

    model = create_volume_specialist("resnet10", 11, announce=False).eval()
    x = torch.randn(2, 1, 28, 28, 28)
    fmap = model.forward_features(x)
    assert fmap.ndim == 5 and model(x).shape == (2, 11)
    assert torch.allclose(model.forward_head(fmap), model(x))
    assert features_from(model, fmap, "pooled").shape == (2, model.get_classifier().in_features)
    assert features_from(model, fmap, "flatten").shape == (2, fmap[0].numel())
    with pytest.raises(ValueError, match="no 3D version here; for a 3D dataset choose one of resnet10"):
        create_volume_specialist("vit_base_patch16_224", 11)
    with pytest.raises(ValueError, match="a 3D specialist has none here"):
        create_volume_specialist("resnet18", 11, pretrained=True)


def test_volume_npz_is_read_and_checked(tmp_path):
    from gsco.data.datasets import read_split
    from gsco.data.registry import DatasetError, get_dataset_info

    info = get_dataset_info("organmnist3d")
    assert info.dims == 3 and info.n_samples == {"train": 971, "val": 161, "test": 610}
    data = read_split(info, "test", organ_volumes(tmp_path), 28)
    assert data.images.shape == (11, 28, 28, 28) and data.labels[:, 0].tolist() == list(range(11))
    import shutil

    shutil.copy(tmp_path / "organmnist3d.npz", tmp_path / "organmnist3d_64.npz")  # 28^3 volumes under the 64 name
    with pytest.raises(DatasetError, match="expected 64x64x64 volumes, got 28x28x28"):
        read_split(info, "test", tmp_path, 64)


@pytest.mark.e2e
def test_a_3d_specialist_trains_predicts_and_its_cases_run_through_inference_gsco_sh(tmp_path, toy_data):
    """README's 3D commands on a generated organmnist3d.npz: the results JSON has a 2D run's keys (the same
    commands); the case builder writes the test volumes as NIfTI and inference_gsco.sh (tiny preset)
    answers every arm on them, the generalist seeing a montage."""
    from gsco.collab.build_cases import build_cases

    from doc_commands import run_documented

    organ_volumes(tmp_path)
    out = tmp_path / "specialists"
    common = [f"data_path={tmp_path}", f"output_path={out}", "epochs=1", "batch_size=8", "batch_size_eval=11",
              "device=cpu", "search_top_n=5", "architecture=resnet10"]
    run_documented("python -m gsco.specialists.train --config configs/specialists/medmnist3d.yaml dataset=organmnist3d",
                   append=common)
    run_documented("CONFIG=configs/specialists/medmnist3d.yaml DATASET=organmnist3d bash inference_specialist.sh",
                   append=common)
    results = [out / "organmnist3d_28_endToEnd_resnet10_s9930641_results.json"]
    volume = json.loads(results[0].read_text())
    assert len(volume["y_true"]) == 11 and len(volume["all_search_train_labels"][0]) == 5
    assert (out / "organmnist3d_28_endToEnd_resnet10_s9930641_roc.png").is_file()
    from gsco.config import load_config
    from gsco.specialists.config import SpecialistConfig
    from gsco.specialists.predict import predict_specialist
    from gsco.specialists.train import train_specialist

    flat_cfg = load_config(SpecialistConfig, REPO / "configs/config.yaml", toy_data("toy_binary"))  # a 2D run's
    train_specialist(flat_cfg)  # results JSON (a generated 2D dataset), in process
    flat = json.loads(predict_specialist(flat_cfg)["files"].results.read_text())
    assert set(volume) == set(flat)

    cases = build_cases(results, tmp_path / "gsco" / "cases.json", tmp_path, rad_from=0, k=3)
    rows = json.loads(cases.read_text())
    assert len(rows) == 11 and rows[0]["image"] == "images/test_0.nii.gz" and rows[0]["label"] == "liver"
    from gsco.data.datasets import read_split
    from gsco.data.medical import read_scan
    from gsco.data.registry import get_dataset_info

    test = read_split(get_dataset_info("organmnist3d"), "test", tmp_path, 28)
    assert np.array_equal(read_scan(tmp_path / "gsco" / rows[3]["image"]).values, test.images[3])  # NIfTI round trip
    proc = run_documented("DATASET=organmnist3d bash inference_gsco.sh",
                          env={"CASES": str(cases), "OUT_DIR": str(tmp_path / "ablation")},
                          append=["model=tiny", "device=cpu", "max_new_tokens=4"])
    table = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    assert all(m["n"] == 11 for m in table["arms"].values()) and "moed_rad" in table["arms"]
    assert table["config"]["view"] == "montage" and "| moed_rad | 11 |" in proc.stdout
