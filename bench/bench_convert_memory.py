"""Peak memory of the MedDr converter vs the size of the checkpoint it converts (the streaming claim).

    python bench/bench_convert_memory.py [--shards 6] [--hidden 1024] [--layers 12]

Writes a random MedDr of the tiny architecture widened to ``--hidden`` in the original InternVL-Chat layout,
split into ``--shards`` safetensors shards, converts it in a fresh process and reads that process's peak
resident memory (``VmHWM``). Baseline: the same process importing everything and loading nothing (its peak
RSS). Reports (peak - baseline) / checkpoint size and / largest shard. Writes bench/out/convert_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# VmHWM (this process's own peak RSS): ru_maxrss would include the parent's peak, inherited across fork.
PROBE = """
import re, sys
import gsco.meddr
from gsco.meddr.convert import convert
if sys.argv[1] != "-":
    convert(sys.argv[1], sys.argv[2])
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
"""


def peak_rss(*args: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "convert_memory.json")
    args = parser.parse_args()

    import gsco.meddr  # noqa: F401
    from gsco.meddr.convert import save_original
    from gsco.meddr.model import MedDrForConditionalGeneration
    from gsco.meddr.presets import build_config, build_preset_tokenizer, load_preset

    preset = load_preset("tiny")
    preset.text.update(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                       num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)
    tokenizer = build_preset_tokenizer(preset)
    model = MedDrForConditionalGeneration(build_config(preset, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")))
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    with tempfile.TemporaryDirectory() as tmp:
        src = save_original(model, tokenizer, Path(tmp) / "orig", max_shard_bytes=total // args.shards + 1)
        del model
        files = list(src.glob("*.safetensors"))
        largest, n_shards = max(f.stat().st_size for f in files), len(files)
        baseline = peak_rss("-")
        peak = peak_rss(str(src), str(Path(tmp) / "hf"))
    result = {"checkpoint_bytes": total, "shards": n_shards,
              "largest_shard_bytes": largest, "baseline_peak_rss": baseline, "convert_peak_rss": peak,
              "extra_over_checkpoint": (peak - baseline) / total,
              "extra_over_largest_shard": (peak - baseline) / largest}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"checkpoint {total / 1e6:.0f} MB in {n_shards} shards (largest {largest / 1e6:.0f} MB): converting "
          f"took {(peak - baseline) / 1e6:.0f} MB above an idle process = {result['extra_over_checkpoint']:.2f}x the "
          f"checkpoint, {result['extra_over_largest_shard']:.2f}x the largest shard")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
