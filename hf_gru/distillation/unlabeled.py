"""`--unlabeled REF`: in-domain texts without labels, for the teacher to label (Tang et al.'s transfer set)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..data import iter_input_records
from ..data.labels import TEXT_COLUMN_CANDIDATES
from ..data.sources import _open_splits, _resolve

logger = logging.getLogger(__name__)


def load_unlabeled_texts(reference: str, text_column: str | None = None) -> list[str]:
    """Non-empty texts of a file (read as `hf-gru predict` reads its input: ``.txt`` one per line, ``.jsonl``,
    ``.csv``...) or of a dataset's training split (never its test split).

    Errors name the option and, for a file that cannot be read, the file and line; no texts at all is a warning.
    """
    try:
        texts = _read(reference, text_column)
    except (ValueError, OSError) as error:
        raise ValueError(f"--unlabeled {reference}: {error}") from error
    if not texts:
        logger.warning(
            "--unlabeled %s holds no texts (it is empty or has only blank lines): the teacher labels the training "
            "texts (and their augmented copies) only",
            reference,
        )
    return texts


def _read(reference: str, text_column: str | None) -> list[str]:
    if Path(reference).expanduser().is_file():
        _, records = iter_input_records(Path(reference).expanduser(), text_column=text_column)
        return [text.strip() for _, text in records if text is not None and text.strip()]
    splits = _open_splits(_resolve(reference))
    if "train" not in splits:
        raise ValueError(f"no training split to read texts from (it has: {', '.join(splits)})")
    train = splits["train"]
    columns = train.column_names
    column = text_column or next((c for c in TEXT_COLUMN_CANDIDATES if c in columns), None)
    if column is None or column not in columns:
        raise ValueError(f"no text column among {columns}; name one of {TEXT_COLUMN_CANDIDATES}")
    return [t.strip() for t in train[column] if isinstance(t, str) and t.strip()]
