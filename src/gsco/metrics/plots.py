"""ROC curves and confusion matrices as PNG (sklearn's displays on a headless matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from gsco.metrics.classification import MULTI_LABEL, predict_labels


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_roc(y_true: np.ndarray, y_score: np.ndarray, task: str, label_names: Sequence[str], path: Path,
             title: str) -> Path:
    """One ROC curve for a binary task, one per class (one-vs-rest) or per label otherwise."""
    from sklearn.metrics import RocCurveDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if task == "binary-class":
        curves = [(f"{label_names[1]} vs {label_names[0]}", y_true.reshape(len(y_true), -1)[:, 0], y_score[:, -1])]
    elif task == MULTI_LABEL:
        curves = [(label_names[i], y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])]
    else:
        y = y_true.reshape(len(y_true), -1)[:, 0]
        curves = [(label_names[i], (y == i).astype(int), y_score[:, i]) for i in range(y_score.shape[1])]
    for name, yt, ys in curves:
        if len(np.unique(yt)) < 2:
            continue
        RocCurveDisplay.from_predictions(yt, ys, name=_short(name, 40), ax=ax, plot_chance_level=False)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(y_true: np.ndarray, y_score: np.ndarray, task: str, label_names: Sequence[str], path: Path,
                   title: str) -> Path:
    """Confusion matrix of the hard predictions; for multi-label, one 2x2 matrix per label."""
    from sklearn.metrics import ConfusionMatrixDisplay, multilabel_confusion_matrix

    plt = _pyplot()
    y_true, y_pred = np.asarray(y_true), predict_labels(y_score, task)
    if task == MULTI_LABEL:
        mats = multilabel_confusion_matrix(y_true, y_pred)
        cols = min(4, len(mats))
        rows = int(np.ceil(len(mats) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for ax, mat, name in zip(axes.flat, mats, label_names):
            ConfusionMatrixDisplay(mat, display_labels=["no", "yes"]).plot(ax=ax, colorbar=False)
            ax.set_title(_short(name, 22), fontsize=9)
        for ax in list(axes.flat)[len(mats):]:
            ax.axis("off")
    else:
        n = len(label_names)
        fig, ax = plt.subplots(figsize=(max(5, 0.7 * n + 3), max(4.5, 0.7 * n + 2.5)))
        ConfusionMatrixDisplay.from_predictions(
            y_true.reshape(len(y_true), -1)[:, 0], y_pred, labels=list(range(n)),
            display_labels=[_short(x, 18) for x in label_names], ax=ax, xticks_rotation=45, colorbar=False,
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_answer_confusion(matrix: Sequence[Sequence[int]], true_labels: Sequence[str], predicted_labels: Sequence[str],
                          path: Path, title: str) -> Path:
    """Counts of (true option, parsed answer) — the answer axis may carry an extra "(unparsed)" column."""
    plt = _pyplot()
    mat = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * mat.shape[1] + 3), max(4.5, 0.7 * mat.shape[0] + 2.5)))
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(mat.shape[1]), [_short(x, 18) for x in predicted_labels], rotation=45, ha="right")
    ax.set_yticks(range(mat.shape[0]), [_short(x, 18) for x in true_labels])
    ax.set_xlabel("answer (parsed)")
    ax.set_ylabel("true label")
    for (r, c), v in np.ndenumerate(mat):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > mat.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_metric_bars(table: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Grouped bars: one group per metric, one bar per arm (report-generation ablations)."""
    plt = _pyplot()
    arms = list(table)
    metrics = list(next(iter(table.values()))) if table else []
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metrics) * max(1, len(arms)) / 2 + 2), 4.5))
    for i, arm in enumerate(arms):
        ax.bar(np.arange(len(metrics)) + i * width - 0.4 + width / 2, [table[arm][m] for m in metrics], width,
               label=arm)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
