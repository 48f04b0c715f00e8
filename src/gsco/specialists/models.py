"""The specialist factory: any timm classifier by name (2D), a MONAI 3D network for volumes, local weights only,
and their feature views."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from gsco.config import ConfigError
from gsco.errors import GscoError
from gsco.runtime import UnreadableFileError, reading

logger = logging.getLogger(__name__)


class PretrainedWeightsMissing(GscoError, FileNotFoundError):
    """ImageNet weights were asked for but cannot be loaded here; the message names both ways to get them."""


def create_specialist(
    architecture: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained_path: str | None = None,
    announce: bool = True,
    stem: str = "default",
    pretrained: bool = False,
) -> nn.Module:
    """A timm model with ``num_classes`` outputs.

    Initial weights, first match wins: ``pretrained_path`` (a timm/ImageNet checkpoint, .pth/.bin/.safetensors, or a
    state_dict, loaded through timm's own loader, which re-initialises the classifier when the class count differs
    and adapts the first convolution to ``in_chans``); ``pretrained`` — timm's ImageNet weights as
    ``timm.create_model(..., pretrained=True)`` loads them (MedMNIST+), from timm's Hugging Face cache, downloaded
    there on first use when the machine is online; otherwise random weights, which ``announce`` says in one line.
    ``stem="cifar"`` swaps a ResNet's stem for the one MedMNIST v2 used at 28 px (see :func:`use_cifar_stem`).
    """
    model = _create(architecture, num_classes, in_chans, pretrained_path, pretrained, announce)
    if stem == "cifar":
        use_cifar_stem(model, architecture)
    elif stem != "default":
        raise ConfigError(f"key 'stem': {stem!r} is not one of ('default', 'cifar')")
    return model


def _create(architecture: str, num_classes: int, in_chans: int, pretrained_path: str | None, pretrained: bool,
            announce: bool) -> nn.Module:
    import timm

    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_path {path} does not exist")
        logger.info("initialising %s from local weights %s", architecture, path)
        return timm.create_model(
            architecture, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
            num_classes=num_classes, in_chans=in_chans,
        )
    if pretrained:
        try:
            model = timm.create_model(architecture, pretrained=True, num_classes=num_classes, in_chans=in_chans)
        except (OSError, RuntimeError) as exc:  # offline with an empty cache, no network, no such weights
            raise PretrainedWeightsMissing(
                f"{architecture}: its ImageNet weights (pretrained: true, the MedMNIST+ recipe) cannot be loaded "
                f"here ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Either run once on a machine with "
                "internet access so that timm downloads them into its Hugging Face cache (~/.cache/huggingface/hub, "
                "or $HF_HOME; later runs, offline too, read them from there), or download the weights yourself and "
                f"give pretrained_path=/path/to/{architecture}.safetensors; pretrained=false trains from random "
                "initialisation") from None
        logger.info("%s: ImageNet weights (%s)", architecture, model.pretrained_cfg.get("hf_hub_id")
                    or model.pretrained_cfg.get("url") or "timm")
        return model
    if announce:
        logger.info("%s: random initialisation (pretrained: false)", architecture)
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans)


VOLUME_ARCHITECTURES = ("resnet10", "resnet18", "resnet34", "resnet50")  # MONAI's 3D ResNets (MedMNIST 3D)


class VolumeClassifier(nn.Module):
    """A MONAI 3D ResNet with the timm classifier interface the specialists use (``forward_features`` -> the last
    stage's feature map, ``forward_head``, ``get_classifier``, ``pretrained_cfg`` with mean 0 / std 1: volumes in
    [0, 1], as medmnist's 3D datasets give them), so training, prediction and retrieval run unchanged on volumes."""

    def __init__(self, architecture: str, num_classes: int, in_chans: int = 1):
        super().__init__()
        from monai.networks import nets

        if architecture not in VOLUME_ARCHITECTURES:
            raise ConfigError(f"architecture {architecture!r} has no 3D version here; for a 3D dataset choose one of "
                              f"{', '.join(VOLUME_ARCHITECTURES)} (MONAI's 3D ResNets)")
        self.net = getattr(nets, architecture)(spatial_dims=3, n_input_channels=in_chans, num_classes=num_classes)
        self.pretrained_cfg = {"mean": (0.0,), "std": (1.0,), "architecture": f"monai.{architecture} (3D)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.net.avgpool(features).flatten(1)
        return pooled if pre_logits else self.net.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.net.fc


def create_volume_specialist(architecture: str, num_classes: int, in_chans: int = 1, pretrained_path: str | None = None,
                             pretrained: bool = False, stem: str = "default", announce: bool = True) -> nn.Module:
    """A 3D specialist (MONAI ResNet, random initialisation; ``pretrained_path`` loads one of our 3D checkpoints)."""
    if pretrained:
        raise ConfigError("pretrained: true loads timm's 2D ImageNet weights; a 3D specialist has none here "
                          "(pretrained=false, or pretrained_path= a 3D checkpoint)")
    if stem != "default":
        raise ConfigError(f"stem {stem!r} is a 2D ResNet stem; a 3D specialist keeps MONAI's (stem: default)")
    model = VolumeClassifier(architecture, num_classes, in_chans)
    if pretrained_path:
        load_specialist_checkpoint(model, pretrained_path)
    elif announce:
        logger.info("%s (3D, MONAI): random initialisation", architecture)
    return model


def use_cifar_stem(model: nn.Module, architecture: str) -> None:
    """MedMNIST v2's small-image ResNet: a 3x3 stride-1 first convolution and no max-pool, so a 28 px image keeps
    its resolution into the first stage (16x the compute of the ImageNet stem). The new convolution starts from
    timm's ResNet initialisation (Kaiming normal, fan-out); pretrained weights of the old stem are dropped."""
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if not isinstance(conv, nn.Conv2d) or pool is None:
        raise ValueError(
            f"stem 'cifar' needs a ResNet-style model with a single conv1 and a maxpool; {architecture} has none "
            "(use stem: default)"
        )
    new = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    model.conv1, model.maxpool = new, nn.Identity()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a specialist checkpoint: safetensors, or a torch file loaded with ``weights_only=True``.

    Accepts a plain state_dict (ours and the published GSCo checkpoints) or one wrapped under ``state_dict`` /
    ``model``, and strips a ``module.`` prefix left by DataParallel/DDP.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with reading(path, "checkpoint (safetensors, or a torch file of plain tensors)"):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnreadableFileError(f"checkpoint {path} is not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_specialist_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a trained specialist; any missing/unexpected/mis-shaped key is an error naming it."""
    state = load_state_dict_file(path)
    own = model.state_dict()
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    if wrong:
        raise UnreadableFileError(f"checkpoint {path} does not fit this model: " + "; ".join(wrong[:5]))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UnreadableFileError(
                                  f"checkpoint {path} does not fit this model: missing {result.missing_keys[:5]}, "
                                  f"unexpected {result.unexpected_keys[:5]}"
        )


def mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation the architecture expects (timm's pretrained config), as MedMNIST+ uses."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def freeze_backbone(model: nn.Module) -> int:
    """Linear probing: only the classifier trains. Returns the number of trainable parameters."""
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def features_from(model: nn.Module, feature_map: torch.Tensor, kind: str) -> torch.Tensor:
    """Retrieval features from ``forward_features`` output.

    ``flatten``: the whole feature map flattened (the GSCo reference's definition, e.g. 197x768 for ViT-B/16);
    ``pooled``: ``forward_head(..., pre_logits=True)``, the vector the classifier sees.
    """
    if kind == "flatten":
        return feature_map.flatten(1)
    if kind == "pooled":
        return model.forward_head(feature_map, pre_logits=True).flatten(1)
    raise ValueError(f"unknown feature kind {kind!r}; expected 'flatten' or 'pooled'")
