"""Report-generation metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr through pycocoevalcap's own scorers.

``tokenize="ptb"`` runs pycocoevalcap's PTB tokenizer first (COCO-caption convention, needs Java);
``tokenize="none"`` hands the scorers the texts as given — R2Gen/R2GenGPT's convention, whose reports are already
cleaned. Spaces are not collapsed: ROUGE-L splits on single spaces, so the double space an empty sentence leaves in
a cleaned report (``a .  . b .``) counts there as it counts in R2GenGPT's scores. Line breaks (a generalist's
answer may have them) are word boundaries: each with the spaces around it becomes one space, which leaves clean
text as it is. METEOR gets each text with all whitespace collapsed, as R2GenGPT's METEOR wrapper sends it
(``re.sub(r'\\s+', ' ', score_line)``; pycocoevalcap's own breaks its line protocol on a newline). METEOR needs
Java (~5-10 s to start its scorer, which then stays up: one per process, reused by every later call — a report
ablation scores many arms); SPICE is left out (it downloads CoreNLP models).
"""

from __future__ import annotations

import atexit
import re
import threading
from collections.abc import Mapping

from gsco.errors import MissingDependencyError

LINE_BREAK = re.compile(r" *[\t\n\r\f\v][\s]*")  # a line break (or tab) with the spaces around it

REPORT_METRICS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")


def require_java(what: str) -> None:
    import shutil

    if shutil.which("java") is None:
        raise MissingDependencyError(f"{what} needs Java, which is not on PATH: install a JRE (e.g. apt-get install "
                                     "default-jre-headless), or score with report_tokenize=none meteor=false")


def tokenize_for_scoring(texts: Mapping[str, list[str]], tokenize: str) -> dict[str, list[str]]:
    """``{id: [text, ...]}`` -> the same, tokenized as the scorers expect."""
    if tokenize == "none":
        return {k: [LINE_BREAK.sub(" ", t) for t in v] for k, v in texts.items()}
    if tokenize != "ptb":
        raise ValueError(f"tokenize {tokenize!r}: expected 'ptb' or 'none'")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java("PTB tokenization (report_tokenize=ptb)")
    return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()})


def report_metrics(references: Mapping[str, str | list[str]], predictions: Mapping[str, str],
                   tokenize: str = "ptb", meteor: bool = True) -> dict[str, float]:
    """Corpus-level scores of ``predictions`` against ``references`` (one or more per id); ids must match."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(predictions):
        missing = sorted(set(references) ^ set(predictions))[:5]
        raise ValueError(f"references and predictions cover different ids, e.g. {missing}")
    if not references:
        raise ValueError("no predictions to score")
    keys = sorted(references)
    gts = tokenize_for_scoring({k: [references[k]] if isinstance(references[k], str) else list(references[k])
                                for k in keys}, tokenize)
    res = tokenize_for_scoring({k: [predictions[k]] for k in keys}, tokenize)
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"BLEU_{n}": float(b) for n, b in enumerate(bleu, 1)})
    if meteor:
        collapse = lambda texts: {k: [" ".join(t.split()) for t in v] for k, v in texts.items()}  # noqa: E731
        scores["METEOR"] = meteor_score(collapse(gts), collapse(res))
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


_meteor = {"scorer": None, "lock": threading.Lock()}


def meteor_score(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    """pycocoevalcap's METEOR over tokenized texts, through one METEOR process per Python process: started on the
    first call, reused by the next (closed at exit, or after a call that failed: its line protocol may be out of
    step)."""
    with _meteor["lock"]:
        scorer = _meteor["scorer"]
        if scorer is None or scorer.meteor_p.poll() is not None:
            from pycocoevalcap.meteor.meteor import Meteor

            require_java("METEOR")
            scorer = _meteor["scorer"] = Meteor()
            atexit.register(_close_meteor, scorer)
        try:
            return float(scorer.compute_score(gts, res)[0])
        except BaseException:
            _close_meteor(scorer)
            _meteor["scorer"] = None
            raise


def _close_meteor(scorer) -> None:
    proc = getattr(scorer, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        proc.stdin.close()
        proc.kill()
        proc.wait()
