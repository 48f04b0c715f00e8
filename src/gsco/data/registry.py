"""The dataset registry: task type, label names, channels and split sizes of every dataset GSCo knows.

Built-in entries live in ``datasets.yaml`` beside this file. Users add datasets (or complete the built-in entries
whose label names are not public) in a YAML file of their own with the same schema, named by the config key
``extra_datasets``; its entries are merged key by key over the built-in ones.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from gsco.errors import GscoError

TASK_TYPES = ("binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression")
FORMATS = ("npz", "metafile")
SPLITS = ("train", "val", "test")
BUILTIN_REGISTRY = Path(__file__).with_name("datasets.yaml")


class DatasetError(GscoError, ValueError):
    """A dataset entry or data file that cannot be used as it is."""


MEDMNIST_2D = ("pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
               "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist")
MEDMNIST_3D = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d",
               "synapsemnist3d")  # python -m gsco.data.prepare fetches these and the 2D ones


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    label_names: tuple[str, ...]
    n_channels: int | None = None  # None: taken from the data
    dims: int = 2  # 2: images (N, H, W[, 3]); 3: volumes (N, D, H, W)
    n_samples: dict[str, int] | None = None  # None: not checked
    modality: str = "medical"
    format: str = "npz"
    # Only for format "metafile": one CSV/JSONL per split, relative to data_path unless absolute.
    metafiles: dict[str, str] | None = None
    image_root: str | None = None  # metafile images are relative to this (default: the metafile's folder)
    # other words an answer may name a class by ({label name: [alias, ...]}), for reading free-text answers
    answer_aliases: dict[str, tuple[str, ...]] | None = None
    source: str = ""  # registry file the entry came from

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def multi_label(self) -> bool:
        return self.task == "multi-label, binary-class"


_FIELDS = {f.name for f in dataclasses.fields(DatasetInfo)} - {"name", "source"}


def _read_registry_file(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"dataset registry file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"dataset registry file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DatasetError(f"dataset registry file {path}: expected a mapping of dataset name -> entry mapping")
    for name, entry in data.items():
        unknown = set(entry) - _FIELDS
        if unknown:
            raise DatasetError(
                f"dataset registry file {path}, dataset {name!r}: unknown field(s) {sorted(unknown)}; "
                f"valid fields: {sorted(_FIELDS)}"
            )
    return {str(k): dict(v, source=str(path)) for k, v in data.items()}


def _build_info(name: str, entry: dict[str, Any]) -> DatasetInfo:
    where = f"dataset {name!r} (registry {entry.get('source', '?')})"
    task = entry.get("task")
    if task not in TASK_TYPES:
        raise DatasetError(f"{where}: task {task!r} is not one of {', '.join(TASK_TYPES)}")
    fmt = entry.get("format", "npz")
    if fmt not in FORMATS:
        raise DatasetError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    labels = entry.get("label_names")
    if labels is None:
        raise DatasetError(
            f"{where}: label_names are not known for this dataset; add them, in the order your labels use, "
            f"to your own registry file (config key extra_datasets), e.g.\n  {name}:\n    label_names: [...]\n"
            "See DATASET.md, 'Adding a dataset'."
        )
    if not isinstance(labels, list) or not labels or not all(isinstance(x, (str, int)) for x in labels):
        raise DatasetError(f"{where}: label_names must be a non-empty list of strings, got {labels!r}")
    labels = tuple(str(x) for x in labels)
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{where}: label_names has duplicates: {list(labels)}")
    if task == "binary-class" and len(labels) != 2:
        raise DatasetError(f"{where}: a binary-class task needs exactly 2 label names, got {len(labels)}")
    channels = entry.get("n_channels")
    if channels not in (None, 1, 3):
        raise DatasetError(f"{where}: n_channels must be 1 or 3, got {channels!r}")
    dims = entry.get("dims", 2)
    if dims not in (2, 3) or (dims == 3 and (fmt != "npz" or channels not in (None, 1))):
        raise DatasetError(f"{where}: dims must be 2 or 3 (3: one-channel npz volumes), got dims {dims!r}")
    n_samples = entry.get("n_samples")
    if n_samples is not None:
        if not isinstance(n_samples, dict) or set(n_samples) - set(SPLITS):
            raise DatasetError(f"{where}: n_samples must map some of {SPLITS} to counts, got {n_samples!r}")
    metafiles = entry.get("metafiles")
    if fmt == "metafile":
        if not isinstance(metafiles, dict) or not metafiles or set(metafiles) - set(SPLITS):
            raise DatasetError(
                f"{where}: format metafile needs metafiles: {{train: path, val: path, test: path}} "
                f"(CSV or JSONL), got {metafiles!r}"
            )
    aliases = entry.get("answer_aliases")
    if aliases is not None:
        if not isinstance(aliases, dict) or not all(isinstance(v, list) and all(isinstance(a, str) for a in v)
                                                    for v in aliases.values()):
            raise DatasetError(f"{where}: answer_aliases must map label names to lists of words, got {aliases!r}")
        unknown = sorted(set(map(str, aliases)) - set(labels))
        if unknown:
            raise DatasetError(f"{where}: answer_aliases name {unknown}, which are not among label_names "
                               f"{list(labels)}")
        aliases = {str(k): tuple(v) for k, v in aliases.items()}
    return DatasetInfo(
        name=name,
        task=task,
        label_names=labels,
        n_channels=channels,
        dims=dims,
        n_samples=dict(n_samples) if n_samples else None,
        modality=str(entry.get("modality", "medical")),
        format=fmt,
        metafiles=dict(metafiles) if metafiles else None,
        image_root=entry.get("image_root"),
        answer_aliases=aliases,
        source=str(entry.get("source", "")),
    )


@lru_cache(maxsize=None)
def _builtin_entries() -> dict[str, dict[str, Any]]:
    return _read_registry_file(BUILTIN_REGISTRY)


def registry_entries(extra_datasets: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Raw entries: the built-in registry with the user's file merged over it, field by field."""
    entries = {k: dict(v) for k, v in _builtin_entries().items()}
    if extra_datasets:
        for name, entry in _read_registry_file(Path(extra_datasets)).items():
            entries[name] = {**entries.get(name, {}), **entry}
    return entries


