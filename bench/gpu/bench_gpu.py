"""A generalist at real size on one GPU: memory and speed per quantization, a six-arm GSCo case set, a ZeRO-3 LoRA step.

    python bench/gpu/bench_gpu.py                               # on a GPU: the meddr-40b preset (random weights)
    python bench/gpu/bench_gpu.py preset=medgemma-4b zero3=false  # a published size (gsco.generalist.families)
    python bench/gpu/bench_gpu.py preset=tiny zero3=false       # the same code on a CPU (tests/e2e/test_bench_gpu.py)

``preset`` is a MedDr preset (meddr-40b, tiny, a preset YAML such as this folder's mid.yaml), a published size of
gsco.generalist.families (medgemma-4b, medgemma-27b, qwen2.5-vl-7b, qwen2.5-vl-72b, internvl3-8b, internvl3-78b), or
``tiny-FAMILY`` (a family's tiny model of gsco.generalist.tiny: the code path of that size on a CPU).
Random weights change neither speed nor memory, so the model is built from its config directly on the device, in
bf16 (fp32 on a CPU), with no checkpoint to read. For each quantization (bf16 = none, bitsandbytes int8 and nf4
on CUDA, torchao-int8 anywhere; every family's vision tower and projector and the LM head kept) it measures:

- the weights' memory (allocated after building and quantizing) and the peak during the runs below;
- prefill tokens/s (one forward over ``prompt_tokens`` tokens, the image's included: one image at the family's
  input size, laid out as its processor lays it out) and decode tokens/s (the remaining time of a
  ``new_tokens``-token greedy generation) at each batch size;
- MedDr presets only: a GSCo case set: ``cases`` images (448 px PNGs) asked by the six diagnosis arms with the prompts
  of configs/gsco/breastmnist.yaml, word-level tokenized (about MedDr's token counts), at most ``new_tokens`` each,
  through the GSCo runner's answering loop (bench/bench_prefix_sharing.py): cases/s arm by arm
  (``share_prefix=false``) and with the image and shared prompt prefix computed once per case (``true``). The other
  families have no word-level tokenizer here; their row says so.

Then, unless ``zero3=false``, one LoRA fine-tuning run of ``zero3_steps`` steps on ``zero3_preset`` (default: the
``mid`` preset of this folder, ~0.9B parameters) through ``train.sh`` with ``DEEPSPEED=configs/deepspeed/zero3.json``:
its wall time (start-up included) and exit status.
Writes ``out/gpu_bench.json`` and ``out/gpu_bench.md`` (a Markdown table) under ``out_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def build_random(preset: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The preset's model with random weights, built on ``device`` in ``dtype`` (no fp32 copy on the way)."""
    from gsco.generalist.families import sizes

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if preset in sizes():
                from transformers import AutoConfig, AutoModelForImageTextToText

                family, size = sizes()[preset]
                model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(family.model_type, **size.config))
            elif preset.startswith("tiny-"):
                from gsco.generalist.tiny import build

                model = build(preset.removeprefix("tiny-"))[0]
            else:
                from gsco.meddr.model import MedDrForConditionalGeneration
                from gsco.meddr.presets import preset_model_config

                model = MedDrForConditionalGeneration(preset_model_config(preset))
    finally:
        torch.set_default_dtype(previous)
    return model.to(device, dtype).eval()


