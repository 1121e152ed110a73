"""Multi-label F1 and subset accuracy as an `evaluate` module shipped with hf_gru (loads with no Hub access)."""

import datasets
import evaluate
import numpy as np

from ._scoring import divide, ratio

_DESCRIPTION = (
    "Scores for multi-label classification on 0/1 indicator matrices (one row per example, one column per label): "
    "micro F1 (global counts, dominated by frequent labels), macro F1 (unweighted mean over labels, so rare labels "
    "count as much), the matching precision and recall, and subset accuracy (the share of rows predicted exactly)."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): predicted 0/1 indicators, shape (n_examples, n_labels); scores or
        probabilities are rejected (threshold them first) rather than silently truncated.
    references (`list` of `list` of `int`): true 0/1 indicators, same shape.
    zero_division (`float`, default 0.0): score of a label whose ratio is 0/0 (never true and never predicted).
Returns:
    f1_micro, f1_macro, precision_micro, precision_macro, recall_micro, recall_macro, subset_accuracy (`float`).
Examples:
    >>> multilabel = evaluate.load("hf_gru/metrics/modules/multilabel.py")
    >>> multilabel.compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])["subset_accuracy"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Multilabel(evaluate.Metric):
    """Multi-label scores implemented with numpy (no scikit-learn dependency)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            # float, not int: an int column would silently truncate probabilities (0.7 -> 0) before _compute sees them
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, zero_division=0.0):
        y_pred = _indicator(predictions, "predictions")
        y_true = _indicator(references, "references")
        if y_pred.shape != y_true.shape:
            raise ValueError(f"predictions have shape {y_pred.shape} but references {y_true.shape}")

        tp = np.sum(y_true & y_pred, axis=0).astype(np.float64)
        true = np.sum(y_true, axis=0).astype(np.float64)
        pred = np.sum(y_pred, axis=0).astype(np.float64)
        scores = {}
        for name in ("f1", "precision", "recall"):
            numerator, denominator = ratio(name, tp, true, pred)
            scores[f"{name}_micro"] = float(divide(numerator.sum(), denominator.sum(), zero_division))
            per_label = divide(numerator, denominator, zero_division)
            scores[f"{name}_macro"] = float(per_label.mean()) if per_label.size else float(zero_division)
        exact = np.all(y_true == y_pred, axis=1)
        scores["subset_accuracy"] = float(exact.mean()) if exact.size else 0.0
        return scores


def _indicator(rows, name):
    """Rows as a boolean (n, L) matrix; ragged rows or values other than 0/1 are errors, not silent casts."""
    try:
        matrix = np.asarray(rows)
    except ValueError as err:  # ragged rows
        raise ValueError(f"{name} must be a rectangular 0/1 matrix: {err}") from None
    if matrix.size == 0:
        return np.zeros((len(matrix), 0), dtype=bool)
    if matrix.ndim != 2 or matrix.dtype == object:
        raise ValueError(f"{name} must be a rectangular 0/1 matrix (n_examples, n_labels), got shape {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (threshold scores before computing)")
    return matrix.astype(bool)
