"""Quantized loading of a generalist: ``quantization`` = none | int8 | nf4 | torchao-int8.

- ``int8`` (LLM.int8) and ``nf4`` (4-bit NormalFloat, double quantization, compute in the model's dtype) come from
  bitsandbytes and need a CUDA GPU; transformers quantizes the weights as a model folder loads.
- ``torchao-int8`` is torchao's weight-only int8 (per output channel), which also runs on a CPU; it is applied to a
  loaded model (a folder or a preset).

Only ``nn.Linear`` weights are quantized, and never those of the modules named in ``keep_unquantized`` (default: the
vision tower and projector of every family in :mod:`gsco.generalist.families`, and the LM head — vision towers are
known to degrade when quantized, and these parts are a small share of the bytes). A module is kept when one of those
names is a component of its dotted name.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

import torch
from torch import nn

from gsco.errors import GscoError
from gsco.generalist.families import vision_modules

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "int8", "nf4", "torchao-int8")
BITSANDBYTES = ("int8", "nf4")
# every tested family's vision tower and projector (gsco.generalist.families), and the LM head
KEEP_UNQUANTIZED = (*vision_modules(), "lm_head")


class QuantizationError(GscoError, ValueError):
    """A quantization this machine or this model cannot do; the message says what would work."""


def check_quantization(method: str, device: torch.device, preset: bool = False) -> None:
    """Refuse, in one line, what cannot run here — before any weights are read."""
    if method not in QUANTIZATIONS:
        raise QuantizationError(f"quantization {method!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if method in BITSANDBYTES:
        if device.type != "cuda":
            raise QuantizationError(f"quantization={method} (bitsandbytes) needs a CUDA GPU, and this run is on "
                                    f"{device.type}: use quantization=torchao-int8 (runs on a CPU) or none")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise QuantizationError(f"quantization={method} needs bitsandbytes: pip install bitsandbytes")
        if preset:
            raise QuantizationError(f"quantization={method}: bitsandbytes quantizes a model as it loads from a folder; "
                                    "save the preset first (python -m gsco.meddr.presets preset=NAME out_dir=DIR) "
                                    "and give model=DIR, or use quantization=torchao-int8")
    if method == "torchao-int8" and importlib.util.find_spec("torchao") is None:
        raise QuantizationError("quantization=torchao-int8 needs torchao: pip install torchao")


def kept(name: str, keep: Sequence[str]) -> bool:
    """Whether module ``name`` (dotted) lies inside one of the ``keep`` modules (each a dotted name component)."""
    dotted = f".{name}."
    return any(f".{k}." in dotted for k in keep)


def bitsandbytes_config(method: str, keep: Sequence[str], compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for ``int8`` / ``nf4``, keeping ``keep`` in 16-bit."""
    from transformers import BitsAndBytesConfig

    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(keep))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(keep))


def quantize_torchao_int8(model: nn.Module, keep: Sequence[str]) -> int:
    """Weight-only int8 (torchao) on every ``nn.Linear`` outside ``keep``, in place; returns how many."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    chosen = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and not kept(name, keep)]
    wanted = set(chosen)
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda module, name: name in wanted)
    logger.info("torchao int8: %d linear layers quantized, %s kept in %s", len(chosen), ", ".join(keep) or "none",
                next(model.parameters()).dtype)
    return len(chosen)


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters and buffers occupy, counting each part of a quantized tensor (torchao's data,
    scales and zero points; bitsandbytes' packed weights) as stored."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        total += _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()
