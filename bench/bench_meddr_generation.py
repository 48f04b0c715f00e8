"""MedDr generation throughput: our batched, left-padded generation vs the reference's one-question-at-a-time loop.

    python bench/bench_meddr_generation.py [--questions 32] [--new-tokens 32] [--batch-size 8]

Both run the ``tiny`` preset (random weights, fp32, CPU unless CUDA is present) on the same images and questions,
and both generate exactly ``--new-tokens`` tokens per question (``min_new_tokens``), so tokens/s compare like for
like. Baseline: batch 1, no padding, one ``generate`` per question (the reference's evaluation loop).
Ratio = ours / baseline (median of interleaved repeats). Writes bench/out/meddr_generation.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsco.generalist import Generalist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median time counts")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "meddr_generation.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    g = Generalist.load("tiny", device="auto")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(args.questions)]
    questions = [f"Question {i}: describe the findings{' in detail' * (i % 5)}." for i in range(args.questions)]
    fixed = {"min_new_tokens": args.new_tokens}
    g.answer(images[:2], questions[:2], max_new_tokens=4, batch_size=2)  # warm-up

    def loop() -> float:
        t = time.perf_counter()
        for im, q in zip(images, questions):
            g.answer([im], [q], max_new_tokens=args.new_tokens, batch_size=1, **fixed)
        return time.perf_counter() - t

    def batched() -> float:
        t = time.perf_counter()
        g.answer(images, questions, max_new_tokens=args.new_tokens, batch_size=args.batch_size, **fixed)
        return time.perf_counter() - t

    times = [(loop(), batched()) for _ in range(args.repeats)]  # interleaved, so drifts hit both alike
    baseline_s = float(np.median([a for a, _ in times]))
    ours_s = float(np.median([b for _, b in times]))
    tokens = args.questions * args.new_tokens
    result = {"device": str(g.device), "threads": torch.get_num_threads(), "questions": args.questions,
              "new_tokens": args.new_tokens, "batch_size": args.batch_size,
              "baseline_tokens_per_s": tokens / baseline_s, "ours_tokens_per_s": tokens / ours_s,
              "ratio": baseline_s / ours_s, "repeats": args.repeats,
              "ratios_per_repeat": [a / b for a, b in times]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"batch 1 loop: {result['baseline_tokens_per_s']:.1f} tok/s | batch {args.batch_size}: "
          f"{result['ours_tokens_per_s']:.1f} tok/s | ratio {result['ratio']:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
