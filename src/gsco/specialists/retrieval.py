"""Exact nearest-neighbour search over specialist features: the retrieval index behind RAD (cosine) and the kNN
procedure's support set (Euclidean, as MedMNIST+).

Returns the same neighbours as scikit-learn's ``NearestNeighbors`` brute force (ties aside) with the same distances
— ``cosine``: 1 - cosine similarity, clipped to [0, 2]; ``euclidean``: the L2 distance — but as batched matrix
products: queries are processed in chunks so memory stays bounded even for 150k-dimensional features, and it runs on
a GPU when the index is moved there. ``backend="faiss"`` searches with faiss's exact kernels instead;
:func:`exact_search` does so over a memory-mapped feature array a block at a time (MIMIC-CXR scale). Saved as
safetensors (features, train labels) plus nothing else — no pickles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gsco.config import ConfigError
from gsco.errors import MissingDependencyError
from gsco.runtime import UnreadableFileError, reading


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


METRICS = ("cosine", "euclidean")
BACKENDS = ("torch", "faiss")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"key 'retrieval_backend': {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "faiss":
        import importlib.util

        if importlib.util.find_spec("faiss") is None:
            raise MissingDependencyError("retrieval_backend=faiss needs faiss: pip install faiss-cpu (or faiss-gpu on "
                                         "CUDA), or give retrieval_backend=torch")


def _merge_top(best: tuple[np.ndarray, np.ndarray] | None, dist: np.ndarray, idx: np.ndarray,
               top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_n`` smallest distances of the running best and one block's, with their ids (stable: on a tie the
    earlier row wins, as one brute-force pass over all rows would)."""
    if best is not None:
        dist, idx = np.concatenate([best[0], dist], 1), np.concatenate([best[1], idx], 1)
    order = np.lexsort((idx, dist), axis=1)[:, :top_n] if dist.shape[1] > top_n else np.lexsort((idx, dist), axis=1)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def exact_search(rows: np.ndarray, queries: np.ndarray, top_n: int, metric: str = "cosine",
                 normalized: bool = False, block_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Exact search with faiss over ``rows`` read ``block_rows`` at a time — a memory-mapped array (``np.load(...,
    mmap_mode="r")``) never has to fit in memory; each block's top ``top_n`` is merged into the running best.
    Distances as :class:`RetrievalIndex` gives them (1 - cos, or L2); faiss uses every CPU thread (and its GPU
    index when faiss-gpu is installed)."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    best = None
    for start in range(0, len(rows), block_rows):
        block = np.ascontiguousarray(rows[start:start + block_rows], dtype=np.float32)
        if metric == "cosine" and not normalized:
            block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        k = min(top_n, len(block))
        score, idx = faiss.knn(q, block, k, faiss_metric)
        dist = np.clip(1.0 - score, 0.0, 2.0) if metric == "cosine" else np.sqrt(np.maximum(score, 0.0))
        best = _merge_top(best, dist.astype(np.float32), idx.astype(np.int64) + start, top_n)
    return best


class RetrievalIndex:
    """Train features with their labels; ``search`` gives the top-n distances and row indices. With ``cosine`` the
    features are stored L2-normalised (``normalized``: they already are, e.g. loaded from a saved index)."""

    def __init__(self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, metric: str = "cosine",
                 normalized: bool = False, backend: str = "torch"):
        if metric not in METRICS:
            raise ValueError(f"metric {metric!r}: expected one of {METRICS}")
        check_backend(backend)
        self.backend = backend
        features = torch.as_tensor(features, dtype=torch.float32)
        labels = torch.as_tensor(labels)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-D (N, D), got {tuple(features.shape)}")
        if len(labels) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.metric = metric
        self.features = l2_normalize(features) if metric == "cosine" and not normalized else features
        self.labels = labels
        self._sq_norms = None  # euclidean: |x|^2 of every entry, computed on the first search

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def to(self, device: str | torch.device) -> "RetrievalIndex":
        self.features = self.features.to(device)
        self._sq_norms = None
        return self

    @torch.no_grad()
    def search(self, queries: torch.Tensor | np.ndarray, top_n: int,
               chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), each (Q, top_n), nearest first; distances are 1 - cos, or L2 distances."""
        if not 1 <= top_n <= len(self):
            raise ValueError(f"top_n must be between 1 and the index size {len(self)}, got {top_n}")
        q = torch.as_tensor(queries, dtype=torch.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got {tuple(q.shape)}")
        if self.backend == "faiss":
            return exact_search(self.features.cpu().numpy(), q.numpy(), top_n, self.metric, normalized=True)
        if chunk_size is None:
            # Bound the (chunk x N) similarity block to ~64M floats (256 MB).
            chunk_size = max(1, min(len(q), (64 * 2**20) // max(1, len(self))))
        if self.metric == "euclidean" and self._sq_norms is None:
            self._sq_norms = (self.features * self.features).sum(dim=1)
        dists, idxs = [], []
        for start in range(0, len(q), chunk_size):
            block = q[start:start + chunk_size].to(self.features.device)
            if self.metric == "cosine":
                sim = l2_normalize(block) @ self.features.T
                top_sim, top_idx = sim.topk(top_n, dim=1, largest=True, sorted=True)
                dists.append((1.0 - top_sim).clamp_(0.0, 2.0).cpu())
            else:  # |q - x|^2 = |q|^2 - 2 q.x + |x|^2
                sq = (block * block).sum(dim=1, keepdim=True) - 2.0 * (block @ self.features.T) + self._sq_norms
                top_sq, top_idx = sq.topk(top_n, dim=1, largest=False, sorted=True)
                dists.append(top_sq.clamp_(min=0.0).sqrt_().cpu())
            idxs.append(top_idx.cpu())
        return torch.cat(dists).numpy(), torch.cat(idxs).numpy()

    def search_leave_one_out(self, queries: torch.Tensor | np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`search` for queries that *are* the indexed items, in index order (query i = entry i): each
        query's own entry is left out of its neighbours (the training split searched against itself)."""
        if len(queries) != len(self):
            raise ValueError(f"leave-one-out search needs one query per index entry ({len(self)}), got {len(queries)}")
        if not 1 <= top_n < len(self):
            raise ValueError(f"top_n must be between 1 and the index size - 1 ({len(self) - 1}), got {top_n}")
        dists, idxs = self.search(queries, top_n + 1)
        keep = idxs != np.arange(len(idxs))[:, None]
        # stable sort puts the kept entries first, in distance order; a row whose own entry ranked outside
        # the top_n + 1 (exact duplicates) drops its last neighbour instead
        order = np.argsort(~keep, axis=1, kind="stable")[:, :top_n]
        return np.take_along_axis(dists, order, 1), np.take_along_axis(idxs, order, 1)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        path = Path(path)
        save_file(
            {"features": self.features.contiguous().cpu(), "labels": self.labels.contiguous().cpu()},
            str(path),
            metadata={"metric": self.metric, **(metadata or {})},
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RetrievalIndex":
        from safetensors import safe_open

        with reading(path, "retrieval index", "run predict again to rebuild it"):
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                metric = (f.metadata() or {}).get("metric", "cosine")  # indexes saved before the key existed: cosine
        missing = {"features", "labels"} - set(tensors)
        if missing:
            raise UnreadableFileError(f"{path}: not a retrieval index, missing tensors {sorted(missing)}")
        return cls(tensors["features"], tensors["labels"], metric=metric, normalized=True)


def neighbours_agree(ref_dist: np.ndarray, ref_idx: np.ndarray, idx: np.ndarray, tol: float = 1e-5) -> bool:
    """Whether ``idx`` equals the reference neighbours ``ref_idx`` wherever the reference distances are not tied.

    Two neighbours whose distances differ by less than ``tol`` may come in either order (float32 round-off), so
    only positions separated from both sides by more than ``tol`` must hold the same id.
    """
    ref_dist, ref_idx, idx = np.asarray(ref_dist), np.asarray(ref_idx), np.asarray(idx)
    if ref_idx.shape != idx.shape:
        return False
    gaps = np.diff(ref_dist, axis=1) > tol
    untied = np.ones_like(ref_idx, dtype=bool)
    untied[:, :-1] &= gaps
    untied[:, 1:] &= gaps
    return bool(np.array_equal(ref_idx[untied], idx[untied]))
