"""Classifying texts with a saved model: batched, length-sorted, streaming from files with flat memory.

`hf-gru predict` and `hf-gru evaluate` sit on these functions; `pipeline("text-classification")` works too, but
handles one text at a time unless told otherwise, and reads whole inputs into memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from .data import DataFileError, load_raw_datasets, resolve_max_length
from .tokenization import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    text: str
    label: str
    score: float


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_classifier(
    model_dir: str | Path, *, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on `device`) and the tokenizer saved beside it, with a clear error for a wrong directory."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(
            f"{model_dir} is not a saved model: config.json is missing. Pass the --output_dir of `hf-gru train` "
            "(or any directory written by save_pretrained)."
        )
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    model.to(torch.device(device) if device is not None else default_device()).eval()
    return model, tokenizer


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int | None = None,
) -> np.ndarray:
    """Logits `(len(texts), num_labels)` in input order; texts are batched by length so padding stays small."""
    max_length = resolve_max_length(tokenizer, max_length)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        encoded = tokenizer(
            [texts[i] for i in index], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        inputs = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        logits[index] = model(**inputs).logits.float().cpu().numpy()
    return logits


def classify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    chunk_size: int = 2048,
) -> Iterator[Prediction]:
    """Streams predictions for any iterable of texts, holding only `chunk_size` texts at a time."""
    id2label = model.config.id2label
    multi_label = model.config.problem_type == "multi_label_classification"
    iterator = iter(texts)
    while chunk := list(islice(iterator, chunk_size)):
        logits = torch.from_numpy(predict_logits(model, tokenizer, chunk, batch_size=batch_size, max_length=max_length))
        probabilities = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
        scores, ids = probabilities.max(dim=-1)
        for text, label_id, score in zip(chunk, ids.tolist(), scores.tolist()):
            yield Prediction(text=text, label=id2label[label_id], score=round(score, 6))


def read_texts(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Texts from plain text (one a line) or JSON Lines (a `text_field` per object).

    Blank lines and whitespace-only texts are skipped (a model has nothing to classify there), with a count logged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--input {path} does not exist or is not a file")
    with path.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    json_lines = first.lstrip().startswith(b"{")
    skipped = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFileError(path, number, f"not valid UTF-8 ({error.reason})") from None
            if not line.strip():
                skipped += 1
                continue
            if not json_lines:
                yield line.rstrip("\r\n")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(path, number, f"not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise DataFileError(path, number, f"no string field {text_field!r} (found: {found})")
            if not record[text_field].strip():
                skipped += 1
                continue
            yield record[text_field]
    if skipped:
        logger.warning("%s: skipped %d blank line(s) or empty text(s)", path, skipped)


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: IO[str],
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> int:
    """Writes one JSON line `{text, label, score}` per input text to `output`; returns the count."""
    model, tokenizer = load_classifier(model_dir, device=device)
    count = 0
    with tqdm(desc="predict", unit=" texts", disable=not progress) as bar:
        texts = read_texts(input_path)
        for prediction in classify(model, tokenizer, texts, batch_size=batch_size, max_length=max_length):
            output.write(json.dumps(prediction.__dict__, ensure_ascii=False) + "\n")
            count += 1
            bar.update()
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
) -> dict[str, float]:
    """Metrics of a saved model on one split of any dataset reference, labels matched to the model's by name."""
    from .metrics import build_compute_metrics  # evaluate is slow to import: only when evaluating

    model, tokenizer = load_classifier(model_dir, device=device)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    raw = load_raw_datasets(
        dataset, text_column=text_column, label_column=label_column, label_names=names, carve_validation=False
    )
    if split not in raw:
        raise ValueError(f"{dataset!r} has no {split!r} split; available: {', '.join(raw)}")
    texts, labels = raw[split]["text"], np.asarray(raw[split]["label"])
    logits = predict_logits(model, tokenizer, list(texts), batch_size=batch_size)
    compute = build_compute_metrics(model.config.problem_type or "single_label_classification")
    metrics = {f"{split}_{name}": value for name, value in compute((logits, labels)).items()}
    metrics[f"{split}_samples"] = len(labels)
    return metrics
