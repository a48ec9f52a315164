import numpy as np
import pytest

from keras_tfm.metrics import classification_metrics

# A 3-class example worked by hand. Rows are true classes, columns the
# predicted ones:
#            p0 p1 p2   support
#   t0    [[ 2, 1, 1],    4
#   t1     [ 1, 2, 0],    3
#   t2     [ 0, 0, 1]]    1
#   predicted 3  3  2
LABELS = [0, 0, 0, 0, 1, 1, 1, 2]
PREDICTIONS = [0, 0, 1, 2, 1, 1, 0, 2]


def test_hand_computed_three_class_example():
    results = classification_metrics(LABELS, PREDICTIONS, num_classes=3)
    assert results["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 1]]
    assert results["support"] == [4, 3, 1]
    assert results["count"] == 8
    np.testing.assert_allclose(results["accuracy"], 5 / 8)
    # Precision: diagonal over column sums; recall: over row sums.
    np.testing.assert_allclose(results["precision"], [2 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(results["recall"], [2 / 4, 2 / 3, 1 / 1])
    # F1 = 2 TP / (2 TP + FP + FN): 4/7, 4/6, 2/3.
    np.testing.assert_allclose(results["f1"], [4 / 7, 2 / 3, 2 / 3])
    np.testing.assert_allclose(results["macro_f1"], (4 / 7 + 4 / 3) / 3)


def test_class_neither_present_nor_predicted_is_left_out_of_macro_f1():
    # A fourth class with no examples and no predictions: its row and
    # column are zeros, its figures 0, and the macro F1 is unchanged.
    results = classification_metrics(LABELS, PREDICTIONS, num_classes=4)
    assert results["confusion_matrix"][3] == [0, 0, 0, 0]
    assert [row[3] for row in results["confusion_matrix"]] == [0, 0, 0, 0]
    assert results["f1"][3] == results["precision"][3] == 0.0
    np.testing.assert_allclose(results["macro_f1"], (4 / 7 + 4 / 3) / 3)


def test_class_present_but_never_predicted_counts_as_zero():
    # Class 1 is never predicted: precision 0/0 -> 0, recall 0, F1 0, and
    # it drags the macro mean down. Class 0: P 1/3, R 1, F1 1/2.
    results = classification_metrics([0, 1, 1], [0, 0, 0], num_classes=2)
    np.testing.assert_allclose(results["precision"], [1 / 3, 0.0])
    np.testing.assert_allclose(results["recall"], [1.0, 0.0])
    np.testing.assert_allclose(results["f1"], [0.5, 0.0])
    np.testing.assert_allclose(results["macro_f1"], 0.25)


def test_scores_are_reduced_by_argmax():
    scores = np.eye(3)[PREDICTIONS] * 2.0 - 1.0  # (8, 3), argmax = ids
    assert classification_metrics(LABELS, scores, 3) == (
        classification_metrics(LABELS, PREDICTIONS, 3)
    )


@pytest.mark.parametrize(
    "labels, predictions, message",
    [
        ([0, 1], [0], "2 labels but 1 predictions"),
        ([], [], "no examples"),
        ([0, 3], [0, 1], "label is outside"),
        ([0, 1], [0, -1], "prediction is outside"),
        ([0.5, 1], [0, 1], "integer"),
    ],
)
def test_bad_inputs_raise(labels, predictions, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(labels, predictions, num_classes=3)


def test_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    # Mostly right, and class 3 never predicted.
    predictions = np.where(rng.random(200) < 0.6, labels, 0)
    predictions[predictions == 3] = 2
    results = classification_metrics(labels, predictions, num_classes=4)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predictions, labels=range(4), zero_division=0
    )
    np.testing.assert_allclose(results["precision"], precision)
    np.testing.assert_allclose(results["recall"], recall)
    np.testing.assert_allclose(results["f1"], f1)
    np.testing.assert_allclose(
        results["macro_f1"],
        metrics.f1_score(labels, predictions, average="macro"),
    )
    assert results["confusion_matrix"] == metrics.confusion_matrix(
        labels, predictions, labels=range(4)
    ).tolist()
