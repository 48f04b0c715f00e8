"""The OpenAI-compatible generalist backend against a real server on the CPU: transformers' own ``transformers serve``
serving a tiny LLaVA (a stock transformers model, so the server needs no code of ours). The documented commands give
the local backend's greedy answers; a server killed midway and restarted leaves every question answered once; the
API key never reaches a log or a file."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from builders import build_tiny_llava, pcam_cases
from conftest import REPO
from doc_commands import documented_argv, documented_env, run_documented

pytestmark = pytest.mark.e2e
SECRET = "sk-test-not-to-be-seen-0123456789"


class Server:
    """``transformers serve MODEL`` on a free local port; ``start`` waits until it answers /health."""

    def __init__(self, model: Path, log: Path):
        self.model, self.log, self.proc = model, log, None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        cli = Path(sys.executable).parent / "transformers"
        self.proc = subprocess.Popen([str(cli), "serve", str(self.model), "--device", "cpu", "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)
                return
            except OSError:
                assert self.proc.poll() is None, f"transformers serve exited:\n{self.log.read_text()[-3000:]}"
                time.sleep(0.3)
        raise AssertionError(f"transformers serve did not come up:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    server = Server(build_tiny_llava(root / "llava"), root / "server.log")
    server.start()
    yield server
    if server.proc.poll() is None:
        server.kill()


def vqa_metafile(folder: Path, n: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(folder / f"q{i}.png")
        rows.append({"id": i, "image": f"q{i}.png", "question": f"Is finding {i} present?", "question_id": str(i),
                     "answer": "yes" if i % 2 else "no"})
    (folder / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "vqa.jsonl"


def answers(path: Path) -> dict[str, str]:
    return {r["question_id"]: r["answer"] for r in map(json.loads, path.read_text().splitlines())}


def test_inference_meddr_served_gives_the_local_answers_and_survives_a_server_restart(served, tmp_path):
    meta = vqa_metafile(tmp_path, 16)
    command = "BACKEND=openai BASE_URL=http://localhost:8000/v1 MODEL_NAME=meddr METAFILE=data/iu_xray/test.jsonl " \
              "bash inference_meddr.sh"
    place = {"http://localhost:8000/v1": served.url, "MODEL_NAME=meddr": f"MODEL_NAME={served.model}",
             "data/iu_xray/test.jsonl": str(meta)}
    from gsco.config import load_config
    from gsco.recipes.evaluate import EvalConfig, evaluate

    repo = REPO
    evaluate(load_config(EvalConfig, repo / "configs/meddr/eval.yaml",  # the local backend, in process
                         {"model": str(served.model), "metafile": str(meta), "out_dir": str(tmp_path / "local"),
                          "task": "vqa", "max_new_tokens": 12, "device": "cpu", "eval_batch_size": 1}))
    expected = answers(tmp_path / "local" / "vqa_predictions.jsonl")

    # killed after its first answers: the run stops in one line, keeping them
    env = {"OUT_DIR": str(tmp_path / "served"), "API_KEY": SECRET}
    out = tmp_path / "served" / "vqa_predictions.jsonl"
    argv = documented_argv(command, replace=place, append=["task=vqa", "max_new_tokens=12", "eval_batch_size=2",
                                                           "concurrency=1", "max_retries=0"])
    run = subprocess.Popen(argv, cwd=repo, env=documented_env(env),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while run.poll() is None and not (out.is_file() and len(out.read_text().splitlines()) >= 2):
        time.sleep(0.01)
    served.kill()
    stdout, stderr = run.communicate(timeout=120)
    kept = len(out.read_text().splitlines())
    assert run.returncode == 2 and 2 <= kept < 16, stderr[-2000:]
    assert "re-run to resume" in stderr.splitlines()[-1]
    served.start()
    again = run_documented(command, replace=place, env=env, append=["task=vqa", "max_new_tokens=12"])
    assert f"{kept} of 16 questions already answered" in again.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 16 and answers(out) == expected  # every question once, the local backend's answers
    manifest = json.loads((tmp_path / "served" / "vqa_predictions.manifest.json").read_text())
    assert manifest["model"] == {"served": str(served.model), "base_url": served.url}
    seen = stdout + stderr + again.stdout + again.stderr
    seen += "".join(p.read_text() for p in (tmp_path / "served").iterdir())
    assert SECRET not in seen


def test_inference_gsco_and_demo_served_give_the_local_answers(served, tmp_path):
    from PIL import Image

    pcam_cases(tmp_path, 3)
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.recipes.gsco import run

    repo = REPO
    run(load_config(GscoConfig, repo / "configs/gsco/pcam200.yaml",  # the local backend, in process
                    {"model": str(served.model), "cases": str(tmp_path / "cases.json"), "device": "cpu",
                     "out_dir": str(tmp_path / "local"), "arms": ["generalist", "moed_rad"], "max_new_tokens": 6}))
    run_documented("BACKEND=openai BASE_URL=http://localhost:8000/v1 CASES=outputs/gsco/breastmnist_cases.json "
                   "bash inference_gsco.sh",
                   replace={"http://localhost:8000/v1": served.url,
                            "outputs/gsco/breastmnist_cases.json": str(tmp_path / "cases.json")},
                   env={"OUT_DIR": str(tmp_path / "served"), "DATASET": "pcam200"},
                   append=["arms=[generalist,moed_rad]", "max_new_tokens=6"])
    for arm in ("generalist", "moed_rad"):
        local, remote = (answers(tmp_path / d / f"{arm}_predictions.jsonl") for d in ("local", "served"))
        assert local == remote and len(local) == 3, arm

    from gsco.generalist import Generalist

    expected = Generalist.load(str(served.model), device="cpu").answer([Image.open(tmp_path / "c0.png")],
                                                                        ["What abnormality is seen?"], 6)
    proc = run_documented('python demo.py backend=openai base_url=http://localhost:8000/v1 image=chest.png '
                          'question="What abnormality is seen?"',
                          replace={"http://localhost:8000/v1": served.url, "chest.png": str(tmp_path / "c0.png")},
                          append=["max_new_tokens=6", "num_beams=2"])
    assert proc.stdout.splitlines() == [expected[0].replace("\n", "\\n")]
    assert proc.stderr.count("num_beams=2: the OpenAI API has no beam search") == 1


def test_a_second_family_served_gives_the_local_answers(tmp_path):
    """MedGemma's family (tiny gemma3: its chat template, image tokens and bidirectional image attention) behind
    ``transformers serve``: GSCo's arms through backend=openai answer as the local backend."""
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.generalist.tiny import save
    from gsco.recipes.gsco import run

    pcam_cases(tmp_path, 2)
    server = Server(save("gemma3", tmp_path / "gemma3"), tmp_path / "server.log")
    server.start()
    try:
        settings = {"cases": str(tmp_path / "cases.json"), "arms": ["generalist", "moed_rad"], "max_new_tokens": 6}
        run(load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml",
                        {**settings, "model": str(server.model), "device": "cpu", "out_dir": str(tmp_path / "local")}))
        run(load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml",
                        {**settings, "backend": "openai", "base_url": server.url, "out_dir": str(tmp_path / "served")}))
    finally:
        server.kill()
    for arm in ("generalist", "moed_rad"):
        local, remote = (answers(tmp_path / d / f"{arm}_predictions.jsonl") for d in ("local", "served"))
        assert local == remote and len(local) == 2 and any(local.values()), arm
