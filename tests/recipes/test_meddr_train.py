"""MedDr fine-tuning on the CPU: with finetune_tiny.yaml's defaults the tiny preset learns generated visual tasks by
full fine-tuning, a LoRA on such a model learns a new one, training resumes exactly, and a merged LoRA equals the
adapter-wrapped model."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from gsco.config import load_config
from gsco.generalist import Generalist
from gsco.metrics.answers import parse_option
from gsco.recipes.finetune import FinetuneConfig, lora_target_pattern, train

from builders import QUADRANTS, QUESTIONS, quadrant_task
from conftest import REPO
from doc_commands import run_documented


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("quadrants")
    (root / "squares.json").write_text(json.dumps(quadrant_task(root, 200, 1)))
    (root / "discs.json").write_text(json.dumps(quadrant_task(root, 200, 3, "disc")))
    return root, {"squares": quadrant_task(root, 60, 2), "discs": quadrant_task(root, 60, 4, "disc")}


def cfg_of(**kw):
    return load_config(FinetuneConfig, None, {"model": "tiny", "learning_rate": 2e-3,
                                                "per_device_train_batch_size": 8,
                                                "max_seq_length": 512, "gradient_checkpointing": False,
                                                "logging_steps": 5, "save_steps": 1000, **kw})


def accuracy(model_dir, root, rows):
    g = Generalist.load(model_dir, device="cpu")
    answers = g.answer([root / r["image"] for r in rows], [r["question"] for r in rows], max_new_tokens=14,
                       batch_size=30)
    return float(np.mean([parse_option(a, QUADRANTS) == r["answer"] for a, r in zip(answers, rows)]))


def full_finetuning(data, out):
    """README's full fine-tuning command with finetune_tiny.yaml's defaults, on ``data``."""
    proc = run_documented("MODE=full DATA=my_samples.json OUT_DIR=outputs/ft bash train.sh",
                          replace={"my_samples.json": str(data), "outputs/ft": str(out)})
    assert f"model: {out / 'final'}" in proc.stdout
    return out / "final"


@pytest.fixture(scope="module")
def square_model(task, tmp_path_factory):
    """Full fine-tuning of the random tiny preset (vision tower included) on the squares, with the defaults."""
    root, _ = task
    return full_finetuning(root / "squares.json", tmp_path_factory.mktemp("full"))


@pytest.mark.e2e
def test_full_finetuning_learns_the_visual_task(task, square_model):
    import subprocess
    import sys

    from conftest import REPO

    root, held_out = task
    assert accuracy(square_model.parent / "base", root, held_out["squares"]) <= 0.5  # random init: chance
    assert accuracy(square_model, root, held_out["squares"]) >= 0.9
    first = held_out["squares"][0]
    demo = subprocess.run([sys.executable, str(REPO / "demo.py"), f"model={square_model}",
                           f"image={root / first['image']}", f"question={first['question']}"],
                          capture_output=True, text=True)
    assert demo.returncode == 0 and demo.stdout.strip() == first["answer"], demo.stderr[-2000:]


def _noise(rng, size):
    return rng.integers(0, 60, (size, size, 3)).astype(np.uint8)


def presence(rng, size):
    """A yellow square, or none: yes / no."""
    img, present = _noise(rng, size), bool(rng.integers(2))
    if present:
        s = size // 5
        y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] = (255, 255, 0)
    return img, "yes" if present else "no"


def colour(rng, size):
    """One square in red, green or blue."""
    img, k, s = _noise(rng, size), int(rng.integers(3)), size // 4
    y, x = rng.integers(0, size - s, 2)
    img[y:y + s, x:x + s] = [(255, 40, 40), (40, 255, 40), (40, 40, 255)][k]
    return img, ["red", "green", "blue"][k]


def shape(rng, size):
    """A grey circle, square or triangle (answers of 6 to 8 letters)."""
    from PIL import ImageDraw

    pil, k, s = Image.fromarray(_noise(rng, size)), int(rng.integers(3)), size // 3
    y, x = (int(v) for v in rng.integers(0, size - s, 2))
    draw = ImageDraw.Draw(pil)
    [lambda: draw.ellipse([x, y, x + s, y + s], fill=(230, 230, 230)),
     lambda: draw.rectangle([x, y, x + s, y + s], fill=(230, 230, 230)),
     lambda: draw.polygon([(x + s // 2, y), (x, y + s), (x + s, y + s)], fill=(230, 230, 230))][k]()
    return np.asarray(pil), ["circle", "square", "triangle"][k]


def half(rng, size):
    """Where a grey square is: "left" / "on the right side" (answers of 4 and 17 letters, decided by the first)."""
    img, k, s = _noise(rng, size), int(rng.integers(2)), size // 4
    y, x = int(rng.integers(0, size - s)), int(rng.integers(0, size // 2 - s)) + k * (size // 2)
    img[y:y + s, x:x + s] = 230
    return img, ["left", "on the right side"][k]


# name: (draw, image size, question) — sizes other than the preset's 112 px, 2-3 answers of 2 to 17 letters; with the
# squares' quadrants above (112 px, 4 answers of two words) five tasks
VISUAL_TASKS = {
    "half": (half, 96, "In which half of the image is the grey square?"),
    "presence": (presence, 64, "Is there a yellow square in the image? Answer yes or no."),
    "colour": (colour, 200, "What colour is the square?"),
    "shape": (shape, 96, "Which shape is drawn: circle, square or triangle?"),
}


def visual_task(root, name, n, seed):
    draw, size, question = VISUAL_TASKS[name]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img, answer = draw(rng, size)
        Image.fromarray(img).save(root / f"{name}{seed}_{i}.png")
        rows.append({"id": f"{name}{seed}_{i}", "image": f"{name}{seed}_{i}.png", "question": question,
                     "answer": answer, "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                         {"from": "gpt", "value": answer}]})
    return rows


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(VISUAL_TASKS))
def test_the_shipped_defaults_learn_generated_visual_tasks(name, tmp_path):
    """finetune_tiny.yaml's defaults with mode=full (README's MODE=full command, run as a command by the
    square_model fixture; in-process here), 200 training images: >= 90 % of 60 held-out answers exactly right, where
    a constant answer scores at most 70 %."""
    (tmp_path / "train.json").write_text(json.dumps(visual_task(tmp_path, name, 200, 1)))
    shipped = REPO / "configs" / "meddr" / "finetune_tiny.yaml"
    model = train(load_config(FinetuneConfig, shipped, {"mode": "full", "data": str(tmp_path / "train.json"),
                                                        "out_dir": str(tmp_path / "out")}))["final"]
    held_out = visual_task(tmp_path, name, 60, 2)
    g = Generalist.load(model, device="cpu")
    answers = g.answer([tmp_path / r["image"] for r in held_out], [r["question"] for r in held_out],
                       max_new_tokens=40, batch_size=30)
    right = np.mean([a == r["answer"] for a, r in zip(answers, held_out)])
    majority = max(np.mean([r["answer"] == a for r in held_out]) for a in {r["answer"] for r in held_out})
    assert majority <= 0.7 and right >= 0.9, (right, sorted(set(answers)))


@pytest.mark.e2e
def test_lora_learns_a_new_task_and_merges_to_the_same_outputs(task, square_model, tmp_path):
    """LoRA on the LLM (vision frozen, projector trained) of the square model, for red discs asked about in new
    words; the merged standalone model then equals the adapter-wrapped one."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from doc_commands import run_documented

    root, held_out = task
    assert accuracy(square_model, root, held_out["discs"]) <= 0.5
    result = train(cfg_of(data=str(root / "discs.json"), out_dir=str(tmp_path), mode="lora",
                          model=str(square_model), learning_rate=5e-3, epochs=8.0))
    assert accuracy(result["final"], root, held_out["discs"]) >= 0.9
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    assert adapter_config["base_model_name_or_path"] == str(square_model)

    processor = AutoProcessor.from_pretrained(result["final"])
    wrapped = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(square_model),
                                        str(tmp_path / "adapter")).eval()
    merged = AutoModelForImageTextToText.from_pretrained(result["final"]).eval()
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS["disc"]}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.open(root / held_out["discs"][0]["image"])], return_tensors="pt")
    run_documented("python -m gsco.recipes.merge_lora adapter=outputs/meddr-lora/adapter out_dir=outputs/meddr-merged",
                   replace={"outputs/meddr-lora/adapter": str(tmp_path / "adapter"),
                            "outputs/meddr-merged": str(tmp_path / "merged2")})
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged2").eval()
    with torch.no_grad():
        assert torch.allclose(wrapped(**inputs).logits, merged(**inputs).logits, atol=1e-5)
        assert torch.equal(again(**inputs).logits, merged(**inputs).logits)
    lora_b = [v for k, v in wrapped.state_dict().items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # trained, non-zero adapter weights


def test_lora_targets_only_the_language_model():
    pattern = lora_target_pattern(["q_proj", "v_proj", "down_proj"])
    assert re.fullmatch(pattern, "model.language_model.layers.3.self_attn.q_proj")
    assert re.fullmatch(pattern, "model.language_model.layers.0.mlp.down_proj")
    assert not re.fullmatch(pattern, "model.vision_tower.encoder.layer.0.attention.q_proj")
    assert not re.fullmatch(pattern, "model.language_model.layers.0.self_attn.k_proj")


def test_interrupted_training_resumes_to_the_same_end(task, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    root, _ = task

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                control.should_training_stop = True

    common = {"data": str(root / "squares.json"), "mode": "lora", "max_steps": 8, "save_steps": 2,
              "logging_steps": 1}
    full = train(cfg_of(out_dir=str(tmp_path / "a"), **common))
    train(cfg_of(out_dir=str(tmp_path / "b"), **common), callbacks=[StopAt()])
    resumed = train(cfg_of(out_dir=str(tmp_path / "b"), **common))

    def losses(result):
        return {h["step"]: h["loss"] for h in result["log_history"] if "loss" in h}

    assert resumed["global_step"] == full["global_step"] == 8
    assert abs(losses(resumed)[8] - losses(full)[8]) <= 1e-5
    wa = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.mark.e2e
def test_train_sh_computes_accumulation_from_all_nodes(task, tmp_path):
    """README's multi-node command with MedDr's recipe, on this CPU: the tiny preset for the base model, one node
    without GPUs (train.sh then runs one CPU process), no DeepSpeed, one step."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    from doc_commands import run_documented

    root, _ = task
    env = {**os.environ, "PYTHON": sys.executable, "GPUS": "0", "NNODES": "1", "BATCH_SIZE": "10",
           "PER_DEVICE_BATCH_SIZE": "4"}
    proc = subprocess.run(["bash", str(REPO / "train.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "BATCH_SIZE=10 is not a multiple of PER_DEVICE_BATCH_SIZE=4 x 1" in proc.stderr
    proc = run_documented(
        "GPUS=8 NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 BATCH_SIZE=256 PER_DEVICE_BATCH_SIZE=4 "
        "CONFIG=configs/meddr/finetune_meddr_lora.yaml MODEL=/path/to/base-hf DATA=meta.json "
        "DEEPSPEED=configs/deepspeed/zero3.json OUT_DIR=outputs/meddr-lora bash train.sh",
        replace={"GPUS=8": "GPUS=0", "MASTER_ADDR=10.0.0.1": "MASTER_ADDR=127.0.0.1", "BATCH_SIZE=256": "BATCH_SIZE=16",
                 "/path/to/base-hf": "tiny", "meta.json": str(root / "squares.json"),
                 "DEEPSPEED=configs/deepspeed/zero3.json": "DEEPSPEED=", "outputs/meddr-lora": str(tmp_path)},
        append=["max_steps=1", "save_steps=1", "bf16=auto", "gradient_checkpointing=false"])
    # 16 / (4 per device x 1 process x 2 nodes) = 2; on a CPU machine it runs the single-process path
    assert "gradient_accumulation_steps=2" in proc.stderr and f"model: {tmp_path / 'final'}" in proc.stdout
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32 and not adapter.get("modules_to_save")  # projector frozen
    root_image = root / json.loads((root / "squares.json").read_text())[0]["image"]
    answer = Generalist.load(tmp_path / "final", device="cpu").answer([root_image], ["Where?"], max_new_tokens=3)
    assert len(answer) == 1 and isinstance(answer[0], str)  # the merged model loads and answers


@pytest.mark.e2e
def test_lora_under_deepspeed_zero3_saves_whole_changed_adapter_weights(task, tmp_path):
    """ZeRO-3 partitions parameters: a naive save writes empty LoRA tensors (a known failure elsewhere). On the
    CPU accelerator (one gloo process) our train.sh path saves whole, trained adapters and a loadable model."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    import gsco.meddr  # noqa: F401  (registers the meddr model type the saved base folder names)

    from doc_commands import run_documented

    root, _ = task
    extensions = tmp_path / "torch_extensions"  # one CPU process: DeepSpeed compiles no shared-memory op
    run_documented("DEEPSPEED=configs/deepspeed/zero3.json bash train.sh",
                   env={"MASTER_PORT": "29517", "TORCH_EXTENSIONS_DIR": str(extensions)},
                   append=[f"out_dir={tmp_path}", f"data={root / 'squares.json'}", "max_steps=4", "save_steps=2",
                           "learning_rate=1e-2"])
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora = {k: v for k, v in weights.items() if "lora_" in k}
    assert len(lora) == 2 * 7 * 2  # A and B for 7 projections in each of the 2 LLM layers
    assert all(v.numel() > 0 for v in weights.values())
    assert all(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it trained
    base = AutoModelForImageTextToText.from_pretrained(tmp_path / "base")
    wrapped = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    assert sum(float(v.abs().sum()) for k, v in wrapped.state_dict().items() if "lora_B" in k) > 0
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "checkpoint-4").is_dir()
    assert not extensions.exists()


def test_a_save_that_fails_leaves_no_half_written_model(task, tmp_path, monkeypatch):
    """final/ (and adapter/) appear only when complete: a failure while saving leaves none, and a successful
    save then replaces the staging folder."""
    from transformers import GenerationConfig

    root, _ = task
    cfg = cfg_of(data=str(root / "squares.json"), out_dir=str(tmp_path), mode="full", max_steps=1)
    real_save = GenerationConfig.save_pretrained

    def fail(self, save_directory, *args, **kwargs):  # the disk fills while the final model is written
        if str(save_directory).endswith(".final.partial"):
            raise OSError("disk full")
        return real_save(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(GenerationConfig, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        train(cfg)
    assert not (tmp_path / "final").exists() and (tmp_path / ".final.partial").is_dir()
    monkeypatch.setattr(GenerationConfig, "save_pretrained", real_save)
    result = train(dataclasses.replace(cfg, max_steps=2))
    assert (result["final"] / "generation_config.json").is_file() and not (tmp_path / ".final.partial").exists()
    assert Generalist.load(result["final"], device="cpu") is not None


@pytest.mark.e2e
def test_qlora_without_cuda_is_refused_in_one_line(tmp_path):
    """README's QLoRA command on this CPU: status 2, one line naming what is needed and what works here; nothing is
    written."""
    proc = run_documented("MODE=qlora MODEL=/path/to/meddr-hf DATA=my_samples.json bash train.sh",
                          replace={"/path/to/meddr-hf": "tiny",
                                   "my_samples.json": str(REPO / "data/examples/meddr/train_sample.json")},
                          append=[f"out_dir={tmp_path / 'out'}"], env={"GPUS": "0"}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: mode qlora trains LoRA on a 4-bit NF4 base (bitsandbytes), which needs a CUDA GPU, and none is "
        "visible here: use mode=lora")
    assert not (tmp_path / "out").exists()
