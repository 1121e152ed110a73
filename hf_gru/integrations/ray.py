"""Ray Data: `GRUPredictor`, a callable class for `Dataset.map_batches`, so each actor of the pool loads the model
once and labels batches in any of Ray's formats.

    import ray
    from hf_gru.integrations.ray import GRUPredictor

    ds = ray.data.read_parquet("s3://bucket/crawl/")
    labelled = ds.map_batches(GRUPredictor, fn_constructor_kwargs={"model": "my-model"}, batch_size=2048,
                              compute=ray.data.ActorPoolStrategy(size=8), num_cpus=1)

Texts are read from a batch the way `hf-gru predict` reads a file (the same text column detection, columns joined
by newlines, blanks left unlabelled, long documents clipped by the backend), and labelled by the same
`Classifier.classify`: the same answers as `hf-gru predict`. Every input column passes through.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import require
from .columns import LOGITS, prediction_columns

logger = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 2048  # rows a Ray batch should hold: the backend sorts each batch by length, so more is better


class GRUPredictor:
    """Labels Ray Data batches (numpy, pandas or pyarrow) with a saved hf_gru model, one model per actor.

    model: a model folder (or its ONNX export folder) or a Hub model id, readable on every node.
    backend: "onnx" (default: the fastest on CPU; needs `hf-gru export`), "torch", or None for what `hf-gru predict`
        would pick. threads: intra-op threads per actor (default 1: scale with actors, not threads).
    text_column: the column(s) holding the text (comma-separated), else the one training would detect.
    logits: also add a `logits` column (the model's raw outputs). prefix: put before every added column's name
        (e.g. "quality_"), for a second classifier or an input that already has a `label` column.
    Adds `label` and `score` (what `hf-gru predict` writes for the model); blank texts get nulls (NaN in numpy).
    """

    def __init__(
        self,
        model: str,
        *,
        backend: str | None = "onnx",
        precision: str = "fp32",
        threads: int | None = 1,
        device: str | None = None,
        text_column: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        logits: bool = False,
        prefix: str = "",
    ):
        from ..backends import check_positive, load_backend
        from ..hub import local_model

        self.batch_size = check_positive(batch_size, "batch_size")
        self.classifier = load_backend(
            local_model(model), backend=backend, precision=precision, threads=threads, device=device,
            max_length=max_length,
        )  # fmt: skip
        self.text_column, self.logits, self.prefix = text_column, logits, prefix

    def __call__(self, batch: Any) -> Any:
        from ..data.records import record_text, text_columns

        names = _column_names(batch)
        columns = text_columns(names, self.text_column, "the Ray dataset")
        values = {name: _column_values(batch, name) for name in columns}
        rows = len(values[columns[0]])
        texts = [record_text({name: _present(values[name][i]) for name in columns}, columns) for i in range(rows)]
        predictions = list(self.classifier.classify(texts, batch_size=self.batch_size, chunk_size=max(1, rows)))
        added = prediction_columns(predictions, prefix=self.prefix, logits=self.logits)
        clashes = [name for name in added if name in names]
        if clashes:
            raise ValueError(
                f"the Ray dataset already has a column {clashes[0]!r}; pass prefix='pred_' (or drop the column) so "
                "the predictions do not replace it"
            )
        return _with_columns(batch, added)


def label_dataset(
    dataset: Any, model: str, *, workers: int = 1, batch_size: int = DEFAULT_BATCH_ROWS, batch_format: str = "pyarrow",
    **predictor_options: Any,
) -> Any:  # fmt: skip
    """`dataset.map_batches(GRUPredictor, ...)` on a pool of `workers` actors of one CPU each."""
    ray_data = require("ray.data")
    return dataset.map_batches(
        GRUPredictor, fn_constructor_kwargs={"model": model, **predictor_options}, batch_size=batch_size,
        batch_format=batch_format, compute=ray_data.ActorPoolStrategy(size=workers), num_cpus=1,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- batch formats


def _column_names(batch: Any) -> list[str]:
    if isinstance(batch, dict):  # numpy: column name -> array
        return list(batch)
    if hasattr(batch, "column_names"):  # pyarrow.Table
        return list(batch.column_names)
    return [str(name) for name in batch.columns]  # pandas.DataFrame


def _column_values(batch: Any, name: str) -> list[Any]:
    if isinstance(batch, dict):
        return np.asarray(batch[name]).tolist()
    if hasattr(batch, "column_names"):
        return batch.column(name).to_pylist()
    return batch[name].tolist()


def _present(value: Any) -> Any:
    """None for the missing values each format has (None, NaN, pandas' NA), so a missing text reads as blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType":
        return None
    return value


def _with_columns(batch: Any, added: dict[str, list[Any]]) -> Any:
    """`batch` in its own format with the `added` columns after its own."""
    if isinstance(batch, dict):
        return {**batch, **{name: _numpy_column(name, values) for name, values in added.items()}}
    if hasattr(batch, "column_names"):
        import pyarrow as pa

        for name, values in added.items():
            logits = name.endswith(LOGITS)
            batch = batch.append_column(name, pa.array(values, type=pa.list_(pa.float32()) if logits else None))
        return batch
    return batch.assign(**added)


def _numpy_column(name: str, values: Sequence[Any]) -> np.ndarray:
    """Numbers as float (NaN where blank), logits as a (rows, labels) float32 array, anything else as objects."""
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in present):
        return np.array([np.nan if value is None else value for value in values], dtype=np.float64)
    if name.endswith(LOGITS) and present:
        width = len(present[0])
        return np.array([[np.nan] * width if value is None else value for value in values], dtype=np.float32)
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column
