"""Extending GSCo is one entry in one place, and the entry runs end to end: an arm (one ``Arm`` in the arm table),
a generalist backend (one class with ``@register_backend``), a classification dataset (one entry in a registry
YAML)."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from gsco.collab.config import GscoConfig
from gsco.config import ConfigError, load_config
from gsco.recipes.gsco import run

from conftest import write_npz


def _cases(folder, labels, rad, moed):
    rng = np.random.default_rng(0)
    cases = []
    for i, label in enumerate(labels):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
        cases.append({"id": f"c{i}", "image": f"c{i}.png", "label": label, "rad": rad, "moed": moed})
    (folder / "cases.json").write_text(json.dumps(cases))
    return folder / "cases.json"


def test_a_new_arm_is_one_registry_entry_and_runs_end_to_end(tmp_path, request, capsys):
    from gsco.collab import arms
    from gsco.collab.hint_samples import write_hint_samples

    request.addfinalizer(lambda: arms.ARMS.pop("rad_top2", None))  # the test's entry leaves with the test
    arms.register_arm(arms.Arm("rad_top2", ("rad",), rad=lambda case, task: case["rad"][:2],
                               about="the two most similar cases only"))
    cases = _cases(tmp_path, ["tumor"] * 3, ["tumor", "normal", "normal"], ["tumor", "tumor"])
    cfg = load_config(GscoConfig, None, {"dataset": "pcam200", "options": ["normal", "tumor"], "device": "cpu",
                                         "cases": str(cases), "out_dir": str(tmp_path / "out"),
                                         "max_new_tokens": 3, "arms": ["rad_top2", "rad"]})
    result = run(cfg)
    assert result["arms"]["rad_top2"]["n"] == 3 and "| rad_top2 | 3 |" in (tmp_path / "out" / "ablation.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "out" / "rad_top2_predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["c0", "c1", "c2"]
    assert all("similar cases are tumor,normal." in r["question"] for r in rows)
    samples = json.loads(write_hint_samples(cfg, cases, tmp_path / "hints.json", arms=["rad_top2"]).read_text())
    assert len(samples) == 3 and "tumor,normal." in samples[0]["conversations"][0]["value"]
    from gsco.collab import hint_samples

    with pytest.raises(SystemExit):
        hint_samples.main(["--help"])
    assert "rad_top2 (the two most similar cases only)" in " ".join(capsys.readouterr().out.split())


class EchoBackend:
    """A backend that trusts the specialists: it answers the first MoED hint, or "normal" without one."""

    name = "echo"
    asked: list = []

    @classmethod
    def from_config(cls, cfg, device=None):
        return cls()

    @classmethod
    def identity(cls, cfg) -> dict:
        return {"model": {"echo": cfg.model_name}}

    def answer(self, images, questions, max_new_tokens=512, num_beams=1, batch_size=8, system=None, progress=False,
               share_prefix=True, **generate_kwargs):
        EchoBackend.asked += list(questions)
        return [f"I think it is {q.split('specialist models are ')[1].split(',')[0].split('.')[0]}."
                if "specialist models are " in q else "It looks normal." for q in questions]


def test_a_new_backend_is_one_registered_class_and_runs_every_recipe(tmp_path, monkeypatch):
    from gsco.generalist import registry
    from gsco.generalist.backends import GeneralistBackend
    from gsco.recipes.evaluate import EvalConfig, evaluate

    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    registry.register_backend("echo")(EchoBackend)
    assert isinstance(EchoBackend(), GeneralistBackend) and "echo" in registry.backend_names()
    EchoBackend.asked = []
    cases = _cases(tmp_path, ["tumor", "normal", "tumor"], ["normal"], ["tumor", "normal"])
    keys = {"dataset": "pcam200", "cases": str(cases), "out_dir": str(tmp_path / "out"), "backend": "echo",
            "model_name": "v1", "arms": ["generalist", "moed"]}
    result = run(load_config(GscoConfig, None, keys))
    assert result["arms"]["moed"]["accuracy"] == pytest.approx(2 / 3)  # "tumor" each time: right on c0 and c2
    assert result["arms"]["generalist"]["accuracy"] == pytest.approx(1 / 3)  # "normal": right on c1 only
    assert len(EchoBackend.asked) == 6
    manifest = json.loads((tmp_path / "out" / "moed_predictions.manifest.json").read_text())
    assert manifest["model"] == {"echo": "v1"}
    # a re-run resumes (nothing asked again); another model of the backend is refused
    assert run(load_config(GscoConfig, None, keys))["arms"]["moed"]["n"] == 3 and len(EchoBackend.asked) == 6
    with pytest.raises(ValueError, match="answers of another run"):
        run(load_config(GscoConfig, None, {**keys, "model_name": "v2"}))
    # generalist evaluation on a metafile, the same backend
    (tmp_path / "c0.png").rename(tmp_path / "q.png")
    (tmp_path / "meta.jsonl").write_text(json.dumps(
        {"question_id": "q1", "image": "q.png", "question": "The specialist models are tumor. Which one?",
         "answer": "tumor", "options": ["normal", "tumor"]}) + "\n")
    metrics = evaluate(load_config(EvalConfig, None, {
        "metafile": str(tmp_path / "meta.jsonl"), "task": "diagnosis", "out_dir": str(tmp_path / "eval"),
        "backend": "echo"}))
    assert metrics["n_answered"] == 1 and metrics["metrics"]["accuracy"] == 1.0
    with pytest.raises(ConfigError, match=r"key 'backend': 'no_such' is not a backend; choose from \[.*'echo'"):
        load_config(GscoConfig, None, {**keys, "backend": "no_such"})


def test_a_new_classification_dataset_is_one_registry_entry_and_runs_end_to_end(tmp_path):
    """One entry in a registry YAML: the specialist trains and predicts on it, the case builder and GSCo read its
    label names and modality from it (no option or modality given anywhere else)."""
    from gsco.collab.build_cases import build_cases
    from gsco.specialists.config import SpecialistConfig
    from gsco.specialists.predict import predict_specialist
    from gsco.specialists.train import train_specialist

    registry = tmp_path / "my_datasets.yaml"
    registry.write_text(yaml.safe_dump({"skinspots": {
        "task": "multi-class", "label_names": ["nevus", "melanoma", "keratosis"], "n_channels": 3,
        "modality": "dermatoscopy"}}))
    write_npz(tmp_path / "data", "skinspots", "multi-class", 3, channels=3, sizes=(48, 12, 9))
    specialist = load_config(SpecialistConfig, None, {
        "dataset": "skinspots", "extra_datasets": str(registry), "data_path": str(tmp_path / "data"),
        "output_path": str(tmp_path / "specialists"), "architecture": "test_resnet", "img_size": 28,
        "batch_size": 16, "batch_size_eval": 32, "device": "cpu", "preprocess": "native", "epochs": 1,
        "pretrained": False, "search_top_n": 3})
    train_specialist(specialist)
    results = predict_specialist(specialist)["files"].results
    cases = build_cases([results], tmp_path / "gsco" / "cases.json", tmp_path / "data", k=3,
                        extra_datasets=str(registry))
    cfg = load_config(GscoConfig, None, {"dataset": "skinspots", "extra_datasets": str(registry),
                                         "cases": str(cases), "out_dir": str(tmp_path / "gsco" / "out"),
                                         "device": "cpu", "max_new_tokens": 3, "arms": ["specialist_0", "moed_rad"]})
    result = run(cfg)
    assert result["options"] == ["nevus", "melanoma", "keratosis"] and result["n_cases"] == 9
    assert set(result["arms"]) == {"specialist_0", "moed_rad"} and result["arms"]["moed_rad"]["n"] == 9
    row = json.loads((tmp_path / "gsco" / "out" / "moed_rad_predictions.jsonl").read_text().splitlines()[0])
    assert "You are given a dermatoscopy image. The possible diagnoses are: 'nevus', 'melanoma', 'keratosis'." in \
        row["question"]
    assert (tmp_path / "gsco" / "out" / "moed_rad_confusion.png").is_file()
