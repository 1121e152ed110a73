"""The run skeleton every engine plugs into: start (validate, data, tokenizer, model, directory), finish (results).

An engine (`hf_gru.training` for the `Trainer`, `hf_gru.accelerate_loop` for a plain accelerate loop,
`hf_gru.distillation` for a Trainer with a teacher) calls `start_run`, trains `run.model` on `run.data` with
checkpoints in `run.directory.work`, saves the model there, and hands its metrics to `finish_run`, which writes
`all_results.json`, plots and card, swaps a staged directory into place and pushes. `RunOutcome` is what every engine
returns.

Order matters for safety: everything that can fail on bad input (output directory, Hub credentials, checkpoint,
dataset, labels, tokenizer, model) is checked before the output directory is created or touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, TrainingArguments, set_seed

from .arguments import ARCHITECTURE_FIELDS, BEST_METRIC, DataArguments, GRUTrainingArguments, ModelArguments
from .configuration_gru import GRUConfig
from .data import PreparedData, prepare_data, resolve_max_length, tokenize_datasets, tokenizer_fingerprint
from .encoders import (
    ResolvedEncoder,
    choose_start,
    document_frequencies,
    initialize_embeddings,
    prune_tokenizer,
    should_prune,
    unknown_token_share,
    used_token_ids,
    warn_on_unknown_tokens,
)
from .hardware import check_same_on_all_ranks
from .model_card import write_outputs
from .modeling_gru import GRUForSequenceClassification
from .run_directory import RunDirectory, plan_run_directory, resolve_checkpoint, save_results

logger = logging.getLogger(__name__)


@dataclass
class PushRequest:
    """`--push_to_hub` as asked; the token lives here, never in the arguments that are pickled to disk."""

    repo_id: str
    private: bool
    revision: str | None
    token: str | None = field(repr=False)


@dataclass
class RunOutcome:
    """What every engine returns: where the run is, its metrics, the data it used and its log."""

    output_dir: Path
    metrics: dict[str, float]
    data: PreparedData
    log_history: list[dict[str, Any]]
    is_main_process: bool


@dataclass
class Run:
    """A validated run, ready for an engine: data tokenized, model built, directory open."""

    model_args: ModelArguments
    data_args: DataArguments
    training_args: GRUTrainingArguments
    directory: RunDirectory
    checkpoint: Path | None
    data: PreparedData
    model: GRUForSequenceClassification
    problem_type: str
    push: PushRequest | None
    start: Start

    @property
    def single_label(self) -> bool:
        return self.problem_type == "single_label_classification"


def take_push_request(training_args: TrainingArguments) -> PushRequest | None:
    """Move `--push_to_hub` and the token out of the arguments: the skeleton pushes once, at the end.

    The `Trainer` pickles its arguments into `training_args.bin` of every checkpoint; a `--hub_token` left there would
    be written to disk in plain text.
    """
    token, training_args.hub_token = training_args.hub_token, None
    if not training_args.push_to_hub:
        return None
    training_args.push_to_hub = False
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id NAMESPACE/NAME: the repository to create or update")
    from .hub import check_can_push

    check_can_push(training_args.hub_model_id, token=token)  # fail before training, not after
    return PushRequest(
        training_args.hub_model_id, bool(training_args.hub_private_repo), training_args.hub_revision, token
    )


@dataclass
class Start:
    """Where a run's tokenizer and embeddings come from, decided once its training texts are seen.

    `--init_embeddings auto` picks the encoder for the texts' language (`hf_gru.encoders.choose_start`); an explicit
    `--tokenizer` or `--model_name_or_path` means no pretrained start; a resumed run reads with its checkpoint's
    tokenizer (already pruned) and takes its weights from the checkpoint.
    """

    model_args: ModelArguments
    checkpoint: Path | None = None
    extra_texts: list[str] = field(default_factory=list)  # texts whose pieces a pruned vocabulary keeps too
    encoder: ResolvedEncoder | None = None
    rows: list[int] | None = None  # the encoder's rows of a pruned vocabulary, in the new token order
    full_vocabulary: int | None = None
    unknown_share: float | None = None

    def tokenizer_for(self, texts: list[str]) -> str | None:
        """The tokenizer to read `texts` (a sample of the training split) with; None: train one on the data."""
        explicit = self.model_args.model_name_or_path or self.model_args.tokenizer
        if not explicit:
            self.encoder = choose_start(self.model_args.init_embeddings, texts)
        if self.checkpoint is not None:
            return str(self.checkpoint)
        return explicit or (str(self.encoder.path) if self.encoder is not None else None)

    def adopt(self, data: PreparedData, data_args: DataArguments) -> None:
        """Check the encoder's vocabulary covers the training texts; prune it to them when asked (in place)."""
        if self.encoder is None or self.checkpoint is not None:
            return
        train_ids = data.tokenized["train"]["input_ids"]
        self.unknown_share = unknown_token_share(data.tokenizer, train_ids)
        warn_on_unknown_tokens(self.unknown_share, self.encoder.reference)
        self.full_vocabulary = len(data.tokenizer)
        if not should_prune(self.model_args.prune_vocabulary, self.full_vocabulary):
            return
        rows = [*train_ids]
        if self.extra_texts:
            rows += data.tokenizer(self.extra_texts, truncation=True, max_length=data.tokenizer.model_max_length)[
                "input_ids"
            ]
        keep = used_token_ids(rows, data.tokenizer)
        pruned = prune_tokenizer(data.tokenizer, keep)
        if pruned is None:
            return
        logger.info("vocabulary pruned to the training texts: %d → %d tokens", self.full_vocabulary, len(keep))
        data.tokenizer, self.rows = pruned, keep
        data.tokenized = tokenize_datasets(
            data.raw, pruned, max_length=data_args.max_length, num_proc=data_args.num_proc
        )

    def tokenizer_fields(self, tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
        """The model card's tokenizer line, when it is an encoder's."""
        if self.encoder is None:
            return {}
        pruned = f", pruned to the training texts from {self.full_vocabulary:,}" if self.rows is not None else ""
        return {"tokenizer": f"{self.encoder.reference}'s ({len(tokenizer):,} tokens{pruned})"}

    def summary(self, model: GRUForSequenceClassification) -> dict[str, Any]:
        """What all_results.json and the model card say about the start."""
        start = self.encoder.describe() if self.encoder is not None else "none (trained from scratch)"
        summary: dict[str, Any] = {"init_embeddings": start}
        if self.unknown_share is not None:
            summary["init_embeddings_unknown_token_share"] = round(self.unknown_share, 6)
        if self.rows is not None:
            width = model.config.embedding_size
            summary["vocabulary_pruned_from"] = self.full_vocabulary
            summary["vocabulary_pruned_to"] = len(self.rows)
            summary["parameters_before_pruning"] = (
                model.num_parameters() + (self.full_vocabulary - len(self.rows)) * width
            )
        summary["parameters"] = model.num_parameters()
        return summary


def prepare_training_data(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    start: Start,
) -> PreparedData:
    """Splits, tokenizer (`start`'s choice, else trained on the data) and tokenized splits.

    [accelerate] Under several processes the main process goes first, so the others read its `datasets` cache files
    instead of racing to write them; each process trains its own tokenizer (deterministic), checked to agree.
    """
    with training_args.main_process_first(desc="dataset loading and tokenization"):
        data = prepare_data(
            data_args.dataset,
            choose_tokenizer=start.tokenizer_for,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            max_length=data_args.max_length,
            validation_fraction=data_args.validation_fraction,
            seed=training_args.seed,
            num_proc=data_args.num_proc,
            tokenizer_kwargs=tokenizer_training_options(model_args),
        )
        start.adopt(data, data_args)
        # Saved with the model, so that inference truncates exactly where training did.
        data.tokenizer.model_max_length = resolve_max_length(data.tokenizer, data_args.max_length)
        if data_args.max_train_samples is not None:
            train = data.tokenized["train"].shuffle(seed=training_args.seed)
            data.tokenized["train"] = train.select(range(min(data_args.max_train_samples, len(train))))
    check_same_on_all_ranks(tokenizer_fingerprint(data.tokenizer), "the tokenizer")
    return data


def tokenizer_training_options(model_args: ModelArguments) -> dict[str, Any]:
    """How a tokenizer is trained on the data when none is given."""
    return dict(
        algorithm=model_args.tokenizer_algorithm,
        vocab_size=model_args.vocab_size,
        min_frequency=model_args.min_frequency,
        lowercase=model_args.lowercase,
    )


def build_model(
    model_args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    id2label: dict[int, str],
    start: Start | None = None,
) -> GRUForSequenceClassification:
    """A fresh model sized to the tokenizer and label set (embeddings from `start`'s encoder when it has one), or a
    saved one re-headed for these labels."""
    labels = {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}
    if model_args.model_name_or_path:
        explicit = [n for n in ARCHITECTURE_FIELDS if getattr(model_args, n) not in (None, "auto")]
        overrides = {n: model_args.architecture()[n] for n in explicit}
        return GRUForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(id2label), ignore_mismatched_sizes=True, **labels, **overrides
        )
    config = GRUConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(id2label),
        **labels,
        **model_args.architecture(),
    )
    model = GRUForSequenceClassification(config)
    if start is not None and start.encoder is not None and start.checkpoint is None:
        initialize_embeddings(model, start.encoder.path, rows=start.rows, name=start.encoder.reference)
    return model


