"""Training curves and confusion matrices as PNG files, for the output directory and the model card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(log_history: Sequence[dict], path: str | Path, metric: str = "eval_accuracy") -> Path | None:
    """Training and validation loss against steps, and the validation `metric` beside them; None if nothing logged."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    scores = [(e["step"], e[metric]) for e in log_history if metric in e]
    if not train and not evals:
        return None
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        loss_axis.plot(*zip(*train), label="train loss", color="tab:blue", alpha=0.8)
    if evals:
        loss_axis.plot(*zip(*evals), "o-", label="validation loss", color="tab:orange")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    loss_axis.legend()
    loss_axis.grid(alpha=0.3)
    if scores:
        metric_axis.plot(*zip(*scores), "o-", color="tab:green")
        metric_axis.set_ylabel(metric.removeprefix("eval_").replace("_", " "))
    else:
        metric_axis.text(0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=metric_axis.transAxes)
    metric_axis.set_xlabel("step")
    metric_axis.set_title("validation")
    metric_axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> np.ndarray:
    """Counts `[true, predicted]`."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def plot_confusion_matrix(
    labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix with the raw counts written in the cells (counts stay readable for 20 labels)."""
    matrix = confusion_matrix(labels, predictions, len(label_names))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(label_names) + 2.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(label_names))
    axis.set_xticks(ticks, labels=list(label_names), rotation=45, ha="right")
    axis.set_yticks(ticks, labels=list(label_names))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if title:
        axis.set_title(title)
    if len(label_names) <= 25:
        for i in ticks:
            for j in ticks:
                color = "white" if rates[i, j] > 0.5 else "black"
                axis.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
