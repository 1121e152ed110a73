"""Predicting files and evaluating datasets with a saved model, on a backend from `hf_gru.backends`.

`hf-gru predict` streams any input file to JSON Lines with flat memory and writes its output atomically;
`hf-gru evaluate` scores one split of any dataset reference. `classify` and `predict_logits` do the same for a model
and tokenizer already loaded in Python.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .backends import Classifier, Prediction, TorchClassifier, check_positive, load_backend

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- functions over (model, tokenizer)


def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int | None = None,
) -> np.ndarray:
    """Logits `(len(texts), num_labels)` in input order, with the torch backend on an already loaded model."""
    return TorchClassifier(model, tokenizer, max_length).predict_logits(texts, batch_size=batch_size)


def classify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str | None],
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    chunk_size: int = 2048,
) -> Iterator[Prediction]:
    """`Classifier.classify` with the torch backend on an already loaded model."""
    backend = TorchClassifier(model, tokenizer, max_length)
    return backend.classify(texts, batch_size=batch_size, chunk_size=chunk_size)


# ------------------------------------------------------------------------------------------------- files


def read_input(path: str | Path, text_column: str | None = None) -> Iterator[tuple[int, str | None]]:
    """(1-based line or row number, text or None for a blank) from any file the data readers know, by extension."""
    from .data import iter_input_records

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--input {path} does not exist or is not a file")
    format_name, records = iter_input_records(path, text_column=text_column)
    logger.info("reading %s as %s", path, format_name)
    return records


def predict_records(
    classifier: Classifier, input_path: str | Path, *, batch_size: int = 64, text_column: str | None = None
) -> Iterator[dict[str, Any]]:
    """`{line, text, label, score}` for each input record, streamed with flat memory: what `predict_file` writes,
    for writers of other formats (`hf-gru predict --engine ray` shards). The input is checked before this returns."""
    check_positive(batch_size, "--batch-size")
    records = read_input(input_path, text_column)
    numbers: deque[int] = deque()  # line numbers of the records read ahead, consumed in order: memory stays flat

    def texts() -> Iterator[str | None]:
        for number, text in records:
            numbers.append(number)
            yield text

    def predictions() -> Iterator[dict[str, Any]]:
        for prediction in classifier.classify(texts(), batch_size=batch_size):
            yield {"line": numbers.popleft(), **prediction_record(prediction)}

    return predictions()


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: IO[str],
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    device: str | None = None,
    progress: bool = True,
    backend: str | None = None,
    threads: int | None = None,
    text_column: str | None = None,
    classifier: Classifier | None = None,
) -> int:
    """Writes one JSON line `{line, text, label, score}` per input record to `output`; returns the count.

    `line` is the record's 1-based line (row) number in the input; a blank record gets `label` and `score` null.
    """
    check_positive(batch_size, "--batch-size")
    if classifier is None:
        classifier = load_backend(model_dir, backend=backend, threads=threads, device=device, max_length=max_length)
    records = predict_records(classifier, input_path, batch_size=batch_size, text_column=text_column)
    count = 0
    with tqdm(desc="predict", unit=" texts", disable=not progress) as bar:
        for record in records:
            output.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
            bar.update()
    return count


def prediction_record(prediction: Prediction) -> dict[str, Any]:
    """What predict writes for one text: the one mapping every output (JSON Lines, Ray columns, datatrove
    metadata) takes its fields from."""
    return {"text": prediction.text, "label": prediction.label, "score": prediction.score}


def write_predictions_atomically(output: str | Path, input_path: str | Path, *, overwrite: bool, write: Any) -> int:
    """Runs `write(handle)` into a temporary file beside `output` and renames it into place only on success.

    Refuses an output that is the input (same file, also through a symlink or hard link). A failure leaves an
    existing output untouched and no partial file behind.
    """
    output, input_path = Path(output), Path(input_path)
    if output.exists():
        if input_path.exists() and os.path.samefile(output, input_path):
            raise ValueError(f"--output {output} is the input file; write the predictions to another file")
        if not overwrite:
            raise ValueError(f"--output {output} exists; pass --overwrite to replace it")
        if output.is_dir():
            raise ValueError(f"--output {output} is a directory; name a file")
    elif not output.parent.is_dir():
        raise ValueError(f"--output {output}: the folder {output.parent} does not exist")
    target = output.resolve() if output.is_symlink() else output  # replace what a link points to, keep the link
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            count = write(handle)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return count


def evaluate_model(
    model_dir: str | Path,
    dataset: str,
    *,
    split: str = "test",
    text_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 256,
    device: str | None = None,
    backend: str | None = None,
    threads: int | None = None,
    classifier: Classifier | None = None,
) -> dict[str, float]:
    """Metrics of a saved model on one split of any dataset reference, labels matched to the model's by name.

    Only the asked split is read and checked.
    """
    from .data import load_evaluation_split
    from .metrics import build_compute_metrics  # evaluate is slow to import: only when evaluating

    check_positive(batch_size, "--batch-size")
    if classifier is None:
        classifier = load_backend(model_dir, backend=backend, threads=threads, device=device)
    config = classifier.config
    label2id = {config.id2label[i]: i for i in range(config.num_labels)}
    data = load_evaluation_split(dataset, split, text_column=text_column, label_column=label_column, label2id=label2id)
    texts, labels = data["text"], np.asarray(data["label"])
    logits = classifier.predict_logits(list(texts), batch_size=batch_size)
    compute = build_compute_metrics(config.problem_type or "single_label_classification")
    metrics = {f"{split}_{name}": value for name, value in compute((logits, labels)).items()}
    metrics[f"{split}_samples"] = len(labels)
    return metrics
