import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e  # shell scripts run as subprocesses


def test_inference_specialist_passes_env_and_overrides(tmp_path):
    import os

    env = {**os.environ, "PYTHON": sys.executable, "DATASET": "nosuchset"}
    proc = subprocess.run(["bash", "inference_specialist.sh", f"output_path={tmp_path}"], capture_output=True,
                          text=True, cwd=REPO, env=env)
    assert proc.returncode == 2 and "unknown dataset 'nosuchset'" in proc.stderr
    env = {**os.environ, "PYTHON": sys.executable, "ARCH": "test_resnet", "SEED": "7"}
    proc = subprocess.run(["bash", "inference_specialist.sh", f"output_path={tmp_path}", "data_path=/nonexistent"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2  # bad input: the same status from every entry point
    assert "breastmnist_28_endToEnd_test_resnet_s7_best.pth does not exist" in proc.stderr