def quantize_bitsandbytes(model: nn.Module, method: str, keep) -> int:
    """Swap each kept-out ``nn.Linear`` for bitsandbytes' int8 / nf4 layer, quantizing its (random) weights on the
    GPU; returns how many. For this benchmark only: the product quantizes as a model folder loads."""
    import bitsandbytes as bnb

    from gsco.generalist.quantization import kept

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not kept(n, keep)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        device = old.weight.device
        if method == "int8":
            new = bnb.nn.Linear8bitLt(old.in_features, old.out_features, old.bias is not None,
                                      has_fp16_weights=False, threshold=6.0)
            new.weight = bnb.nn.Int8Params(old.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(old.in_features, old.out_features, old.bias is not None,
                                    compute_dtype=old.weight.dtype, quant_type="nf4", compress_statistics=True)
            new.weight = bnb.nn.Params4bit(old.weight.data.cpu(), requires_grad=False, quant_type="nf4",
                                           compress_statistics=True)
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        setattr(parent, child, new.to(device))
        del old
    return len(names)


def image_pixels(model: nn.Module, batch: int, gen: torch.Generator) -> dict:
    """Random pixels of ``batch`` images at the family's input size, shaped as its processor shapes them."""
    cfg, vision = model.config, model.config.vision_config
    size = getattr(vision, "image_size", None) or 448  # Qwen2.5-VL: any size; 448 px as the others
    size = size[0] if isinstance(size, (list, tuple)) else size
    if cfg.model_type == "qwen2_5_vl":  # flattened patches (temporal x 14 x 14 each) and each image's grid
        grid = size // vision.patch_size
        patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
        return {"pixel_values": torch.randn(batch * grid * grid, patch, generator=gen),
                "image_grid_thw": torch.tensor([[1, grid, grid]] * batch)}
    if cfg.model_type not in ("gemma3", "internvl", "meddr", "llava"):
        raise SystemExit(f"error: bench_gpu lays out images for gemma3, qwen2_5_vl, internvl, meddr and llava models, "
                         f"not {cfg.model_type}")
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=gen)}


@torch.no_grad()
def image_tokens(model: nn.Module) -> int:
    """How many tokens one image becomes: the rows of the family's own image features for one image."""
    pixels = image_pixels(model, 1, torch.Generator().manual_seed(0))
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    pixels = {k: v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device) for k, v in pixels.items()}
    out = model.get_image_features(**pixels)
    features = getattr(out, "pooler_output", out)
    if isinstance(features, (list, tuple)):
        return sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features)
    return features.reshape(-1, features.shape[-1]).shape[0]


def _token_ids(cfg) -> dict[str, int]:
    """The special token ids a config and its text config name (image, its start/end, video, pad, bos, eos, ...)."""
    ids = {}
    for config in (cfg.get_text_config(), cfg):
        for key, value in config.to_dict().items():
            if isinstance(value, int) and (key.endswith("_token_id") or key.endswith("_token_index")):
                ids[key.removesuffix("_id").removesuffix("_index")] = value
    return ids


def image_prompt(model: nn.Module, batch: int, text_tokens: list[int], device: torch.device) -> dict:
    """Inputs of ``batch`` sequences — eight text tokens (a system prompt), one image's tokens (between the
    family's image start/end tokens where it has them), the rest of ``text_tokens`` (the question) — left-padded to
    the longest, and random pixels. Text ids are drawn from the vocabulary without the first three and every special
    token id the config names, so no special token appears by chance."""
    cfg = model.config
    special = _token_ids(cfg)
    image_id = special.get("image_token", special.get("image"))
    vocab = cfg.get_text_config().vocab_size
    n_image = image_tokens(model)
    start = [special[k] for k in ("vision_start_token", "boi_token") if k in special][:1]
    end = [special[k] for k in ("vision_end_token", "eoi_token") if k in special][:1]
    allowed = torch.tensor(sorted(set(range(3, vocab)) - set(special.values())))
    gen = torch.Generator().manual_seed(0)
    rows = []
    for t in text_tokens:
        text = allowed[torch.randint(0, len(allowed), (t,), generator=gen)]
        rows.append(torch.cat([text[:8], torch.tensor(start, dtype=torch.long), torch.full((n_image,), image_id),
                               torch.tensor(end, dtype=torch.long), text[8:]]))
    longest = max(len(r) for r in rows)
    ids = torch.zeros(batch, longest, dtype=torch.long)
    mask = torch.zeros(batch, longest, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, longest - len(row):], mask[i, longest - len(row):] = row, 1
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    pixels = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
              for k, v in image_pixels(model, batch, gen).items()}
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), **pixels}
    if cfg.model_type == "gemma3":  # its image tokens attend to each other both ways, as its processor marks them
        inputs["token_type_ids"] = (ids == image_id).long().to(device)
    return inputs


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


