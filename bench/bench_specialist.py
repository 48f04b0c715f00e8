"""Specialist throughput: images/s for training and inference, through GSCo's data pipeline vs the bare model.

    python bench/bench_specialist.py [--arch resnet18] [--steps 5] [--out bench/out/specialist.json]

Baseline: the same model on pre-made tensors (no data loading). Ratio = ours / baseline (1.0 = the pipeline
costs nothing). Runs on real BreastMNIST from ../shared, at 28 px native (v2 recipe) and 28 px padded to 224
(MedMNIST+ recipe).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from gsco.config import load_config
from gsco.specialists.build import setup_specialist
from gsco.specialists.config import SpecialistConfig

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist"


def throughput(step, batches, n_images: int) -> float:
    step(next(iter(batches)))  # warm-up
    t = time.perf_counter()
    for batch in batches:
        step(batch)
    return n_images / (time.perf_counter() - t)


def bench(arch: str, preprocess: str, steps: int, batch: int) -> dict:
    cfg = load_config(SpecialistConfig, None, {
        "data_path": str(DATA), "architecture": arch, "preprocess": preprocess, "device": "auto",
        "batch_size": batch, "batch_size_eval": batch, "output_path": "/tmp/gsco-bench"})
    run = setup_specialist(cfg)
    model, device = run.model.to(run.device), run.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = run.loader(run.dataset("train"), train=True, generator=torch.Generator().manual_seed(0))
    batches = list(itertools.islice(loader, steps))
    tensors = [(x.clone(), y.clone()) for x, y in batches]  # the baseline: data already in memory

    def train_step(b):
        x, y = b
        loss = loss_fn(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step(b):
        model(b[0].to(device))

    def through_loader(step):
        def go(_):
            for b in itertools.islice(loader, steps):
                step(b)
        return go

    n = steps * batch
    model.train()
    base_train = throughput(train_step, tensors, n)
    ours_train = n / _time(lambda: through_loader(train_step)(None))
    model.eval()
    base_infer = throughput(infer_step, tensors, n)
    ours_infer = n / _time(lambda: through_loader(infer_step)(None))
    row = {"arch": arch, "preprocess": preprocess, "input": run.preprocess.output_size(28), "device": str(device),
           "train_img_s": round(ours_train, 1), "train_baseline_img_s": round(base_train, 1),
           "train_ratio": round(ours_train / base_train, 3), "infer_img_s": round(ours_infer, 1),
           "infer_baseline_img_s": round(base_infer, 1), "infer_ratio": round(ours_infer / base_infer, 3)}
    print(f"{arch} {preprocess:6s} ({row['input']} px): train {ours_train:7.1f} img/s (bare model {base_train:7.1f}, "
          f"ratio {row['train_ratio']:.2f}); infer {ours_infer:7.1f} img/s (bare {base_infer:7.1f}, "
          f"ratio {row['infer_ratio']:.2f})")
    return row


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="bench/out/specialist.json")
    args = ap.parse_args()
    rows = [bench(args.arch, p, args.steps, args.batch) for p in ("native", "pad")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
