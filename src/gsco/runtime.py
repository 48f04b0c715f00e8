"""Process-level helpers shared by every entry point: logging, devices, seeds, atomic writes, appended JSONL."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_file(path: str | Path) -> Path:
    """``path`` as given when it exists (relative to the working directory), else relative to the repository —
    so the shipped configs and examples resolve wherever a script is started from."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not (REPO_ROOT / path).exists():
        return path
    return REPO_ROOT / path


def setup_logging(level: int = logging.INFO) -> None:
    """Logs go to stderr so that stdout carries only results (paths, answers)."""
    logging.basicConfig(stream=sys.stderr, level=level, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch as written."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but CUDA is not available here; use device=auto or cpu")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write via a temporary file so an interrupted save never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if np.isfinite(v) else None  # JSON has no NaN: an undefined AUC is null
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(obj: Any, path: Path, indent: int | None = 2) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(obj), indent=indent))
    os.replace(tmp, path)
    return path


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
