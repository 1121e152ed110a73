"""The raw multi-label and regression splits as arrays, and a validation split carved where none is published.

`label_peers.py` reads the shared data with this, independent of hf_gru's own data code: a multi-label row's `labels`
list becomes a multi-hot row over train's sorted label names, a regression row's `label` a float. Carving keeps every
label's share close in both folds: iterative stratification (Sechidis et al. 2011) for multi-label, the same over
one-hot value deciles for regression.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from peers import SEED  # the seed every peer uses


def iterative_stratified_split(
    targets: np.ndarray, fraction: float = 0.1, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with about `fraction` of the rows in validation and every label's share close to
    its share overall: iterative stratification (Sechidis, Tsoumakas, Vlahavas 2011, Algorithm 1).

    The rarest label still to place goes first: each of its rows joins the fold that most wants that label (then the
    one that most wants rows; then a seeded coin), so rare labels, which a random split strands, land in both folds.
    Rows with no label fill what each fold still wants."""
    targets = np.asarray(targets).astype(bool)
    if not 0 < fraction < 1 or len(targets) < 2:
        raise ValueError(f"cannot carve {fraction} of {len(targets)} rows: pass 0 < fraction < 1 and two rows or more")
    rng = np.random.default_rng(seed)
    shares = np.array([1 - fraction, fraction])
    wanted_rows = shares * len(targets)  # fold j still wants this many rows ...
    wanted = np.outer(shares, targets.sum(axis=0))  # ... and this many of label l
    fold = np.full(len(targets), -1)
    left = targets.sum(axis=0)
    order = rng.permutation(len(targets))
    while left.any():
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(left.dtype).max)))
        for row in order[(fold[order] < 0) & targets[order, label]]:
            keys = np.stack([wanted[:, label], wanted_rows, rng.random(2)])
            j = int(np.lexsort(keys[::-1])[-1])  # the most wanted label first, then rows, then the coin
            fold[row] = j
            wanted[j, targets[row]] -= 1
            wanted_rows[j] -= 1
            left[targets[row]] -= 1
    for row in order[fold[order] < 0]:  # untagged rows
        j = int(np.lexsort(np.stack([wanted_rows, rng.random(2)])[::-1])[-1])
        fold[row] = j
        wanted_rows[j] -= 1
    return np.flatnonzero(fold == 0), np.flatnonzero(fold == 1)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_dataset(dataset_dir: Path, fraction: float = 0.1) -> dict[str, Any]:
    """The raw splits as arrays: multi-label (`labels` lists → multi-hot over train's sorted label names; a test label
    unseen in train is warned about and ignored) or regression (a float `label`). A missing validation split is carved
    from train: iterative stratification for multi-label, quantile bins of the value for regression."""
    raw = {split: read_rows(dataset_dir / f"{split}.jsonl.gz") for split in ("train", "validation", "test")
           if (dataset_dir / f"{split}.jsonl.gz").is_file()}  # fmt: skip
    if "train" not in raw or "test" not in raw:
        raise FileNotFoundError(f"{dataset_dir} needs train.jsonl.gz and test.jsonl.gz")
    multilabel = isinstance(raw["train"][0].get("labels"), list)
    names = sorted({name for row in raw["train"] for name in row["labels"]}) if multilabel else []
    column = {name: j for j, name in enumerate(names)}
    splits = {}
    for split, rows in raw.items():
        texts = [row["text"] for row in rows]
        if multilabel:
            targets = np.zeros((len(rows), len(names)), dtype=np.int8)
            unseen = 0
            for i, row in enumerate(rows):
                for name in row["labels"]:
                    if name in column:
                        targets[i, column[name]] = 1
                    else:
                        unseen += 1
            if unseen:
                print(f"warning: {unseen} {split} labels are not in train's label set; ignored", file=sys.stderr)
        else:
            targets = np.asarray([float(row["label"]) for row in rows])
        splits[split] = (texts, targets)
    carved = "validation" not in splits
    if carved:
        texts, targets = splits["train"]
        strata = targets if multilabel else _quantile_bins(targets)
        keep, held = iterative_stratified_split(strata, fraction)
        splits["train"] = ([texts[i] for i in keep], targets[keep])
        splits["validation"] = ([texts[i] for i in held], targets[held])
    return {"splits": splits, "labels": names, "problem_type": "multi_label_classification" if multilabel
            else "regression", "validation_carved": carved}  # fmt: skip


def _quantile_bins(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """One-hot deciles of `values`: regression's strata for the same carving."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.eye(bins, dtype=np.int8)[np.searchsorted(edges, values, side="right")]