@torch.no_grad()
def speed(model: nn.Module, device: torch.device, batch: int, prompt_tokens: int, new_tokens: int) -> dict:
    n_text = max(1, prompt_tokens - image_tokens(model))
    inputs = image_prompt(model, batch, [n_text] * batch, device)
    model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up: kernels, caches
    prefill_s = timed(lambda: model(**inputs), device)
    generate_s = timed(lambda: model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                              do_sample=False, pad_token_id=0), device)
    decode_s = max(generate_s - prefill_s, 1e-9)
    return {"batch": batch, "prefill_tokens_per_s": batch * inputs["input_ids"].shape[1] / prefill_s,
            "decode_tokens_per_s": batch * new_tokens / decode_s, "generate_s": generate_s}


def gsco_cases(model: nn.Module, device: torch.device, cases: int, new_tokens: int) -> dict:
    """The six GSCo arms on ``cases`` cases through the runner, arm by arm and sharing each case's prefix."""
    import tempfile

    sys.path.insert(0, str(REPO / "bench"))
    from bench_prefix_sharing import ARMS, arm_prompts, time_arms, word_generalist, write_cases

    from gsco.collab.config import GscoConfig
    from gsco.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases_file = write_cases(root, cases)
        cfg = load_config(GscoConfig, REPO / "configs/gsco/breastmnist.yaml",
                          {"cases": str(cases_file), "max_new_tokens": new_tokens, "eval_batch_size": 8})
        rows = json.loads(cases_file.read_text())
        g = word_generalist(model, device, arm_prompts(cfg, rows), "bench (random weights)")
        time_arms(g, cfg, rows[:1], root, True, root / "warm-up")
        seconds, files = {}, {}
        for share in (False, True):
            seconds[share], files[share] = time_arms(g, cfg, rows, root, share, root / f"share_{share}")
    return {"cases": cases, "arms": len(ARMS), "cases_per_s": cases / seconds[False],
            "shared_cases_per_s": cases / seconds[True], "ratio": seconds[True] / seconds[False],
            "identical_predictions": files[True] == files[False]}


def one_quantization(args, method: str, device: torch.device) -> dict:
    from gsco.generalist.quantization import KEEP_UNQUANTIZED, quantize_torchao_int8, weight_bytes

    if method in ("int8", "nf4") and device.type != "cuda":
        return {"quantization": method, "skipped": "bitsandbytes needs CUDA"}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t = time.perf_counter()
    model = build_random(args.preset, device, dtype)
    if method == "torchao-int8":
        quantize_torchao_int8(model, KEEP_UNQUANTIZED)
    elif method in ("int8", "nf4"):
        quantize_bitsandbytes(model, method, KEEP_UNQUANTIZED)
    row = {"quantization": method, "dtype": str(dtype).removeprefix("torch."), "build_s": time.perf_counter() - t,
           "weight_bytes_counted": weight_bytes(model)}
    if device.type == "cuda":
        row["weights_allocated_bytes"] = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    row["speed"] = [speed(model, device, b, args.prompt_tokens, args.new_tokens) for b in args.batch_sizes]
    if model.config.model_type == "meddr":
        row["gsco"] = gsco_cases(model, device, args.cases, args.new_tokens)
    else:
        row["gsco"] = {"skipped": "MedDr presets only (the word-level tokenizer is MedDr's)"}
    if device.type == "cuda":
        row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    del model
    return row


