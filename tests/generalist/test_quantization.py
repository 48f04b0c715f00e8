"""Quantized loading (torchao int8 on this CPU; bitsandbytes refused here in one line) and the memory planner."""

import dataclasses

import pytest
import torch
from torch import nn

from gsco.config import load_config
from gsco.generalist import Generalist
from gsco.generalist.quantization import KEEP_UNQUANTIZED, QuantizationError, kept, weight_bytes
from gsco.meddr.plan import GIB, PlanConfig, plan, table

from conftest import REPO

IMAGE = REPO / "data/examples/images/case0.png"


def plan_of(**kw) -> dict:
    return plan(load_config(PlanConfig, None, kw))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_planner_predicts_the_measured_weight_bytes_exactly(dtype):
    for quantization in ("none", "torchao-int8"):
        generalist = Generalist.load("tiny", device="cpu", dtype=dtype, quantization=quantization)
        predicted = plan_of(model="tiny", dtype=dtype, quantization=[quantization])[quantization]["weights"]
        assert weight_bytes(generalist.model) == predicted
    none = plan_of(model="tiny", dtype=dtype, quantization=["none"])["none"]
    assert sum(p.numel() for p in generalist.model.parameters()) == sum(
        none[part]["parameters"] for part in ("vision tower", "projector", "LLM", "LM head"))