def training_token_counts(data: PreparedData) -> list[int]:
    """Tokens per training text (a streamed split: its in-memory validation texts stand in)."""
    for split in ("train", "validation"):
        rows = data.tokenized.get(split)
        if rows is not None and hasattr(rows, "__len__"):
            return [len(ids) for ids in rows["input_ids"]]
    return []


def fit_token_idf(model: GRUForSequenceClassification, data: PreparedData) -> None:
    """The TF-IDF bag's idf (`bag_of_tokens`) from the training split's token ids. A streamed split is never seen
    whole: its bag keeps idf 1 (plain sublinear term frequency) and says so."""
    if model.token_bag is None:
        return
    train = data.tokenized.get("train")
    if train is None or not hasattr(train, "__len__"):
        logger.warning("the TF-IDF bag of tokens keeps idf 1: a streamed training split has no document counts")
        return
    bag = model.token_bag
    features = bag.row_features if bag.bigram_buckets else None
    counts, num_rows = document_frequencies(train["input_ids"], bag.idf.shape[0], features)
    bag.set_idf(torch.from_numpy(counts), num_rows)


def apply_best_metric_default(model: GRUForSequenceClassification, training_args: TrainingArguments) -> str:
    """The problem type's metric as `metric_for_best_model` when none was given; returns the problem type."""
    problem_type = model.config.problem_type or "single_label_classification"
    metric, greater_is_better = BEST_METRIC[problem_type]
    if getattr(training_args, "best_metric_from_problem_type", False):
        training_args.metric_for_best_model = metric
        training_args.greater_is_better = greater_is_better
    return problem_type


