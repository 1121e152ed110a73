"""`--unlabeled REF`: in-domain texts without labels, for the teacher to label (Tang et al.'s transfer set)."""

from __future__ import annotations

import gzip
from pathlib import Path

from ..data.labels import TEXT_COLUMN_CANDIDATES
from ..data.sources import _open_splits, _resolve


def load_unlabeled_texts(reference: str, text_column: str | None = None) -> list[str]:
    """Non-empty texts of a ``.txt`` file (one per line) or of a dataset's training split (never its test split)."""
    path = Path(reference)
    if path.is_file() and path.name.endswith((".txt", ".txt.gz")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    splits = _open_splits(_resolve(reference))
    if "train" not in splits:
        raise ValueError(f"--unlabeled {reference}: no training split to read texts from (it has: {', '.join(splits)})")
    train = splits["train"]
    columns = train.column_names
    column = text_column or next((c for c in TEXT_COLUMN_CANDIDATES if c in columns), None)
    if column is None or column not in columns:
        raise ValueError(
            f"--unlabeled {reference}: no text column among {columns}; name one of {TEXT_COLUMN_CANDIDATES}"
        )
    return [t.strip() for t in train[column] if isinstance(t, str) and t.strip()]
