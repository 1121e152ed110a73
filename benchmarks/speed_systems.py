"""What `speed.py` times: the texts, and every system built the way a user would run it, with its accuracy.

- hf_gru from scratch (trained once through the library, cached in `benchmarks/results/models/<dataset>`, shared
  with `accuracy.py`), in four variants through `hf_gru.backends.load_backend`: torch fp32, torch int8 (dynamic
  quantization), ONNX Runtime fp32 and int8 (exported by `hf_gru.export.export_model` into
  `benchmarks/results/models/exports/`, never into the model's own folder);
- the distilled student and its teacher, when their model directories are given (`--student`, `--teacher`);
- the peers (`peers.py`): fastText, Model2Vec, TF-IDF + LR, refitted on the training split with the settings
  `accuracy.py` picked;
- MiniLM-L6 (pretrained encoder, fresh head) and a DistilBERT-sized transformer (random weights): speed only.
Accuracies are measured here, on the texts the accuracy check reads, so each system's point on the plot is its own.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, SHARED_DATA, log, read_json
from timing import ClassifierSystem, PeerSystem, System

MODELS_DIR = RESULTS_DIR / "models"
EXPORTS_DIR = MODELS_DIR / "exports"
TRAINING_RECORD = "speed_training.json"  # written beside a model this script trained
INT8_TOLERANCE = 0.005  # the bar: int8 within 0.5 accuracy point of fp32
VARIANTS = (("torch", "fp32"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


def load_split(dataset: str, split: str = "test") -> tuple[list[str], list[str]]:
    """Texts and label names of one split of the shared data, read as `hf-gru train` reads it."""
    from hf_gru.data import load_raw_datasets

    path = SHARED_DATA / dataset
    if not path.is_dir():
        raise SystemExit(f"{path} is missing: set HF_GRU_SHARED_DATA to the folder holding the dataset folders")
    rows = load_raw_datasets(str(path), carve_validation=False)[split]
    names = rows.features["label"].names
    return rows["text"], [names[label] for label in rows["label"]]


def seeded_subset(n_items: int, size: int | None, seed: int) -> list[int]:
    """A fixed sample of indices (all of them when `size` is None or too large), in input order."""
    if size is None or size >= n_items:
        return list(range(n_items))
    return sorted(random.Random(seed).sample(range(n_items), size))


def length_sorted_batches(texts: list[str], batch_size: int) -> list[list[str]]:
    """Texts sorted by character length, then chunked: the batching of `predict_logits`, shared by every system."""
    ordered = sorted(texts, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def smoke_dataset(dataset: str, folder: Path, train: int, test: int) -> Path:
    """A seeded subset of the shared set as JSON lines (a quick run trains on it: the full test split's final
    evaluation alone takes minutes on imdb)."""
    from hf_gru.data import load_raw_datasets

    target = folder / dataset
    if not (target / "test.jsonl").is_file():
        raw = load_raw_datasets(str(SHARED_DATA / dataset), carve_validation=False)
        target.mkdir(parents=True, exist_ok=True)
        for split, size in (("train", train), ("test", test)):
            rows, names = raw[split], raw[split].features["label"].names
            lines = [json.dumps({"text": rows[i]["text"], "label": names[rows[i]["label"]]}, ensure_ascii=False)
                     for i in seeded_subset(len(rows), size, seed=3)]  # fmt: skip
            (target / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def ensure_hf_gru_model(dataset: str, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The cached hf_gru model of `dataset`, trained through the library first if there is none (or `--retrain`)."""
    from library import train_hf_gru

    model_dir = args.models_dir / dataset
    record_path = model_dir / TRAINING_RECORD
    if (model_dir / "config.json").is_file() and not args.retrain:
        record = (
            json.loads(record_path.read_text())
            if record_path.is_file()
            else {"trained_by": "another script (no speed_training.json), e.g. benchmarks/accuracy.py"}
        )
        record["reused"] = True
        log(f"{dataset}: reusing the hf_gru model in {model_dir} (trained by {record.get('trained_by')})")
    else:
        epochs = args.imdb_epochs if dataset == "imdb" else args.train_epochs
        extra = ["--num_train_epochs", str(epochs)]
        source = SHARED_DATA / dataset
        if args.smoke:
            source = smoke_dataset(dataset, args.models_dir / "data", args.imdb_train_samples, 200)
        elif dataset == "imdb" and args.imdb_train_samples:
            extra += ["--max_train_samples", str(args.imdb_train_samples)]
        trained = train_hf_gru(source, model_dir, args.preset, 42, extra)
        record = {"trained_by": "benchmarks/speed.py", "argv": trained["argv"], "seconds": trained["seconds"]}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        record["reused"] = False
        log(f"{dataset}: trained in {record['seconds']:.0f} s")
    results_path = model_dir / "all_results.json"
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        record["results"] = {
            k: results[k] for k in ("test_accuracy", "train_samples", "epoch", "train_wall_seconds") if k in results
        }
    return model_dir, record


