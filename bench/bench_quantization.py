"""torchao weight-only int8 on the CPU: does a trained model answer as it does in fp32, and is its memory as planned?

    python bench/bench_quantization.py [--train 200] [--held-out 200]

Trains the ``tiny`` preset (full fine-tuning with configs/meddr/finetune_tiny.yaml's defaults) on the generated
quadrant task of tests/recipes/test_meddr_train.py (a bright square in one of four quadrants; chance 25 %), then answers
held-out images greedily with the fp32 model and with the same model loaded with ``quantization=torchao-int8``
(vision tower, projector and LM head kept): the share of identical answers, each one's accuracy, the measured weight
bytes against ``python -m gsco.meddr.plan``'s prediction, and tokens/s side by side (median of interleaved repeats).
Writes bench/out/quantization.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from gsco.config import load_config  # noqa: E402
from gsco.generalist import Generalist  # noqa: E402
from gsco.generalist.quantization import weight_bytes  # noqa: E402
from gsco.meddr.plan import PlanConfig, plan  # noqa: E402
from gsco.metrics.answers import parse_option  # noqa: E402
from gsco.recipes.finetune import FinetuneConfig, train  # noqa: E402
from gsco.runtime import write_json  # noqa: E402

from builders import QUADRANTS, quadrant_task  # noqa: E402  (the generated task the fine-tuning tests learn)


def trained_model(root: Path, n: int) -> Path:
    (root / "train.json").write_text(json.dumps(quadrant_task(root, n, 1)))
    cfg = load_config(FinetuneConfig, HERE.parent / "configs/meddr/finetune_tiny.yaml",
                      {"data": str(root / "train.json"), "out_dir": str(root / "run"), "mode": "full"})
    return train(cfg)["final"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=200, help="training samples")
    parser.add_argument("--held-out", type=int, default=200, help="held-out questions")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "quantization.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model = trained_model(root, args.train)
        train_s = time.perf_counter() - t0
        rows = quadrant_task(root, args.held_out, 2)
        images, questions = [root / r["image"] for r in rows], [r["question"] for r in rows]
        loaded = {q: Generalist.load(str(model), device="cpu", dtype="float32", quantization=q)
                  for q in ("none", "torchao-int8")}
        answers, seconds = {}, {q: [] for q in loaded}
        for _ in range(args.repeats):  # interleaved, so drifts hit both alike
            for q, g in loaded.items():
                t = time.perf_counter()
                answers[q] = g.answer(images, questions, max_new_tokens=14, batch_size=8)  # "bottom right": 12 bytes
                seconds[q].append(time.perf_counter() - t)
        planned = plan(load_config(PlanConfig, None, {"model": str(model), "dtype": "float32",
                                                      "quantization": list(loaded)}))
    agree = float(np.mean([a == b for a, b in zip(answers["none"], answers["torchao-int8"])]))
    result = {
        "train_samples": args.train, "held_out": args.held_out, "train_s": train_s,
        "agreement": agree,
        "accuracy": {q: float(np.mean([parse_option(a, QUADRANTS) == r["answer"] for a, r in zip(answers[q], rows)]))
                     for q in loaded},
        "weight_bytes": {q: weight_bytes(g.model) for q, g in loaded.items()},
        "planned_weight_bytes": {q: planned[q]["weights"] for q in loaded},
        "seconds_median": {q: float(np.median(s)) for q, s in seconds.items()},
        "threads": torch.get_num_threads(),
    }
    result["speed_ratio_int8_over_fp32"] = result["seconds_median"]["none"] / result["seconds_median"]["torchao-int8"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
