"""The GSCo config: one dataclass for the case builder, the arms, the hint samples and the web app's GSCo mode
(``configs/gsco/<dataset>.yaml``; ``--help`` of any of them lists the keys)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from gsco.config import ConfigError
from gsco.data.diagnosis_questions import INTRO
from gsco.data.registry import NO_FINDING
from gsco.data.render import RENDER_KEYS, RenderSettings
from gsco.generalist.backends import GENERALIST_KEYS, GeneralistSettings
from gsco.runtime import repo_file


@dataclasses.dataclass
class GscoConfig(RenderSettings, GeneralistSettings):
    # sections: in a YAML file a mapping of their keys; on the command line section.key=value or key=value
    SECTIONS = {
        "render": RENDER_KEYS,  # how DICOM / NIfTI inputs become images (gsco.data.render)
        "build": ("specialists", "rad_from", "rad_k", "data_path"),
        "prompt": ("options", "modality", "multi_label", "no_finding", "intro", "rad_sentence", "moed_sentence",
            "outro", "prompt_style", "hint_separator", "system"),
        "generalist": GENERALIST_KEYS,  # gsco.generalist.backends.GeneralistSettings: local or served
        "generation": ("eval_batch_size", "max_new_tokens", "share_prefix"),
        "scoring": ("answer_parsing", "report_cleaning", "report_tokenize", "meteor"),
    }
    # --- what and where ---
    dataset: str = "breastmnist"  # a registered dataset: its options, modality and label kind
    task: Literal["diagnosis", "report"] = "diagnosis"  # diagnosis (single- or multi-label) or report generation
    extra_datasets: str | None = None  # your own dataset registry YAML (DATASET.md)
    cases: str = "outputs/gsco/breastmnist_cases.json"  # the case file (build_cases writes it, the arms read it)
    image_root: str | None = None  # case images are relative to this (default: the case file's folder)
    out_dir: str = "outputs/gsco"  # {arm}_predictions.jsonl, ablation.md / .json, confusion matrices
    overwrite: bool = False  # start every arm over (a re-run with another model or case file is refused otherwise)
    max_skipped_fraction: float = 0.05  # an arm that skipped more cases than this: exit status 2 after the table
    arms: list[str] | None = None  # null: every arm (the specialists', their vote, the generalist's)
    # --- build: the case file (python -m gsco.collab.build_cases) ---
    specialists: list[str] | None = None  # the specialists' {...}_results.json files (MoED, in this order)
    rad_from: int = 0  # which of them retrieves the similar training cases (RAD)
    rad_k: int = 10  # similar cases per test case (RAD hints)
    data_path: str | None = None  # where the dataset's files are (the test images are written beside the cases)
    # --- prompt ---
    options: list[str] | None = None  # null: the dataset's label names from the registry
    modality: str | None = None  # null: the registry's modality
    multi_label: bool | None = None  # null: the registry's task
    no_finding: str = NO_FINDING  # multi-label: the answer (and hint) for a case with none of the labels
    intro: str = INTRO  # the first sentence(s); {modality} and {options} are filled in
    rad_sentence: str = "The diagnoses of the most similar cases are ###RAD###."  # RAD arms: ###RAD### -> hints
    moed_sentence: str = "The diagnoses of the specialist models are ###MOED###."  # MoED arms: ###MOED### -> hints
    outro: str | None = None  # null: "only one option" (single-label) or "every diagnosis that applies" (multi-label)
    # reference: the sentences as the lines of the reference's triple-quoted prompt whose newlines become spaces, so
    # the prompt starts and ends with a space (inference_gsco.py); stripped: no space before or after
    prompt_style: Literal["reference", "stripped"] = "reference"
    hint_separator: str = ","  # between the hints of one placeholder (the reference: a comma)
    # system message; null: none beyond what the chat template writes itself (MedDr: "Answer the questions.", as the
    # reference; each family's card value in README's family table, e.g. MedGemma's "You are an expert radiologist.")
    system: str | None = None
    # --- generation ---
    eval_batch_size: int = 8  # questions per generate() call (with share_prefix: a case's arms are never split)
    max_new_tokens: int = 512  # the reference: greedy, max_new_tokens 512
    share_prefix: bool = True  # ask a case's arms together: image + shared prompt prefix computed once (same answers)
    # --- scoring ---
    # diagnosis answers: natural (sentences: aliases, negation; gsco.metrics.answers) or literal (first option named)
    answer_parsing: Literal["natural", "literal"] = "natural"
    # report generation: answers cleaned as R2Gen cleans references, then scored as the specialist's
    report_cleaning: str = "iu_xray"  # a rule of report/clean.py RULES (iu_xray, mimic_cxr), or none
    report_tokenize: Literal["none", "ptb"] = "none"  # none: score the cleaned text as it is (R2GenGPT); ptb: PTB
    meteor: bool = True  # METEOR needs Java

    def validate(self) -> None:
        super().validate()  # the render keys
        self.check_generalist()
        if self.eval_batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("keys eval_batch_size and max_new_tokens must be at least 1")
        if not 0 <= self.max_skipped_fraction <= 1:
            raise ConfigError(f"key 'max_skipped_fraction': must be between 0 and 1, got {self.max_skipped_fraction}")
        from gsco.specialists.report.clean import RULES

        if self.report_cleaning not in (*RULES, "none"):
            raise ConfigError(f"key 'report_cleaning': {self.report_cleaning!r}; choose from {[*RULES, 'none']}")


def default_gsco_config(values: dict) -> Path:
    """The config a GSCo command reads without ``--config``: ``configs/gsco/<dataset>.yaml``, the dataset from the
    command line (default: breastmnist; iu_xray for ``task=report``)."""
    dataset = values.get("dataset") or ("iu_xray" if values.get("task") == "report" else "breastmnist")
    return repo_file(f"configs/gsco/{dataset}.yaml")
