"""Process-level helpers shared by every entry point: logging, devices, seeds, atomic writes (files and whole
folders), appended JSONL."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gsco.errors import GscoError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = Path(__file__).resolve().parent


def repo_file(path: str | Path) -> Path:
    """``path`` as given when it exists (relative to the working directory), else relative to the repository, else
    inside the installed package (``configs/...`` ships as package data) — so the shipped configs and examples
    resolve wherever a command is started from, and an installed copy needs no ``--config``."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    for root in (REPO_ROOT, PACKAGE_ROOT):
        if (root / path).exists():
            return root / path
    return path


def setup_logging(level: int = logging.INFO) -> None:
    """Logs go to stderr so that stdout carries only results (paths, answers)."""
    logging.basicConfig(stream=sys.stderr, level=level, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch as written."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from gsco.config import ConfigError

        raise ConfigError(f"key 'device': {device!r} was asked for, but CUDA is not available here; use device=auto "
                          "or cpu")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> None:
    import torch

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
    import torch

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


class UnreadableFileError(GscoError, ValueError):
    """A file that is there but cannot be read as what it should be: truncated, corrupt, or holding pickled code."""


def file_errors() -> tuple[type[BaseException], ...]:
    """What the readers of npz, torch, safetensors and JSON files raise on a damaged file."""
    import pickle
    import zipfile
    import zlib

    from safetensors import SafetensorError

    return (OSError, ValueError, EOFError, RuntimeError, zlib.error, zipfile.BadZipFile,
            pickle.UnpicklingError, SafetensorError)


def _reason(exc: BaseException) -> str:
    """The first sentence of a reader's message (torch's pickle refusal replaced by what it means here)."""
    import pickle
    import re

    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        return ("it holds pickled objects that are not plain tensors" + (f" ({found.group(1)})" if found else "")
                + "; such files are never loaded with weights_only=False")
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    kind = type(exc).__name__ if type(exc).__name__ != "error" else f"{type(exc).__module__}.error"  # zlib.error
    return f"{kind}: {first[:200]}" if first else kind


@contextlib.contextmanager
def reading(path: str | Path, what: str, remedy: str = "", error: type[ValueError] = UnreadableFileError
            ) -> Iterator[None]:
    """Inside the block, a failure to parse ``path`` (a truncated zip or safetensors, bad JSON, a pickle that is not
    plain weights, ...) becomes one :class:`UnreadableFileError` naming the file, what it should be, why it is not
    and ``remedy`` — instead of a reader's traceback (``error``: the class raised, for readers whose callers expect
    their own, e.g. DatasetError). The project's own errors (which already name what is wrong) pass through."""
    try:
        yield
    except file_errors() as exc:
        if type(exc).__module__.split(".")[0] == "gsco":
            raise  # the project's own errors already say what is wrong
        tail = f"; {remedy}" if remedy else ""
        raise error(f"{path}: not a readable {what} ({_reason(exc)}){tail}") from exc


def read_json(path: str | Path, what: str = "JSON file", remedy: str = "",
              error: type[ValueError] = UnreadableFileError) -> Any:
    """A JSON file, or one line naming it, what it should be, the parse error and ``remedy`` (``error``: the class
    raised, as :func:`reading`)."""
    with reading(path, what, remedy, error):
        return json.loads(Path(path).read_text())


def read_jsonl_rows(path: Path, raw: str, remedy: str) -> list[dict]:
    """Rows of a JSONL text read from ``path``; a line that is not a JSON object names its number and ``remedy``."""
    rows = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UnreadableFileError(f"{path} line {lineno}: not a JSON row ({exc}); {remedy}") from None
        if not isinstance(row, dict):
            raise UnreadableFileError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}; "
                                      f"{remedy}")
        rows.append(row)
    return rows