def classifier_accuracy(classifier: Any, texts: list[str], labels: list[str]) -> tuple[float, Any]:
    """Accuracy and predicted ids through the classifier's own `predict_logits` (the `hf-gru evaluate` path)."""
    import numpy as np

    label2id = classifier.config.label2id
    gold = np.asarray([label2id[label] for label in labels])
    predicted = classifier.predict_logits(texts, batch_size=256).argmax(-1)
    return float((predicted == gold).mean()), predicted


def export_dir_for(model_dir: Path) -> Path:
    """Where this script exports a model: its own folder under results/models/exports, keyed by the model's path."""
    name = "_".join(Path(model_dir).resolve().parts[-2:])
    return EXPORTS_DIR / name


def hf_gru_systems(
    prefix: str, label: str, model_dir: Path, texts: list[str], labels: list[str], kind: str
) -> tuple[list[System], dict[str, Any]]:
    """torch fp32/int8 and ONNX fp32/int8 systems of one saved hf_gru model, with each variant's accuracy."""
    from library import describe_model

    from hf_gru.backends import load_backend

    parameters = describe_model(model_dir)["parameters"]
    export = export_dir_for(model_dir)
    systems: list[System] = []
    checks: dict[str, Any] = {"texts": len(texts)}
    reference = None
    for backend, precision in VARIANTS:
        key = prefix if (backend, precision) == ("torch", "fp32") else f"{prefix}_{backend}_{precision}"
        try:
            source = model_dir
            if backend == "onnx":
                source = ensure_export(model_dir, export)
            classifier = load_backend(source, backend=backend, precision=precision, device="cpu")
            accuracy, predicted = classifier_accuracy(classifier, texts, labels)
        except Exception as error:  # noqa: BLE001 - a variant that cannot be built is reported, not a crash
            checks[key] = {"error": f"{type(error).__name__}: {error}"}
            log(f"{label} {backend} {precision}: not timed ({checks[key]['error']})")
            continue
        if reference is None:
            reference = (accuracy, predicted)
        checks[key] = {
            "accuracy": round(accuracy, 4),
            "delta_points": round(100 * (accuracy - reference[0]), 2),
            "predictions_changed": int((predicted != reference[1]).sum()),
            "within_tolerance": abs(accuracy - reference[0]) <= INT8_TOLERANCE + 1e-12,
        }
        systems.append(ClassifierSystem(key, f"{label} {backend} {precision}", classifier, parameters, kind))
    return systems, checks


def ensure_export(model_dir: Path, export: Path) -> Path:
    """An ONNX export (fp32 + int8) of `model_dir` in `export`, made with `hf_gru.export.export_model` if missing
    or made from other weights or config than the model's (its recorded source does not match them)."""
    from hf_gru.export import export_model
    from hf_gru.run_directory import ONNX_INT8_FILE, export_is_fresh

    if not (export / ONNX_INT8_FILE).is_file() or not export_is_fresh(model_dir, export):
        log(f"exporting {model_dir} to {export} (hf_gru.export.export_model, fp32 + int8)")
        export_model(model_dir, export, quantize="int8", overwrite=True)  # the benchmark's own export folder
    return export


def transformer_systems(lengths: list[int]) -> list[System]:
    """MiniLM-L6 (pretrained encoder, fresh 2-label head) and a DistilBERT-sized model (random weights), both read
    with the MiniLM BERT tokenizer, at each truncation in `lengths` (the longest is their main row)."""
    import torch
    from peers import minilm_path
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    from hf_gru.backends import TorchClassifier
    from hf_gru.tokenization import load_tokenizer

    path = minilm_path()
    tokenizer = load_tokenizer(path)
    minilm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    torch.manual_seed(0)
    distilbert = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2)).eval()
    systems: list[System] = []
    for key, name, model in (("minilm", "MiniLM-L6", minilm), ("distilbert", "DistilBERT-sized", distilbert)):
        for length in sorted(set(lengths), reverse=True):
            suffix = "" if length == max(lengths) else f"@{length}"
            classifier = TorchClassifier(model, tokenizer, max_length=length)
            parameters = model.num_parameters()
            systems.append(ClassifierSystem(key + suffix, name + suffix.replace("@", " @"), classifier, parameters,
                                            "transformer"))  # fmt: skip
    return systems


