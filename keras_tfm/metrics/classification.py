"""Accuracy, per-class precision, recall and F1, and the confusion matrix.

Definitions are scikit-learn's (`precision_recall_fscore_support`,
`f1_score(average="macro")`, `confusion_matrix`), computed in numpy so
that keras-tfm does not depend on scikit-learn:

- a ratio whose denominator is 0 (precision of a class never predicted,
  recall of a class never present) is 0, scikit-learn's
  `zero_division` default;
- macro F1 is the unweighted mean of the per-class F1 over the classes
  present in the labels or the predictions; a class neither present nor
  predicted has no evidence either way and is left out of the mean
  (scikit-learn's default `labels=None`), though it keeps its row (of
  zeros) in the per-class lists and the confusion matrix.
"""

import numpy as np


def classification_metrics(labels, predictions, num_classes):
    """Classification figures of predicted against true class ids.

    Args:
        labels: int array `(num_examples,)`. The true class ids.
        predictions: int array `(num_examples,)` of predicted class ids, or
            scores (logits or probabilities) `(num_examples, num_classes)`,
            whose argmax is the prediction.
        num_classes: int. Class ids are `0 ... num_classes - 1`.

    Returns:
        A dict of plain Python numbers and lists: `accuracy`, `macro_f1`,
        `precision`, `recall`, `f1` and `support` (per class, lists of
        `num_classes`), `confusion_matrix` (`num_classes` rows of
        `num_classes` counts; row = true class, column = predicted class)
        and `count` (examples).

    Raises:
        ValueError: lengths differ, there are no examples, or an id is
            outside `0 ... num_classes - 1`.
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = np.argmax(predictions, axis=-1)
    labels = labels.reshape(-1)
    predictions = predictions.reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"{labels.size} labels but {predictions.size} predictions"
        )
    if labels.size == 0:
        raise ValueError("no examples to compute classification metrics on")
    for name, ids in (("label", labels), ("prediction", predictions)):
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name}s must be integer class ids")
        if ids.min() < 0 or ids.max() >= num_classes:
            raise ValueError(
                f"a {name} is outside 0 ... {num_classes - 1}: got "
                f"{ids.min()} ... {ids.max()}"
            )

    # confusion[t, p]: examples of true class t predicted as p.
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)  # (num_classes,) per column
    support = confusion.sum(axis=1)  # (num_classes,) per row
    precision = _ratio(true_positives, predicted)
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    seen = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(true_positives.sum() / labels.size),
        "macro_f1": float(f1[seen].mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "confusion_matrix": confusion.tolist(),
        "count": int(labels.size),
    }


def _ratio(numerator, denominator):
    # numerator / denominator, 0 where the denominator is 0.
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)
