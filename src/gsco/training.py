"""What the specialist trainers share: the per-epoch history file and the best-score bookkeeping.

(Atomic checkpoint writes are :func:`gsco.runtime.atomic_torch_save`; JSON results :func:`gsco.runtime.write_json`.)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from gsco.runtime import read_jsonl_rows


class History:
    """``history.jsonl``: one JSON row per epoch (``"epoch"`` counted from 1), rewritten atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return read_jsonl_rows(self.path, self.path.read_text(), "delete that line or the file (it is a log: the "
                               "checkpoints hold the run's state)")

    def _write(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(self.path)

    def append(self, row: dict) -> None:
        """Add ``row``; rows of its epoch or later (left by an interrupted run) are dropped; NaN is written null."""
        kept = [r for r in self.rows() if r["epoch"] < row["epoch"]]
        self._write(kept + [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}])

    def keep_until(self, epoch: int) -> None:
        """Drop rows after ``epoch`` (a resumed run does those epochs again)."""
        if self.path.exists():
            self._write([r for r in self.rows() if r["epoch"] <= epoch])

    def clear(self) -> None:
        """A fresh run: the old history belongs to another run."""
        self.path.unlink(missing_ok=True)


@dataclasses.dataclass
class BestScore:
    """The best validation score so far, its epoch, and the epochs since it improved (early stopping)."""

    maximize: bool = True
    score: float | None = None
    epoch: int = -1
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record ``epoch``'s score; True when it is the new best (NaN never is, and never blocks a later one)."""
        if self.score is None or math.isnan(self.score):
            better = not math.isnan(score)
        else:
            better = score > self.score if self.maximize else score < self.score
        if better:
            self.score, self.epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        return better
