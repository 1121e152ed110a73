"""`evaluate` metric modules shipped inside hf_gru, and the `compute_metrics` factory for the HF `Trainer`.

`evaluate.load("accuracy")` fetches the script from the Hub; these modules (`modules/<name>.py`) load by local path
instead, so training and evaluation work offline (HF_HUB_OFFLINE=1) and do not change when the Hub copies do. They
share one scoring implementation, `modules/_scoring.py`, which `evaluate` copies along with each module it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import evaluate
import numpy as np

from ..configuration_gru import PROBLEM_TYPES

__all__ = ["METRICS", "build_compute_metrics", "load_metric", "metric_path"]

_MODULES = Path(__file__).resolve().parent / "modules"
METRICS = ("accuracy", "f1", "precision", "recall", "multilabel")
_IGNORE_INDEX = -100  # label value the Trainer uses for padding; never a real class


def metric_path(name: str) -> Path:
    """The script of a shipped module, the path `evaluate.load` takes (it copies `_scoring.py` along with it)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; hf_gru ships: {', '.join(METRICS)}")
    return _MODULES / f"{name}.py"


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load a shipped metric by local path; no Hub call is made, whatever HF_HUB_OFFLINE says.

    Results are kept in memory by default (no cache files or locks under HF_HOME); pass ``keep_in_memory=False``
    (required with ``num_process > 1``) to get evaluate's on-disk, multi-process behaviour.
    """
    path = metric_path(name)
    if kwargs.get("num_process", 1) == 1:
        kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(path), **kwargs)


def build_compute_metrics(
    problem_type: str = "single_label_classification", threshold: float = 0.5
) -> Callable[[Any], dict[str, float]]:
    """The `compute_metrics` function for `transformers.Trainer`, with its modules loaded once, here.

    The returned function takes an `EvalPrediction` (anything with ``.predictions`` and ``.label_ids``) or a
    ``(predictions, labels)`` pair; a tuple of predictions (logits plus hidden states) is reduced to its first
    element. Single-label: argmax of the logits (already-argmaxed 1-D class ids are accepted too), giving
    ``accuracy``, ``f1_macro``, ``precision_macro``, ``recall_macro``. Multi-label: a label is on when
    ``sigmoid(logit) > threshold``, giving ``f1_micro``, ``f1_macro``, ``subset_accuracy``. Regression: ``mse``
    and ``mae``. Examples labelled -100 (the Trainer's ignore index) are skipped for single-label.

    Scores come from each module's `_compute` (the method an `evaluate` module defines its math in), not from
    `compute`: the public path encodes every value through Arrow in Python (~0.5 s per module per 50k examples)
    to support cross-process accumulation, which the Trainer has already done by gathering the predictions.
    """
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r}; choose one of {', '.join(PROBLEM_TYPES)}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold is a probability cut-off and must lie strictly between 0 and 1, got {threshold}")

    if problem_type == "single_label_classification":
        accuracy, f1, precision, recall = (load_metric(n) for n in ("accuracy", "f1", "precision", "recall"))

        def single_label(eval_pred: Any) -> dict[str, float]:
            logits, labels = _unpack(eval_pred)
            preds = _class_ids(logits)
            labels = labels.reshape(-1).astype(np.int64)
            if preds.shape != labels.shape:
                raise ValueError(f"{preds.size} predictions for {labels.size} labels")
            keep = labels != _IGNORE_INDEX
            preds, labels = preds[keep], labels[keep]
            scores = accuracy._compute(predictions=preds, references=labels)
            for name, module in (("f1", f1), ("precision", precision), ("recall", recall)):
                scores[f"{name}_macro"] = module._compute(predictions=preds, references=labels, average="macro")[name]
            return scores

        return single_label

    if problem_type == "multi_label_classification":
        multilabel = load_metric("multilabel")
        # sigmoid(x) > t  <=>  x > logit(t): compare logits directly, no overflow in exp().
        cut = float(np.log(threshold / (1.0 - threshold)))

        def multi_label(eval_pred: Any) -> dict[str, float]:
            logits, labels = _unpack(eval_pred)
            if logits.ndim != 2 or logits.shape != labels.shape:
                raise ValueError(
                    f"multi-label needs (n, n_labels) logits and labels, got {logits.shape}, {labels.shape}"
                )
            preds = (logits > cut).astype(np.int32)
            refs = (labels >= 0.5).astype(np.int32)  # BCE labels arrive as floats
            scores = multilabel._compute(predictions=preds, references=refs)
            return {key: scores[key] for key in ("f1_micro", "f1_macro", "subset_accuracy")}

        return multi_label

    def regression(eval_pred: Any) -> dict[str, float]:
        preds, labels = _unpack(eval_pred)
        preds, labels = preds.astype(np.float64), labels.astype(np.float64)
        if preds.ndim == labels.ndim + 1 and preds.shape[-1] == 1:
            preds = preds[..., 0]  # (n, 1) head output against (n,) targets
        if preds.shape != labels.shape:
            raise ValueError(f"regression predictions have shape {preds.shape} but labels {labels.shape}")
        error = preds - labels
        return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}

    return regression


def _unpack(eval_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) as arrays from an EvalPrediction-like object, a mapping or a pair."""
    if hasattr(eval_pred, "predictions") and hasattr(eval_pred, "label_ids"):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
    elif isinstance(eval_pred, Mapping):
        predictions, labels = eval_pred["predictions"], eval_pred.get("label_ids", eval_pred.get("labels"))
    else:
        predictions, labels = eval_pred
    predictions, labels = _first(predictions), _first(labels)
    if labels is None:
        raise ValueError("compute_metrics got no labels: the eval dataset needs a 'labels' column")
    return np.asarray(predictions), np.asarray(labels)


def _first(value: Any) -> Any:
    # The Trainer hands over a tuple when the model returns several outputs (logits first) or several label columns.
    while isinstance(value, tuple) and value:
        value = value[0]
    return value


def _class_ids(predictions: np.ndarray) -> np.ndarray:
    if predictions.ndim >= 2:
        return predictions.argmax(axis=-1).reshape(-1).astype(np.int64)
    if np.issubdtype(predictions.dtype, np.integer):
        return predictions.astype(np.int64)  # preprocess_logits_for_metrics already took the argmax
    raise ValueError(
        f"single-label predictions must be (n, num_labels) logits or integer class ids, got {predictions.dtype} "
        f"of shape {predictions.shape}"
    )