def start_run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: GRUTrainingArguments,
    *,
    inputs: Iterable[str | None] = (),
    load_data: Callable[[Start], PreparedData] | None = None,
    resume_in: Path | None = None,
    extra_texts: list[str] | None = None,
) -> Run:
    """Validate everything, then open the run directory; `training_args.output_dir` becomes the working directory.

    `inputs` are further paths the run reads (e.g. a teacher), which the output directory must not hold.
    `load_data(start)` replaces the in-memory data preparation (the accelerate engine streams); it reads the
    training texts with `start.tokenizer_for(texts)`. `extra_texts`: further texts a pruned vocabulary must cover.
    `resume_in`: a folder a killed run left before its first checkpoint (distillation: teacher logits), to continue in.
    """
    if not training_args.output_dir:
        raise ValueError("--output_dir is required: the directory that receives the trained model")
    push = take_push_request(training_args)
    output_dir = Path(training_args.output_dir)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
    directory = plan_run_directory(
        output_dir,
        overwrite=training_args.overwrite_output_dir,
        resuming_in=checkpoint.parent if checkpoint is not None else resume_in,
        inputs=(data_args.dataset, model_args.model_name_or_path, model_args.tokenizer, model_args.named_encoder())
        + tuple(inputs),
    )
    set_seed(training_args.seed)
    # A resumed run must read its texts with the very tokenizer it started with, not a freshly trained one.
    start = Start(model_args, checkpoint, list(extra_texts or []))
    if load_data is None:
        data = prepare_training_data(model_args, data_args, training_args, start)
    else:
        data = load_data(start)
    if not model_args.model_name_or_path:
        model_args.resolve_bag_of_tokens(training_token_counts(data))
    model = build_model(model_args, data.tokenizer, data.id2label, start)
    if checkpoint is None and not model_args.model_name_or_path:
        fit_token_idf(model, data)
    problem_type = apply_best_metric_default(model, training_args)

    # [accelerate] The other processes wait until rank 0 has created the directory.
    with training_args.main_process_first(desc="output directory"):
        if training_args.process_index == 0:
            directory.open()
    training_args.output_dir = str(directory.work)
    return Run(model_args, data_args, training_args, directory, checkpoint, data, model, problem_type, push, start)


