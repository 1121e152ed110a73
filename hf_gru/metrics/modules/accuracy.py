"""Accuracy as an `evaluate` module shipped with hf_gru: loads by local path, offline; the math is in `_scoring.py`."""

import evaluate

from ._scoring import accuracy, class_id_info

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
    >>> accuracy = evaluate.load("hf_gru/metrics/modules/accuracy.py")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Single-label accuracy implemented with numpy (no scikit-learn dependency)."""

    def _info(self) -> evaluate.MetricInfo:
        return class_id_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": accuracy(predictions, references, normalize=normalize, sample_weight=sample_weight)}
