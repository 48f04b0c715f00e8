"""The interface every generalist backend has, and the settings that choose one.

A backend answers batches of (image, question) — :class:`GeneralistBackend` — whether the model runs here
(``local``: :class:`~gsco.generalist.model.Generalist`, transformers) or behind an OpenAI-compatible API (``openai``:
:class:`~gsco.generalist.served.ServedGeneralist`). Adding one is a class with that interface and
``@register_backend("name")`` (:mod:`gsco.generalist.registry`); ``backend=name`` then selects it in demo.py,
generalist evaluation and GSCo, and every evaluation (resumable, appended) runs on it unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol, Sequence, runtime_checkable

from gsco.generalist.quantization import KEEP_UNQUANTIZED

GENERALIST_KEYS = ("model", "device", "dtype", "device_map", "quantization", "keep_unquantized", "max_memory",
                   "min_pixels", "max_pixels", "max_tiles", "image_splitting", "longest_edge", "question_first",
                   "show_prompt",
                   "backend", "base_url", "model_name", "concurrency", "request_timeout", "max_retries")


@runtime_checkable
class GeneralistBackend(Protocol):
    """What the recipes call. ``from_config(cfg, device)`` builds it from a config's generalist keys (``device``: a
    data-parallel process's own GPU, or None); ``identity(cfg)`` is what a predictions manifest records of the
    model (answers of another model are never resumed); ``answer`` gives one answer per (image, question) — None
    for a question it could not answer (logged; the evaluation skips it and a re-run asks again)."""

    name: str

    @classmethod
    def from_config(cls, cfg, device: str | None = None) -> GeneralistBackend: ...

    @classmethod
    def identity(cls, cfg) -> dict: ...

    def answer(self, images: Sequence, questions: Sequence[str], max_new_tokens: int = 512, num_beams: int = 1,
               batch_size: int = 8, system: str | None = None, progress: bool = False, share_prefix: bool = True,
               **generate_kwargs) -> list[str | None]: ...


@dataclasses.dataclass
class GeneralistSettings:
    """The model that answers, local or served: the keys of every command that asks the generalist (demo.py, MedDr
    evaluation, GSCo), in their ``generalist`` section."""

    model: str | None = "tiny"  # model directory (a converted MedDr, any image-text-to-text model) or a preset
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32
    device_map: str | None = None  # "auto": shard one large model over the visible GPUs (no data parallel)
    quantization: Literal["none", "int8", "nf4", "torchao-int8"] = "none"  # int8/nf4: bitsandbytes (CUDA); torchao-int8
    keep_unquantized: list[str] = dataclasses.field(default_factory=lambda: list(KEEP_UNQUANTIZED))  # kept 16-bit
    max_memory: str | None = None  # with device_map: limits per device, e.g. 0=70GiB,cpu=200GiB (the rest offloaded)
    # image resolution, per family (README's family table; null: the family's default for small medical images)
    min_pixels: int | None = None  # qwen2_5_vl: an image has at least this many pixels (default 256*28*28: 256 tokens)
    max_pixels: int | None = None  # qwen2_5_vl: and at most this many (default 1280*28*28: 1,280 tokens)
    max_tiles: int | None = None  # internvl: 448 px tiles of 256 tokens an image may become (default 1; card 12)
    image_splitting: bool | None = None  # idefics3, smolvlm: tiles (default false: one tile; the card's true)
    longest_edge: int | None = None  # idefics3, smolvlm: with image_splitting, the edge split (card: 1456/1536)
    question_first: bool = False  # the question's text before the image (MedGemma's card: true)
    show_prompt: bool = False  # print what the model receives for the first question (tokens, image tokens) to stderr
    backend: str = "local"  # local: transformers here; openai: an OpenAI-compatible server (or a registered backend)
    base_url: str | None = None  # backend=openai: the server's API root, e.g. http://localhost:8000/v1
    model_name: str | None = None  # backend=openai: the served model (null: the server's only model)
    concurrency: int = 8  # backend=openai: requests in flight at once (within a batch of eval_batch_size)
    request_timeout: float = 600.0  # backend=openai: seconds one request may take
    max_retries: int = 5  # backend=openai: retries of a request that got 429, 5xx or a timeout (with backoff)

    def check_generalist(self) -> None:
        from gsco.config import ConfigError
        from gsco.generalist.registry import backend_names

        if self.backend not in backend_names():
            raise ConfigError(f"key 'backend': {self.backend!r} is not a backend; choose from {backend_names()}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("key 'base_url': backend=openai needs the server's URL (e.g. BASE_URL=http://host:8000/v1)")
        if self.concurrency < 1 or self.max_retries < 0 or not self.request_timeout > 0:
            raise ConfigError(f"keys 'concurrency' (>= 1), 'max_retries' (>= 0), 'request_timeout' (> 0): got "
                              f"{self.concurrency}, {self.max_retries}, {self.request_timeout}")


def backend_identity(cfg) -> dict:
    """The model for a predictions manifest, as the config's backend records it (a re-run against another model or
    server is refused)."""
    from gsco.generalist.registry import backend_class

    return backend_class(getattr(cfg, "backend", "local")).identity(cfg)


def load_generalist(cfg, device: str | None = None) -> GeneralistBackend:
    """The generalist a config asks for: its ``backend``'s class built from its generalist keys."""
    from gsco.generalist.registry import backend_class

    return backend_class(getattr(cfg, "backend", "local")).from_config(cfg, device)
