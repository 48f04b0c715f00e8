"""The ``openai`` backend: a generalist behind an OpenAI-compatible chat API (vLLM, SGLang, LMDeploy, TGI,
``transformers serve``, a hosted model), answering as the local model does
(:class:`~gsco.generalist.backends.GeneralistBackend`); every evaluation (resumable, appended) runs on it unchanged.

Images go as base64 PNG data URLs of exactly what the local path would feed the model (DICOM / NIfTI rendered by
the caller with its render keys). Requests of a batch are in flight together, up to ``concurrency``; the ``openai``
client retries 429 / 5xx / timeouts with exponential backoff (``max_retries``). A question that still fails is
logged and left unanswered (the evaluation skips it; a re-run asks it again); a server that answers nothing in a
whole batch stops the run with one line — what was answered is already on disk. Greedy decoding is ``temperature
0``; what the API cannot honour (beam search, length penalty, a minimum length) is said once. The API key is read
from the environment variable ``API_KEY`` and is never logged or written.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from gsco.errors import GscoError
from gsco.generalist.registry import register_backend

logger = logging.getLogger(__name__)


class ServerUnavailableError(GscoError, RuntimeError):
    """The server answered none of a batch's questions (down, unreachable, or refusing every request)."""


def image_data_url(image) -> str:
    """A PIL image as a base64 PNG data URL (lossless: the server decodes the very pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@register_backend("openai")
class ServedGeneralist:
    """``answer`` as :class:`~gsco.generalist.backends.GeneralistBackend` has it, over the OpenAI chat-completions
    API."""

    def __init__(self, base_url: str, model_name: str | None = None, concurrency: int = 8,
                 request_timeout: float = 600.0, max_retries: int = 5, question_first: bool = False):
        from openai import OpenAI

        self.base_url, self.concurrency, self.question_first = base_url, concurrency, question_first
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get("API_KEY") or "none", timeout=request_timeout,
                             max_retries=max_retries)
        self.model_name = model_name or self._only_model()
        self.name = f"{self.model_name} at {base_url}"
        self._said: set[str] = set()
        logger.info("generalist: %s (OpenAI-compatible API)", self.name)

    @classmethod
    def from_config(cls, cfg, device: str | None = None) -> "ServedGeneralist":
        return cls(cfg.base_url, cfg.model_name, cfg.concurrency, cfg.request_timeout, cfg.max_retries,
                   bool(getattr(cfg, "question_first", False)))

    @classmethod
    def identity(cls, cfg) -> dict:
        """The served model and its server, for a predictions manifest (another model or server is refused)."""
        return {"model": {"served": cfg.model_name or "the server's only model", "base_url": cfg.base_url},
                **({"question_first": True} if getattr(cfg, "question_first", False) else {})}

    def _only_model(self) -> str:
        import openai

        try:
            names = [m.id for m in self.client.models.list()]
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            raise ServerUnavailableError(f"{self.base_url}: listing its models failed ({_reason(exc)}); is the "
                                         "server up, and BASE_URL its API root (…/v1)?") from None
        if len(names) != 1:
            raise ServerUnavailableError(f"{self.base_url} serves {len(names)} models ({', '.join(names[:5])}): "
                                         "give MODEL_NAME (model_name=...)")
        return names[0]

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.warning(message)

    def answer(self, images: Sequence, questions: Sequence[str], max_new_tokens: int = 512, num_beams: int = 1,
               batch_size: int = 8, system: str | None = None, progress: bool = False, share_prefix: bool = True,
               **generate_kwargs) -> list[str | None]:
        """One answer per (image, question), None for a question the server did not answer (logged)."""
        from gsco.data.readers import open_image

        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        if num_beams > 1:
            self._say_once("beams", f"num_beams={num_beams}: the OpenAI API has no beam search; answers are greedy "
                                    "(temperature 0)")
        for key in sorted(generate_kwargs):
            self._say_once(key, f"{key}={generate_kwargs[key]}: not part of the OpenAI API, not sent to the server")
        urls: dict = {}  # one encoding per image object: a case's arms send the same image
        for image in images:
            if image is not None and id(image) not in urls:
                opened = open_image(image) if isinstance(image, (str, Path)) else image
                urls[id(image)] = image_data_url(opened)
        requests = [self._messages(None if im is None else urls[id(im)], q, system, self.question_first)
                    for im, q in zip(images, questions)]
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(requests)))) as pool:
            results = list(pool.map(lambda m: self._ask(m, max_new_tokens), requests))
        answers = [a for a, _ in results]
        if answers and all(a is None for a in answers):
            raise ServerUnavailableError(f"{self.base_url} answered none of {len(answers)} questions "
                                         f"({results[0][1]}); the answers so far are saved: re-run to resume")
        return answers

    @staticmethod
    def _messages(url: str | None, question: str, system: str | None, question_first: bool = False) -> list[dict]:
        image = [{"type": "image_url", "image_url": {"url": url}}] if url else []
        text = [{"type": "text", "text": question}]
        content = text + image if question_first else image + text
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]

    def _ask(self, messages: list[dict], max_new_tokens: int) -> tuple[str | None, str]:
        import openai

        try:
            reply = self.client.chat.completions.create(model=self.model_name, messages=messages,
                                                        max_tokens=max_new_tokens, temperature=0.0)
        except openai.APIError as exc:  # connection, HTTP status, a body that is not a chat completion
            return self._not_answered(_reason(exc))
        choices = getattr(reply, "choices", None)
        message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
        if message is None:
            return self._not_answered(f"a malformed response: no choices[0].message in {str(reply)[:120]!r}")
        if not isinstance(message.content, str):  # null: e.g. a refusal or a tool call; never an answer
            return self._not_answered(f"an answer without text (content {message.content!r})")
        return message.content.strip(), ""

    def _not_answered(self, reason: str) -> tuple[None, str]:
        logger.warning("%s: a question was not answered (%s); it is skipped, a re-run asks it again",
                       self.base_url, reason)
        return None, reason


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(getattr(exc, "message", "") or exc).splitlines()[0][:200]
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"
