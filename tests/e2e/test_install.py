"""A non-editable install works outside the repository: the MedDr presets and the recipe configs ship as package
data."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e  # pip and the installed package run as subprocesses


def test_installed_package_builds_the_tiny_preset_and_answers_from_another_directory(tmp_path):
    # the package as pip builds it from a copy of the sources (no build/ or egg-info left in the repository)
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # a fresh virtualenv whose dependencies come from this one (tests never download); gsco itself is installed
    # into it, not linked: this environment's editable gsco is not on its path (.pth files of an added directory
    # are not read)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              str(source)], capture_output=True, text=True, env=env)
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "gsco" / "meddr" / "model_configs" / "tiny.yaml").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(elsewhere / "x.png")
    # the preset saved by the installed presets command's function (the command itself: test_documented_commands)
    ask = ("import json, gsco; from gsco.generalist import Generalist; from gsco.meddr.presets import main; "
           "main(['preset=tiny', 'out_dir=model']); "
           "answers = [Generalist.load(m, device='cpu').answer(['x.png'], ['What is shown?'], max_new_tokens=4)[0] "
           "for m in ('model', None)]; print(json.dumps({'gsco': gsco.__file__, 'answers': answers}))")
    asked = subprocess.run([str(python), "-c", ask], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert json.loads((elsewhere / "model" / "config.json").read_text())["model_type"] == "meddr"
    out = json.loads(asked.stdout.strip().splitlines()[-1])
    assert Path(out["gsco"]).is_relative_to(site)
    # the saved preset and the preset built in memory are the same random model (seed 0): the same answer
    assert len(out["answers"]) == 2 and out["answers"][0] == out["answers"][1]
    # the recipes find their shipped configs in the package: no --config, no repository
    (elsewhere / "meta.jsonl").write_text(json.dumps({"question_id": "q1", "image": "x.png", "question": "Shown?",
                                                      "answer": "yes"}) + "\n")
    evaluated = subprocess.run([str(python), "-m", "gsco.recipes.evaluate", "metafile=meta.jsonl", "task=vqa",
                                "out_dir=eval", "max_new_tokens=3", "device=cpu"], cwd=elsewhere, capture_output=True,
                               text=True, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads((elsewhere / "eval" / "meta_metrics.json").read_text())
    assert metrics["n_answered"] == 1 and metrics["config"]["prompts"] == "configs/meddr/prompts.yaml"
    assert (site / "gsco" / "configs" / "gsco" / "base.yaml").is_file()


def test_make_test_stops_at_once_with_the_command_when_it_cannot_install_java_or_chromium(tmp_path):
    """``make test``'s system-packages step, on a machine without Java and Chromium where it is not root: one line
    with the command to run, status 2, nothing else run (as root with apt-get it installs them; CI does that)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "make"):  # a PATH with no java, chromium or chromedriver
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    (bin_dir / "id").chmod(0o755)
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "system-packages"], capture_output=True,
                          text=True, env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("make: ***")]  # make's own footer
    assert lines == ["error: the tests need Java and headless Chromium with its driver; install them first:",
                     "  sudo apt-get install -y default-jre-headless chromium chromium-driver"] and proc.stdout == ""
