"""Training-split cases -> MedDr training samples that ask with the arms' prompts (hints included).

    python -m gsco.collab.hint_samples --config configs/gsco/breastmnist.yaml \
        cases=outputs/gsco/train/breastmnist_train_cases.json samples=outputs/gsco/train/hint_samples.json \
        [arms=[generalist,moed,rad,moed_rad,rad_counts,moed_prob]] [arms_per_case=2] [keep_arms=[generalist]] [seed=0]

(the GSCo config's keys plus ``samples``, ``arms_per_case``, ``keep_arms`` and ``seed``.)

Beyond the reference (whose MedDr reads hints zero-shot): a generalist can be fine-tuned to read the hints. The case
file comes from ``python -m gsco.collab.build_cases`` on the specialists' ``{…}_train_results.json``
(``predict ... split=train``); each case becomes one sample per arm (or ``arms_per_case`` arms drawn at random),
whose question is exactly the prompt ``inference_gsco.sh`` asks at test time and whose answer is the label (a
multi-label case's labels as words; for report cases, the cleaned reference report — built from the report
specialist's evaluation with ``split=train``). Feed the file to ``train.sh`` (``DATA=...``).

Caveat: a specialist's predictions on its own training images are in-sample, so MoED hints here are right more
often than on the test split; RAD hints leave each image out of its own neighbours.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

import numpy as np

from gsco.cli import command
from gsco.collab.arms import ARMS, generalist_arms
from gsco.collab.cases import fill_case, missing_evidence, read_cases
from gsco.collab.config import GscoConfig, default_gsco_config
from gsco.collab.tasks import Task
from gsco.config import ConfigError
from gsco.runtime import repo_file, write_json

logger = logging.getLogger(__name__)


def write_hint_samples(cfg: GscoConfig, cases_path: str | Path, out: str | Path, arms: list[str] | None = None,
                       per_case: int | None = None, seed: int = 0, keep: list[str] | tuple = ()) -> Path:
    """Write the sample file (JSON list); returns its path. Each case is asked every arm, or ``per_case`` arms:
    those of ``keep``, then others drawn at random."""
    from gsco.data.diagnosis_questions import answer_text

    task = Task.of(cfg)
    allowed = generalist_arms(task.report)
    arms = list(arms or allowed)
    unknown = [a for a in arms if a not in allowed]
    if unknown:
        raise ConfigError(f"arms {unknown} ask no generalist; choose from {list(allowed)}")
    cases_path, out = Path(cases_path), Path(out)
    if out.resolve() == cases_path.resolve():
        raise ConfigError(f"samples={out} is the case file it reads (cases=): give the samples another name")
    cases = read_cases(cases_path, task)
    for arm in list(arms):
        reason = missing_evidence(arm, cases)
        if reason:
            logger.warning("arm %s left out: %s", arm, reason)
            arms.remove(arm)
    if not arms:
        raise ConfigError(f"{cases_path}: none of the arms can be asked with these cases")
    if per_case is not None and not 1 <= per_case <= len(arms):
        raise ConfigError(f"key 'arms_per_case': {per_case} must be between 1 and the number of arms ({len(arms)})")
    if [a for a in keep if a not in arms] or (per_case is not None and len(keep) > per_case):
        raise ConfigError(f"key 'keep_arms': {list(keep)} must be among the arms asked ({', '.join(arms)}) and at "
                          f"most arms_per_case ({per_case})")
    drawn = [a for a in arms if a not in keep]
    tested = sorted({str(c["id"]) for c in cases if c.get("split") == "test"})
    if tested:
        raise ConfigError(f"{cases_path}: case {tested[0]} (and {len(tested) - 1} more) is from the test split; "
                          "fine-tune on training-split cases (predict ... split=train, then build_cases)")
    root = Path(cfg.image_root) if cfg.image_root else cases_path.parent
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = []
    for case in cases:
        chosen = arms if per_case is None else [*keep, *(drawn[i] for i in sorted(
            rng.choice(len(drawn), per_case - len(keep), replace=False)))]
        image = Path(case["image"]) if Path(case["image"]).is_absolute() else root / case["image"]
        image = os.path.relpath(image.resolve(), out.parent.resolve())
        for arm in chosen:
            samples.append({"id": f"{case['id']}:{arm}", "image": image, "conversations": [
                {"from": "human", "value": "<image>\n" + fill_case(cfg, arm, case, task)},
                {"from": "gpt", "value": answer_text(case["label"])}]})
    write_json(samples, out, indent=0)  # through a temporary file: a kill never leaves half a sample file
    logger.info("%d samples from %d cases (arms %s%s%s)", len(samples), len(cases), ", ".join(arms),
                f", {per_case} per case" if per_case else "", f", always {', '.join(keep)}" if keep else "")
    return out


@dataclasses.dataclass
class HintSamplesConfig(GscoConfig):
    """A GSCo config (the prompt pieces, ``cases``, ``arms``) plus what only hint samples need."""

    samples: str | None = None  # the sample file to write (JSON list, for train.sh DATA=)
    arms_per_case: int | None = None  # arms per case (keep_arms, then others drawn at random); null: every arm
    # arms every case is asked, the rest drawn: [generalist] keeps the plain question in every case's samples, so
    # the model keeps learning to read the image (make demo: generalist alone 0.705 with two drawn arms, see Makefile)
    keep_arms: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0  # of that draw

    def validate(self) -> None:
        super().validate()
        if not self.samples:
            raise ConfigError("key 'samples': give the sample file to write (samples=PATH.json)")
        if self.arms_per_case is not None and self.arms_per_case < 1:
            raise ConfigError(f"key 'arms_per_case': must be at least 1, got {self.arms_per_case}")


def _write_and_print(cfg: HintSamplesConfig) -> None:
    out = write_hint_samples(cfg, cfg.cases, cfg.samples, cfg.arms, cfg.arms_per_case, cfg.seed, cfg.keep_arms)
    print(f"samples: {out}")


def main(argv: list[str] | None = None) -> int:
    arms = "; ".join(f"{a} ({ARMS[a].about})" for a in generalist_arms(report=False))  # read now: arms registered since
    return command(HintSamplesConfig, _write_and_print, config=default_gsco_config, resolve=repo_file,
                   description="Training-split cases -> MedDr samples asked with the arms' prompts. Arms (default: "
                   f"every arm the cases have evidence for): {arms}")(argv)


if __name__ == "__main__":
    sys.exit(main())