def teacher_system(model_dir: Path, texts: list[str], labels: list[str]) -> tuple[System, float]:
    """The distillation teacher (any fine-tuned transformers classifier), torch fp32, with its accuracy."""
    from hf_gru.backends import load_backend

    classifier = load_backend(model_dir, backend="torch", device="cpu")
    accuracy, _ = classifier_accuracy(classifier, texts, labels)
    parameters = sum(p.numel() for p in classifier.model.parameters())
    return ClassifierSystem("teacher", "teacher torch fp32", classifier, parameters, "transformer"), accuracy


# A quick run (--peer-train-samples) cannot search: accuracy.py's settings, else these; Model2Vec capped at 3 epochs.
FIRST_GUESS = {"fasttext": {"lr": 0.5, "epoch": 5, "wordNgrams": 2}, "tfidf_lr": {"C": 4.0}}
QUICK = {"model2vec": {"max_epochs": 3}}


def peer_systems(
    dataset: str, keys: list[str], texts: list[str], labels: list[str], train_samples: int | None
) -> tuple[list[System], dict[str, Any]]:
    """fastText, Model2Vec, TF-IDF + LR refitted on `dataset` with accuracy.py's settings; accuracy on `texts`."""
    import numpy as np
    from peers import DISPLAY, fitted_peer, is_chinese, load_splits

    saved = (read_json(f"accuracy_{dataset}.json") or {}).get("systems", {})
    names = load_splits(SHARED_DATA / dataset)[1]
    gold = np.asarray([names.index(label) for label in labels])
    systems: list[System] = []
    checks: dict[str, Any] = {}
    for key in keys:
        if key == "model2vec" and is_chinese(texts):
            continue
        settings = saved.get(key, {}).get("settings")
        if train_samples is not None:
            settings = {**(settings or FIRST_GUESS.get(key, {})), **QUICK.get(key, {})}
        log(f"{dataset}: fitting {DISPLAY[key]} ({'settings ' + str(settings) if settings else 'searching'})")
        try:
            peer = fitted_peer(key, SHARED_DATA / dataset, settings, train_samples)
            accuracy = float((np.asarray(peer.predict(texts)) == gold).mean())
        except Exception as error:  # noqa: BLE001 - a peer that cannot run is reported, not a crash
            checks[key] = {"error": f"{type(error).__name__}: {error}"}
            log(f"{dataset}: {DISPLAY[key]} not timed ({checks[key]['error']})")
            continue
        checks[key] = {"accuracy": round(accuracy, 4), "settings": settings}
        if train_samples is not None:
            checks[key]["train_samples"] = train_samples
        systems.append(PeerSystem(key, DISPLAY[key], peer))
    return systems, checks


def read_accuracies(dataset: str) -> dict[str, dict[str, Any]]:
    """Test accuracy (a fraction) per system from `accuracy.py`'s `accuracy_<dataset>.json`, if any."""
    payload = read_json(f"accuracy_{dataset}.json") or {}
    found: dict[str, dict[str, Any]] = {}
    for name, entry in (payload.get("systems") or {}).items():
        value = entry.get("accuracy") if isinstance(entry, dict) else None
        value = value.get("mean") if isinstance(value, dict) else value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            details = {k: entry[k] for k in ("max_length", "test_samples", "train_samples") if k in entry}
            found[name] = {"accuracy": float(value), **details}
    return found


class WindowedTransformerSystem(System):
    """A transformer reading the whole document as consecutive windows, its logits averaged over them: how the
    distillation teacher reads a long text (`hf_gru.distillation.teacher.predict_logits`, `windows`)."""

    def __init__(self, key: str, name: str, model: Any, tokenizer: Any, window: int, windows: int) -> None:
        super().__init__(key, name, model.num_parameters(), window * windows, "transformer")
        self.model, self.tokenizer, self.window, self.windows = model, tokenizer, window, windows

    def run(self, batches: list[list[str]]) -> list[Any]:
        import time

        from hf_gru.distillation.teacher import predict_logits

        timings = []
        for batch in batches:
            start = time.perf_counter()
            predict_logits(self.model, self.tokenizer, batch, max_length=self.window, batch_size=32,
                           windows=self.windows)  # fmt: skip
            timings.append((None, time.perf_counter() - start, None))
        return timings


def whole_document_transformer(window: int, max_tokens: int) -> System:
    """MiniLM-L6 (the teacher's architecture; pretrained encoder, fresh head: speed only) reading up to `max_tokens`
    tokens of each text in windows of `window`."""
    import math

    from peers import minilm_path
    from transformers import AutoModelForSequenceClassification

    from hf_gru.tokenization import load_tokenizer

    path = minilm_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    windows = math.ceil(max_tokens / window)
    return WindowedTransformerSystem("minilm_whole", f"MiniLM-L6, whole text ({window}-token windows)", model,
                                     load_tokenizer(path), window, windows)  # fmt: skip
