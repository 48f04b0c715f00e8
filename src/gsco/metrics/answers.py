"""Scoring free-text answers: options named in an answer, diagnosis accuracy/F1, and VQA accuracy/recall.

Answer parsing (used by MedDr's diagnosis evaluation and by GSCo): options are matched case-insensitively as whole
words; where one match lies inside a longer one ("tumor" inside "non-tumor"), only the longer counts; the first
option mentioned is the answer (multi-label: every option mentioned, and "no finding" for none of them). An answer
naming no option is *unparsed*.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

from gsco.data.registry import NO_FINDING

UNPARSED = None


def mentioned_options(answer: str, options: Sequence[str]) -> list[str]:
    """Options named in ``answer``, in order of first mention, without duplicates."""
    spans = []
    for option in options:
        pattern = r"(?<!\w)" + re.escape(option.strip().lower()) + r"(?!\w)"
        spans += [(m.start(), m.end(), option) for m in re.finditer(pattern, answer.lower())]
    kept = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0])
                                        for o in spans)]
    ordered = []
    for _, _, option in sorted(kept, key=lambda s: (s[0], -(s[1] - s[0]))):
        if option not in ordered:
            ordered.append(option)
    return ordered


def parse_option(answer: str, options: Sequence[str]) -> str | None:
    """The first option named in ``answer``, or None (unparsed)."""
    found = mentioned_options(answer, options)
    return found[0] if found else UNPARSED


def diagnosis_metrics(truth: Sequence[str], predicted: Sequence[str | None], options: Sequence[str]) -> dict:
    """Single-label scores; an unparsed answer (None) counts as wrong. Returns accuracy, macro-F1 over
    ``options``, per-class recall, the unparsed count and the confusion matrix (rows truth, columns predicted,
    a last column for unparsed)."""
    from sklearn.metrics import f1_score

    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    unknown = sorted({t for t in truth if t not in options})
    if unknown:
        raise ValueError(f"ground-truth labels {unknown} are not among the options {list(options)}")
    index = {o: i for i, o in enumerate(options)}
    y = np.array([index[t] for t in truth])
    p = np.array([index[q] if q is not None else len(options) for q in predicted])
    confusion = np.zeros((len(options), len(options) + 1), dtype=int)
    np.add.at(confusion, (y, p), 1)
    recall = {o: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
              for i, o in enumerate(options)}
    return {
        "n": int(len(y)), "accuracy": float((y == p).mean()) if len(y) else float("nan"),
        "macro_f1": float(f1_score(y, p, labels=list(range(len(options))), average="macro", zero_division=0)),
        "per_class_recall": recall, "unparsed": int((p == len(options)).sum()),
        "confusion": confusion.tolist(), "labels": list(options) + ["(unparsed)"],
    }


def parse_options(answer: str, options: Sequence[str], none: str = NO_FINDING) -> list[str] | None:
    """Multi-label parsing: every option named in ``answer`` (in order of mention); ``[]`` when the answer names
    only ``none`` ("no finding"); None (unparsed) when it names neither."""
    found = mentioned_options(answer, list(options) + [none])
    if not found:
        return UNPARSED
    return [o for o in found if o != none]


def multilabel_metrics(truth: Sequence[Sequence[str]], predicted: Sequence[Sequence[str] | None],
                       options: Sequence[str], none: str = NO_FINDING) -> dict:
    """Multi-label scores: exact-match accuracy, macro- and micro-F1 and per-class recall over ``options``; an
    unparsed answer (None) predicts no label and is counted. ``confusion`` counts co-occurrence: row = a true
    label (or ``none`` for a case without labels), column = a predicted label (or ``none``, or unparsed)."""
    from sklearn.metrics import f1_score, recall_score

    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    unknown = sorted({t for labels in truth for t in labels if t not in options})
    if unknown:
        raise ValueError(f"ground-truth labels {unknown} are not among the options {list(options)}")
    y = np.array([[o in set(t) for o in options] for t in truth], dtype=int).reshape(len(truth), len(options))
    p = np.array([[o in set(q or ()) for o in options] for q in predicted], dtype=int).reshape(y.shape)
    unparsed = np.array([q is None for q in predicted], dtype=bool)
    rows = np.concatenate([y, (y.sum(1) == 0)[:, None]], axis=1)
    cols = np.concatenate([p, ((p.sum(1) == 0) & ~unparsed)[:, None], unparsed[:, None]], axis=1)
    recall = recall_score(y, p, average=None, zero_division=np.nan) if len(y) else [np.nan] * len(options)
    return {
        "n": int(len(y)), "accuracy": float((y == p).all(axis=1).mean()) if len(y) else float("nan"),
        "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y, p, average="micro", zero_division=0)),
        "per_class_recall": {o: (None if np.isnan(r) else float(r)) for o, r in zip(options, recall)},
        "unparsed": int(unparsed.sum()),
        "confusion": (rows.T @ cols).tolist(), "truth_labels": list(options) + [none],
        "labels": list(options) + [none, "(unparsed)"],
    }


# ---------------------------------------------------------------------------------------------------------- VQA
def normalize_answer(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    table = str.maketrans({c: " " for c in string.punctuation})
    return str(text).lower().translate(table).split()


def is_closed(answer: str, answer_type: str | None = None) -> bool:
    """A closed question: marked CLOSED (VQA-RAD/SLAKE ``answer_type``), or a yes/no ground truth."""
    if answer_type:
        return answer_type.strip().upper() == "CLOSED"
    return normalize_answer(answer) in (["yes"], ["no"])


def closed_correct(prediction: str, answer: str) -> bool:
    """Yes/no: the first yes or no in the prediction equals the answer; other closed answers: the answer's words
    appear as a whole phrase in the prediction."""
    gt, pred = normalize_answer(answer), normalize_answer(prediction)
    if gt in (["yes"], ["no"]):
        first = next((w for w in pred if w in ("yes", "no")), None)
        return first == gt[0]
    n = len(gt)
    return n > 0 and any(pred[i:i + n] == gt for i in range(len(pred) - n + 1))


def open_recall(prediction: str, answer: str) -> float:
    """Share of the ground-truth words found in the prediction."""
    gt = normalize_answer(answer)
    if not gt:
        return 0.0
    pred = set(normalize_answer(prediction))
    return sum(w in pred for w in gt) / len(gt)


def vqa_metrics(predictions: Sequence[str], answers: Sequence[str],
                answer_types: Sequence[str | None] | None = None) -> dict:
    types = answer_types or [None] * len(answers)
    closed = [closed_correct(p, a) for p, a, t in zip(predictions, answers, types) if is_closed(a, t)]
    opened = [open_recall(p, a) for p, a, t in zip(predictions, answers, types) if not is_closed(a, t)]
    return {
        "n": len(answers), "n_closed": len(closed), "n_open": len(opened),
        "closed_accuracy": float(np.mean(closed)) if closed else None,
        "open_recall": float(np.mean(opened)) if opened else None,
    }
