"""Accuracy against batch throughput, one panel per text length, every timed system that has an accuracy, and the
Pareto frontier (no other system is both faster and more accurate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKERS = {"hf_gru": "o", "student": "*", "peer": "s", "transformer": "^"}


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points that no other point beats on both throughput and accuracy, fastest first."""
    frontier, best = [], float("-inf")
    for point in sorted(points, key=lambda p: (-p["texts_per_s"], -p["accuracy"])):
        if point["accuracy"] > best:
            frontier.append(point)
            best = point["accuracy"]
    return frontier


def plot_points(results: dict[str, Any], part: str) -> list[dict[str, Any]]:
    """(system, texts/s, accuracy, kind) for every timed system of `part` with an accuracy measured in this run, or
    (MiniLM-L6 fine-tuned) read from accuracy.py's results."""
    block = results["inference"][part]
    speed, described = block["batch32"]["systems"], block["systems"]
    points = []
    for key, accuracy in block.get("accuracy", {}).items():
        if key in speed and accuracy is not None:
            info = described[key]
            points.append({"key": key, "label": info["name"], "kind": info["kind"], "accuracy": accuracy,
                           "texts_per_s": speed[key]["texts_per_s"]})  # fmt: skip
    return points


def plot_accuracy_vs_speed(results: dict[str, Any], path: Path, batch_size: int) -> dict[str, Any]:
    """Draw the plot to `path`; returns the plotted points and the frontier per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("short", "long") if results.get("inference", {}).get(p, {}).get("batch32")]
    fig, axes = plt.subplots(1, max(1, len(parts)), figsize=(7 * max(1, len(parts)), 6), squeeze=False)
    plotted: dict[str, Any] = {}
    for ax, part in zip(axes[0], parts):
        block = results["inference"][part]
        dataset, speed = block["dataset"], block["batch32"]["systems"]
        points = plot_points(results, part)
        frontier = pareto(points)
        on_frontier = {p["key"] for p in frontier}
        for index, point in enumerate(points):
            color = plt.cm.tab20(index % 20) if len(points) > 10 else f"C{index}"
            edge = "black" if point["key"] in on_frontier else color
            ax.scatter(point["texts_per_s"], 100 * point["accuracy"], marker=MARKERS.get(point["kind"], "o"), s=80,
                       color=color, edgecolors=edge, linewidths=1.5, label=point["label"], zorder=3)  # fmt: skip
        if frontier:
            xs = [p["texts_per_s"] for p in frontier]
            ys = [100 * p["accuracy"] for p in frontier]
            ax.step(xs, ys, where="post", color="black", linewidth=1, linestyle=":", label="Pareto frontier", zorder=2)
        if "distilbert" in speed:
            x = speed["distilbert"]["texts_per_s"]
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
            ax.text(x, 0.97, " DistilBERT-sized\n (random weights,\n speed only)", transform=ax.get_xaxis_transform(),
                    fontsize=7, color="grey", va="top")  # fmt: skip
        xs = [s["texts_per_s"] for s in speed.values()]
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
        ax.set_xlabel(f"batch-{batch_size} texts/s on the CPU (tokenizer included, log scale)")
        ax.set_ylabel(f"{dataset} test accuracy (%)")
        ax.set_title(f"{dataset} ({part} texts); black edge: on the Pareto frontier")
        ax.grid(True, which="both", alpha=0.3)
        if points:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
        plotted[dataset] = {"points": points, "frontier": [p["key"] for p in frontier]}
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return plotted
