"""Precision as an `evaluate` module shipped with hf_gru, so it loads by local path with no Hub access."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Precision = TP / (TP + FP), per class and then averaged."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    average (`str` or None, default "macro"): "macro" (unweighted mean over classes), "micro" (from global
        counts), "weighted" (mean weighted by each class's true count), "binary" (the `pos_label` class only) or
        None (one score per class, in `labels` order).
    labels (`list` of `int`, optional): classes to score; default: every class seen in references or predictions.
    pos_label (`int`, default 1): the positive class for average="binary".
    sample_weight (`list` of `float`, optional): per-example weights.
    zero_division (`float`, default 0.0): score of a class whose ratio is 0/0 (e.g. never predicted); no warning.
Returns:
    precision (`float`, or `list` of `float` when average=None).
Examples:
    >>> precision = evaluate.load("hf_gru/metrics/precision")
    >>> precision.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'precision': 0.8333333333333333}
"""

_SCORE = "precision"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Precision(evaluate.Metric):
    """Single-label precision (binary and multi-class) implemented with numpy (no scikit-learn dependency)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def _compute(
        self, predictions, references, average="macro", labels=None, pos_label=1, sample_weight=None, zero_division=0.0
    ):
        return {
            _SCORE: _score(_SCORE, predictions, references, average, labels, pos_label, sample_weight, zero_division)
        }


# --- shared by f1, precision and recall (kept identical: tests compare the three copies) ---
_AVERAGES = ("macro", "micro", "weighted", "binary", None)


def _score(kind, predictions, references, average, labels, pos_label, sample_weight, zero_division):
    """Per-class counts by bincount, then the ratio for `kind`; 0/0 gives `zero_division`, silently."""
    if average not in _AVERAGES:
        raise ValueError(f"average={average!r} is not supported; choose one of {_AVERAGES}")
    y_pred = np.asarray(predictions).reshape(-1)
    y_true = np.asarray(references).reshape(-1)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{y_pred.size} predictions for {y_true.size} references")
    weights = np.ones(y_true.shape, dtype=np.float64) if sample_weight is None else np.asarray(sample_weight, float)
    if weights.shape != y_true.shape:
        raise ValueError(f"sample_weight has {weights.size} entries for {y_true.size} examples")

    present = np.union1d(y_true, y_pred)
    if average == "binary":
        if present.size > 2 or (present.size == 2 and pos_label not in present):
            raise ValueError(
                f"average='binary' needs 2 classes including pos_label={pos_label!r}, found {present.tolist()}; "
                "use average='macro' or 'micro', or set pos_label"
            )
        labels = [pos_label]
    labels = present if labels is None else np.asarray(labels).reshape(-1)

    # Index every value (and every requested label) in one sorted class list, count per index, read out `labels`.
    classes = np.union1d(present, labels)
    inverse = np.searchsorted(classes, np.concatenate([y_true, y_pred]))
    t, p = inverse[: y_true.size], inverse[y_true.size :]
    hit = t == p
    tp_all = np.bincount(t[hit], weights=weights[hit], minlength=classes.size)
    true_all = np.bincount(t, weights=weights, minlength=classes.size)
    pred_all = np.bincount(p, weights=weights, minlength=classes.size)
    idx = np.searchsorted(classes, labels)
    tp, true, pred = tp_all[idx], true_all[idx], pred_all[idx]

    if average == "micro":
        tp, true, pred = tp.sum(keepdims=True), true.sum(keepdims=True), pred.sum(keepdims=True)
    numerator, denominator = {
        "precision": (tp, pred),
        "recall": (tp, true),
        "f1": (2 * tp, true + pred),
    }[kind]
    per_class = _divide(numerator, denominator, zero_division)

    if average is None:
        return per_class.tolist()
    if average == "weighted":
        total = true.sum()
        return float(np.sum(per_class * true) / total) if total > 0 else float(zero_division)
    return float(per_class.mean()) if per_class.size else float(zero_division)


def _divide(numerator, denominator, zero_division):
    out = np.full(np.shape(numerator), float(zero_division))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# --- end shared ---
