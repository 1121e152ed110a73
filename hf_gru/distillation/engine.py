"""The distillation engine: a `Trainer` whose loss follows a teacher's logits, plugged into the run skeleton.

`run_distillation` = `start_run` (validation, data with the teacher's tokenizer, a GRU student starting from the
teacher's input embeddings) → teacher (given, or fine-tuned into ``DIR/teacher``) → transfer set (training texts,
augmented copies, `--unlabeled` texts) labelled once into ``DIR/teacher_logits`` → `DistillationTrainer` (model
selection and early stopping on the gold validation labels) → `finish_run`. `hf-gru distill`, `scripts/distill.py`
and Python callers all come here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, List, Value
from transformers import AutoTokenizer

from ..arguments import DataArguments, GRUTrainingArguments, ModelArguments
from ..data.tokenize import _Tokenize, resolve_max_length
from ..encoders import AUTO, initialize_embeddings, resolve_encoder
from ..metrics import build_compute_metrics
from ..run import RunOutcome, Start, prepare_training_data, start_run
from ..run_directory import (
    RESULTS_FILE,
    TEACHER_DIR,
    TEACHER_LOGITS_DIR,
    list_checkpoints,
    staging_dir,
)
from ..training import GRUTrainer, build_trainer, finish_trainer_run, train_and_evaluate
from .arguments import DistillationArguments, parse_distillation_arguments
from .augment import AugmentationSettings, augment_texts, mask_token_of
from .teacher import (
    CacheMismatchError,
    TeacherSettings,
    cache_identity,
    check_cache,
    check_model_reference,
    check_teacher_labels,
    fine_tune_teacher,
    label_texts,
    load_teacher,
    predict_logits,
    record_teacher_results,
    teacher_fingerprint,
)
from .unlabeled import load_unlabeled_texts

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the gold label of a text the teacher alone labels (augmented or unlabeled)


# ------------------------------------------------------------------------------------------------------ loss


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    kind: str = DistillationArguments.distillation_loss,
    temperature: float = DistillationArguments.temperature,
    gold_weight: float = DistillationArguments.gold_weight,
) -> torch.Tensor:
    """``mse``: mean squared error between logits (Tang et al. 2019). ``kl``: Hinton's T²-scaled KL between the
    softened distributions, plus `gold_weight` × cross-entropy on the rows that have a gold label."""
    teacher = teacher.to(student.dtype)
    if kind == "mse":
        return F.mse_loss(student, teacher)
    soft = (
        F.kl_div(
            F.log_softmax(student / temperature, dim=-1),
            F.log_softmax(teacher / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )
    if labels is None or gold_weight == 0 or not (labels != IGNORE_INDEX).any():
        return soft
    return soft + gold_weight * F.cross_entropy(student, labels, ignore_index=IGNORE_INDEX)


class DistillationTrainer(GRUTrainer):
    """A `GRUTrainer` whose training loss follows the teacher's logits (a ``teacher_logits`` column).

    Evaluation batches carry gold labels and no teacher logits: they get the model's own cross-entropy, so
    `load_best_model_at_end` and early stopping select the student on the gold validation labels.
    """

    def __init__(self, *args: Any, distillation: DistillationArguments, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.distillation = distillation

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "teacher_logits" not in self._signature_columns:
            self._signature_columns.append("teacher_logits")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits", None)
        if teacher_logits is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        d = self.distillation
        loss = distillation_loss(
            outputs.logits,
            teacher_logits,
            labels,
            kind=d.distillation_loss,
            temperature=d.temperature,
            gold_weight=d.gold_weight,
        )
        return (loss, outputs) if return_outputs else loss


# ------------------------------------------------------------------------------------------------ the run


def _resumable_labelling(training_args: GRUTrainingArguments) -> Path | None:
    """A run killed before its first checkpoint (while fine-tuning the teacher or labelling): the folder it left."""
    if training_args.resume_from_checkpoint not in (True, "True", "true", "last"):
        return None
    output_dir = Path(training_args.output_dir)
    for folder in (staging_dir(output_dir), output_dir):
        if folder.is_dir() and list_checkpoints(folder):
            return None
    for folder in (staging_dir(output_dir), output_dir):
        if (folder / TEACHER_LOGITS_DIR).is_dir() or (folder / TEACHER_DIR).is_dir():
            return folder
    return None


def _prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _evaluate_teacher(
    teacher, tokenizer, data, max_length: int, batch_size: int, windows: int = 1
) -> tuple[dict, dict[str, np.ndarray]]:
    """The teacher's metrics (``eval_*`` on validation, ``test_*`` on test) and its logits there, reading each text
    as the labelling does (up to `windows` windows of `max_length` tokens)."""
    compute = build_compute_metrics("single_label_classification")
    metrics, logits = {}, {}
    for split, prefix in (("validation", "eval_"), ("test", "test_")):
        if split not in data.raw:
            continue
        raw = data.raw[split]
        logits[split] = predict_logits(
            teacher, tokenizer, raw["text"], max_length=max_length, batch_size=batch_size, windows=windows
        )
        metrics.update(_prefixed(compute((logits[split], np.asarray(raw["label"]))), prefix))
    return metrics, logits


def _in_dataset_order(trainer: GRUTrainer, dataset: Dataset, logits: np.ndarray) -> np.ndarray:
    """`Trainer.predict` output back in dataset order: with group_by_length the eval sampler permutes it too."""
    sampler = trainer._get_eval_sampler(dataset)
    if sampler is None or isinstance(sampler, torch.utils.data.SequentialSampler):
        return logits
    order = np.fromiter(iter(sampler), dtype=np.int64)
    out = np.empty_like(logits)
    out[order] = logits[: len(order)]
    return out


def _tokenize_transfer_set(labelled: Dataset, gold: list[int], tokenizer, max_length: int) -> Dataset:
    """Texts with teacher logits → the student's training columns (+ ``teacher_logits``; ``labels`` -100 when none)."""
    num_labels = len(labelled[0]["teacher_logits"])
    labelled = labelled.add_column("label", gold + [IGNORE_INDEX] * (len(labelled) - len(gold)))
    features = Features(
        {
            "teacher_logits": List(Value("float32"), length=num_labels),
            "input_ids": List(Value("int32")),
            "attention_mask": List(Value("int8")),
            "length": Value("int32"),
            "labels": Value("int64"),
        }
    )
    return labelled.map(
        _Tokenize(tokenizer, max_length),
        batched=True,
        remove_columns=["text", "label"],
        features=features,
        desc="tokenizing the transfer set",
    )


