import json

import numpy as np
import pytest
import timm
import torch
from sklearn.neighbors import NearestNeighbors

from gsco.config import ConfigError, load_config
from gsco.specialists.config import SpecialistConfig
from gsco.specialists.models import load_specialist_checkpoint
from gsco.specialists.predict import predict_specialist
from gsco.specialists.retrieval import RetrievalIndex
from gsco.specialists.train import train_specialist

REFERENCE_RESULT_KEYS = {"ACC", "AUC", "per_class_AUC", "y_true", "y_pred", "y_logits", "checkpoint_file",
                         "all_search_sims", "all_search_train_ids", "all_search_train_labels"}


def cfg_of(overrides: dict) -> SpecialistConfig:
    return load_config(SpecialistConfig, None, overrides)


def test_checkpoints_are_named_as_the_reference_and_plain_state_dicts(toy_data, tmp_path):
    cfg = cfg_of(toy_data("toy_binary"))
    summary = train_specialist(cfg)
    out = tmp_path / "out"
    stem = "toy_binary_28_endToEnd_test_resnet_s9930641"
    assert summary["best_checkpoint"] == out / f"{stem}_best.pth"
    for suffix in ("_best.pth", "_final.pth", "_last.pth", "_history.jsonl", "_config.json"):
        assert (out / f"{stem}{suffix}").is_file()
    state = torch.load(out / f"{stem}_best.pth", weights_only=True)
    fresh = timm.create_model("test_resnet", num_classes=2)
    assert list(state) == list(fresh.state_dict())  # no "module."/"model." prefix, no wrapper dict
    fresh.load_state_dict(state, strict=True)
    history = [json.loads(line) for line in (out / f"{stem}_history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    assert {"train_loss", "val_loss", "val_acc", "val_auc", "lr"} <= set(history[0])


def test_interrupted_training_resumes_to_the_same_weights(toy_data, tmp_path):
    base = toy_data("toy_multiclass")
    full = cfg_of({**base, "epochs": 4, "output_path": str(tmp_path / "full")})
    train_specialist(full)

    class Interrupt(Exception):
        pass

    def stop_after_second(epoch, row):
        if epoch == 1:
            raise Interrupt

    broken = cfg_of({**base, "epochs": 4, "output_path": str(tmp_path / "resumed")})
    with pytest.raises(Interrupt):
        train_specialist(broken, on_epoch_end=stop_after_second)
    name = broken.run_name
    assert not (tmp_path / "resumed" / f"{name}_final.pth").exists()
    train_specialist(broken)
    a = torch.load(tmp_path / "full" / f"{name}_final.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / f"{name}_final.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    def rows(path):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]

    assert rows(tmp_path / "full" / f"{name}_history.jsonl") == rows(tmp_path / "resumed" / f"{name}_history.jsonl")
    # a finished run is not trained again: it reports the stored result
    before = (tmp_path / "resumed" / f"{name}_final.pth").stat().st_mtime_ns
    assert train_specialist(broken)["best_epoch"] == train_specialist(full)["best_epoch"] >= 1
    assert (tmp_path / "resumed" / f"{name}_final.pth").stat().st_mtime_ns == before
    # ... unless it was trained with other settings: refused, naming them; overwrite=true trains it again
    other = cfg_of({**base, "epochs": 3, "learning_rate": 0.05, "output_path": str(tmp_path / "resumed")})
    with pytest.raises(ValueError, match=r"_last.pth is a run trained with other settings \(epochs: 4 -> 3; "
                                         r"learning_rate: .* -> 0.05\): use another output_path, "
                                         r"or give overwrite=true"):
        train_specialist(other)
    assert (tmp_path / "resumed" / f"{name}_final.pth").stat().st_mtime_ns == before
    again = train_specialist(cfg_of({**base, "epochs": 3, "learning_rate": 0.05, "overwrite": True,
                                     "output_path": str(tmp_path / "resumed")}))
    assert len(again["history"].read_text().splitlines()) <= 3
    assert (tmp_path / "resumed" / f"{name}_final.pth").stat().st_mtime_ns != before


def test_early_stopping_and_selection_metric(toy_data, tmp_path):
    cfg = cfg_of({**toy_data("toy_binary"), "epochs": 10, "learning_rate": 1e-30, "early_stopping_patience": 2,
                  "selection_metric": "val_loss"})
    summary = train_specialist(cfg)
    history = summary["history"].read_text().splitlines()
    assert len(history) == 3 and summary["best_epoch"] == 1  # a frozen loss never improves after epoch 1


def test_linear_probing_trains_only_the_classifier(toy_data, tmp_path):
    cfg = cfg_of({**toy_data("toy_binary"), "training_procedure": "linearProbing", "epochs": 1})
    torch.manual_seed(cfg.seed)
    init = timm.create_model("test_resnet", num_classes=2).state_dict()
    train_specialist(cfg)
    trained = torch.load(tmp_path / "out" / f"{cfg.run_name}_final.pth", weights_only=True)
    changed = {k for k in init if not torch.equal(init[k], trained[k])}
    assert changed and all(k.startswith("fc.") for k in changed)


def test_predict_writes_reference_results_plots_and_exact_retrieval(toy_data, tmp_path):
    cfg = cfg_of(toy_data("toy_binary"))
    train_specialist(cfg)
    out = predict_specialist(cfg)
    files = out["files"]
    res = json.loads(files.results.read_text())
    assert REFERENCE_RESULT_KEYS <= set(res)
    n_test, top = 24, 5
    assert np.array(res["y_true"]).shape == (n_test,) and np.array(res["y_logits"]).shape == (n_test, 2)
    assert np.array(res["all_search_sims"]).shape == (n_test, top)
    assert res["checkpoint_file"] == str(files.best)
    for png in (files.roc, files.confusion):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved index finds what scikit-learn finds, and the stored labels are the neighbours' labels
    index = RetrievalIndex.load(files.index)
    train_labels = np.load(tmp_path / "data" / "toy_binary.npz")["train_labels"][:, 0]
    assert np.array_equal(index.labels.numpy()[:, 0], train_labels)
    ids = np.array(res["all_search_train_ids"])
    assert np.array_equal(np.array(res["all_search_train_labels"]), train_labels[ids])
    sims = np.array(res["all_search_sims"])
    assert np.all(np.diff(sims, axis=1) >= -1e-6) and sims.min() >= 0  # distances, nearest first
    prob = np.array(res["y_prob"])
    assert res["y_pred"] == (prob[:, 1] > 0.5).astype(int).tolist()


def test_a_run_being_trained_is_not_evaluated(toy_data, tmp_path):
    """Evaluation takes the run's lock, as training does: a _best.pth still changing is not scored half-way."""
    import fcntl

    from gsco.runtime import OutputLockedError

    cfg = cfg_of({**toy_data("toy_binary"), "epochs": 1})
    train_specialist(cfg)
    with open(tmp_path / "out" / f".{cfg.run_name}.gsco.lock", "w") as held:  # a training run in another process
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputLockedError, match=f"{cfg.run_name}\\) is being written by another run"):
            predict_specialist(cfg)
    assert predict_specialist(cfg)["files"].results.is_file()


def test_search_top_n_above_the_training_size_is_said(toy_data, caplog):
    cfg = cfg_of({**toy_data("toy_binary"), "training_procedure": "kNN", "search_top_n": 100, "k": 60})
    with caplog.at_level("WARNING", logger="gsco.specialists.predict"):
        res = json.loads(predict_specialist(cfg)["files"].results.read_text())
    assert "search_top_n 100: the training split offers 48 neighbours per image; 48 are stored" in caplog.text
    assert "k 60: the kNN vote takes the 48 training images there are" in caplog.text
    assert res["search_top_n"] == 48 and np.array(res["all_search_sims"]).shape == (24, 48)


def test_predict_neighbours_equal_sklearn_on_the_same_features(toy_data, tmp_path):
    from gsco.specialists.build import setup_specialist
    from gsco.specialists.predict import extract_features

    cfg = cfg_of({**toy_data("toy_multiclass"), "search_top_n": 10})
    train_specialist(cfg)
    res = predict_specialist(cfg)["results"]
    run = setup_specialist(cfg)
    load_specialist_checkpoint(run.model, run.files.best)
    run.model.eval()
    _, _, train_f = extract_features(run, "train", ("flatten",), with_logits=False)
    _, _, test_f = extract_features(run, "test", ("flatten",), with_logits=False)
    nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(train_f["flatten"].numpy())
    dist, idx = nn.kneighbors(test_f["flatten"].numpy())
    assert np.allclose(np.array(res["all_search_sims"]), dist, atol=1e-5)
    assert np.array_equal(np.array(res["all_search_train_ids"]), idx)
    import dataclasses

    with_faiss = predict_specialist(dataclasses.replace(cfg, retrieval_backend="faiss"))["results"]  # the same
    assert np.allclose(np.array(with_faiss["all_search_sims"]), dist, atol=1e-5)
    assert np.array_equal(np.array(with_faiss["all_search_train_ids"]), idx)


def test_multilabel_and_knn_paths(toy_data, tmp_path):
    ml = cfg_of({**toy_data("toy_multilabel"), "epochs": 1})
    train_specialist(ml)
    res = predict_specialist(ml)["results"]
    assert np.array(res["y_true"]).shape == (24, 4) and np.array(res["y_pred"]).shape == (24, 4)
    assert np.array(res["all_search_train_labels"]).shape == (24, 5, 4)
    assert len(res["per_class_AUC"]) == 4

    knn = cfg_of({**toy_data("toy_ordinal"), "training_procedure": "kNN", "k": 4})
    assert train_specialist(knn) == {}
    res = predict_specialist(knn)["results"]
    prob = np.array(res["y_prob"])
    assert prob.shape == (24, 5) and np.allclose(prob.sum(1), 1) and np.all(prob * 4 == np.round(prob * 4))
    assert res["checkpoint_file"] is None


def test_missing_checkpoint_is_named(toy_data, tmp_path):
    cfg = cfg_of(toy_data("toy_binary"))
    with pytest.raises(FileNotFoundError, match="toy_binary_28_endToEnd_test_resnet_s9930641_best.pth"):
        predict_specialist(cfg)


def test_pretrained_path_loads_local_weights_and_reinitialises_the_head(toy_data, tmp_path):
    from safetensors.torch import save_file

    donor = timm.create_model("test_resnet", num_classes=7)
    weights = tmp_path / "imagenet_like.safetensors"
    save_file(donor.state_dict(), str(weights))
    from gsco.specialists.models import create_specialist

    model = create_specialist("test_resnet", 2, pretrained_path=str(weights))
    got = model.state_dict()
    assert torch.equal(got["conv1.0.weight"], donor.state_dict()["conv1.0.weight"])
    assert got["fc.weight"].shape == (2, donor.fc.in_features)
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        create_specialist("test_resnet", 2, pretrained_path=str(tmp_path / "nope.pth"))


def test_shipped_metafile_example_trains_and_predicts(tmp_path):
    from conftest import REPO

    keys = {"data_path": str(REPO / "data"), "extra_datasets": str(REPO / "data/examples/my_datasets.yaml"),
            "dataset": "toy_xray", "architecture": "test_resnet", "output_path": str(tmp_path), "epochs": 1,
            "device": "cpu", "search_top_n": 3, "img_size": 28, "preprocess": "native", "pretrained": False}
    cfg = cfg_of(keys)
    train_specialist(cfg)
    res = predict_specialist(cfg)["results"]
    assert res["label_names"] == ["normal", "abnormal"] and np.array(res["y_true"]).tolist() == [0, 1]
    assert np.array(res["all_search_train_ids"]).shape == (2, 3)
    # its images are files, rendered: a finished run is not taken for one trained with another window
    with pytest.raises(ValueError, match=r"trained with other settings \(window: auto -> lung\)"):
        train_specialist(cfg_of({**keys, "window": "lung"}))


def test_cifar_stem_keeps_28px_resolution_and_its_checkpoint_reloads(toy_data, tmp_path):
    from gsco.specialists.models import create_specialist

    model = create_specialist("resnet18", 2, stem="cifar").eval()
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, torch.nn.Identity)
    # 28 -> 28 (stem) -> 28, 14, 7, 4 through the stages; timm's own stem ends at 1x1.
    assert model.forward_features(torch.zeros(1, 3, 28, 28)).shape == (1, 512, 4, 4)
    assert create_specialist("resnet18", 2).eval().forward_features(torch.zeros(1, 3, 28, 28)).shape == (1, 512, 1, 1)
    with pytest.raises(ValueError, match="test_vit.*stem: default"):
        create_specialist("test_vit", 2, stem="cifar")

    cfg = cfg_of({**toy_data("toy_binary"), "architecture": "resnet18", "stem": "cifar", "epochs": 1})
    train_specialist(cfg)
    res = predict_specialist(cfg)["results"]  # the predict side rebuilds the same stem to load the checkpoint
    assert len(res["y_pred"]) == 24 and 0.0 <= res["AUC"] <= 1.0