def read_predictions(path: Path) -> list[dict]:
    """Rows already written; a partial last line (the run was killed mid-write) is dropped from the file. A line
    that ends but is not JSON was damaged after it was written: one error naming it."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
        logger.warning("%s: dropped a partial last line left by an interrupted run", path)
    return read_jsonl_rows(path, raw.decode(errors="replace"),
                           "delete that line (its question is asked again) or give overwrite=true to start over")


def append_rows(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


class OutputFolderError(GscoError, ValueError):
    """A folder that cannot be written as asked (it is the source, or it holds something and overwrite is off)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def building_folder(dst: str | Path, overwrite: bool = False, sources: tuple[str | Path, ...] = ()) -> Iterator[Path]:
    """Write a folder (a converted or saved model) so that nothing is destroyed before it is replaced: the body of the
    ``with`` writes into ``.{name}.partial-{pid}`` beside ``dst``, which becomes ``dst`` only when the body finishes;
    a failure (or a kill) leaves ``dst`` as it was. ``dst`` equal to, inside or around one of ``sources`` is refused
    before anything is touched, and so is a non-empty ``dst`` unless ``overwrite``. Partial folders of dead runs are
    removed."""
    dst = Path(dst).absolute()
    for source in sources:
        src = Path(source).resolve()
        target = dst.resolve()
        if target == src or src in target.parents or target in src.parents:
            raise OutputFolderError(f"{dst} is the source {source} or overlaps it: write somewhere else "
                                    "(overwrite never touches a source)")
    if dst.exists() and not dst.is_dir():
        raise OutputFolderError(f"{dst} is a file, not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise OutputFolderError(f"{dst} exists and is not empty; give overwrite=true to replace it (it is replaced "
                                "only once the new one is complete)")
    output_folder(dst.parent)
    for stale in dst.parent.glob(f".{dst.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    partial = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_folder(partial, dst)


def replace_folder(complete: Path, dst: Path) -> None:
    """Put the finished folder ``complete`` at ``dst``; what ``dst`` held is set aside only now and then removed.
    Its files get the modes the user's umask gives new files (safetensors' writer leaves weights at 0600, which
    other users and services — a serving engine's account — cannot read)."""
    mask = os.umask(0)
    os.umask(mask)
    for file in (p for p in complete.rglob("*") if p.is_file() and not p.is_symlink()):
        mode = file.stat().st_mode & 0o777
        wanted = (0o666 & ~mask) | (mode & 0o111)
        if mode != wanted and mode & wanted == mode:  # only ever widened to what the umask allows
            file.chmod(wanted)
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{os.getpid()}"
        dst.rename(old)
        complete.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        complete.rename(dst)


def output_folder(folder: str | Path, key: str = "out_dir") -> Path:
    """``folder`` made (with its parents) if needed, as an absolute path; a file in its place, or a parent that is
    a file, is one error naming it and the key that set it."""
    folder = Path(folder).absolute()
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise OutputFolderError(f"{key}={folder}: {part} is a file, not a folder; give another {key}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def follow_launcher() -> None:
    """Under torchrun, make this worker stop when its launcher dies, even when the launcher is killed with SIGKILL
    and cannot forward anything (Linux's parent-death signal). Stopping the launcher with SIGTERM or Ctrl-C is
    already forwarded by torchrun; this covers the rest."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    launcher = os.getppid()
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("could not ask to be stopped with the launcher (prctl errno %d)", ctypes.get_errno())
        return
    if launcher == 1 or os.getppid() != launcher:  # the launcher died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


class OutputLockedError(GscoError, RuntimeError):
    """Another process is writing into the same output folder."""


_HELD_LOCKS: dict[Path, tuple[Any, int]] = {}  # lock file -> (its open handle, how many holders in this process)


@contextlib.contextmanager
def output_lock(folder: str | Path, run: str | None = None, key: str = "out_dir") -> Iterator[Path]:
    """One writer per output folder: an exclusive lock on ``folder/.gsco.lock`` (its holder's process id inside),
    held until the block ends. A second process refuses at once, naming the folder and the holder; the same process
    may nest it (a GSCo run holds it while each arm's loop takes it again). The operating system drops the lock
    when its process dies, so a killed run never leaves the folder locked. ``run``: one writer per run inside a
    folder that holds several (a specialist's ``output_path``), on ``.{run}.gsco.lock``; ``key`` names the folder's
    config key in the message."""
    import fcntl

    folder = output_folder(folder)
    path = folder / (f".{run}.gsco.lock" if run else ".gsco.lock")
    if path in _HELD_LOCKS:
        handle, count = _HELD_LOCKS[path]
        _HELD_LOCKS[path] = (handle, count + 1)
    else:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            what = f"{folder} ({run})" if run else str(folder)
            raise OutputLockedError(f"{what} is being written by another run (process {holder}): wait for it to "
                                    f"finish, or write somewhere else ({key}=...)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD_LOCKS[path] = (handle, 1)
    try:
        yield folder
    finally:
        handle, count = _HELD_LOCKS[path]
        if count > 1:
            _HELD_LOCKS[path] = (handle, count - 1)
        else:
            del _HELD_LOCKS[path]
            handle.close()  # closing releases the lock


def file_record(path: str | Path, known: dict | None = None) -> dict:
    """What a run records of a data file it was trained on: path, size, modification time and sha256 (taken from
    ``known``, an earlier record, when size and time are unchanged, so a large npz is hashed once)."""
    path = Path(path)
    stat = path.stat()
    record = {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    same = known and known.get("size") == record["size"] and known.get("mtime") == record["mtime"]
    record["sha256"] = known["sha256"] if same and known.get("sha256") else file_fingerprint(path)
    return record


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (inputs named in a run's manifest: metafiles, case files, annotations)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
