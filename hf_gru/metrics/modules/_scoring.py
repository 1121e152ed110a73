"""The scoring shared by the `evaluate` modules in this folder: one implementation of accuracy, F1, precision, recall.

Each module imports it as ``from ._scoring import ...``; `evaluate.load(<path to a module>)` copies such a local
import next to its copy of the script, so every module loads by path, offline, with this file as its only helper.
"""

import datasets
import evaluate
import numpy as np

AVERAGES = ("macro", "micro", "weighted", "binary", None)

CLASS_ID_ARGS = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    average (`str` or None, default "macro"): "macro" (unweighted mean over classes), "micro" (from global
        counts), "weighted" (mean weighted by each class's true count), "binary" (the `pos_label` class only) or
        None (one score per class, in `labels` order).
    labels (`list` of `int`, optional): classes to score; default: every class seen in references or predictions.
    pos_label (`int`, default 1): the positive class for average="binary".
    sample_weight (`list` of `float`, optional): per-example weights.
    zero_division (`float`, default 0.0): score of a class whose ratio is 0/0 ({zero_case}); no warning.
Returns:
    {name} (`float`, or `list` of `float` when average=None).
Examples:
    >>> {name} = evaluate.load("hf_gru/metrics/modules/{name}.py")
    >>> {name}.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {{'{name}': {example}}}
"""


def class_id_info(description: str, kwargs_description: str) -> evaluate.MetricInfo:
    """The `MetricInfo` of a single-label module: one int64 class id per prediction and per reference."""
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=kwargs_description,
        features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        format="numpy",
    )


def class_ids(predictions, references, sample_weight=None):
    """(y_pred, y_true, weights) as flat arrays of one length; a length mismatch is an error, not a broadcast."""
    y_pred = np.asarray(predictions).reshape(-1)
    y_true = np.asarray(references).reshape(-1)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{y_pred.size} predictions for {y_true.size} references")
    weights = np.ones(y_true.shape, dtype=np.float64) if sample_weight is None else np.asarray(sample_weight, float)
    if weights.shape != y_true.shape:
        raise ValueError(f"sample_weight has {weights.size} entries for {y_true.size} examples")
    return y_pred, y_true, weights


def accuracy(predictions, references, normalize=True, sample_weight=None):
    """Fraction (or weighted count) correct; 0.0 for an empty or zero-weight input rather than NaN."""
    y_pred, y_true, weights = class_ids(predictions, references, sample_weight)
    correct = float(np.sum(weights * (y_true == y_pred)))
    if not normalize:
        return correct
    total = float(np.sum(weights))
    return correct / total if total > 0 else 0.0


def prf(
    kind, predictions, references, average="macro", labels=None, pos_label=1, sample_weight=None, zero_division=0.0
):
    """Precision, recall or F1 (`kind`) from per-class counts by bincount; 0/0 gives `zero_division`, silently."""
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is not supported; choose one of {AVERAGES}")
    y_pred, y_true, weights = class_ids(predictions, references, sample_weight)

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
    per_class = divide(*ratio(kind, tp, true, pred), zero_division)

    if average is None:
        return per_class.tolist()
    if average == "weighted":
        total = true.sum()
        return float(np.sum(per_class * true) / total) if total > 0 else float(zero_division)
    return float(per_class.mean()) if per_class.size else float(zero_division)


def ratio(kind, tp, true, pred):
    """(numerator, denominator) of `kind` from true-positive, true and predicted counts."""
    if kind == "precision":
        return tp, pred
    if kind == "recall":
        return tp, true
    if kind == "f1":
        return 2 * tp, true + pred
    raise ValueError(f"unknown score {kind!r}; choose f1, precision or recall")


def divide(numerator, denominator, zero_division):
    """numerator / denominator elementwise, `zero_division` where the denominator is 0 (no warning)."""
    out = np.full(np.shape(numerator), float(zero_division))
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) != 0)
    return out
