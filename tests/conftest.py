import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (``make test`` runs two workers), each worker and the commands it starts use one thread:
# two single-threaded processes keep two cores busy, where two-thread processes would fight over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402,F401  (imported up front: its import runs ldconfig, which the fast tier's guard would
import yaml  # noqa: E402

#                                   blame on whichever test imports torch first)

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

# Small generated datasets, one per task type, registered through a user registry file.
TOY_DATASETS = {
    "toy_binary": {"task": "binary-class", "label_names": ["negative", "positive"], "n_channels": 1},
    "toy_multiclass": {"task": "multi-class", "label_names": ["a", "b", "c"], "n_channels": 3},
    "toy_multilabel": {"task": "multi-label, binary-class", "label_names": ["x", "y", "z", "w"], "n_channels": 1},
    "toy_ordinal": {"task": "ordinal-regression", "label_names": ["0", "1", "2", "3", "4"], "n_channels": 1},
}


# Two tiers. ``pytest --fast`` (``make test-fast``) runs the tests not marked ``e2e``: in-process, on generated data,
# in a few minutes. Tests that start a process (a documented command, a script, a kill), read ../shared or train
# for long carry ``@pytest.mark.e2e``; under --fast an unmarked test that starts a process or reads ../shared fails,
# so the marks stay true. ``make test`` runs both tiers.
FAST_TIER = False


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="the fast tier: skip tests marked e2e, and fail an unmarked test that starts a process or "
                          "reads ../shared")


def pytest_configure(config):
    global FAST_TIER
    FAST_TIER = config.getoption("--fast")


def pytest_collection_modifyitems(config, items):
    if not FAST_TIER:
        # the long tests (e2e: processes, training) first, the short ones after: pytest-xdist's workers then end on
        # short tests, instead of one waiting while the other finishes a long one
        items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
        return
    deselected = [item for item in items if item.get_closest_marker("e2e")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("e2e")]


@pytest.fixture(autouse=True)
def _fast_tier_guard(monkeypatch):
    if FAST_TIER:
        import subprocess

        def refuse(*args, **kwargs):
            raise AssertionError("this test starts a process: mark it @pytest.mark.e2e (the fast tier runs in-process)")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield


def shared_path(*parts: str) -> Path:
    """A file under ../shared; a missing one fails the test with its path (in the fast tier: any use fails)."""
    if FAST_TIER:
        raise AssertionError(f"this test reads ../shared/{'/'.join(parts)}: mark it @pytest.mark.e2e")
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"shared fixture {path} is missing (tests expect ../shared beside the repository)")
    return path


def make_labels(rng: np.random.Generator, n: int, task: str, num_classes: int, label_shape: str = "n1") -> np.ndarray:
    if task == "multi-label, binary-class":
        return rng.integers(0, 2, size=(n, num_classes)).astype(np.uint8)
    y = rng.integers(0, num_classes, size=n).astype(np.uint8)
    return y if label_shape == "n" else y[:, None]


def make_images(rng: np.random.Generator, labels: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Noise whose brightness follows the (first) label, so a model can learn something quickly."""
    lab = labels.reshape(len(labels), -1)[:, 0].astype(np.float32)
    base = 40 + 50 * lab
    shape = (len(labels), size, size) + ((3,) if channels == 3 else ())
    noise = rng.normal(0, 20, size=shape)
    return np.clip(base.reshape(-1, *([1] * (len(shape) - 1))) + noise, 0, 255).astype(np.uint8)


def write_npz(folder: Path, name: str, task: str, num_classes: int, img_size: int = 28, channels: int = 1,
              sizes=(48, 16, 24), label_shape: str = "n1", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        labels = make_labels(rng, n, task, num_classes, label_shape)
        if task != "multi-label, binary-class":
            labels.reshape(-1)[: num_classes] = np.arange(num_classes)  # every class present
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_images"] = make_images(rng, labels, img_size, channels)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{name}.npz" if img_size == 28 else f"{name}_{img_size}.npz")
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def toy_registry(tmp_path: Path) -> Path:
    path = tmp_path / "toy_datasets.yaml"
    path.write_text(yaml.safe_dump(TOY_DATASETS))
    return path


@pytest.fixture
def toy_data(tmp_path: Path, toy_registry: Path):
    """Factory: write a toy npz and return config overrides that train on it."""

    def make(name: str = "toy_binary", img_size: int = 28, **kw) -> dict:
        entry = TOY_DATASETS[name]
        write_npz(tmp_path / "data", name, entry["task"], len(entry["label_names"]), img_size,
                  entry["n_channels"], **kw)
        return {
            "data_path": str(tmp_path / "data"), "output_path": str(tmp_path / "out"), "dataset": name,
            "img_size": img_size, "extra_datasets": str(toy_registry), "architecture": "test_resnet",
            "batch_size": 16, "batch_size_eval": 32, "device": "cpu", "preprocess": "native", "epochs": 2,
            "learning_rate": 1e-3, "search_top_n": 5, "k": 3, "pretrained": False,
        }

    return make


def kill_when_written(cmd: list[str], env: dict, watched: Path, min_lines: int, timeout: float = 120) -> int:
    """Start ``cmd``, SIGKILL its whole process group once ``watched`` holds ``min_lines`` lines, and return how
    many complete lines the file holds after the kill (a torn last line is not counted)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if watched.exists() and len(watched.read_text().splitlines()) >= min_lines:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return watched.read_text().count("\n") if watched.exists() else 0


@pytest.fixture
def vision_tower_calls(monkeypatch):
    """Images through the vision tower, per call, of every generalist loaded while the test runs (patches
    Generalist.load to hook its model's vision tower)."""
    from gsco.generalist import Generalist

    seen: list[int] = []
    load = Generalist.load

    def counting_load(*args, **kwargs):
        g = load(*args, **kwargs)
        g.model.model.vision_tower.register_forward_hook(
            lambda m, a, kw, out: seen.append(len(a[0] if a else kw["pixel_values"])), with_kwargs=True)
        return g

    monkeypatch.setattr(Generalist, "load", counting_load)
    return seen


@pytest.fixture
def server(tmp_path):
    """(folder, base URL): files put in the folder are served over HTTP with Range support (builders.RangeHandler)."""
    from builders import serve_folder

    served = tmp_path / "served"
    served.mkdir()
    with serve_folder(served) as url:
        yield served, url