def test_torchao_int8_quantizes_the_llm_and_keeps_vision_projector_and_head():
    generalist = Generalist.load("tiny", device="cpu", quantization="torchao-int8")
    linears = {name: m for name, m in generalist.model.named_modules() if isinstance(m, nn.Linear)}
    quantized = {name for name, m in linears.items() if type(m.weight) not in (torch.Tensor, nn.Parameter)}
    assert quantized and all(".language_model." in f".{n}." for n in quantized)
    assert all(kept(n, KEEP_UNQUANTIZED) for n in set(linears) - quantized)
    assert {n for n in linears if ".language_model." in f".{n}."} == quantized  # every LLM linear
    answers = generalist.answer([IMAGE, IMAGE], ["What is shown?", "Is it normal?"], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_a_kept_module_list_is_honoured():
    generalist = Generalist.load("tiny", device="cpu", quantization="torchao-int8",
                                 keep_unquantized=["vision_tower", "multi_modal_projector", "lm_head", "mlp"])
    for name, m in generalist.model.named_modules():
        if isinstance(m, nn.Linear) and ".mlp." in f".{name}.":
            assert type(m.weight) in (torch.Tensor, nn.Parameter), name


def test_bitsandbytes_on_a_cpu_is_one_line_naming_what_works(capsys):
    from demo import main

    for method in ("nf4", "int8"):
        assert main(["model=tiny", f"quantization={method}", "device=cpu", f"image={IMAGE}", "question=x"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == (f"error: quantization={method} (bitsandbytes) needs a CUDA GPU, and this run is on cpu: "
                           "use quantization=torchao-int8 (runs on a CPU) or none")
    with pytest.raises(QuantizationError, match="'fp8': expected one of none, int8, nf4, torchao-int8"):
        Generalist.load("tiny", device="cpu", quantization="fp8")


def test_max_memory_is_read_as_accelerate_wants_it():
    from gsco.generalist.model import parse_max_memory

    assert parse_max_memory("0=70GiB, 1=70GiB,cpu=200GiB") == {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}
    with pytest.raises(ValueError, match="expected DEVICE=SIZE pairs such as 0=70GiB,cpu=200GiB .* got 'gpu0'"):
        parse_max_memory("gpu0")


def test_meddr_40b_plan_matches_its_published_size():
    result = plan_of(model="meddr-40b", batch_size=8, prompt_length=1024, quantization=["none", "int8", "nf4"])
    none, int8, nf4 = result["none"], result["int8"], result["nf4"]
    parameters = sum(none[p]["parameters"] for p in ("vision tower", "projector", "LLM", "LM head"))
    assert 40.0e9 < parameters < 40.2e9
    assert none["vision tower"]["parameters"] == pytest.approx(5.54e9, rel=0.01)  # InternViT-6B minus its head
    assert 0 < none["weights"] - 2 * parameters <= 1024  # bf16, and RoPE's inverse frequencies (a buffer)
    # Yi-34B's KV cache: 60 layers x 8 KV heads x 128 dims x 2 (K and V) x bf16, for 8 x 1536 tokens
    assert none["KV cache"] == 60 * 8 * 128 * 2 * 2 * 8 * 1536
    assert int8["vision tower"] == none["vision tower"] and nf4["LM head"] == none["LM head"]
    assert 0.5 < int8["LLM"]["bytes"] / none["LLM"]["bytes"] < 0.52
    assert nf4["LLM"]["bytes"] / none["LLM"]["bytes"] < 0.28
    assert (none["fits"], int8["fits"], nf4["fits"]) == (
        {"24.0": False, "48.0": False, "80.0": False}, {"24.0": False, "48.0": False, "80.0": True},
        {"24.0": False, "48.0": True, "80.0": True})
    text = table(load_config(PlanConfig, None, {}), result)
    assert "| **total** | 77.45 GiB | 46.29 GiB | 31.18 GiB |" in text
    assert none["total"] / GIB == pytest.approx(77.45, abs=0.01)


def test_a_quantized_run_does_not_resume_an_unquantized_one(tmp_path):
    from gsco.evaluation.resumable import ResumeMismatchError
    from gsco.recipes.evaluate import EvalConfig, evaluate

    cfg = load_config(EvalConfig, REPO / "configs/meddr/eval.yaml",
                      {"out_dir": str(tmp_path), "device": "cpu", "max_new_tokens": 2, "limit": 2, "meteor": False,
                       "report_tokenize": "none"})
    evaluate(cfg)
    with pytest.raises(ResumeMismatchError, match=r"quantization: null -> torchao-int8 \(kept: vision_tower,"):
        evaluate(dataclasses.replace(cfg, quantization="torchao-int8"))
    assert evaluate(dataclasses.replace(cfg, quantization="torchao-int8", overwrite=True))["n_answered"] == 2


@pytest.mark.e2e
def test_the_readme_plan_is_what_the_planner_prints():
    from doc_commands import run_documented

    proc = run_documented("python -m gsco.meddr.plan model=meddr-40b batch_size=8 prompt_length=1024")
    readme = (REPO / "README.md").read_text()
    assert proc.stdout.strip() in readme and len(proc.stdout.strip().splitlines()) == 12
    other = run_documented("python -m gsco.meddr.plan model=medgemma-27b batch_size=8 prompt_length=1024")
    assert other.stdout.startswith("| medgemma-27b, bfloat16, batch 8, 1024+512 tokens | none | int8 | nf4 |")


@pytest.mark.e2e
def test_the_readme_quantized_demo_commands_run(tmp_path):
    from gsco.generalist.registry import save_preset

    from doc_commands import run_documented

    model = save_preset("tiny", tmp_path / "meddr-hf")
    replace = {"/path/to/meddr-hf": str(model), "chest.png": str(IMAGE)}
    refused = run_documented('python demo.py model=/path/to/meddr-hf quantization=nf4 image=chest.png '
                             'question="What abnormality is seen?"', replace=replace, append=["device=cpu"],
                             check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: quantization=nf4 (bitsandbytes) needs a CUDA GPU")
    answered = run_documented('python demo.py model=/path/to/meddr-hf quantization=torchao-int8 image=chest.png '
                              'question="What abnormality is seen?"', replace=replace,
                              append=["device=cpu", "max_new_tokens=4"])
    assert len(answered.stdout.strip().splitlines()) == 1 and "Traceback" not in answered.stderr


@pytest.mark.parametrize("name", ["meddr-40b", "medgemma-4b", "medgemma-27b", "qwen2.5-vl-7b", "qwen2.5-vl-72b",
                                  "internvl3-8b", "internvl3-78b"])
def test_the_planner_counts_each_published_size_within_one_percent_and_keeps_its_vision_tower(name):
    """Built on the meta device from the family folders' published sizes (MedDr: its preset); the published counts
    are the model pages' (MedDr_0401 / InternVL-Chat-V1-2: 40.1B)."""
    from gsco.generalist.families import sizes
    from gsco.meddr.plan import PARTS

    SIZES = {name: size for name, (_, size) in sizes().items()}
    assert sorted(SIZES) == sorted(["medgemma-4b", "medgemma-27b", "qwen2.5-vl-7b", "qwen2.5-vl-72b",
                                    "internvl3-8b", "internvl3-78b"])
    published = SIZES[name].published if name in SIZES else 40.07e9
    result = plan(PlanConfig(model=name, quantization=["none", "nf4"]))
    counted = sum(result["none"][part]["parameters"] for part in PARTS)
    assert abs(counted / published - 1) < 0.01, (counted, published)
    assert all(result["none"][part]["parameters"] > 0 for part in ("vision tower", "projector", "LLM"))
    for kept_part in ("vision tower", "projector"):  # the family's vision parts stay 16-bit under nf4
        assert result["nf4"][kept_part]["bytes"] == result["none"][kept_part]["bytes"]
    assert result["nf4"]["LLM"]["bytes"] < 0.5 * result["none"]["LLM"]["bytes"]  # embeddings stay 16-bit
