import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from gsco.metrics.classification import accuracy, auc, classification_metrics, per_class_auc, predict_labels


def test_binary_uses_the_positive_class_probability_strictly_above_half():
    y = np.array([0, 1, 1, 0, 1, 0])
    p1 = np.array([0.2, 0.9, 0.5, 0.51, 0.7, 0.1])  # 0.5 is not > 0.5: predicted negative
    score = np.stack([1 - p1, p1], axis=1)
    assert predict_labels(score, "binary-class").tolist() == [0, 1, 0, 1, 1, 0]
    assert accuracy(y[:, None], score, "binary-class") == pytest.approx(4 / 6)
    assert auc(y[:, None], score, "binary-class") == pytest.approx(roc_auc_score(y, p1))
    # hand count: positives {0.9, 0.5, 0.7} vs negatives {0.2, 0.51, 0.1}: 8 of 9 pairs ordered
    assert auc(y, score, "binary-class") == pytest.approx(8 / 9)


@pytest.mark.parametrize("task", ["multi-class", "ordinal-regression"])
def test_multiclass_and_ordinal_argmax_and_mean_one_vs_rest(task):
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    score = rng.dirichlet(np.ones(3), size=len(y))
    assert accuracy(y[:, None], score, task) == pytest.approx(accuracy_score(y, score.argmax(1)))
    expected = [roc_auc_score((y == c).astype(int), score[:, c]) for c in range(3)]
    assert per_class_auc(y, score, task) == pytest.approx(expected)
    assert auc(y[:, None], score, task) == pytest.approx(np.mean(expected))
    assert auc(y, score, task) == pytest.approx(roc_auc_score(y, score, multi_class="ovr", average="macro"))


def test_multilabel_means_over_labels():
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    score = np.array([[0.8, 0.1, 0.6], [0.3, 0.4, 0.9], [0.6, 0.7, 0.5], [0.2, 0.2, 0.1]])
    pred = (score > 0.5).astype(int)  # medmnist's evaluator: y_pre = y_score > threshold
    assert accuracy(y, score, "multi-label, binary-class") == pytest.approx(
        np.mean([accuracy_score(y[:, i], pred[:, i]) for i in range(3)]))
    # the 0.5 at [2, 2] is not a prediction, so label 2 is right on all four images
    assert accuracy(y, score, "multi-label, binary-class") == pytest.approx((4 / 4 + 3 / 4 + 4 / 4) / 3)
    assert auc(y, score, "multi-label, binary-class") == pytest.approx(
        roc_auc_score(y, score, average="macro"))


def test_absent_class_gives_nan_not_a_crash():
    y = np.array([0, 0, 1, 1])
    score = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    out = classification_metrics(y, score, "multi-class")
    assert out["ACC"] == 1.0 and np.isnan(out["per_class_AUC"][2]) and np.isnan(out["AUC"])