def test_stem_outside_its_choices_is_refused():
    with pytest.raises(ConfigError, match="stem.*cifar"):
        cfg_of({"stem": "cifar10"})


def test_predict_on_the_training_split_leaves_each_image_out_of_its_own_neighbours(toy_data, tmp_path):
    cfg = cfg_of(toy_data("toy_binary"))
    train_specialist(cfg)
    test_res = json.loads(predict_specialist(cfg)["files"].results.read_text())
    out = predict_specialist(cfg_of({**toy_data("toy_binary"), "split": "train"}))
    files, res = out["files"], out["results"]
    assert files.results.name.endswith("_train_results.json") and files.roc.name.endswith("_train_roc.png")
    assert json.loads(files.results.read_text())["split"] == "train"
    assert test_res["split"] == "test"  # the test results file is untouched by the train run
    train_labels = np.load(tmp_path / "data" / "toy_binary.npz")["train_labels"][:, 0]
    ids = np.array(res["all_search_train_ids"])
    assert ids.shape == (48, 5) and not (ids == np.arange(48)[:, None]).any()
    assert np.array_equal(np.array(res["y_true"]), train_labels)
    assert np.array_equal(np.array(res["all_search_train_labels"]), train_labels[ids])
    # the same neighbours as a full search whose first hit (the image itself, distance 0) is dropped
    index = RetrievalIndex.load(files.index)
    from gsco.specialists.build import setup_specialist
    from gsco.specialists.predict import extract_features

    run = setup_specialist(cfg)
    load_specialist_checkpoint(run.model, run.files.best)
    run.model.eval()
    _, _, feats = extract_features(run, "train", ("flatten",), with_logits=False)
    dist, full = index.search(feats["flatten"], 6)
    assert np.array_equal(full[:, 0], np.arange(48)) and np.allclose(dist[:, 0], 0, atol=1e-5)
    assert np.array_equal(full[:, 1:], ids)
    # split=[test,train]: both in one run (the training features extracted once), the same files as one by one
    one_by_one = {p.name: p.read_text() for p in (run.files.results, files.results)}
    for p in (run.files.results, files.results):
        p.unlink()
    both = predict_specialist(cfg_of({**toy_data("toy_binary"), "split": ["test", "train"]}))
    assert [o["results"]["split"] for o in both] == ["test", "train"]
    assert {p.name: p.read_text() for p in (run.files.results, files.results)} == one_by_one
    with pytest.raises(ConfigError, match="key 'split': expected test, val or train, or a list of distinct ones"):
        cfg_of({**toy_data("toy_binary"), "split": ["train", "train"]})


