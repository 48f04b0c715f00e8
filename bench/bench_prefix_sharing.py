"""Six GSCo arms per case through the GSCo runner: sharing the image and prompt prefix (``share_prefix``) vs arm by
arm, every arm computing its image and whole prompt.

    python bench/bench_prefix_sharing.py [--cases 8] [--max-new-tokens 8] [--tokenizer words|byte]

A preset with MedDr's proportions (bench/meddr_proportions.yaml: 448 px tile, 256 image tokens; random weights)
answers ``--cases`` BreastMNIST-style cases (random 448 px PNGs, ten RAD hints, three specialists) with the six
diagnosis arms (generalist, moed, rad, moed_rad, rad_counts, moed_prob) and the prompts of
configs/gsco/breastmnist.yaml, through the runner's own answering loop (``run_generalist_arms``: images read from
disk, answers appended to each arm's predictions file), ``eval_batch_size`` 8. The prompts are tokenized word by
word (``--tokenizer words``: a word or a punctuation run per token, about MedDr's counts) or byte by byte
(``byte``: the preset's own tokenizer, 4-5x MedDr's counts). Baseline: ``share_prefix=false`` (arm after arm,
8 cases a batch, each question through the vision tower and its whole prompt). Ours: ``share_prefix=true`` (case
by case, a case's six arms in one batch, the image and the prefix they share computed once and their key/value
cache reused). Ratio = ours / baseline time (median of interleaved repeats); every arm's predictions file must be
byte-identical. Writes bench/out/prefix_sharing[_byte].json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsco.collab.cases import fill_case
from gsco.collab.config import GscoConfig
from gsco.collab.tasks import Task
from gsco.config import load_config
from gsco.generalist import Generalist
from gsco.recipes.gsco import run_generalist_arms

HERE = Path(__file__).resolve().parent
ARMS = ["generalist", "moed", "rad", "moed_rad", "rad_counts", "moed_prob"]


def write_cases(folder: Path, n_cases: int) -> Path:
    """``n_cases`` BreastMNIST-style cases with every arm's evidence, their images as 448 px PNGs."""
    options = ["malignant", "normal or benign"]
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n_cases):
        Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(folder / f"case{i}.png")
        labels = [options[j] for j in rng.integers(0, len(options), 10)]
        cases.append({"id": str(i), "image": f"case{i}.png", "label": labels[0], "rad": labels, "moed": labels[:3],
                      "moed_prob": [0.9, 0.7, 0.6]})
    path = folder / "cases.json"
    path.write_text(json.dumps(cases))
    return path


def arm_prompts(cfg: GscoConfig, cases: list[dict]) -> list[str]:
    task = Task.of(cfg)
    return [fill_case(cfg, arm, case, task) for case in cases for arm in ARMS]


def word_generalist(model: torch.nn.Module, device: torch.device, texts: list[str], name: str) -> Generalist:
    """A generalist around a MedDr-style ``model`` whose tokenizer is word-level over ``texts`` (Yi's special-token
    ids; the model's image token set to the tokenizer's): prompts about as many tokens long as MedDr's tokenizer
    makes them."""
    from gsco.meddr.processor import build_processor, build_word_tokenizer

    tokenizer = build_word_tokenizer(texts)
    model.config.image_token_id = tokenizer.convert_tokens_to_ids(tokenizer.context_image_token)
    size = model.config.vision_config.image_size
    processor = build_processor(tokenizer, size[0] if isinstance(size, (list, tuple)) else size,
                                model.config.image_seq_length)
    return Generalist(model, processor, device, name)


def time_arms(g: Generalist, cfg: GscoConfig, cases: list[dict], root: Path, share: bool,
              out_dir: Path) -> tuple[float, dict[str, str]]:
    """Seconds for the runner to answer ``ARMS`` on ``cases`` (``share_prefix=share``) and each arm's file."""
    cfg = dataclasses.replace(cfg, share_prefix=share, out_dir=str(out_dir), overwrite=True)
    if g.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    paths = run_generalist_arms(cfg, ARMS, cases, g, Task.of(cfg), root)
    if g.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, {arm: p.read_text() for arm, p in paths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)  # a diagnosis: "normal or benign" is ~4 MedDr tokens
    parser.add_argument("--tokenizer", choices=["words", "byte"], default="words")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or HERE / "out" / f"prefix_sharing{'' if args.tokenizer == 'words' else '_byte'}.json"
    torch.manual_seed(0)
    g = Generalist.load(str(HERE / "meddr_proportions.yaml"), device="cpu", dtype="float32")
    work = Path(tempfile.mkdtemp(prefix="bench_prefix_sharing_"))
    cases_file = write_cases(work, args.cases)
    cfg = load_config(GscoConfig, HERE.parent / "configs/gsco/breastmnist.yaml",
                      {"cases": str(cases_file), "max_new_tokens": args.max_new_tokens, "eval_batch_size": 8})
    cases = json.loads(cases_file.read_text())
    if args.tokenizer == "words":
        g = word_generalist(g.model, g.device, arm_prompts(cfg, cases), g.name)

    def run(share: bool) -> tuple[float, dict[str, str]]:
        return time_arms(g, cfg, cases, work, share, work / ("shared" if share else "baseline"))

    run(True), run(False)  # warm-up
    times, files = {True: [], False: []}, {}
    for _ in range(args.repeats):  # interleaved, so drifts hit both alike
        for share in (False, True):
            seconds, files[share] = run(share)
            times[share].append(seconds)
    image = Image.open(work / cases[0]["image"])
    tokens = [len(g.processor(text=[g.prompt(p, True)], images=[image], return_tensors="pt")["input_ids"][0])
              for p in arm_prompts(cfg, cases[:1])]
    result = {"cases": args.cases, "arms": len(ARMS), "max_new_tokens": args.max_new_tokens,
              "tokenizer": args.tokenizer, "prompt_tokens": tokens, "image_tokens": g.model.config.image_seq_length,
              "threads": torch.get_num_threads(), "baseline_s": float(np.median(times[False])),
              "shared_s": float(np.median(times[True])), "identical_predictions": files[True] == files[False]}
    result["ratio"] = result["shared_s"] / result["baseline_s"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
