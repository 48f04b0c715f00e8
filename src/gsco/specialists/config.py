"""The specialist config: the keys of the MedMNIST+/GSCo reference ``config.yaml`` plus what they lacked."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from gsco.config import ConfigError
from gsco.data.render import RenderSettings

Split = Literal["test", "val", "train"]  # the splits predict evaluates

PROCEDURES = ("endToEnd", "linearProbing", "kNN")


@dataclasses.dataclass
class SpecialistConfig(RenderSettings):
    # --- the reference's keys ---
    data_path: str = "data/medmnist"  # folder with {dataset}.npz (28 px) / {dataset}_{size}.npz; nothing downloads
    output_path: str = "outputs/specialists"  # checkpoints, results JSON, plots, retrieval index
    epochs: int = 100  # maximum epochs (early stopping may end sooner)
    learning_rate: float = 1e-4  # the optimizer's learning rate
    batch_size: int = 64  # training batch size
    batch_size_eval: int = 256  # evaluation / feature-extraction batch size
    device: str = "auto"  # auto (CUDA if present, else CPU), cpu, cuda, cuda:N
    dataset: str = "breastmnist"  # any registered dataset (DATASET.md), or one of extra_datasets
    img_size: Literal[28, 64, 128, 224] = 28  # selects {dataset}_{img_size}.npz (28: {dataset}.npz)
    training_procedure: Literal["endToEnd", "linearProbing", "kNN"] = "endToEnd"  # linearProbing: frozen backbone
    architecture: str = "resnet18"  # any timm model name, e.g. vgg16, densenet121, vit_base_patch16_224
    k: int = 11  # neighbours of the kNN procedure
    seed: int = 9930641  # the reference's seeds: 9930641, 115149041, 252139603
    search_top_n: int = 10  # training cases retrieved per image (RAD), stored in the results and the index
    # --- added ---
    # pad: zero-pad centred to 224 (MedMNIST+); native: as stored; resize: bilinear to 224
    preprocess: Literal["pad", "native", "resize"] = "pad"
    as_rgb: bool = True  # grey images repeated to 3 channels (false: the model takes the dataset's channels)
    stem: Literal["default", "cifar"] = "default"  # cifar: ResNets only, 3x3 stride-1 first conv, no max-pool (v2)
    # mean/std of Normalize; null: the architecture's (timm's pretrained config, ImageNet's for most), as MedMNIST+
    mean: list[float] | None = None
    std: list[float] | None = None  # see mean; give both or neither
    # start from ImageNet weights (MedMNIST+ and the GSCo reference: timm.create_model(..., pretrained=True)),
    # through timm's own loading (its Hugging Face cache) or from pretrained_path; false: random initialisation
    pretrained: bool = True
    pretrained_path: str | None = None  # local timm/ImageNet weights (.pth/.bin/.safetensors)
    num_workers: int = 0  # DataLoader workers (raise on GPU machines)
    optimizer: Literal["adamw", "adam"] = "adamw"  # the optimizer
    weight_decay: float = 0.01  # AdamW's default
    scheduler: Literal["cosine", "multistep", "none"] = "cosine"  # cosine over epochs, or milestones x gamma
    milestones: list[int] = dataclasses.field(default_factory=lambda: [50, 75])  # multistep: epochs where lr drops
    gamma: float = 0.1  # multistep: the factor at each milestone
    # the best checkpoint: lowest validation loss, or highest validation AUC / ACC
    selection_metric: Literal["val_loss", "val_auc", "val_acc"] = "val_loss"
    early_stopping_patience: int = 5  # stop after this many epochs without improvement; 0: never
    resume: bool = True  # continue an interrupted run from {run}_last.pth (trained with the same settings)
    overwrite: bool = False  # train again over a run found in output_path (other settings are refused otherwise)
    deterministic: bool = True  # deterministic algorithms and seeded shuffling
    retrieval_features: Literal["flatten", "pooled"] = "flatten"  # flatten: forward_features flattened (reference)
    # kNN procedure: how neighbours are found (MedMNIST+: sklearn NearestNeighbors, Euclidean on pre-logits)
    knn_metric: Literal["euclidean", "cosine"] = "euclidean"
    retrieval_backend: Literal["torch", "faiss"] = "torch"  # exact search either way; faiss: its kernels (faiss-cpu)
    save_index: bool = True  # write the retrieval index ({run}_index.safetensors)
    checkpoint: str | None = None  # predict: the checkpoint to evaluate (null: {output_path}/{run}_best.pth)
    # the split predict evaluates: test (the reference's {run}_results.json) or val/train ({run}_{split}_results.json;
    # train retrieval leaves each image's own entry out) — train/val predictions are what hint fine-tuning reads; a
    # list ([test, train]) evaluates each in one run, the training split's features extracted once
    split: Split | list[Split] = "test"
    extra_datasets: str | None = None  # your own dataset registry YAML (DATASET.md, "Adding a dataset")

    def validate(self) -> None:
        super().validate()  # the render keys
        positive = ("epochs", "batch_size", "batch_size_eval", "k", "search_top_n")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"key {key!r}: must be at least 1, got {getattr(self, key)}")
        for key in ("learning_rate",):
            if not getattr(self, key) > 0:
                raise ConfigError(f"key {key!r}: must be positive, got {getattr(self, key)}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) not in (1, 3):
                raise ConfigError(f"key {key!r}: expected 1 or 3 numbers (or null), got {value}")
        if self.std is not None and not all(s > 0 for s in self.std):
            raise ConfigError(f"key 'std': every value must be positive, got {self.std}")
        splits = self.split if isinstance(self.split, list) else [self.split]
        if not splits or len(set(splits)) != len(splits):
            raise ConfigError(f"key 'split': expected test, val or train, or a list of distinct ones, got {self.split}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("keys 'mean' and 'std' go together: give both, or leave both null")
        if self.num_workers < 0 or self.early_stopping_patience < 0 or self.weight_decay < 0:
            raise ConfigError("keys num_workers, early_stopping_patience and weight_decay must not be negative")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"key 'device': {self.device!r} is not valid; expected auto, cpu, cuda, cuda:N or mps")
        from gsco.data.registry import DatasetError, get_dataset_info

        try:
            info = get_dataset_info(self.dataset, self.extra_datasets)
        except DatasetError as exc:
            raise ConfigError(f"key 'dataset': {exc}") from None
        if info.dims == 3:
            from gsco.specialists.models import VOLUME_ARCHITECTURES

            if self.architecture not in VOLUME_ARCHITECTURES:
                raise ConfigError(f"key 'architecture': {self.architecture!r} for the 3D dataset {self.dataset!r}; "
                                  f"choose one of {', '.join(VOLUME_ARCHITECTURES)} (MONAI's 3D ResNets; "
                                  "configs/specialists/medmnist3d.yaml)")
            if self.pretrained or self.stem != "default" or self.training_procedure != "endToEnd":
                raise ConfigError(f"3D dataset {self.dataset!r}: a 3D specialist trains endToEnd from random weights "
                                  "with stem default (pretrained=false; configs/specialists/medmnist3d.yaml)")
            return
        import timm

        if not timm.is_model(self.architecture):
            raise ConfigError(
                f"key 'architecture': {self.architecture!r} is not a timm model; list them with "
                "python -c \"import timm; print(timm.list_models())\""
            )

    @property
    def run_name(self) -> str:
        """The reference's file stem: ``{dataset}_{img_size}_{procedure}_{arch}_s{seed}``."""
        return f"{self.dataset}_{self.img_size}_{self.training_procedure}_{self.architecture}_s{self.seed}"
