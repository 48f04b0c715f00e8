"""Outputs that survive interruption, shared by every evaluation (MedDr, GSCo arms, the report specialist).

Rows are appended to a JSONL file batch by batch and flushed; a re-run reads what is there (dropping a line torn by
a kill) and does only the rest. Under torchrun each process appends to its own part file
(``{stem}.rank{R}.jsonl``); when all are done the first process folds the parts into the main file, in the input's
order, so one and many processes leave the same file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def read_predictions(path: Path) -> list[dict]:
    """Rows already written; a partial last line (the run was killed mid-write) is dropped from the file."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
        logger.warning("%s: dropped a partial last line left by an interrupted run", path)
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def append_rows(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def distributed_context() -> tuple[int, int]:
    """(rank, world size) under torchrun/accelerate; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def answered_ids(out: Path, rank: int, world: int, key: str = "question_id") -> set[str]:
    """Ids (rows' ``key``) already answered (the predictions file and, under data parallel, every process's part
    file). The first process reads, the others receive its set, so all split the remaining work the same way."""
    if world == 1:
        return {r[key] for r in read_predictions(out)}
    import torch.distributed as dist

    shared: list = [None]
    if rank == 0:
        files = [out, *out.parent.glob(f"{out.stem}.rank*.jsonl")]
        shared = [{r[key] for f in files for r in read_predictions(f)}]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def merge_parts(out: Path, order: list[str], rank: int, world: int, key: str = "question_id") -> None:
    """After every process is done, the first one folds the part files into ``out`` in ``order`` (ids, the rows'
    ``key``), then removes them."""
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        parts = [out.with_name(f"{out.stem}.rank{r}.jsonl") for r in range(world)]
        rows = {r[key]: r for p in [out, *parts] for r in read_predictions(p)}
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(json.dumps(rows[q], ensure_ascii=False) + "\n" for q in order if q in rows))
        tmp.replace(out)
        for p in parts:
            p.unlink(missing_ok=True)
    dist.barrier()


def process_device(device: str, rank: int, world: int) -> str:
    """Under data parallel, ``auto``/``cuda`` mean this process's own GPU (LOCAL_RANK)."""
    if world > 1 and device in ("auto", "cuda"):
        import torch

        return f"cuda:{os.environ.get('LOCAL_RANK', rank)}" if torch.cuda.is_available() else "cpu"
    return device
