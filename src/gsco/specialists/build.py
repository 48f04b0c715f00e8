"""What training and prediction share: the dataset entry, the model, its preprocessing, the output file names."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gsco.data.datasets import ClassificationDataset, Preprocess, build_dataset
from gsco.data.registry import DatasetInfo, get_dataset_info
from gsco.runtime import resolve_device, seed_everything
from gsco.specialists.config import SpecialistConfig
from gsco.specialists.models import create_specialist, mean_std


@dataclasses.dataclass
class RunFiles:
    """Every file a specialist run reads or writes, named as the GSCo reference names them."""

    output_dir: Path
    name: str
    split: str = "test"  # predict's evaluation split; test keeps the reference's names

    def _p(self, suffix: str) -> Path:
        return self.output_dir / f"{self.name}{suffix}"

    def _s(self, suffix: str) -> Path:
        return self._p(suffix if self.split == "test" else f"_{self.split}{suffix}")

    best = property(lambda self: self._p("_best.pth"))
    final = property(lambda self: self._p("_final.pth"))
    last = property(lambda self: self._p("_last.pth"))  # resume state (model, optimizer, scheduler, counters)
    history = property(lambda self: self._p("_history.jsonl"))
    config = property(lambda self: self._p("_config.json"))
    results = property(lambda self: self._s("_results.json"))
    index = property(lambda self: self._p("_index.safetensors"))
    roc = property(lambda self: self._s("_roc.png"))
    confusion = property(lambda self: self._s("_confusion.png"))


@dataclasses.dataclass
class SpecialistSetup:
    cfg: SpecialistConfig
    info: DatasetInfo
    device: torch.device
    model: torch.nn.Module
    preprocess: Preprocess
    files: RunFiles

    def dataset(self, split: str) -> ClassificationDataset:
        return build_dataset(self.info, split, self.cfg.data_path, self.cfg.img_size, self.preprocess, self.cfg)

    def loader(self, dataset: ClassificationDataset, train: bool,
               generator: torch.Generator | None = None) -> DataLoader:
        bs = self.cfg.batch_size if train else self.cfg.batch_size_eval
        return DataLoader(
            dataset, batch_size=bs, shuffle=train, generator=generator, num_workers=self.cfg.num_workers,
            # BatchNorm cannot train on a final batch of one image.
            drop_last=train and len(dataset) % bs == 1,
            pin_memory=self.device.type == "cuda",
        )


def setup_specialist(cfg: SpecialistConfig, checkpoint_follows: bool = False) -> SpecialistSetup:
    """Seed, look up the dataset, build the model. ``checkpoint_follows``: trained weights will be loaded next,
    so the initial weights (ImageNet's, ``pretrained_path``'s or random) do not matter."""
    seed_everything(cfg.seed, cfg.deterministic)
    info = get_dataset_info(cfg.dataset, cfg.extra_datasets)
    model = (_volume_model if info.dims == 3 else _image_model)(cfg, info, checkpoint_follows)
    mean, std = (cfg.mean, cfg.std) if cfg.mean is not None else mean_std(model)
    if info.dims == 3:  # volumes at their stored size, one channel
        preprocess = Preprocess("native", mean, std, as_rgb=False, volume=True)
    else:
        preprocess = Preprocess(cfg.preprocess, mean, std, as_rgb=cfg.as_rgb)
    files = RunFiles(Path(cfg.output_path), cfg.run_name, cfg.split if isinstance(cfg.split, str) else cfg.split[0])
    return SpecialistSetup(cfg, info, resolve_device(cfg.device), model, preprocess, files)


def _image_model(cfg: SpecialistConfig, info: DatasetInfo, checkpoint_follows: bool) -> torch.nn.Module:
    in_chans = 3 if cfg.as_rgb else (info.n_channels or 3)
    if checkpoint_follows:
        return create_specialist(cfg.architecture, info.num_classes, in_chans, None, announce=False, stem=cfg.stem)
    return create_specialist(cfg.architecture, info.num_classes, in_chans, cfg.pretrained_path, stem=cfg.stem,
                             pretrained=cfg.pretrained)


def _volume_model(cfg: SpecialistConfig, info: DatasetInfo, checkpoint_follows: bool) -> torch.nn.Module:
    """A 3D dataset: a MONAI 3D network (``architecture`` resnet10/18/34/50)."""
    from gsco.specialists.models import create_volume_specialist

    return create_volume_specialist(cfg.architecture, info.num_classes, 1,
                                    None if checkpoint_follows else cfg.pretrained_path,
                                    pretrained=cfg.pretrained and not checkpoint_follows, stem=cfg.stem,
                                    announce=not checkpoint_follows)


def loss_function(info: DatasetInfo) -> torch.nn.Module:
    return torch.nn.BCEWithLogitsLoss() if info.multi_label else torch.nn.CrossEntropyLoss()


def probabilities(logits: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    return torch.sigmoid(logits) if info.multi_label else torch.softmax(logits, dim=1)


@torch.no_grad()
def collect_logits(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                   desc: str) -> tuple[np.ndarray, torch.Tensor]:
    """(labels, logits) over a loader, in order."""
    model.eval()
    labels, logits = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, file=sys.stderr):
        logits.append(model(x.to(device, non_blocking=True)).float().cpu())
        labels.append(np.asarray(y))
    return np.concatenate(labels), torch.cat(logits)


def run_cli(description: str, job: Callable[[SpecialistConfig], Any], report: Callable[[SpecialistConfig, Any], None],
            argv: list[str] | None = None) -> int:
    """``[--config FILE] [key=value ...]`` (gsco.cli; FILE defaults to configs/config.yaml, the repository's copy
    when run elsewhere): run ``job(cfg)`` and print its outcome with ``report``; bad input (a key, a missing file or
    dataset) is one line and status 2."""
    from gsco.cli import command
    from gsco.runtime import repo_file

    main = command(SpecialistConfig, lambda cfg: report(cfg, job(cfg)), description=description,
                   config="configs/config.yaml", resolve=repo_file)
    return main(argv)
