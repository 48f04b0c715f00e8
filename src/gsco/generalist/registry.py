"""What the generalist layer knows by name: model families, the capabilities they declare, and backends.

A family is a package whose import registers its ``model_type`` with transformers' Auto classes and, if it has
presets (random-weight models built from a YAML file, for tests and demos), their builder. ``gsco.meddr`` is one.
Any other transformers image-text-to-text model (Qwen2-VL, MedGemma, ...) needs no entry: the Auto classes load it.

A family declares what its architecture allows (:func:`declare_prefix_sharing`: questions about one image share
its key/value cache, :mod:`gsco.generalist.prefix`). A backend answers batches of (image, question) —
:class:`~gsco.generalist.backends.GeneralistBackend` — and is one :func:`register_backend` decorator on its class;
the ``backend`` key of every command picks it by name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

# model types whose prefix sharing is tested to give the plain path's answers, beyond gsco.generalist.families'
# (a family package adds its own on import)
PREFIX_SHARING: set[str] = set()
# backends shipped with the package: name -> the module whose import registers it
BUILTIN_BACKENDS: dict[str, str] = {"local": "gsco.generalist.model", "openai": "gsco.generalist.served"}
_BACKENDS: dict[str, type] = {}
DEFAULT_PRESET_FAMILY = "meddr"  # the family a preset YAML path (or an unknown name) is handed to


@dataclasses.dataclass
class PresetFamily:
    build: Callable  # build(name_or_yaml, dtype=...) -> (model, processor)
    names: Callable[[], list[str]]  # the presets it ships
    check: Callable[[str], None]  # check(name_or_yaml): raises, naming the file or name, unless it is a preset


_PRESETS: dict[str, PresetFamily] = {}


def register_presets(family: str, build: Callable, names: Callable[[], list[str]],
                     check: Callable[[str], None]) -> None:
    """Called by a family package on import."""
    _PRESETS[family] = PresetFamily(build, names, check)


def _family_of(name: str) -> PresetFamily:
    from gsco.generalist.families import FAMILIES

    for family in FAMILIES.values():
        if family.registers:
            importlib.import_module(family.registers)
    for family in _PRESETS.values():
        if name in family.names():
            return family
    return _PRESETS[DEFAULT_PRESET_FAMILY]  # a YAML path; an unknown name gets its error


def check_preset(name: str) -> None:
    """Cheap: ``name`` is a shipped preset or a preset YAML (else the family's error names it), checked before
    anything is built."""
    _family_of(name).check(name)


def import_family(model_type: str | None) -> None:
    """Import the package that registers ``model_type`` (nothing for a type transformers knows itself)."""
    from gsco.generalist.families import family_of

    known = family_of(model_type)
    if known and known[1].registers:
        importlib.import_module(known[1].registers)


def import_family_of(model_dir: str | Path) -> None:
    """Import the package registering the ``model_type`` of ``model_dir``'s config.json (before transformers'
    Auto classes load it)."""
    from gsco.runtime import read_json

    config = Path(model_dir) / "config.json"
    if config.is_file():
        stored = read_json(config, "model config")
        import_family(stored.get("model_type") if isinstance(stored, dict) else None)


def save_preset(name: str, dst: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the preset ``name`` (random weights, ``seed``) and save it as a model directory that ``demo.py``,
    ``inference_meddr.sh`` and ``train.sh`` load like a converted model; ``dst`` appears only when complete."""
    from gsco.runtime import building_folder

    model, processor = build_preset(name, seed=seed)
    dst = Path(dst)
    with building_folder(dst, overwrite) as out:
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return dst


def build_preset(name: str, **kwargs):
    """(model, processor) of the preset ``name`` (a shipped name or a preset YAML's path) with random weights."""
    return _family_of(name).build(name, **kwargs)


def declare_prefix_sharing(model_type: str) -> None:
    """Called by a family whose models answer identically when a batch's questions about one image share the
    image's and the common prompt prefix's key/value cache (tested per family)."""
    PREFIX_SHARING.add(model_type)


def shares_prefix(model_type: str | None) -> bool:
    from gsco.generalist.families import family_of

    import_family(model_type)
    known = family_of(model_type)
    return model_type in PREFIX_SHARING or (known is not None and known[1].prefix_sharing)


def register_backend(name: str):
    """Class decorator: ``@register_backend("name")`` makes ``backend=name`` load that class (its ``from_config``)."""
    def register(cls: type) -> type:
        _BACKENDS[name] = cls
        return cls

    return register


def backend_names() -> list[str]:
    return sorted({*BUILTIN_BACKENDS, *_BACKENDS})


def backend_class(name: str) -> type:
    """The class registered as ``name`` (a shipped backend's module is imported first)."""
    if name not in _BACKENDS and name in BUILTIN_BACKENDS:
        importlib.import_module(BUILTIN_BACKENDS[name])
    if name not in _BACKENDS:
        from gsco.config import ConfigError

        raise ConfigError(f"key 'backend': {name!r} is not a backend; choose from {backend_names()}")
    return _BACKENDS[name]