def list_datasets(extra_datasets: str | Path | None = None, usable_only: bool = False) -> list[str]:
    entries = registry_entries(extra_datasets)
    if usable_only:
        return sorted(k for k, v in entries.items() if v.get("label_names") is not None)
    return sorted(entries)


def get_dataset_info(name: str, extra_datasets: str | Path | None = None) -> DatasetInfo:
    """Look up one dataset; unknown names get an error listing the registered ones."""
    entries = registry_entries(extra_datasets)
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DatasetError(
            f"unknown dataset {name!r}{hint}; registered: {', '.join(sorted(entries))}. "
            "Add your own in a registry file named by the config key extra_datasets (see DATASET.md)."
        )
    return _build_info(name, entries[name])


NO_FINDING = "no finding"  # a multi-label case with none of the labels, in answers and hints


def answer_aliases(options: Sequence[str], dataset: str | None = None,
                   extra_datasets: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """The answer aliases of ``options``: ``dataset``'s, or else those of the first registered dataset whose label
    names are these options (case-insensitive; a metafile's options are its dataset's label names); {} if none."""
    if dataset is not None:
        found = get_dataset_info(dataset, extra_datasets).answer_aliases or {}
    else:
        wanted, found = sorted(o.strip().lower() for o in options), {}
        for name, entry in sorted(registry_entries(extra_datasets).items()):
            labels = entry.get("label_names") or []
            if entry.get("answer_aliases") and sorted(str(x).lower() for x in labels) == wanted:
                found = _build_info(name, entry).answer_aliases or {}
                break
    by_lower = {o.strip().lower(): o for o in options}
    return {by_lower[k.lower()]: v for k, v in found.items() if k.lower() in by_lower}


def labels_phrase(labels: Sequence[str], none: str = NO_FINDING) -> str:
    """A multi-label case's labels as words (answers, hints): ``effusion and mass``; ``no finding`` for none."""
    return " and ".join(labels) if labels else none
