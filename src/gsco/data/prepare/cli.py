"""Download, convert and check a benchmark into the layout our readers take.

    python -m gsco.data.prepare breastmnist --root data/medmnist                 # 28 px
    python -m gsco.data.prepare organmnist3d --root data/medmnist sizes=[28,64]
    python -m gsco.data.prepare medmnist --root data/medmnist source=/mnt/mirror  # all 18, from a local copy
    python -m gsco.data.prepare pcam200 --root data                              # PCam -> PCam200 (224 px)
    python -m gsco.data.prepare path_vqa --root data source=downloads/path-vqa

MedMNIST (``medmnist2d`` / ``medmnist3d`` / ``medmnist`` name the groups) and PCam are fetched from their
publishers: each file goes to ``<name>.partial`` (an interrupted download resumes where the server allows), is
checked against its MD5 and only then renamed, so a failed or damaged download never leaves a file the readers
would take; a file already in place with the right MD5 is left as it is (a second run does nothing). ``source=``
takes a local folder holding the files, or another URL, instead of the publisher's. VQA-RAD, SLAKE, PathVQA and
PMC-VQA become MedDr evaluation metafiles, and IU-Xray / MIMIC-CXR are checked in R2Gen's layout, from the files the
user downloads (``source=`` their folder): split sizes are checked against the published ones.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

from gsco.config import ConfigError
from gsco.data.prepare.medmnist import GROUPS, prepare_medmnist
from gsco.data.prepare.pcam import PCAM200_DRAW, prepare_pcam200
from gsco.data.prepare.reports import REPORT_SOURCES, prepare_report_data
from gsco.data.prepare.vqa import VQA_SOURCES, prepare_vqa

OTHERS = ("pcam200", *VQA_SOURCES, *REPORT_SOURCES)


@dataclasses.dataclass
class PrepareConfig:
    name: list[str] = dataclasses.field(default_factory=list)  # datasets (a wrong name lists the choices)
    root: str = "data/medmnist"  # the folder the files go to (the specialists' data_path)
    sizes: list[int] | None = None  # image sizes of the npz files (null: 28 for MedMNIST, 224 for PCam200)
    source: str | None = None  # a local folder holding the files, or a URL to fetch them from (null: the publisher's)
    seed: int = 0  # PCam200: the seed of the draw
    pcam_train: int | Literal["all"] = PCAM200_DRAW["train"]  # PCam200: training patches drawn from PCam's train
    pcam_val: int | Literal["all"] = PCAM200_DRAW["val"]  # PCam200: validation patches drawn from PCam's valid
    pcam_test: int | Literal["all"] = PCAM200_DRAW["test"]  # PCam200: test patches drawn from PCam's test

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("give a dataset: python -m gsco.data.prepare NAME --root DIR (NAME: a MedMNIST dataset, "
                              f"medmnist, medmnist2d, medmnist3d or {', '.join(OTHERS)})")
        unknown = [n for n in self.name if n not in GROUPS and n not in GROUPS["medmnist"] and n not in OTHERS]
        if unknown:
            raise ConfigError(f"{unknown}: no preparer; choose MedMNIST datasets ({', '.join(GROUPS['medmnist'])}), "
                              f"a group ({', '.join(GROUPS)}) or {', '.join(OTHERS)}; DATASET.md says how to get the "
                              "others")
        for key in ("pcam_train", "pcam_val", "pcam_test"):
            if getattr(self, key) != "all" and getattr(self, key) < 2:
                raise ConfigError(f"key {key!r}: {getattr(self, key)} patches; expected at least 2 (one per class) "
                                  "or 'all'")

    def datasets(self) -> list[str]:
        names: list[str] = []
        for n in self.name:
            names += [m for m in GROUPS.get(n, (n,)) if m not in names]
        return names


def prepare(cfg: PrepareConfig) -> list[dict]:
    """Every named dataset prepared; one row per file written or checked."""
    names, root = cfg.datasets(), Path(cfg.root)
    medmnist = [n for n in names if n not in OTHERS]
    rows = prepare_medmnist(medmnist, root, cfg.sizes or [28], cfg.source) if medmnist else []
    for name in names:
        if name == "pcam200":
            draw = {"train": cfg.pcam_train, "val": cfg.pcam_val, "test": cfg.pcam_test}
            rows += prepare_pcam200(root, cfg.source, cfg.sizes or [224], cfg.seed, draw)
        elif name in VQA_SOURCES:
            rows += prepare_vqa(name, root, cfg.source)
        elif name in REPORT_SOURCES:
            rows += prepare_report_data(name, root, cfg.source)
    return rows


def _prepare_and_print(cfg: PrepareConfig) -> None:
    for row in prepare(cfg):
        splits = " / ".join(f"{k} {n}" for k, n in row["splits"].items())
        print(f"{row['status']:10s} {row['file']}  ({splits}; {row['licence']})")
        if "image_root" in row:
            print(f"           annotation={row['file']} image_root={row['image_root']}")


def main(argv: list[str] | None = None) -> int:
    """Dataset names may come first as plain words; ``--root DIR`` is ``root=DIR``."""
    from gsco.cli import command

    args, rest, names = list(sys.argv[1:] if argv is None else argv), [], []
    while args:
        arg = args.pop(0)
        if arg == "--root" and args:
            rest.append(f"root={args.pop(0)}")
        elif arg == "--config" and args:
            rest += [arg, args.pop(0)]
        elif "=" not in arg and not arg.startswith("-"):
            names.append(arg)
        else:
            rest.append(arg)
    if names:
        rest.append(f"name=[{','.join(names)}]")
    return command(PrepareConfig, _prepare_and_print, description=__doc__.split("\n\n")[0])(rest)
