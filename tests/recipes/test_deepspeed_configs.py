"""Each shipped DeepSpeed config resolves through transformers' DeepSpeed integration and is accepted by
DeepSpeed's own config classes (on the CPU accelerator; no process group is started)."""

import json
import os

import pytest

from conftest import REPO

CONFIGS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


def test_the_three_configs_are_shipped():
    assert [p.name for p in CONFIGS] == ["zero2.json", "zero3.json", "zero3_offload.json"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_resolves_and_validates(path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    pytest.importorskip("deepspeed", reason="deepspeed is part of the dev and train extras")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from gsco.meddr.presets import build_from_preset

    model, _ = build_from_preset("tiny")
    args = TrainingArguments(output_dir=str(REPO / "outputs" / "ds-test"), per_device_train_batch_size=4,
                             gradient_accumulation_steps=8, learning_rate=1e-5, weight_decay=0.05,
                             max_grad_norm=1.0, report_to="none")
    hf = HfTrainerDeepSpeedConfig(str(path))
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, model, num_training_steps=100)
    assert "auto" not in json.dumps(hf.config), f"{path.name}: unresolved 'auto' values"
    ds = DeepSpeedConfig(hf.config)
    stage = json.loads(path.read_text())["zero_optimization"]["stage"]
    assert ds.zero_optimization_stage == stage
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (32, 4, 8)
    if "offload" in path.stem:
        assert str(ds.zero_config.offload_optimizer.device).endswith("cpu")
        assert str(ds.zero_config.offload_param.device).endswith("cpu")
    if stage == 3:
        assert ds.zero_config.gather_16bit_weights_on_model_save  # saved LoRA / full weights are whole, not shards
    assert os.environ["DS_ACCELERATOR"] == "cpu"
