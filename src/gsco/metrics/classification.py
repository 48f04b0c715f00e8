"""Classification metrics exactly as the MedMNIST evaluator defines them, per task type.

- binary-class: ACC with the positive-class (last column) probability > 0.5; AUC on that probability.
- multi-class / ordinal-regression: ACC of the argmax; AUC = mean one-vs-rest AUC over classes.
- multi-label, binary-class: ACC and AUC are means over labels; a label is predicted when its score is > 0.5
  (strictly, as ``y_score > threshold`` in medmnist's evaluator: a kNN vote of exactly half is not a prediction).

``y_score`` holds probabilities (softmax, or sigmoid for multi-label), shaped (N, C).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

MULTI_LABEL = "multi-label, binary-class"


def _single(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    return y.reshape(len(y), -1)[:, 0] if y.ndim > 1 else y


def predict_labels(y_score: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions the way ACC counts them: (N,) class indices, or (N, L) 0/1 for multi-label."""
    y_score = np.asarray(y_score)
    if task == MULTI_LABEL:
        return (y_score > threshold).astype(np.int64)
    if task == "binary-class":
        return (y_score[:, -1] > threshold).astype(np.int64)
    return np.argmax(y_score, axis=1).astype(np.int64)


def accuracy(y_true: np.ndarray, y_score: np.ndarray, task: str, threshold: float = 0.5) -> float:
    y_pred = predict_labels(y_score, task, threshold)
    if task == MULTI_LABEL:
        y_true = np.asarray(y_true)
        return float(np.mean([accuracy_score(y_true[:, i], y_pred[:, i]) for i in range(y_true.shape[1])]))
    return float(accuracy_score(_single(y_true), y_pred))


def _safe_auc(y_binary: np.ndarray, score: np.ndarray) -> float:
    """AUC, or NaN when only one class is present (sklearn raises there)."""
    if len(np.unique(y_binary)) < 2:
        return float("nan")
    return float(roc_auc_score(y_binary, score))


def per_class_auc(y_true: np.ndarray, y_score: np.ndarray, task: str) -> list[float]:
    """One-vs-rest AUC of every class (multi-label: of every label). NaN where a class is absent."""
    y_score = np.asarray(y_score)
    if task == MULTI_LABEL:
        y_true = np.asarray(y_true)
        return [_safe_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])]
    y = _single(y_true)
    return [_safe_auc((y == i).astype(np.int64), y_score[:, i]) for i in range(y_score.shape[1])]


def auc(y_true: np.ndarray, y_score: np.ndarray, task: str) -> float:
    y_score = np.asarray(y_score)
    if task == "binary-class":
        return _safe_auc(_single(y_true), y_score[:, -1])
    return float(np.mean(per_class_auc(y_true, y_score, task)))


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str) -> dict:
    return {
        "ACC": accuracy(y_true, y_score, task),
        "AUC": auc(y_true, y_score, task),
        "per_class_AUC": per_class_auc(y_true, y_score, task),
    }
