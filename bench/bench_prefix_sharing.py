"""Six GSCo arms per case: sharing the image and prompt prefix (``share_prefix``) vs computing them per arm.

    python bench/bench_prefix_sharing.py [--cases 8] [--new-tokens 8]

A preset with MedDr's proportions (bench/meddr_proportions.yaml: 448 px tile, 256 image tokens; random weights)
answers ``--cases`` BreastMNIST-style cases, each asked by the six diagnosis arms (generalist, moed, rad, moed_rad,
rad_counts, moed_prob) with the prompts the GSCo runner builds (configs/gsco/breastmnist.yaml), one batch of six per
case, exactly ``--new-tokens`` new tokens each. Baseline: ``share_prefix=False`` (today's path: every arm runs the
vision tower and its whole prompt). Ours: the image and the prefix the arms share are computed once per case and
their key/value cache reused. Ratio = ours / baseline time (median of interleaved repeats); the answers must be
identical. Writes bench/out/prefix_sharing.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsco.collab.run import GscoConfig, Task, fill_case
from gsco.config import load_config
from gsco.generalist import Generalist

HERE = Path(__file__).resolve().parent
ARMS = ("generalist", "moed", "rad", "moed_rad", "rad_counts", "moed_prob")


def arm_prompts(n_cases: int) -> tuple[list[Image.Image], list[list[str]]]:
    cfg = load_config(GscoConfig, HERE.parent / "configs/gsco/breastmnist.yaml", {})
    task = Task.of(cfg)
    rng = np.random.default_rng(0)
    images, prompts = [], []
    for i in range(n_cases):
        labels = [task.options[j] for j in rng.integers(0, len(task.options), 10)]
        case = {"id": str(i), "image": "x.png", "label": labels[0], "rad": labels, "moed": labels[:3],
                "moed_prob": [0.9, 0.7, 0.6]}
        images.append(Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)))
        prompts.append([fill_case(cfg, arm, case, task) for arm in ARMS])
    return images, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=8)  # a diagnosis: "normal or benign" is ~4 MedDr tokens
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "prefix_sharing.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    g = Generalist.load(str(HERE / "meddr_proportions.yaml"), device="cpu", dtype="float32")
    images, prompts = arm_prompts(args.cases)
    fixed = {"min_new_tokens": args.new_tokens, "max_new_tokens": args.new_tokens}

    def run(share: bool) -> tuple[float, list[str]]:
        t, answers = time.perf_counter(), []
        for image, arm_prompts_ in zip(images, prompts):
            answers += g.answer([image] * len(ARMS), arm_prompts_, batch_size=len(ARMS), share_prefix=share, **fixed)
        return time.perf_counter() - t, answers

    run(True), run(False)  # warm-up
    times, answers = {True: [], False: []}, {}
    for _ in range(args.repeats):  # interleaved, so drifts hit both alike
        for share in (False, True):
            seconds, answers[share] = run(share)
            times[share].append(seconds)
    tokens = [len(g.processor(text=[g.prompt(p, True)], images=[images[0]], return_tensors="pt")["input_ids"][0])
              for p in prompts[0]]
    result = {"cases": args.cases, "arms": len(ARMS), "new_tokens": args.new_tokens, "prompt_tokens": tokens,
              "image_tokens": g.model.config.image_seq_length, "threads": torch.get_num_threads(),
              "baseline_s": float(np.median(times[False])), "shared_s": float(np.median(times[True])),
              "identical_answers": answers[True] == answers[False]}
    result["ratio"] = result["shared_s"] / result["baseline_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
