"""Which process this is: the one place that reads the launcher's RANK / WORLD_SIZE / LOCAL_RANK.

torchrun, ``accelerate launch`` and DeepSpeed's launcher all set them; a plain ``python -m ...`` is rank 0 of 1.
Evaluations, trainers and the GSCo runner ask here, so "the first process" means the same everywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def rank() -> int:
    """This process's rank in the whole job (every node); 0 without a launcher."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes the job has; 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its node (its GPU index); 0 without a launcher."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """The first process of the job: it holds output locks, merges part files, scores and prints."""
    return rank() == 0


def distributed_context() -> tuple[int, int]:
    """(rank, world size), with the process group started (NCCL on GPUs, else gloo) when there are several
    processes; (0, 1) otherwise."""
    world = world_size()
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def end_process_group() -> None:
    """Tear down the process group if one was started (before the first process scores alone)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def process_device(device: str, rank: int | None = None, world: int | None = None) -> str:
    """Under data parallel, ``auto``/``cuda`` mean this process's own GPU (LOCAL_RANK); otherwise ``device``."""
    world = world_size() if world is None else world
    if world > 1 and device in ("auto", "cuda"):
        import torch

        return f"cuda:{os.environ.get('LOCAL_RANK', rank if rank is not None else local_rank())}" \
            if torch.cuda.is_available() else "cpu"
    return device


@contextlib.contextmanager
def main_process_lock(folder: str | Path, run: str | None = None, key: str = "out_dir") -> Iterator[None]:
    """One job per output folder: the first process of the job holds ``folder``'s lock
    (:func:`gsco.runtime.output_lock`) while the block runs; the other processes run it without."""
    from gsco.runtime import output_lock

    with output_lock(folder, run, key) if is_main_process() else contextlib.nullcontext():
        yield
