"""Answer questions about images with a generalist: MedDr (a converted directory or a preset) or any transformers
image-text-to-text model whose processor has a chat template.

Generation is batched with left padding; greedy answers do not depend on the batch size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from gsco.config import ConfigError
from gsco.data.readers import open_image
from gsco.errors import GscoError
from gsco.generalist.quantization import (
    BITSANDBYTES,
    KEEP_UNQUANTIZED,
    bitsandbytes_config,
    check_quantization,
    quantize_torchao_int8,
)
from gsco.generalist.registry import register_backend
from gsco.runtime import file_errors, read_json, reading, resolve_device

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(GscoError, ValueError):
    """The model argument does not name a usable model; the message says what to do."""


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU, fp32 on a CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"key 'dtype': {dtype!r}; expected auto or one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def attention_implementation(device: torch.device) -> str:
    """flash-attn when CUDA and the package are both present, else PyTorch's SDPA."""
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def check_model_argument(model: str | Path | None) -> Path | None:
    """The model directory ``model`` names, or None for a preset (a name or a preset YAML); a directory that
    cannot be a usable model is a ModelLoadError — cheap, so callers can check before heavier work."""
    model = None if model is None else str(model)
    if model is None or model.endswith((".yaml", ".yml")) or (not Path(model).exists() and "/" not in model):
        from gsco.generalist.registry import check_preset

        try:
            check_preset(model or "tiny")
        except ConfigError as exc:
            raise ModelLoadError(f"model {model!r} is neither a model directory nor a preset: {exc}") from None
        return None
    path = Path(model)
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist (weights are never downloaded: give a local "
                             "directory, or a preset name such as 'tiny')")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: not a transformers model directory")
    config = read_json(config_file, "model config")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file}: expected a JSON object, found {type(config).__name__}")
    if config.get("model_type") == "internvl_chat":
        raise ModelLoadError(f"{path} is an original-format MedDr/InternVL-Chat checkpoint; convert it first: "
                             f"python -m gsco.meddr.convert original={path} out_dir={path}-hf")
    return path


def has_chat_template(path: Path) -> bool:
    """Whether a model folder holds a chat template (in the places transformers reads it from), without loading."""
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file() or \
            any((path / "additional_chat_templates").glob("*.jinja")):
        return True
    for name in ("processor_config.json", "tokenizer_config.json"):
        stored = read_json(path / name, "model file") if (path / name).is_file() else {}
        if isinstance(stored, dict) and stored.get("chat_template"):
            return True
    return False


def check_before_loading(path: Path, dtype: str, image_options: dict) -> dict:
    """What can be refused before any weight is read (seconds, not the minutes a 27B-78B model takes to load): a
    folder without a chat template, a dtype the family cannot run in, an image key the family does not take. Returns
    the keyword arguments the family's processor is loaded with (its image defaults, overridden by the keys given)."""
    from gsco.generalist.families import family_of, image_key_names

    if not has_chat_template(path):
        raise ModelLoadError(f"{path}: no chat template (chat_template.jinja / chat_template.json, or chat_template "
                             "in tokenizer_config.json / processor_config.json); a generalist needs the one its "
                             "model card uses — copy it from the checkpoint")
    model_type = read_json(path / "config.json", "model config").get("model_type")
    known = family_of(model_type)
    given = {k: v for k, v in image_options.items() if v is not None}
    if known is None:
        logger.info("%s: model_type %r is in no family of gsco.generalist.families; it loads through transformers' "
                    "Auto classes, fed by its own chat template and processor, without a family's checks", path,
                    model_type)
        if given:
            raise ConfigError(f"keys {sorted(given)}: {path} is a {model_type!r} model, which no family in "
                              f"gsco.generalist.families sizes images for; leave them unset")
        return {}
    name, family = known
    if dtype in family.refused_dtypes:
        raise ConfigError(f"key 'dtype': {dtype} is refused for {path} (family {name}): {family.refused_dtypes[dtype]}")
    for key in given:
        if key not in family.image_keys:
            takes = ", ".join(family.image_keys) or "none"
            raise ConfigError(f"key {key!r}: family {name} ({path}) does not take it (its image keys: {takes}; "
                              f"{key} is one of {', '.join(k for k in image_key_names())})")
    return family.processor_kwargs(given)