def finish_run(
    run: Run,
    *,
    model: GRUForSequenceClassification,
    metrics: dict[str, float],
    log_history: list[dict[str, Any]],
    predictions: tuple[np.ndarray, np.ndarray] | None,
    is_main_process: bool,
    summary_fields: dict[str, Any] | None = None,
) -> RunOutcome:
    """Results, plots and card beside the saved model; the staged directory swapped in; the push. Call it after the
    engine has saved the model and tokenizer into `run.directory.work` and every process is done writing.

    `predictions` is (true labels, logits) on the final split, for the confusion matrix.
    """
    directory = run.directory
    if is_main_process:
        start = run.start.summary(model)
        logger.info("start: %s", start["init_embeddings"])
        save_results(directory.work, {**metrics, **start})
        summary_fields = {"start": start["init_embeddings"], **run.start.tokenizer_fields(run.data.tokenizer),
                          **(summary_fields or {})}  # fmt: skip
        confusion = (
            (predictions[0], predictions[1].argmax(-1)) if predictions is not None and run.single_label else None
        )
        write_outputs(
            directory.work,
            model=model,
            data=run.data,
            model_args=run.model_args,
            data_args=run.data_args,
            training_args=run.training_args,
            log_history=log_history,
            confusion=confusion,
            summary_fields=summary_fields,
        )
        directory.commit()
    run.training_args.output_dir = str(directory.final)
    if is_main_process and run.push is not None:
        push = run.push
        push_trained_model(
            directory.final, push.repo_id, private=push.private, revision=push.revision, token=push.token
        )
    return RunOutcome(directory.final, metrics, run.data, log_history, is_main_process)


def push_trained_model(output_dir: Path, hub_model_id: str, *, private: bool, revision: str | None, token: str | None):
    """`--push_to_hub`: one commit through `hf_gru.hub`, the same code as `hf-gru push`, once the directory is final."""
    from .hub import push_model

    try:
        return push_model(output_dir, hub_model_id, private=private, revision=revision, token=token)
    except (ValueError, OSError):
        # The training itself succeeded: say so, and how to share the result without training again.
        logger.error(
            "training finished and the model is saved in %s, but pushing it failed; push it again with "
            "`hf-gru push --model %s --repo-id %s`",
            output_dir,
            output_dir,
            hub_model_id,
        )
        raise