def _reuse_refusal(distill_args: DistillationArguments, error: CacheMismatchError) -> str:
    kept = (
        f"; the teacher fine-tuned in {TEACHER_DIR}/ is kept: add --resume_from_checkpoint last to reuse it"
        if distill_args.teacher_base
        else ""
    )
    return (
        f"--reuse_teacher_logits {distill_args.reuse_teacher_logits} holds the logits of {error.what}: give the "
        "same teacher, dataset, augmentation options and --augment_seed as that run (and its --seed where the "
        f"validation split is carved from train){kept}"
    )


def _check_reusable(distill_args: DistillationArguments, identity: dict[str, Any]) -> None:
    """Refuse a `--reuse_teacher_logits` folder made for other texts (or by another teacher) before copying it."""
    if not distill_args.reuse_teacher_logits:
        return
    try:
        check_cache(distill_args.reuse_teacher_logits, identity)
    except CacheMismatchError as error:
        raise CacheMismatchError(_reuse_refusal(distill_args, error), error.what) from error


def _copy_into_place(source: Path, target: Path) -> None:
    """Copy a folder into a hidden sibling, then rename it: a killed copy never passes for a complete cache."""
    partial = target.with_name(f".{target.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(source, partial)
    partial.rename(target)


def build_transfer_texts(
    train_texts: list[str],
    distill_args: DistillationArguments,
    mask_token: str | None,
    seed: int,
    unlabeled: list[str] | None = None,
) -> list[str]:
    """Training texts first (in order; their gold labels line up), then augmented copies, then unlabeled texts
    (`unlabeled` when already read, else read from ``--unlabeled``)."""
    settings = AugmentationSettings(
        copies=distill_args.augment_copies,
        mask_probability=distill_args.mask_probability,
        replace_probability=distill_args.replace_probability,
        ngram_probability=distill_args.ngram_probability,
        seed=seed,
    )
    if unlabeled is None:
        unlabeled = load_unlabeled_texts(distill_args.unlabeled) if distill_args.unlabeled else []
    augmented = augment_texts(train_texts, settings, mask_token, vocabulary_texts=unlabeled)
    seen = set(train_texts) | set(augmented)
    extra = [t for t in dict.fromkeys(unlabeled) if t not in seen]
    if unlabeled and not extra:
        logger.warning(
            "--unlabeled %s adds no texts: every one is a training text or an augmented copy", distill_args.unlabeled
        )
    logger.info(
        "transfer set: %d training texts + %d augmented + %d unlabeled", len(train_texts), len(augmented), len(extra)
    )
    return list(train_texts) + augmented + extra


def run_distillation(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: GRUTrainingArguments,
    distill_args: DistillationArguments,
) -> RunOutcome:
    """Teacher → labelled transfer set → GRU student; the output directory is complete as for `hf-gru train`."""
    reference = distill_args.teacher_reference
    # Here, not at parsing: parsing alone (benchmarks read a run's defaults with placeholders) touches no files.
    check_model_reference(reference, "--teacher" if distill_args.teacher else "--teacher_base")
    if model_args.model_name_or_path is None and model_args.init_embeddings in (None, AUTO):
        model_args.init_embeddings = reference  # the student reads with the teacher's tokenizer and embeddings
    given = given_tokenizer = None
    if distill_args.teacher:
        given, given_tokenizer = load_teacher(distill_args.teacher)  # refused early if not a sequence classifier
    if model_args.embedding_size is None and model_args.named_encoder():
        from transformers import AutoConfig

        source = resolve_encoder(model_args.named_encoder()).path
        width = getattr(AutoConfig.from_pretrained(source), "hidden_size", None)
        preset_width = model_args.architecture()["embedding_size"]
        if width is not None and width < preset_width:
            model_args.embedding_size = width  # a narrow teacher's embeddings as they are: PCA only reduces

    # Read first: a bad file is refused before anything is written, and a pruned vocabulary keeps these texts' pieces.
    unlabeled = load_unlabeled_texts(distill_args.unlabeled) if distill_args.unlabeled else []
    transfer: dict[str, Any] = {}
    augment_seed = training_args.seed if distill_args.augment_seed is None else distill_args.augment_seed
    # --teacher_base by Hub id works offline too: the encoder may come from the HF cache or an installed package
    base_encoder = resolve_encoder(distill_args.teacher_base) if distill_args.teacher_base else None
    base = str(base_encoder.path) if base_encoder is not None else None

    def load_data(start: Start):
        data = prepare_training_data(model_args, data_args, training_args, start)
        if given is not None:
            check_teacher_labels(given, [data.id2label[i] for i in range(data.num_labels)], reference)
        # Checked here, before the output directory exists or a teacher is trained: the augmentation's size and
        # whether a --reuse_teacher_logits folder was made for these texts.
        train = data.raw["train"]
        if data_args.max_train_samples is not None:  # the same subset prepare_training_data took
            train = train.shuffle(seed=training_args.seed).select(range(min(data_args.max_train_samples, len(train))))
        base_tokenizer = given_tokenizer if given is not None else AutoTokenizer.from_pretrained(base)
        texts = build_transfer_texts(
            train["text"], distill_args, mask_token_of(base_tokenizer), augment_seed, unlabeled=unlabeled
        )
        windows = distill_args.windows_for(resolve_max_length(data.tokenizer, data_args.max_length))
        identity = {"teacher": reference, "dataset": data.reference, "teacher_windows": windows}
        if given is not None:
            identity["teacher_fingerprint"] = teacher_fingerprint(given, reference)
        _check_reusable(distill_args, cache_identity(texts, identity))  # texts only, for a teacher yet to train
        transfer.update(train=train, texts=texts, identity=identity)
        return data

    resume_in = _resumable_labelling(training_args)
    if resume_in is not None:
        logger.info("resuming the teacher phase of the run killed in %s (no student checkpoint yet)", resume_in)
        training_args.resume_from_checkpoint = None
    run = start_run(
        model_args,
        data_args,
        training_args,
        inputs=(reference, distill_args.unlabeled, distill_args.reuse_teacher_logits),
        load_data=load_data,
        resume_in=resume_in,
        extra_texts=unlabeled,
    )
    work, data = run.directory.work, run.data
    encoder = run.start.encoder
    if distill_args.embedding_init != "pca" and encoder is not None and run.checkpoint is None:
        initialize_embeddings(  # start_run used PCA
            run.model, encoder.path, distill_args.embedding_init, rows=run.start.rows, name=encoder.reference
        )

    teacher, tokenizer = given, given_tokenizer
    teacher_dir = work / TEACHER_DIR
    if distill_args.teacher_base and not (teacher_dir / RESULTS_FILE).is_file():
        # Every process takes part (under accelerate launch the teacher's Trainer is distributed too).
        settings = TeacherSettings(
            learning_rate=distill_args.teacher_learning_rate,
            epochs=distill_args.teacher_epochs,
            batch_size=distill_args.teacher_batch_size,
            max_length=distill_args.teacher_max_length,
            seed=training_args.seed,
            max_train_samples=distill_args.teacher_max_train_samples,
            save_steps=distill_args.teacher_save_steps,
            freeze_embeddings={"auto": None, "yes": True, "no": False}[distill_args.teacher_freeze_embeddings],
        )
        # evaluate=False: the teacher reads validation and test once, below, for its logits as well as its metrics
        fine_tune_teacher(
            base, data.raw, teacher_dir, settings, resume=True, evaluate=False, name=base_encoder.describe()
        )
    with training_args.main_process_first(desc="teacher labelling"):
        if distill_args.teacher_base:
            teacher, tokenizer = load_teacher(str(teacher_dir))
            check_teacher_labels(teacher, [data.id2label[i] for i in range(data.num_labels)], str(teacher_dir))
        teacher.to(training_args.device)
        max_length = resolve_max_length(data.tokenizer, data_args.max_length)
        windows = distill_args.windows_for(max_length)
        teacher_metrics, teacher_logits = _evaluate_teacher(
            teacher, tokenizer, data, distill_args.teacher_max_length, distill_args.labelling_batch_size, windows
        )
        teacher_metrics["windows"] = windows  # recorded as teacher_windows
        if distill_args.teacher_base and training_args.process_index == 0:
            record_teacher_results(teacher_dir, teacher_metrics)  # so DIR/teacher/ is complete for --teacher
        train, texts = transfer["train"], transfer["texts"]
        identity = {
            **transfer["identity"],
            "teacher_fingerprint": teacher_fingerprint(teacher, reference),
            "teacher_windows": windows,
        }
        cache = work / TEACHER_LOGITS_DIR
        if distill_args.reuse_teacher_logits and not cache.exists():
            _check_reusable(distill_args, cache_identity(texts, identity))  # now the fine-tuned teacher's too
            _copy_into_place(Path(distill_args.reuse_teacher_logits), cache)
        try:
            labelled = label_texts(
                teacher,
                tokenizer,
                texts,
                cache,
                identity=identity,
                max_length=distill_args.teacher_max_length,
                batch_size=distill_args.labelling_batch_size,
                windows=windows,
            )
        except CacheMismatchError as error:
            if not distill_args.reuse_teacher_logits:
                raise
            raise CacheMismatchError(_reuse_refusal(distill_args, error), error.what) from error
        data.tokenized["train"] = _tokenize_transfer_set(labelled, list(train["label"]), data.tokenizer, max_length)
    teacher.to("cpu")
    del teacher

    trainer = build_trainer(
        run.model, training_args, data, run.problem_type, trainer_class=DistillationTrainer, distillation=distill_args
    )
    metrics, predictions = train_and_evaluate(run, trainer)
    metrics.update(_prefixed(teacher_metrics, "teacher_"))
    metrics["num_parameters"] = sum(p.numel() for p in trainer.model.parameters())
    metrics["transfer_set_size"] = len(texts)
    if predictions is not None and "test" in teacher_logits and data.has_test:
        student_logits = _in_dataset_order(trainer, data.tokenized["test"], predictions[1])
        agreement = (student_logits.argmax(-1) == teacher_logits["test"].argmax(-1)).mean()
        metrics["test_teacher_agreement"] = float(agreement)
    described = (
        reference if distill_args.teacher else f"{reference}, fine-tuned on this training split ({TEACHER_DIR}/)"
    )
    return finish_trainer_run(run, trainer, metrics, predictions, teacher=described)


def distill(argv: list[str] | None = None) -> RunOutcome:
    """`hf-gru distill` / `scripts/distill.py` from a command line."""
    return run_distillation(*parse_distillation_arguments(argv))
