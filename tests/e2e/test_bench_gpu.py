"""bench/gpu/bench_gpu.py runs its GPU code path on this CPU with the tiny preset (bitsandbytes rows skipped)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.e2e
def test_the_gpu_benchmark_runs_on_a_cpu_with_the_tiny_preset(tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/gpu/bench_gpu.py", "preset=tiny", "zero3=false", "quantization=none,torchao-int8,nf4",
         "batch_sizes=1,2", "prompt_tokens=64", "new_tokens=4", "cases=2", f"out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    rows = {r["quantization"]: r for r in result["quantizations"]}
    assert rows["nf4"] == {"quantization": "nf4", "skipped": "bitsandbytes needs CUDA"}
    for method in ("none", "torchao-int8"):
        assert [s["batch"] for s in rows[method]["speed"]] == [1, 2]
        assert all(s["prefill_tokens_per_s"] > 0 and s["decode_tokens_per_s"] > 0 for s in rows[method]["speed"])
        gsco = rows[method]["gsco"]
        assert gsco["arms"] == 6 and gsco["cases_per_s"] > 0 and gsco["shared_cases_per_s"] > 0
        assert gsco["identical_predictions"]  # the shared prefix changes no answer (fp32 on a CPU)
    assert rows["torchao-int8"]["weight_bytes_counted"] < rows["none"]["weight_bytes_counted"]
    table = (tmp_path / "gpu_bench.md").read_text()
    assert table.count("| none |") == 2 and "| nf4 | skipped: bitsandbytes needs CUDA |" in table
    bad = subprocess.run([sys.executable, "bench/gpu/bench_gpu.py", "presett=tiny"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "'presett=tiny': expected key=value with key one of preset" in bad.stderr


@pytest.fixture
def bench_gpu(monkeypatch):
    """bench/gpu/bench_gpu.py as a module (the script's own functions, in this process)."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO / "bench" / "gpu"))
    return importlib.import_module("bench_gpu")


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["gemma3", "qwen2_5_vl", "llava"])
def test_the_gpu_benchmark_lays_out_each_familys_image_as_its_model_reads_it(family, bench_gpu, tmp_path):
    """``preset=tiny-FAMILY``: the code path of a published size (medgemma-4b, qwen2.5-vl-7b, ...) on a CPU — the
    image becomes as many tokens as the family's own processor makes of it, and every row is measured."""
    import torch

    from gsco.generalist.tiny import build

    model, processor = build(family)
    if family == "qwen2_5_vl":  # any size: the bench's 448 px, 14 px patches merged 2 x 2
        expected = (448 // 14 // 2) ** 2
    else:
        from PIL import Image

        image = Image.new("RGB", (56, 56))
        prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
        ids = processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"][0]
        expected = int((ids == model.config.image_token_id).sum())
    assert bench_gpu.image_tokens(model) == expected
    inputs = bench_gpu.image_prompt(model, 2, [12, 20], torch.device("cpu"))
    assert (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist() == [expected] * 2
    assert inputs["attention_mask"].sum(1).tolist() == [12 + expected + 2 * (family != "llava"), 20 + expected
                                                        + 2 * (family != "llava")]  # image start/end tokens
    assert bench_gpu.main([f"preset=tiny-{family}", "zero3=false", "quantization=none", "batch_sizes=2",
                           "prompt_tokens=48", "new_tokens=3", f"out_dir={tmp_path}"]) == 0
    row = json.loads((tmp_path / "gpu_bench.json").read_text())["quantizations"][0]
    assert [s["batch"] for s in row["speed"]] == [2] and row["speed"][0]["prefill_tokens_per_s"] > 0
    assert row["gsco"] == {"skipped": "MedDr presets only (the word-level tokenizer is MedDr's)"}
    assert "| none |" in (tmp_path / "gpu_bench.md").read_text()


def test_the_zero3_runs_samples_are_what_train_sh_reads(bench_gpu, tmp_path):
    from gsco.data.conversations import read_training_data

    samples = read_training_data(bench_gpu.lora_samples(tmp_path, 4))
    assert len(samples) == 4 and all(Path(s.image).is_file() for s in samples)
