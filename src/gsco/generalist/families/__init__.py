"""The generalist families GSCo is tested with: one folder per family, each the one place where that family lives.

A family is a transformers image-text-to-text architecture (its ``model_type`` in a model folder's config.json).
Every command loads any such folder through transformers' Auto classes; a family folder adds what is known and tested
of it:

- ``__init__.py``: its :class:`Family` entry (``FAMILY``) — the checkpoints it stands for, its vision parts (kept
  unquantized), what its architecture allows (prefix sharing), the dtypes it refuses, its image-resolution keys with
  defaults for small medical images, the system message its model card sends — its tiny random model's builder and
  the published sizes the planner builds on the meta device;
- the published checkpoint's small text files (``config.json`` reduced to its structural fields,
  ``tokenizer_config.json`` with the special tokens, BOS behaviour and chat template, ``preprocessor_config.json``,
  ``processor_config.json``, ``generation_config.json``), and ``SOURCES.json`` naming where each came from. The tiny
  model is built from them, shrinking only vocabulary, width and depth, so it sees prompts, image tokens and stop
  ids as the real checkpoint does.

Adding a family that transformers already has is one new folder here (registered by being there); README's family
table is this registry (a test compares them).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the checkpoint files a family folder holds (config.json: structural fields only); processor_config.json where the
# checkpoint has one
CARD_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json")


@dataclasses.dataclass(frozen=True)
class Size:
    """A published checkpoint's size: the shape-setting fields of its config.json (values not given take the
    transformers config class's defaults, which are the published models'), built on the meta device by the
    planner and checked against the parameter count its model page publishes (within 1 %)."""

    checkpoint: str
    published: float  # parameters, as its model page gives them
    config: dict


@dataclasses.dataclass(frozen=True)
class ImageKey:
    """A key of every generalist command that sets how a family's processor sizes images (``min_pixels=...``):
    ``processor`` is the image processor's keyword it becomes, given to ``AutoProcessor.from_pretrained`` as the
    model cards do (``size.shortest_edge``: that field of the ``size`` keyword)."""

    processor: str


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # the folder's name, used on the command line (family=gemma3)
    model_type: str  # config.json's model_type
    checkpoints: str  # the published checkpoints it stands for
    card: str  # the checkpoint its fixture files come from (the model card whose way of feeding the model we follow)
    vision: tuple[str, ...]  # the vision tower's and projector's module names (kept unquantized)
    build_tiny: Callable  # () -> (model, processor): the tiny random model, from the family folder's files
    prefix_sharing: bool = True
    no_prefix_sharing: str = ""  # why not, said once per run where prefix sharing is off
    finetune: bool = False  # train.sh fine-tunes it (LoRA or full); the others are refused before loading
    served: bool = False  # tested behind transformers serve (backend=openai): tests/generalist/test_served.py
    refused_dtypes: dict[str, str] = dataclasses.field(default_factory=dict)  # dtype -> why it is refused
    card_system: str | None = None  # the system message the model card sends (system=... to send it)
    image_keys: dict[str, ImageKey] = dataclasses.field(default_factory=dict)  # key -> how it sizes images
    image_defaults: dict = dataclasses.field(default_factory=dict)  # key -> GSCo's default for small images
    registers: str | None = None  # a module whose import registers model_type with transformers' Auto classes
    sizes: dict[str, Size] = dataclasses.field(default_factory=dict)  # planner name -> published size

    @property
    def folder(self) -> Path:
        return HERE / self.name

    def card_file(self, name: str) -> dict:
        """One of the family folder's checkpoint files, parsed."""
        return json.loads((self.folder / name).read_text())

    def processor_kwargs(self, given: dict | None = None) -> dict:
        """The keyword arguments its processor is loaded with: the family's image defaults, overridden by the image
        keys ``given`` (``size.shortest_edge``: that field of the ``size`` keyword)."""
        kwargs: dict = {}
        for key, value in {**self.image_defaults, **(given or {})}.items():
            *outer, last = self.image_keys[key].processor.split(".")
            target = kwargs
            for part in outer:
                target = target.setdefault(part, {})
            target[last] = value
        return kwargs

    def sources(self) -> dict:
        """SOURCES.json: for each checkpoint file, where it came from."""
        return json.loads((self.folder / "SOURCES.json").read_text())


def _discover() -> dict[str, Family]:
    """Every family folder's ``FAMILY`` (importing a folder reads only its small files: no transformers)."""
    found = {}
    for module in sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.ispkg):
        family = importlib.import_module(f"{__name__}.{module}").FAMILY
        if family.name != module:
            raise RuntimeError(f"{HERE / module}: FAMILY.name is {family.name!r}, expected the folder's name")
        found[module] = family
    return found


FAMILIES: dict[str, Family] = _discover()


def family_of(model_type: str | None) -> tuple[str, Family] | None:
    """(name, family) of a model type, or None for a model type no family covers."""
    for name, family in FAMILIES.items():
        if family.model_type == model_type:
            return name, family
    return None


def vision_modules() -> tuple[str, ...]:
    """Every family's vision tower and projector names (each absent from the other families' models)."""
    return tuple(dict.fromkeys(part for family in FAMILIES.values() for part in family.vision))


def image_key_names() -> tuple[str, ...]:
    """Every image-resolution key any family takes (keys of every generalist command)."""
    return tuple(dict.fromkeys(key for family in FAMILIES.values() for key in family.image_keys))


def sizes() -> dict[str, tuple[Family, Size]]:
    """Every family's published sizes: planner name (medgemma-4b, qwen2.5-vl-72b, ...) -> (family, size)."""
    return {name: (family, size) for family in FAMILIES.values() for name, size in family.sizes.items()}


def meta_model_of_size(name: str, dtype):
    """The published model ``name`` (a key of :func:`sizes`) built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    family, size = sizes()[name]
    config = AutoConfig.for_model(family.model_type, **size.config)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config).to(dtype)


def build_tiny(name: str, seed: int = 0):
    """(model, processor) of the tiny random model of family ``name``, weights drawn from ``seed``."""
    import torch

    if name not in FAMILIES:
        from gsco.config import ConfigError

        raise ConfigError(f"key 'family': {name!r} is not a family; choose from {sorted(FAMILIES)}")
    torch.manual_seed(seed)
    model, processor = FAMILIES[name].build_tiny()
    return model.eval(), processor
