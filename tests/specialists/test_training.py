"""The trainers' shared bookkeeping: the per-epoch history file and the best score."""

import json
import math

from gsco.training import BestScore, History


def test_history_rewrites_from_an_interrupted_epoch_and_writes_nan_as_null(tmp_path):
    history = History(tmp_path / "history.jsonl")
    for epoch in (1, 2, 3):
        history.append({"epoch": epoch, "val_auc": 0.5 + epoch / 10})
    history.append({"epoch": 2, "val_auc": math.nan})  # a resumed run does epoch 2 again: 2 and 3 are replaced
    assert [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()] == \
        [{"epoch": 1, "val_auc": 0.6}, {"epoch": 2, "val_auc": None}]
    history.append({"epoch": 3, "val_auc": 0.9})
    history.keep_until(1)
    assert [r["epoch"] for r in history.rows()] == [1]
    history.clear()
    assert history.rows() == [] and not (tmp_path / "history.jsonl").exists()
    history.keep_until(5)  # nothing to keep: no file appears
    assert not (tmp_path / "history.jsonl").exists()


def test_best_score_counts_epochs_without_improvement_and_skips_nan():
    best = BestScore(maximize=True)
    assert [best.update(s, e) for e, s in enumerate([math.nan, 0.7, 0.6, 0.7, 0.8], 1)] == \
        [False, True, False, False, True]
    assert (best.score, best.epoch, best.bad_epochs) == (0.8, 5, 0)
    loss = BestScore(maximize=False)
    assert [loss.update(s, e) for e, s in enumerate([0.5, 0.4, 0.45, 0.46], 1)] == [True, True, False, False]
    assert (loss.score, loss.epoch, loss.bad_epochs) == (0.4, 2, 2)


def test_a_fresh_report_run_starts_its_history_over(tmp_path):
    """A report run started (not resumed) in a run_dir that holds another run's history.jsonl drops those rows."""
    from gsco.config import load_config
    from gsco.specialists.report.config import ReportConfig
    from gsco.specialists.report.train import _resume
    from gsco.training import History

    (tmp_path / "history.jsonl").write_text('{"epoch": 1, "val_score": 0.9}\n')
    start = _resume(load_config(ReportConfig, None, {}), None, None, tmp_path / "last_state.pt",
                    History(tmp_path / "history.jsonl"))
    assert start[:3] == (0, 0, 0) and not (tmp_path / "history.jsonl").exists()
