"""Dataset references → a clean ``DatasetDict`` (``text`` + ``ClassLabel``), tokenization, collation, streaming.

One path from whatever the user points at (a folder, a file, a folder per class, a Hub id, a preset, ``demo``) to
padded tensors, so the CLI, the scripts and the benchmarks all see the same splits, the same cleaning and the same
label order. Loading goes through ``datasets`` loaders so that Arrow caching works end to end.

Modules, in the order a text travels through them: ``presets`` (split names, known Hub datasets), ``sources`` (what
a reference means, its splits as stored), ``readers`` (data files and class folders on disk), ``labels`` (columns →
``text`` + label, the label set), ``splits`` (labelled train/validation/test, ``prepare_data``), ``tokenize``
(token ids, padding), ``streaming`` (the same for corpora larger than memory); ``records`` reads the texts to
classify (``hf-gru predict``) a record at a time.
"""

from .labels import LABEL_COLUMN_CANDIDATES, TEXT_COLUMN_CANDIDATES
from .language import detect_language
from .presets import DATASET_PRESETS, DatasetPreset
from .readers import DataFileError
from .records import iter_input_records
from .sources import path_like
from .splits import PreparedData, load_evaluation_split, load_raw_datasets, prepare_data
from .streaming import load_streaming_dataset, prepare_streaming_data
from .tokenize import (
    MAX_LENGTH_CAP,
    BatchEncoder,
    build_data_collator,
    clip_text,
    resolve_max_length,
    tokenize_datasets,
    tokenize_streaming,
    tokenizer_fingerprint,
)

__all__ = [
    "BatchEncoder",
    "DATASET_PRESETS",
    "DataFileError",
    "DatasetPreset",
    "LABEL_COLUMN_CANDIDATES",
    "MAX_LENGTH_CAP",
    "PreparedData",
    "TEXT_COLUMN_CANDIDATES",
    "build_data_collator",
    "clip_text",
    "detect_language",
    "iter_input_records",
    "load_evaluation_split",
    "load_raw_datasets",
    "load_streaming_dataset",
    "path_like",
    "prepare_data",
    "prepare_streaming_data",
    "resolve_max_length",
    "tokenize_datasets",
    "tokenize_streaming",
    "tokenizer_fingerprint",
]