def lora_samples(root: Path, n: int) -> Path:
    """``n`` generated training samples (random 448 px images, a question and a short answer) for the ZeRO-3 run."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(root / f"s{i}.png")
        rows.append({"id": str(i), "image": f"s{i}.png",
                     "conversations": [{"from": "human", "value": "<image>\nIs the lesion benign or malignant?"},
                                       {"from": "gpt", "value": ["benign", "malignant"][i % 2]}]})
    (root / "train.json").write_text(json.dumps(rows))
    return root / "train.json"


def zero3_step(args) -> dict:
    """``train.sh`` with ZeRO-3 LoRA on the mid preset: the run's wall time per step and its exit status."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lora_samples(root, 16)
        env = {**os.environ, "PYTHON": sys.executable, "MODEL": args.zero3_preset, "DATA": str(root / "train.json"),
               "OUT_DIR": str(root / "out"), "DEEPSPEED": "configs/deepspeed/zero3.json", "MODE": "lora"}
        t = time.perf_counter()
        proc = subprocess.run(["bash", "train.sh", f"max_steps={args.zero3_steps}", "save_steps=1000",
                               "per_device_train_batch_size=4", "gradient_checkpointing=true"],
                              cwd=REPO, env=env, capture_output=True, text=True)
        return {"preset": args.zero3_preset, "steps": args.zero3_steps, "returncode": proc.returncode,
                "seconds": time.perf_counter() - t, "stderr_tail": proc.stderr[-1500:]}


def markdown(result: dict) -> str:
    gib = 1024 ** 3
    lines = [f"GPU benchmark: preset {result['preset']} on {result['device_name']} ({result['date']})", "",
             "| quantization | weights (GiB) | peak (GiB) | batch | prefill tok/s | decode tok/s | "
             "GSCo cases/s, 6 arms: arm by arm | shared prefix |", "|---|---|---|---|---|---|---|---|"]
    for row in result["quantizations"]:
        if "skipped" in row:
            lines.append(f"| {row['quantization']} | skipped: {row['skipped']} | | | | | | |")
            continue
        weights = row.get("weights_allocated_bytes", row["weight_bytes_counted"]) / gib
        peak = f"{row['peak_allocated_bytes'] / gib:.2f}" if "peak_allocated_bytes" in row else "n/a"
        gsco = row["gsco"]
        cases = ("n/a", "n/a") if "skipped" in gsco else (f"{gsco['cases_per_s']:.3f}",
                                                          f"{gsco['shared_cases_per_s']:.3f}")
        for s in row["speed"]:
            lines.append(f"| {row['quantization']} | {weights:.2f} | {peak} | {s['batch']} | "
                         f"{s['prefill_tokens_per_s']:.0f} | {s['decode_tokens_per_s']:.1f} | {cases[0]} | "
                         f"{cases[1]} |")
    if result.get("zero3"):
        z = result["zero3"]
        lines += ["", f"ZeRO-3 LoRA through train.sh, preset {Path(z['preset']).stem}: {z['steps']} steps in "
                      f"{z['seconds']:.1f} s, start-up included (exit {z['returncode']})"]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    values = {"preset": "meddr-40b", "quantization": "none,int8,nf4", "batch_sizes": "1,8", "prompt_tokens": "1024",
              "new_tokens": "32", "cases": "4", "zero3": "true", "zero3_steps": "3",
              "zero3_preset": str(HERE / "mid.yaml"),
              "out_dir": str(HERE / "out")}
    for arg in argv if argv is not None else sys.argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in values:
            raise SystemExit(f"error: {arg!r}: expected key=value with key one of {', '.join(values)}")
        values[key] = value
    return argparse.Namespace(
        preset=values["preset"], quantization=values["quantization"].split(","),
        batch_sizes=[int(b) for b in values["batch_sizes"].split(",")], prompt_tokens=int(values["prompt_tokens"]),
        new_tokens=int(values["new_tokens"]), cases=int(values["cases"]), zero3=values["zero3"] == "true",
        zero3_steps=int(values["zero3_steps"]), zero3_preset=values["zero3_preset"], out_dir=Path(values["out_dir"]))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {"preset": args.preset, "device": str(device), "date": time.strftime("%Y-%m-%d"),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "torch": torch.__version__, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
              "quantizations": []}
    for method in args.quantization:
        result["quantizations"].append(one_quantization(args, method, device))
        print(json.dumps(result["quantizations"][-1]), file=sys.stderr, flush=True)
    if args.zero3:
        result["zero3"] = zero3_step(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "gpu_bench.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