def test_knn_metric_selects_the_neighbours_of_the_vote(toy_data, monkeypatch):
    """The kNN procedure votes over Euclidean neighbours by default (MedMNIST+), cosine ones when asked."""
    from gsco.specialists import predict as predict_module

    metrics = []
    real = predict_module.RetrievalIndex

    def spy(*args, **kwargs):
        metrics.append(kwargs.get("metric", "cosine"))
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "RetrievalIndex", spy)
    base = {**toy_data("toy_binary"), "training_procedure": "kNN", "k": 5, "save_index": False}
    predict_specialist(cfg_of(base))
    predict_specialist(cfg_of({**base, "knn_metric": "cosine"}))
    assert metrics == ["cosine", "euclidean", "cosine", "cosine"]  # RAD's index is cosine either way


def test_an_even_knn_vote_of_exactly_half_is_not_a_multi_label_prediction():
    """kNN vote fractions hit 0.5 whenever k is even; medmnist's evaluator predicts a label only above 0.5."""
    from gsco.metrics.classification import MULTI_LABEL, accuracy, predict_labels
    from gsco.specialists.predict import knn_scores
    from gsco.specialists.retrieval import RetrievalIndex

    train = np.eye(4, dtype=np.float32)
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    index = RetrievalIndex(train * [1, 1, 1, 0.01], labels, metric="euclidean")
    scores = knn_scores(index, np.array([[0.5, 0.5, 0.5, 0.0]], dtype=np.float32), 4, 2, multi_label=True)
    assert scores.tolist() == [[0.5, 0.25]]
    assert predict_labels(scores, MULTI_LABEL).tolist() == [[0, 0]]
    assert accuracy(np.array([[0, 0]]), scores, MULTI_LABEL) == 1.0


