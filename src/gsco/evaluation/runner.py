"""The steps around every evaluation's answering loop, written once: the first process holds the output folder's
lock, every process answers its share (:mod:`gsco.evaluation.resumable`), the process group ends, and the first
process alone scores, writes the summary and checks how much was skipped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from gsco.errors import GscoError
from gsco.evaluation.process import end_process_group, is_main_process, main_process_lock

Answered = TypeVar("Answered")


class TooManySkippedError(GscoError, RuntimeError):
    """More rows were skipped (unreadable images, a wrong image root) than ``max_skipped_fraction`` allows."""


def run_evaluation(out_dir: str | Path, answer: Callable[[], Answered], score: Callable[[Answered], dict], *,
                   key: str = "out_dir") -> dict:
    """``answer()`` on every process under the first one's lock of ``out_dir`` (``key`` names the folder's
    config key in errors), then ``score(what answer returned)`` on the first process only, after the process group
    is torn down. Returns the score's result there and ``{}`` on the other processes."""
    with main_process_lock(out_dir, key=key):
        answered = answer()
        end_process_group()
        return score(answered) if is_main_process() else {}


def check_skipped(skipped: Mapping[str, int], total: int, fraction: float, what: str, summary: str | Path,
                  example: str = "") -> None:
    """Outputs (``skipped``: name -> rows not answered; name "" for a run with one output) that left more than
    ``fraction`` of their ``total`` rows unanswered make the run an error — raised after ``summary`` (what was
    answered, scored) is written, so nothing computed is lost. ``example``: one skipped row and why."""
    short = {name: n for name, n in skipped.items() if total and n > fraction * total}
    if not short:
        return
    listed = ", ".join(f"{name + ': ' if name else ''}{n} of {total} {what}" for name, n in short.items())
    raise TooManySkippedError(
        f"{listed} skipped{f' (e.g. {example})' if example else ''} — unreadable images, or a wrong image_root? "
        f"More than max_skipped_fraction {fraction:g}; what was answered is scored in {summary}")
