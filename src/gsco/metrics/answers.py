"""Scoring free-text answers: options named in an answer, diagnosis accuracy/F1, and VQA accuracy/recall.

Answer parsing (MedDr's diagnosis evaluation and GSCo) reads answers as a generalist writes them, in sentences
(``answer_parsing: natural``, the default):

- an option is named by its own words or by one of its dataset's ``answer_aliases`` (the registry: ``benign`` for
  BreastMNIST's ``normal or benign``, ``pleural effusion`` for ``effusion``, ...), case-insensitively, as whole
  words, a plural ``s``/``es`` allowed; where one match lies inside a longer one ("tumor" inside "non-tumor"), only
  the longer counts;
- a mention is *negated* when its clause (text between ``. , ; : ! ?`` or ``but / however / whereas / although``)
  has a negation before it (``not``, ``no``, ``non-``, ``without``, ``rather than``, ``negative for``, ``absence
  of``, ``rules out``, ...) or says after it that it is ``unlikely`` / ``ruled out`` / ``not seen``; a hedge
  (``cannot exclude``, ``cannot be ruled out``) keeps it named;
- the answer is the first option named and not negated. In a binary question an answer that only negates one
  option (``It is not malignant.``, ``No pneumonia.``) is the other option. Two options offered as alternatives
  (``benign or malignant``) and answers naming no option are *unparsed* (counted wrong, and counted);
- multi-label: every option named and not negated (a negation carries along a list: ``no effusion, mass or
  nodule``); ``[]`` when the answer names "no finding" (or its aliases) or only negates options.

``answer_parsing: literal`` keeps the earlier, literal rule: the first option named by its own words, negations
not read (the reference publishes no scoring code; this is the plain reading of its prompt's instruction).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

from gsco.data.registry import NO_FINDING

UNPARSED = None
NONE_ALIASES = ("no findings", "no abnormality", "no abnormalities", "no acute findings", "no acute abnormality",
                "unremarkable", "normal study")  # "no finding" in multi-label answers

_NEGATION_BEFORE = re.compile(
    r"(?<!\w)(?:not|no|non|without|never|neither|nor|isn't|isnt|aren't|wasn't|weren't|doesn't|don't|cannot|"
    r"can't|absence of|absent|negative for|free of|rules? out|ruled out|ruling out|rather than|instead of|"
    r"excludes?|excluded|unlikely to be)(?!\w)")
_NEGATION_AFTER = re.compile(
    r"^\s*(?:is|are|was|were|seems|appears|looks|being)?\s*(?:very |highly )?(?:unlikely|ruled out|excluded|absent|"
    r"not (?:seen|present|likely|evident|suggested|identified|visible|detected|found))(?!\w)")
# a hedge keeps the finding possible ("cannot exclude malignancy"): not a negation
_HEDGE = re.compile(r"(?<!\w)(?:cannot|can't|can not|could not|couldn't) (?:be )?"
                    r"(?:exclude|excluded|rule out|ruled out)(?!\w)")
_CLAUSE_BREAK = re.compile(r"[.;:!?,]|(?<!\w)(?:but|however|whereas|although|though|yet)(?!\w)")
_ALTERNATIVE = re.compile(r"^\s*(?:or|and/or|/|vs\.?|versus|or possibly|or perhaps)\s*$")
_LIST_ONLY = re.compile(r"^[\s,]*(?:(?:or|and|nor|any)\s*)*$")


def _pattern(words: str) -> str:
    text = re.escape(words.strip().lower())
    return r"(?<!\w)" + text + (r"(?:s|es)?" if words.strip()[-1:].isalpha() else "") + r"(?!\w)"


def _mentions(answer: str, names: Mapping[str, Sequence[str]]) -> list[tuple[int, int, str]]:
    """(start, end, option) of every whole-word mention of an option or one of its aliases, longest first where
    they overlap, in order."""
    text = answer.lower()
    spans = []
    for option, words in names.items():
        for w in dict.fromkeys([option, *words]):
            if w.strip():
                spans += [(m.start(), m.end(), option) for m in re.finditer(_pattern(w), text)]
    kept = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0])
                                        for o in spans)]
    return sorted(set(kept), key=lambda s: (s[0], -(s[1] - s[0])))


def _negated(text: str, spans: list[tuple[int, int, str]], lists: bool) -> list[bool]:
    """Whether each mention is negated in its clause (``lists``: a clause that only continues a list of options
    after a comma takes the negation of the one before it)."""
    breaks = [m.end() for m in _CLAUSE_BREAK.finditer(text)]
    out = []
    for k, (start, end, _) in enumerate(spans):
        clause_start = max([b for b in breaks if b <= start], default=0)
        clause_end = min([b - 1 for b in breaks if b - 1 >= end] + [len(text)])
        before = _strip_mentions(text, spans, clause_start, start)  # other options' words are not negations
        negated = bool(_NEGATION_BEFORE.search(_HEDGE.sub(" ", before))) \
            or bool(_NEGATION_AFTER.match(text[end:clause_end]))
        if not negated and lists and k > 0 and _LIST_ONLY.match(before) and clause_start > 0 \
                and text[clause_start - 1] == ",":
            negated = out[k - 1]
        out.append(negated)
    return out


def _strip_mentions(text: str, spans, lo: int, hi: int) -> str:
    """``text[lo:hi]`` with the mentions inside it blanked."""
    part = text[lo:hi]
    for s0, e0, _ in spans:
        if lo <= s0 and e0 <= hi:
            part = part.replace(text[s0:e0], " ")
    return part


def mentioned_options(answer: str, options: Sequence[str]) -> list[str]:
    """Options named in ``answer`` by their own words, in order of first mention, without duplicates, negated or
    not (the literal reading)."""
    spans = _mentions(answer, {o: () for o in options})
    return list(dict.fromkeys(option for _, _, option in spans))


def parse_option(answer: str, options: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None,
                 mode: str = "natural") -> str | None:
    """The option ``answer`` gives, or None (unparsed): see the module's docstring for ``mode``."""
    if mode == "literal":
        found = mentioned_options(answer, options)
        return found[0] if found else UNPARSED
    text = answer.lower()
    spans = _mentions(answer, {o: tuple((aliases or {}).get(o, ())) for o in options})
    flags = _negated(text, spans, lists=False)
    positive = [s for s, neg in zip(spans, flags) if not neg]
    if positive:
        first = positive[0]
        other = next((s for s in positive if s[2] != first[2]), None)
        if other is not None and _ALTERNATIVE.match(text[first[1]:other[0]]):
            return UNPARSED  # "benign or malignant": offered as alternatives, not answered
        return first[2]
    denied = {s[2] for s in spans}
    if len(options) == 2 and len(denied) == 1:
        return next(o for o in options if o not in denied)  # "It is not malignant."
    return UNPARSED


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
    y = np.array([index[t] for t in truth], dtype=int)  # (an arm that answered no case scores n 0)
    p = np.array([index[q] if q is not None else len(options) for q in predicted], dtype=int)
    confusion = np.zeros((len(options), len(options) + 1), dtype=int)
    np.add.at(confusion, (y, p), 1)
    recall = {o: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
              for i, o in enumerate(options)}
    return {
        "n": int(len(y)), "accuracy": float((y == p).mean()) if len(y) else float("nan"),
        "macro_f1": float(f1_score(y, p, labels=list(range(len(options))), average="macro", zero_division=0))
        if len(y) else float("nan"),
        "per_class_recall": recall, "unparsed": int((p == len(options)).sum()),
        "confusion": confusion.tolist(), "labels": list(options) + ["(unparsed)"],
    }


def parse_options(answer: str, options: Sequence[str], none: str = NO_FINDING,
                  aliases: Mapping[str, Sequence[str]] | None = None, mode: str = "natural") -> list[str] | None:
    """Multi-label parsing: every option named (and not negated, ``mode: natural``) in ``answer``, in order of
    mention; ``[]`` when the answer names only ``none`` ("no finding") or only negates options; None (unparsed)
    when it names nothing."""
    if mode == "literal":
        found = mentioned_options(answer, list(options) + [none])
        return UNPARSED if not found else [o for o in found if o != none]
    names = {**{o: tuple((aliases or {}).get(o, ())) for o in options}, none: NONE_ALIASES}
    spans = _mentions(answer, names)
    if not spans:
        return UNPARSED
    flags = _negated(answer.lower(), spans, lists=True)
    return list(dict.fromkeys(o for (_, _, o), neg in zip(spans, flags) if not neg and o != none))


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