def parse_max_memory(text: str) -> dict:
    """``0=70GiB,1=70GiB,cpu=200GiB`` -> accelerate's ``max_memory`` ({0: "70GiB", ..., "cpu": "200GiB"})."""
    limits: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, size = part.partition("=")
        if not sep or not size.strip() or not (device.strip().isdigit() or device.strip() in ("cpu", "disk")):
            raise ConfigError(f"key 'max_memory': {text!r}; expected DEVICE=SIZE pairs such as 0=70GiB,cpu=200GiB "
                              f"(DEVICE a GPU index, cpu or disk), got {part!r}")
        limits[int(device) if device.strip().isdigit() else device.strip()] = size.strip()
    return limits


def check_weight_files(path: Path) -> None:
    """Read every weight file's header (safetensors) or tensor index (a torch ``.bin``, never unpickling code): the
    first that cannot be read is one UnreadableFileError naming it. Cheap: no tensor data is read."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        with reading(file, "safetensors weight file", "it is truncated or damaged: copy, convert or save it again"):
            with safe_open(str(file), framework="pt"):
                pass
    for file in sorted(p for p in path.glob("*.bin") if "model" in p.name):  # not training_args.bin and the like
        with reading(file, "weight file of plain tensors", "re-save it as safetensors where its source is trusted"),\
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(file, map_location="meta", weights_only=True, mmap=zipfile.is_zipfile(file))


def model_identity(model: str | Path | None) -> dict:
    """What a run's manifest records of its model: a preset's name, or a directory's path with a fingerprint of its
    config and weight files (names, sizes, modification times) — a different model, or the same folder rewritten
    by another training run, reads differently."""
    path = check_model_argument(model)
    if path is None:
        return {"preset": str(model or "tiny")}
    from gsco.runtime import file_fingerprint

    weights = sorted(p for p in path.iterdir()
                     if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    stat = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights]
    return {"path": str(path.resolve()), "config": file_fingerprint(path / "config.json"),
            "weights": hashlib.sha256(json.dumps(stat).encode()).hexdigest()}


def quantization_identity(cfg) -> dict:
    """What a run's manifest records of its quantization (answers differ with it): nothing when there is none, so
    manifests written before the key existed still match."""
    if cfg.quantization == "none":
        return {}
    return {"quantization": f"{cfg.quantization} (kept: {','.join(cfg.keep_unquantized)})"}


@register_backend("local")
@dataclass
class Generalist:
    """The ``local`` backend: a transformers image-text-to-text model answering here
    (:class:`~gsco.generalist.backends.GeneralistBackend`)."""

    model: torch.nn.Module
    processor: object
    device: torch.device
    name: str
    question_first: bool = False  # the question's text before the image (MedGemma's card); default: image first

    @classmethod
    def load(cls, model: str | Path | None = None, device: str = "auto", dtype: str = "auto",
             device_map: str | None = None, quantization: str = "none",
             keep_unquantized: Sequence[str] = KEEP_UNQUANTIZED, max_memory: str | None = None,
             image_options: dict | None = None, question_first: bool = False) -> "Generalist":
        """``model``: a transformers model directory (a converted MedDr, or e.g. Qwen2-VL / MedGemma), or a MedDr
        preset name (``tiny``: random weights) — None means ``tiny``. ``quantization``: none | int8 | nf4 (CUDA,
        bitsandbytes) | torchao-int8 (also on a CPU), never of the ``keep_unquantized`` modules. ``max_memory``
        (with ``device_map``): per-device limits, e.g. ``0=70GiB,cpu=200GiB``; what does not fit is offloaded.
        ``image_options``: the image keys (``min_pixels=...``; None: the family's default). ``question_first``: the
        question's text before the image in the user's turn. Everything that can be refused is refused before a
        weight is read (:func:`check_before_loading`)."""
        from gsco.generalist.registry import import_family_of

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        path = check_model_argument(model)
        if path is not None:
            processor_kwargs = check_before_loading(path, dtype, image_options or {})
        check_quantization(quantization, dev, preset=path is None)
        if path is None:
            generalist = cls._from_preset(model or "tiny", dev, torch_dtype)
            generalist.question_first = question_first
            if quantization == "torchao-int8":
                quantize_torchao_int8(generalist.model, keep_unquantized)
            return generalist
        import_family_of(path)  # e.g. meddr's Auto classes
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(str(path), **processor_kwargs)
        if getattr(processor, "chat_template", None) is None:
            raise ModelLoadError(f"{path}: the processor has no chat template; a generalist needs one")

        logger.info("loading %s (%s, %s%s)", path, torch_dtype, device_map or dev,
                    "" if quantization == "none" else f", {quantization}")
        kwargs = {"dtype": torch_dtype, "attn_implementation": attention_implementation(dev)}
        if quantization in BITSANDBYTES:
            kwargs["quantization_config"] = bitsandbytes_config(quantization, keep_unquantized, torch_dtype)
            device_map = device_map or {"": dev.index or 0}  # bitsandbytes places the weights as it loads them
        if device_map:
            kwargs["device_map"] = device_map
            if max_memory:
                kwargs["max_memory"] = parse_max_memory(max_memory)
        try:
            net = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs).eval()
        except file_errors():
            check_weight_files(path)  # names the damaged file, if that is what failed
            raise
        if not device_map:
            net.to(dev)
        if quantization == "torchao-int8":
            quantize_torchao_int8(net, keep_unquantized)
        return cls(net, processor, dev if not device_map else net.device, str(path), question_first)

    @classmethod
    def from_config(cls, cfg, device: str | None = None) -> "Generalist":
        """Load as a config's generalist keys say (model, device, dtype, device_map, quantization, keep_unquantized,
        max_memory); ``device`` overrides the config's (a data-parallel process's own GPU)."""
        from gsco.generalist.families import image_key_names

        return cls.load(cfg.model, device or cfg.device, cfg.dtype, cfg.device_map, cfg.quantization,
                        cfg.keep_unquantized, cfg.max_memory,
                        {key: getattr(cfg, key, None) for key in image_key_names()},
                        bool(getattr(cfg, "question_first", False)))

    @classmethod
    def identity(cls, cfg) -> dict:
        """The model for a predictions manifest: its directory's identity (or the preset's), its quantization and the
        image keys set and the question before the image (answers differ with them; none set: nothing, so earlier
        manifests still match)."""
        from gsco.generalist.families import image_key_names

        images = {key: getattr(cfg, key) for key in image_key_names() if getattr(cfg, key, None) is not None}
        return {"model": model_identity(cfg.model), **quantization_identity(cfg),
                **({"images": images} if images else {}),
                **({"question_first": True} if getattr(cfg, "question_first", False) else {})}

    def _shares_prefix(self) -> bool:
        """Prefix sharing is used where the model's family declares it (:mod:`gsco.generalist.prefix`); elsewhere
        the plain path answers, said once."""
        from gsco.generalist.registry import shares_prefix

        model_type = getattr(self.model.config, "model_type", None)
        if shares_prefix(model_type):
            return True
        if not getattr(self, "_said_no_prefix", False):
            from gsco.generalist.families import family_of

            self._said_no_prefix = True
            known = family_of(model_type)
            why = known[1].no_prefix_sharing if known else "no family in gsco.generalist.families declares it"
            logger.info("prefix sharing is off for model_type %r (%s): a case's arms are answered the plain way, "
                        "with the same answers", model_type, why)
        return False

    @classmethod
    def _from_preset(cls, name: str, device: torch.device, dtype: torch.dtype) -> "Generalist":
        from gsco.generalist.registry import build_preset

        logger.warning("MedDr preset %r with RANDOM weights: its answers are noise (give model=DIR for a real "
                       "model)", name)
        net, processor = build_preset(name, dtype=dtype)
        return cls(net.to(device), processor, device, f"{name} (random weights)")

    def prompt(self, question: str, with_image: bool, system: str | None = None) -> str:
        """The chat template's text for one question (:func:`gsco.generalist.inputs.render`)."""
        from gsco.generalist.inputs import render

        return render(self.processor, question, with_image, system, self.question_first)

    def describe_input(self, image, question: str, system: str | None = None) -> str:
        """What the model receives for one question (show_prompt=true): the token sequence decoded with special
        tokens visible, and the image tokens its image became."""
        from gsco.generalist.inputs import describe, encode

        opened = None if image is None else (image if isinstance(image, Image.Image) else open_image(image))
        inputs = encode(self.processor, [self.prompt(question, opened is not None, system)],
                        None if opened is None else [[opened.convert("RGB")]])
        return describe(self.processor, inputs["input_ids"][0], 0 if opened is None else 1)

    @torch.no_grad()
    def answer(self, images: Sequence[Image.Image | str | Path | None], questions: Sequence[str],
               max_new_tokens: int = 512, num_beams: int = 1, batch_size: int = 8, system: str | None = None,
               progress: bool = False, share_prefix: bool = True, **generate_kwargs) -> list[str]:
        """One answer per (image, question); an image may be None for a text-only question. Extra keyword
        arguments go to ``model.generate`` (e.g. ``repetition_penalty``). ``share_prefix``: within a batch, questions
        about the same image (a GSCo case's arms) compute the image and their common prompt prefix once and reuse its
        key/value cache (greedy decoding; the answers are those of the plain path)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        answers: list[str] = []
        steps = range(0, len(questions), batch_size)
        for start in tqdm(steps, desc="generating", file=sys.stderr, disable=not progress):
            batch_images = images[start:start + batch_size]
            batch_questions = questions[start:start + batch_size]
            answers.extend(self._answer_batch(batch_images, batch_questions, max_new_tokens, num_beams, system,
                                              generate_kwargs, share_prefix))
        return answers

    def _answer_batch(self, images, questions, max_new_tokens, num_beams, system, generate_kwargs,
                      share_prefix: bool = False) -> list[str]:
        keys = [None if im is None else (id(im) if isinstance(im, Image.Image) else str(im)) for im in images]
        opened: dict = {}
        loaded = []
        for key, im in zip(keys, images):
            if key is not None and key not in opened:
                opened[key] = (im if isinstance(im, Image.Image) else open_image(im)).convert("RGB")
            loaded.append(None if key is None else opened[key])
        texts = [self.prompt(q, im is not None, system) for q, im in zip(questions, loaded)]
        # with the question first, the arms' prompts part before the image: no common prefix holds it
        if share_prefix and num_beams == 1 and None not in keys and len(opened) < len(keys) \
                and not self.question_first and self._shares_prefix():
            from gsco.generalist.prefix import answer_sharing_prefix

            shared = answer_sharing_prefix(self, keys, opened, texts, max_new_tokens, generate_kwargs)
            if shared is not None:
                return shared
        # images nested per prompt (Gemma 3 and Idefics3 count them per prompt; the others flatten the lists)
        nested = [[] if im is None else [im] for im in loaded] if any(im is not None for im in loaded) else None
        from gsco.generalist.inputs import encode, image_token_counts, warn_image_tokens

        tokenizer = self.processor.tokenizer
        inputs = encode(self.processor, texts, nested)
        warn_image_tokens(image_token_counts(self.processor, inputs["input_ids"], [im is not None for im in loaded]),
                          self.__dict__.setdefault("_said", set()))
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                  **generate_kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
