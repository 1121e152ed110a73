"""Accuracy as an `evaluate` module shipped with hf_gru, so it loads by local path with no Hub access."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction (or count) of predictions equal to the references: (TP + TN) / N, weighted if asked."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    normalize (`bool`, default True): return the fraction correct; False returns the (weighted) count correct.
    sample_weight (`list` of `float`, optional): per-example weights.
Returns:
    accuracy (`float`): 0.0 for an empty (or zero-weight) input rather than NaN.
Examples:
    >>> accuracy = evaluate.load("hf_gru/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Single-label accuracy implemented with numpy (no scikit-learn dependency)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        y_pred = np.asarray(predictions).reshape(-1)
        y_true = np.asarray(references).reshape(-1)
        weights = np.ones(y_true.shape, dtype=np.float64) if sample_weight is None else np.asarray(sample_weight, float)
        if weights.shape != y_true.shape:
            raise ValueError(f"sample_weight has {weights.size} entries for {y_true.size} examples")
        correct = float(np.sum(weights * (y_true == y_pred)))
        if not normalize:
            return {"accuracy": correct}
        total = float(np.sum(weights))
        return {"accuracy": correct / total if total > 0 else 0.0}
