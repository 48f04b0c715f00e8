"""Retrieval at MIMIC-CXR scale: faiss exact search over a memory-mapped feature file vs scikit-learn and ours in
memory.

    python bench/bench_retrieval_scale.py [--train 270000] [--dim 1024] [--queries 500]

Writes ``--train`` x ``--dim`` float32 features (MIMIC-CXR has ~270k training studies) to a ``.npy`` file and
searches the top 10 of ``--queries`` queries, each method in its own process so that its memory is its own: peak
resident memory (VmHWM, which counts the pages of a mapped file it has read) and peak anonymous memory (RssAnon,
sampled: what the process itself must hold):

- ``faiss-mmap``: :func:`gsco.specialists.retrieval.exact_search` over ``np.load(..., mmap_mode="r")``, 65,536 rows
  at a time (``retrieval_backend=faiss``'s search);
- ``torch``: :class:`RetrievalIndex` with the features loaded (today's default backend);
- ``sklearn``: ``NearestNeighbors(metric="cosine", algorithm="brute")`` with the features loaded (the reference).

Reports seconds, peak memory and whether each one's neighbour ids equal scikit-learn's (ties aside). Writes
bench/out/retrieval_scale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOP = 10


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class AnonymousPeak:
    """The peak of RssAnon (memory the process itself holds, not file pages of a mapping, which the kernel may drop
    at will), sampled every 5 ms while the block runs."""

    def __enter__(self):
        import threading

        self.peak, self._stop = status_bytes("RssAnon"), threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, status_bytes("RssAnon"))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_bytes("RssAnon"))


def child(method: str, folder: Path) -> None:
    """One method, in this process: its neighbours go to ``folder/{method}.npz``, its figures to stdout."""
    queries = np.load(folder / "queries.npy")
    with AnonymousPeak() as anonymous:
        t = time.perf_counter()
        dist, idx = search(method, folder, queries)
        seconds = time.perf_counter() - t
    np.savez(folder / f"{method}.npz", dist=dist, idx=idx)
    print(json.dumps({"method": method, "seconds": seconds, "peak_rss_bytes": status_bytes("VmHWM"),
                      "peak_anonymous_bytes": anonymous.peak}))


def search(method: str, folder: Path, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if method == "faiss-mmap":
        from gsco.specialists.retrieval import exact_search

        dist, idx = exact_search(np.load(folder / "train.npy", mmap_mode="r"), queries, TOP, "cosine")
    elif method == "torch":
        from gsco.specialists.retrieval import RetrievalIndex

        train = np.load(folder / "train.npy")
        dist, idx = RetrievalIndex(train, np.zeros(len(train))).search(queries, TOP)
    else:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=TOP, metric="cosine", algorithm="brute").fit(np.load(folder / "train.npy"))
        dist, idx = nn.kneighbors(queries)
    return dist, idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=270_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "retrieval_scale.json")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    from gsco.specialists.retrieval import neighbours_agree

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        train = np.lib.format.open_memmap(folder / "train.npy", "w+", np.float32, (args.train, args.dim))
        for start in range(0, args.train, 50_000):  # written in blocks: this process never holds it all either
            stop = min(start + 50_000, args.train)
            train[start:stop] = rng.standard_normal((stop - start, args.dim), dtype=np.float32)
        train.flush()
        del train
        np.save(folder / "queries.npy", rng.standard_normal((args.queries, args.dim), dtype=np.float32))
        rows = []
        for method in ("faiss-mmap", "torch", "sklearn"):
            proc = subprocess.run([sys.executable, __file__, "--child", method, str(folder)], capture_output=True,
                                  text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
        ref = np.load(folder / "sklearn.npz")
        for row in rows:
            got = np.load(folder / f"{row['method']}.npz")
            row["same_ids_as_sklearn_ties_aside"] = neighbours_agree(ref["dist"], ref["idx"], got["idx"])
            row["max_dist_diff"] = float(np.abs(got["dist"] - ref["dist"]).max())
    result = {"train": args.train, "dim": args.dim, "queries": args.queries, "top_n": TOP,
              "features_bytes": args.train * args.dim * 4, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
