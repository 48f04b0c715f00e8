"""bench/gpu/bench_gpu.py runs its GPU code path on this CPU with the tiny preset (bitsandbytes rows skipped)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.e2e
def test_the_gpu_benchmark_runs_on_a_cpu_with_the_tiny_preset(tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/gpu/bench_gpu.py", "preset=tiny", "zero3=false", "quantization=none,torchao-int8,nf4",
         "batch_sizes=1,2", "prompt_tokens=64", "new_tokens=4", "cases=2", f"out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    rows = {r["quantization"]: r for r in result["quantizations"]}
    assert rows["nf4"] == {"quantization": "nf4", "skipped": "bitsandbytes needs CUDA"}
    for method in ("none", "torchao-int8"):
        assert [s["batch"] for s in rows[method]["speed"]] == [1, 2]
        assert all(s["prefill_tokens_per_s"] > 0 and s["decode_tokens_per_s"] > 0 for s in rows[method]["speed"])
        gsco = rows[method]["gsco"]
        assert gsco["arms"] == 6 and gsco["cases_per_s"] > 0 and gsco["shared_cases_per_s"] > 0
        assert gsco["identical_predictions"]  # the shared prefix changes no answer (fp32 on a CPU)
    assert rows["torchao-int8"]["weight_bytes_counted"] < rows["none"]["weight_bytes_counted"]
    table = (tmp_path / "gpu_bench.md").read_text()
    assert table.count("| none |") == 2 and "| nf4 | skipped: bitsandbytes needs CUDA |" in table
    bad = subprocess.run([sys.executable, "bench/gpu/bench_gpu.py", "presett=tiny"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "'presett=tiny': expected key=value with key one of preset" in bad.stderr
