"""Retrieval speed: GSCo's RetrievalIndex (torch and faiss backends) vs scikit-learn's NearestNeighbors brute force.

    python bench/bench_retrieval.py [--quick] [--out bench/out/retrieval.json]

Both run side by side on the same random features in this process; the report is the ratio
sklearn_time / ours_time (higher is better) and whether the top-10 neighbour ids agree.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from gsco.specialists.retrieval import RetrievalIndex, neighbours_agree

CASES = [  # (name, train rows, queries, dim)
    ("resnet50 pooled", 20_000, 2_000, 2048),
    ("vit_b16 flatten (197x768)", 2_000, 200, 151_296),
]
QUICK = [("resnet50 pooled", 5_000, 500, 2048), ("vit_b16 flatten (197x768)", 500, 50, 151_296)]


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def run_case(name: str, n: int, q: int, d: int, top: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((q, d), dtype=np.float32)

    def ours():
        return RetrievalIndex(train, np.zeros(n)).search(queries, top)

    def sklearn():
        return NearestNeighbors(n_neighbors=top, metric="cosine", algorithm="brute").fit(train).kneighbors(queries)

    def faiss():
        return RetrievalIndex(train, np.zeros(n), backend="faiss").search(queries, top)

    t_ours, (d1, i1) = best_of(ours, repeats)
    t_sk, (d2, i2) = best_of(sklearn, repeats)
    t_faiss, (d3, i3) = best_of(faiss, repeats)
    row = {
        "case": name, "train": n, "queries": q, "dim": d, "top_n": top,
        "ours_s": round(t_ours, 4), "sklearn_s": round(t_sk, 4), "speedup": round(t_sk / t_ours, 2),
        "identical_ids": bool(np.array_equal(i1, i2)),
        "same_ids_ties_aside": neighbours_agree(d2, i2, i1), "max_dist_diff": float(np.abs(d1 - d2).max()),
        "faiss_s": round(t_faiss, 4), "faiss_same_ids_ties_aside": neighbours_agree(d2, i2, i3),
        "faiss_max_dist_diff": float(np.abs(d3 - d2).max()),
    }
    print(f"{name:28s} {n:>6d} x {q:>5d} x {d:>7d}: ours {t_ours:7.3f} s  sklearn {t_sk:7.3f} s  "
          f"ratio {row['speedup']:6.1f}x  same top-{top} ids (ties aside): {row['same_ids_ties_aside']}  "
          f"faiss {t_faiss:7.3f} s, same ids: {row['faiss_same_ids_ties_aside']}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller problems (seconds instead of minutes)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/out/retrieval.json")
    args = ap.parse_args()
    rows = [run_case(*case, top=10, repeats=args.repeats) for case in (QUICK if args.quick else CASES)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch_threads": torch.get_num_threads(), "cpu_count": __import__("os").cpu_count()}
    out.write_text(json.dumps({"machine": meta, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
