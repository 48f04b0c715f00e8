import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml

from gsco.config import ConfigError, load_config, parse_overrides
from gsco.runtime import resolve_device
from gsco.specialists.config import SpecialistConfig

from conftest import REPO

CONFIG = REPO / "configs" / "config.yaml"
V2 = REPO / "configs" / "specialists" / "medmnist_v2.yaml"
REFERENCE_KEYS = {"data_path", "output_path", "epochs", "learning_rate", "batch_size", "batch_size_eval", "device",
                  "dataset", "img_size", "training_procedure", "architecture", "k", "seed", "search_top_n"}


@pytest.mark.parametrize("path", [CONFIG, V2], ids=["config.yaml", "medmnist_v2.yaml"])
def test_shipped_configs_name_every_key(path):
    keys = set(yaml.safe_load(path.read_text()))
    assert keys == {f.name for f in dataclasses.fields(SpecialistConfig)}
    assert REFERENCE_KEYS <= keys
    load_config(SpecialistConfig, path)


def test_medmnist_plus_and_v2_recipes():
    plus = load_config(SpecialistConfig, CONFIG)
    assert (plus.optimizer, plus.learning_rate, plus.scheduler, plus.batch_size, plus.batch_size_eval) == (
        "adamw", 1e-4, "cosine", 64, 256)
    assert (plus.selection_metric, plus.early_stopping_patience, plus.preprocess) == ("val_loss", 5, "pad")
    v2 = load_config(SpecialistConfig, V2)
    assert (v2.optimizer, v2.learning_rate, v2.batch_size, v2.epochs) == ("adam", 1e-3, 128, 100)
    assert (v2.scheduler, v2.milestones, v2.gamma, v2.selection_metric) == ("multistep", [50, 75], 0.1, "val_auc")
    assert v2.early_stopping_patience == 0 and v2.preprocess == "native"


def test_overrides_are_typed_and_win_over_the_file():
    cfg = load_config(SpecialistConfig, CONFIG, parse_overrides(
        ["epochs=3", "architecture=vgg16", "milestones=[1, 2]", "learning_rate=1e-3", "pretrained_path=/w.pth",
         "img_size=64"]))
    assert (cfg.epochs, cfg.architecture, cfg.milestones, cfg.learning_rate) == (3, "vgg16", [1, 2], 1e-3)
    assert cfg.pretrained_path == "/w.pth" and cfg.img_size == 64
    assert cfg.run_name == "breastmnist_64_endToEnd_vgg16_s9930641"


@pytest.mark.parametrize("override, expected", [
    ("epoch=3", ["unknown key 'epoch'", "did you mean 'epochs'", "valid keys"]),
    ("epochs=three", ["'epochs'", "expected an integer", "'three'"]),
    ("training_procedure=finetune", ["'finetune'", "'endToEnd', 'linearProbing', 'kNN'"]),
    ("img_size=32", ["32", "28, 64, 128, 224"]),
    ("preprocess=crop", ["'pad', 'native', 'resize'"]),
    ("device=gpu", ["'gpu'", "auto, cpu, cuda"]),
    ("architecture=resnet1800", ["'resnet1800' is not a timm model"]),
    ("dataset=breastmnst", ["unknown dataset 'breastmnst'", "did you mean 'breastmnist'"]),
    ("dataset=dermnet", ["label_names are not known", "extra_datasets"]),
    ("batch_size=0", ["'batch_size'", "at least 1"]),
    ("as_rgb=yes please", ["'as_rgb'", "true or false"]),
])
def test_bad_values_fail_at_load_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(SpecialistConfig, CONFIG, parse_overrides([override]))
    for text in expected:
        assert text in str(err.value)


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 10\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'lerning_rate'"):
        load_config(SpecialistConfig, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SpecialistConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["epochs"])


def test_device_auto_picks_what_exists():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="key .device.: .cuda. was asked for, but CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.e2e
def test_cli_rejects_a_bad_key_with_status_2():
    proc = subprocess.run([sys.executable, "-m", "gsco.specialists.train", "--config", str(CONFIG), "epoch=1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "unknown key 'epoch'" in proc.stderr


def test_a_config_starts_from_the_files_it_includes_and_overrides_them_key_by_key(tmp_path):
    from gsco.collab.config import GscoConfig

    (tmp_path / "base.yaml").write_text("prompt:\n  modality: ultrasound\n  outro: base outro\nrad_k: 4\n")
    (tmp_path / "more.yaml").write_text("include: base.yaml\nrad_k: 5\n")
    (tmp_path / "top.yaml").write_text("include: [more.yaml]\nprompt:\n  outro: own outro\n")
    cfg = load_config(GscoConfig, tmp_path / "top.yaml", {"modality": "CT"})
    assert (cfg.outro, cfg.rad_k, cfg.modality) == ("own outro", 5, "CT")  # a section merges key by key
    assert load_config(GscoConfig, tmp_path / "more.yaml").outro == "base outro"
    (tmp_path / "missing.yaml").write_text("include: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml does not exist \(included by .*missing.yaml\)"):
        load_config(GscoConfig, tmp_path / "missing.yaml")
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop.yaml includes itself"):
        load_config(GscoConfig, tmp_path / "loop.yaml")
    (tmp_path / "bad.yaml").write_text("include: {a: 1}\n")
    with pytest.raises(ConfigError, match="key 'include': expected a file name or a list of them"):
        load_config(GscoConfig, tmp_path / "bad.yaml")


def test_the_gsco_configs_write_only_what_differs_from_their_base():
    """Each configs/gsco/<dataset>.yaml includes base.yaml and sets no key to the value base.yaml already gives (a
    null may stay where its comment says what to put there)."""
    from gsco.collab.config import GscoConfig
    from gsco.config import config_files, config_sections

    sections = config_sections(GscoConfig)

    def flat(data: dict) -> dict:
        return {k2: v2 for k, v in data.items() for k2, v2 in (v.items() if k in sections else [(k, v)])}

    base = flat(yaml.safe_load((REPO / "configs/gsco/base.yaml").read_text()))
    shipped = sorted(p for p in (REPO / "configs/gsco").glob("*.yaml") if p.name != "base.yaml")
    assert len(shipped) == 5
    for path in shipped:
        files = config_files(path)
        assert [f.name for f, _ in files] == ["base.yaml", path.name]
        repeated = {k: v for k, v in flat(files[-1][1]).items() if k in base and base[k] == v and v is not None}
        assert not repeated, f"{path.name} repeats base.yaml: {repeated}"