def test_pretrained_weights_come_from_timms_cache_and_offline_without_them_the_error_names_both_ways(
        tmp_path, monkeypatch):
    """pretrained: true loads timm's ImageNet weights the way timm does (its Hugging Face cache); offline with an
    empty cache the one error says how to get them and names pretrained_path."""
    import huggingface_hub.constants as hub_constants
    from safetensors.torch import save_file

    from gsco.specialists.models import PretrainedWeightsMissing, create_specialist

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PretrainedWeightsMissing) as err:
        create_specialist("test_resnet", 2, pretrained=True)
    message = str(err.value)
    assert "test_resnet" in message and "internet" in message and "pretrained_path=" in message
    assert "pretrained=false" in message
    # a cache as timm's first online run leaves it: hub/models--timm--<id>/snapshots/<rev>/model.safetensors
    hub_id = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    donor = timm.create_model("test_resnet")  # 1000 ImageNet classes
    snapshot = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(donor.state_dict(), str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    model = create_specialist("test_resnet", 2, pretrained=True)
    body = [k for k in donor.state_dict() if not k.startswith(donor.default_cfg["classifier"])]
    assert all(torch.equal(model.state_dict()[k], donor.state_dict()[k]) for k in body)
    assert model.get_classifier().out_features == 2


def test_v2_normalisation_and_grey_channels_reach_the_model(tmp_path):
    """medmnist_v2.yaml: Normalize(mean=[.5], std=[.5]) on the dataset's one grey channel."""
    from gsco.specialists.build import setup_specialist

    from conftest import REPO

    cfg = load_config(SpecialistConfig, REPO / "configs/specialists/medmnist_v2.yaml",
                      {"output_path": str(tmp_path), "device": "cpu"})
    run = setup_specialist(cfg)
    x = run.preprocess(np.array([[0, 255], [51, 102]], dtype=np.uint8))
    assert x.shape == (1, 2, 2) and torch.allclose(x[0], torch.tensor([[-1.0, 1.0], [-0.6, -0.2]]))
    assert run.model.conv1.in_channels == 1 and run.model.conv1.kernel_size == (3, 3)


@pytest.mark.e2e
def test_a_run_is_owned_by_one_trainer_and_refuses_other_data(toy_data, tmp_path):
    """Two trainings of one run into one output_path (the command): the second refuses at once naming the first's
    process (other runs may train beside it); a finished run asked to train on an npz with other labels is refused,
    not reported as "already finished" (in this process)."""
    import os
    import signal
    import subprocess
    import time

    from gsco.evaluation.resumable import ResumeMismatchError

    from conftest import REPO, write_npz
    from doc_commands import documented_argv, documented_env

    base = toy_data("toy_binary")
    keys = [f"{k}={v}" for k, v in base.items() if k not in ("dataset", "img_size", "architecture")]
    command = "python -m gsco.specialists.train --config configs/config.yaml dataset=pneumoniamnist img_size=64 " \
              "architecture=vgg16"
    def argv(*extra):
        return documented_argv(command, replace={"pneumoniamnist": "toy_binary", "img_size=64": "img_size=28",
                                                 "vgg16": "test_resnet"}, append=[*keys, *extra])

    env = {**documented_env(), "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(argv("epochs=400"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    lock = tmp_path / "out" / ".toy_binary_28_endToEnd_test_resnet_s9930641.gsco.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text().strip().isdigit()):
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGSTOP)  # it holds the run, stopped: the second starts without a race for the CPU
    second = subprocess.run(argv("epochs=400"), cwd=REPO, env=env, capture_output=True, text=True)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    assert "(toy_binary_28_endToEnd_test_resnet_s9930641) is being written by another run (process " \
           in second.stderr.strip().splitlines()[-1] and "output_path=..." in second.stderr

    cfg = cfg_of({**base, "overwrite": True})
    train_specialist(cfg)  # the run, finished in-process (over the killed one)
    final = tmp_path / "out" / f"{cfg.run_name}_final.pth"
    before = final.stat().st_mtime_ns
    write_npz(tmp_path / "data", "toy_binary", "binary-class", 2, seed=7)  # the same name, other images and labels
    with pytest.raises(ResumeMismatchError, match="_last.pth was trained on other data \\(train split: "):
        train_specialist(cfg_of(base))
    assert final.stat().st_mtime_ns == before
    stored = json.loads((tmp_path / "out" / f"{cfg.run_name}_config.json").read_text())["training_data"]
    assert set(stored) == {"train", "val"} and stored["train"]["path"].endswith("toy_binary.npz")
    train_specialist(cfg)  # overwrite=true trains it again on the new data
    assert final.stat().st_mtime_ns != before
    assert final.stat().st_mtime_ns != before
