"""What GSCo's arms are asked and how their answers are read and scored, one class per kind of task: a single-label
diagnosis, a multi-label diagnosis, a report. :meth:`Task.of` picks the class from the config (``task``, the
dataset's registry entry, ``multi_label``); the recipe and the case code call the task's methods and never branch on
its kind.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import ClassVar

from gsco.config import ConfigError
from gsco.data.diagnosis_questions import OUTRO_MULTI, OUTRO_SINGLE
from gsco.data.registry import NO_FINDING

MAX_RECALL_COLUMNS = 8  # more options than this: per-class recall stays in ablation.json

@dataclasses.dataclass
class Task:
    """The options, the modality phrase the intro names, and how answers are read (``aliases``: the registry's
    other words per option; ``parsing``: natural | literal, :mod:`gsco.metrics.answers`)."""

    options: list[str]
    modality: str
    none: str = NO_FINDING
    aliases: dict | None = None
    parsing: str = "natural"

    kind: ClassVar[str] = ""
    multi_label: ClassVar[bool] = False
    report: ClassVar[bool] = False
    votes: ClassVar[bool] = True  # the specialists' predictions have a majority (specialist_vote)

    @classmethod
    def of(cls, cfg) -> Task:
        """The task a GSCo config describes: its class from ``task`` and the dataset (or ``multi_label``); options
        and modality from the config, else from the dataset's registry entry."""
        from gsco.data.registry import answer_aliases, get_dataset_info

        if cfg.task == "report":
            return ReportTask([], cfg.modality or _registered_modality(cfg), cleaning=cfg.report_cleaning,
                              tokenize=cfg.report_tokenize, meteor=cfg.meteor)
        info = get_dataset_info(cfg.dataset, cfg.extra_datasets)
        multi = info.multi_label if cfg.multi_label is None else cfg.multi_label
        options = list(cfg.options or info.label_names)
        kind = MultiLabelTask if multi else SingleLabelTask
        return kind(options, cfg.modality or info.modality, cfg.no_finding,
                    aliases=answer_aliases(options, cfg.dataset, cfg.extra_datasets), parsing=cfg.answer_parsing)

    # ---- what each kind decides
    def parse(self, answer: str):
        """What an answer names (an option, a list of options, or the report itself); None: nothing."""
        raise NotImplementedError

    def checked_label(self, label, where: str):
        """A case's ground truth, checked against the options (``where`` names the case in the error)."""
        raise NotImplementedError

    def score(self, truth: list, predicted: list) -> dict:
        raise NotImplementedError

    def vote(self, predictions: list):
        """The specialists' majority over one case's predictions (kinds with ``votes``)."""
        raise NotImplementedError

    def default_outro(self) -> str:
        return OUTRO_SINGLE

    # ---- shared behaviour
    def answer_of(self, row: dict):
        """What a predictions row contributes to the score: its answer read as this run reads answers (never a
        stored reading: the rule may have changed since)."""
        return self.parse(row["answer"])

    def row_fields(self, answer: str) -> dict:
        """Fields a predictions row carries beside the answer, for people reading the file."""
        return {"parsed": self.parse(answer)}

    def check_hints(self, cases: list[dict], cases_file: str) -> None:
        """Hints whose words must name an option, checked before anything runs (nothing to check by default)."""

    def specialist_arms(self, cases: list[dict]) -> dict[str, list]:
        """Each specialist's prediction per case (``specialist_<j>``) and, with two or more, their vote."""
        n = min(len(c.get("moed") or []) for c in cases)
        arms = {f"specialist_{j}": [self.specialist_prediction(c, j) for c in cases] for j in range(n)}
        if n > 1 and self.votes:
            arms["specialist_vote"] = [self.vote([self.specialist_prediction(c, j) for j in range(n)])
                                       for c in cases]
        return arms

    def specialist_prediction(self, case: dict, j: int):
        return case["moed"][j]

    def charts(self, table: dict[str, dict], out: Path, title: str) -> dict:
        """Pictures of the scored table: each arm's confusion matrix (its path in the arm's row); returns the
        result's own chart entries (none here)."""
        from gsco.metrics.plots import plot_answer_confusion

        for arm, m in table.items():
            m["confusion_png"] = str(plot_answer_confusion(m["confusion"], m.get("truth_labels", self.options),
                                                           m["labels"], out / f"{arm}_confusion.png",
                                                           f"{title}: {arm}"))
        return {}

    def table_lines(self, result: dict) -> list[str]:
        """The ablation table (Markdown) of ``result`` (ablation.json): accuracy (exact match for multi-label),
        F1, per-option recall (up to MAX_RECALL_COLUMNS options), unparsed answers."""
        options, multi = result["options"], self.multi_label
        shown = options if len(options) <= MAX_RECALL_COLUMNS else []
        head = (["arm", "n", "exact match" if multi else "accuracy", "macro-F1"] + (["micro-F1"] if multi else [])
                + [f"recall {o}" for o in shown] + ["unparsed"])
        lines = [f"# GSCo ablation — {result['dataset']}, {result['n_cases']} cases, generalist {result['model']}",
                 "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm, m in result["arms"].items():
            recalls = [("–" if m["per_class_recall"][o] is None else f"{m['per_class_recall'][o]:.3f}")
                       for o in shown]
            scores = [f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}"] + ([f"{m['micro_f1']:.3f}"] if multi else [])
            lines.append("| " + " | ".join([arm, str(m["n"]), *scores, *recalls, str(m["unparsed"])]) + " |")
        return lines


def _registered_modality(cfg) -> str:
    from gsco.data.registry import DatasetError, get_dataset_info

    try:
        return get_dataset_info(cfg.dataset, cfg.extra_datasets).modality
    except DatasetError:
        raise ConfigError(f"key 'modality': dataset {cfg.dataset!r} is not in the registry, so its modality phrase "
                          "(e.g. 'chest X-ray') must be given") from None


class SingleLabelTask(Task):
    """One option per case: accuracy, macro-F1, per-class recall, confusion matrix; the vote is the majority."""

    kind = "single-label"

    def parse(self, answer: str):
        from gsco.metrics.answers import parse_option

        return parse_option(answer, self.options, self.aliases, self.parsing)

    def checked_label(self, label, where: str):
        if label not in self.options:
            raise ConfigError(f"{where}: label {label!r} is not one of the options {self.options}")
        return label

    def score(self, truth: list, predicted: list) -> dict:
        from gsco.metrics.answers import diagnosis_metrics

        return diagnosis_metrics(truth, predicted, self.options)

    def vote(self, predictions: list):
        """The most frequent label; a tie goes to the first specialist's."""
        return max(Counter(predictions).items(), key=lambda kv: (kv[1], -predictions.index(kv[0])))[0]

    def check_hints(self, cases: list[dict], cases_file: str) -> None:
        """Every RAD and MoED hint must name one of the options (the specialists' arms are scored on them and the
        evidence arms count them)."""
        for case in cases:
            for key in ("rad", "moed"):
                for hint in case.get(key) or []:
                    if self.parse(str(hint)) is None:
                        raise ConfigError(f"{cases_file}: case {case.get('id')}: {key} hint {hint!r} names none of "
                                          f"the options {self.options}")


class MultiLabelTask(Task):
    """Every option that applies (``none`` for none of them): exact match, macro/micro-F1, per-label recall; the
    vote keeps the labels more than half of the specialists predict (a tie follows the first)."""

    kind = "multi-label"
    multi_label = True

    def parse(self, answer: str):
        from gsco.metrics.answers import parse_options

        return parse_options(answer, self.options, self.none, self.aliases, self.parsing)

    def checked_label(self, label, where: str):
        labels = self.parse(label) if isinstance(label, str) else label
        if not isinstance(labels, list) or any(x not in self.options for x in labels):
            raise ConfigError(f"{where}: label {label!r} is not a list of the options {self.options} "
                              f"(or {self.none!r})")
        return labels

    def score(self, truth: list, predicted: list) -> dict:
        from gsco.metrics.answers import multilabel_metrics

        return multilabel_metrics(truth, predicted, self.options, self.none)

    def vote(self, predictions: list):
        n = len(predictions)
        counts = Counter(x for labels in predictions for x in labels)
        return [o for o in self.options if 2 * counts[o] > n or (2 * counts[o] == n and o in predictions[0])]

    def specialist_prediction(self, case: dict, j: int):
        from gsco.collab.arms import label_sets

        return label_sets(case, "moed", self)[j]

    def default_outro(self) -> str:
        return OUTRO_MULTI.replace(NO_FINDING, self.none)


@dataclasses.dataclass
class ReportTask(Task):
    """Report generation: answers are reports, cleaned as the references are (``cleaning``: a rule of
    report/clean.py, or none) and scored with BLEU / METEOR / ROUGE-L / CIDEr; no vote between reports."""

    cleaning: str = "iu_xray"
    tokenize: str = "none"
    meteor: bool = True

    kind: ClassVar[str] = "report"
    report: ClassVar[bool] = True
    votes: ClassVar[bool] = False

    def parse(self, answer: str):
        return answer

    def checked_label(self, label, where: str):
        if not isinstance(label, str):
            raise ConfigError(f"{where}: a report case's label is the reference report text")
        return label

    def row_fields(self, answer: str) -> dict:
        return {}

    def score(self, truth: list, predicted: list) -> dict:
        from gsco.metrics.report import report_metrics
        from gsco.specialists.report.clean import clean_report

        def clean(text: str) -> str:
            return text if self.cleaning == "none" else clean_report(text, self.cleaning)

        scores = report_metrics({str(i): t for i, t in enumerate(truth)},
                                {str(i): clean(p) for i, p in enumerate(predicted)}, self.tokenize, self.meteor)
        return {"n": len(truth), **scores}

    def charts(self, table: dict[str, dict], out: Path, title: str) -> dict:
        """One bar chart of the arms' report scores: ``{"ablation_png": path}``."""
        from gsco.metrics.plots import plot_metric_bars

        metrics = [k for k in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr") if all(k in m for m in table.values())]
        return {"ablation_png": str(plot_metric_bars({a: {k: m[k] for k in metrics} for a, m in table.items()},
                                                     out / "ablation.png", f"{title}: reports"))}

    def table_lines(self, result: dict) -> list[str]:
        from gsco.metrics.report import REPORT_METRICS

        keys = [k for k in REPORT_METRICS if all(k in m for m in result["arms"].values())]
        lines = [f"# GSCo ablation — {result['dataset']} reports, {result['n_cases']} cases, generalist "
                 f"{result['model']}", "", "| arm | n | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
        return lines + ["| " + " | ".join([arm, str(m["n"]), *(f"{m[k]:.4f}" for k in keys)]) + " |"
                        for arm, m in result["arms"].items()]
