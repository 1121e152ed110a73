"""The teacher: fine-tune a pretrained encoder with the HF `Trainer`, check a given one, and label texts with it.

`--teacher-base MODEL` goes through :func:`fine_tune_teacher` (the very code the benchmarks ran), `--teacher MODEL`
through :func:`load_teacher`; both give a `transformers` sequence classifier whose labels match the dataset's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..data import clip_text, path_like
from ..metrics import build_compute_metrics
from ..run_directory import (
    RESULTS_FILE,
    TEACHER_FINGERPRINT_FILE,
    TRAINER_STATE_FILE,
    read_results,
    resolve_checkpoint,
    save_results,
)

logger = logging.getLogger(__name__)


LARGE_EMBEDDING_ROWS = 100_000


@dataclass
class TeacherSettings:
    """Defaults for fine-tuning a small encoder (MiniLM/BERT-base) as a teacher: the usual GLUE-style recipe."""

    learning_rate: float = 5e-5
    epochs: float = 3.0
    batch_size: int = 32
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    max_train_samples: int | None = None  # fine-tune on a seeded subset where the CPU cannot afford the whole split
    # The input-embedding matrix stays fixed: None = when it has over LARGE_EMBEDDING_ROWS rows. multilingual-e5-small
    # keeps 96 M of its 118 M parameters there; their dense gradient and AdamW update cost more than the 12 layers.
    freeze_embeddings: bool | None = None
    save_steps: int | None = None  # checkpoint (and evaluate) every this many steps instead of every epoch


def check_model_reference(reference: str, option: str) -> None:
    """Refuse a missing local model path before the Hub client sees it and answers "Repo id must be in the form".

    Only references that cannot be Hub ids are judged: written as a path (``./``, ``/``, ``~``), inside an existing
    local folder, or rejected by the Hub's own id validator. ``namespace/name`` stays a Hub id.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(reference).expanduser()
    if path.exists():
        return
    why = path_like(reference, path)
    if why is None:
        try:
            validate_repo_id(reference)
        except HFValidationError:
            why = "it is not a valid Hub id"
    if why:
        raise ValueError(
            f"{option} {reference} does not exist (looked in {Path.cwd()}); {why}, so it is not tried as a Hub id: "
            "give the folder of a saved transformers model or a Hub id such as namespace/name"
        )


def label_mapping(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _tokenize(data: DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> DatasetDict:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = tokenizer(batch["text"], truncation=True, max_length=max_length)
        out["length"] = [len(ids) for ids in out["input_ids"]]
        return out

    return data.map(encode, batched=True, remove_columns=["text"], desc="tokenizing for the teacher")


def fine_tune_teacher(
    base: str,
    data: DatasetDict,
    output_dir: str | Path,
    settings: TeacherSettings | None = None,
    *,
    resume: bool = False,
    evaluate: bool = True,
    name: str | None = None,
) -> dict[str, float]:
    """Fine-tune `base` on ``data['train']``, keep the epoch best on validation, save it with its results.

    `data` holds ``text`` and a ``ClassLabel`` ``label`` (``load_raw_datasets``); the teacher is selected on the
    same validation split the student later uses, and evaluated on test when there is one. Returns the metrics also
    written to ``output_dir/all_results.json`` (``eval_*`` on validation, ``test_*`` on test). ``evaluate=False``
    leaves the last two out for a caller that reads both splits with the teacher anyway (``hf-gru distill`` does,
    for its logits, and adds them with :func:`record_teacher_results`): on IMDB's 25,000 test reviews the pass
    costs about ten minutes on a 2-core CPU. `name` is what the results call the base (`base` may be the folder
    it was resolved to). With `resume`, training continues from the newest complete checkpoint in `output_dir`.
    """
    settings = settings or TeacherSettings()
    output_dir = Path(output_dir)
    names = tuple(data["train"].features["label"].names)
    set_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(names), **label_mapping(names))
    table = model.get_input_embeddings().weight
    freeze = settings.freeze_embeddings
    if freeze if freeze is not None else table.shape[0] > LARGE_EMBEDDING_ROWS:
        table.requires_grad_(False)  # the Trainer's optimizer takes only parameters that require a gradient
        logger.info("teacher: its %d x %d input embeddings stay fixed while fine-tuning", *table.shape)
    if settings.max_train_samples is not None and settings.max_train_samples < len(data["train"]):
        subset = data["train"].shuffle(seed=settings.seed).select(range(settings.max_train_samples))
        data = DatasetDict({**data, "train": subset})
    tokenized = _tokenize(data, tokenizer, settings.max_length)
    every = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    if settings.save_steps is not None:  # selection and early stopping then also go by these steps
        every = {"eval_strategy": "steps", "save_strategy": "steps", "save_steps": settings.save_steps}
        every["eval_steps"] = settings.save_steps
    args = TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=2 * settings.batch_size,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,
        **every,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        train_sampling_strategy="group_by_length",
        logging_steps=50,
        report_to="none",
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics("single_label_classification"),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    started = time.perf_counter()
    last = _last_complete_checkpoint(output_dir) if resume else None
    if last is not None:
        step = json.loads((last / TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"]
        logger.info("resuming the teacher's fine-tuning at step %d from %s", step, last)
    result = trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    metrics: dict[str, float] = dict(result.metrics)
    metrics["train_wall_seconds"] = round(time.perf_counter() - started, 2)
    metrics["train_samples"] = len(tokenized["train"])
    trainer.save_model()
    trainer.save_state()
    if evaluate:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
        if "test" in tokenized:
            metrics.update(trainer.predict(tokenized["test"], metric_key_prefix="test").metrics)
    if not trainer.is_world_process_zero():
        return metrics
    metrics["base_model"] = name or base  # type: ignore[assignment]
    metrics["embeddings_frozen"] = not table.requires_grad  # type: ignore[assignment]
    metrics["num_parameters"] = sum(p.numel() for p in model.parameters())
    record_teacher_results(output_dir, metrics)
    for checkpoint in output_dir.glob("checkpoint-*"):  # the best model is saved at the top; keep the dir small
        shutil.rmtree(checkpoint)
    return metrics


def _last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest teacher checkpoint a kill did not cut short (its trainer state is written last), if any."""
    if not output_dir.is_dir() or not any(output_dir.glob("checkpoint-*")):
        return None
    try:
        return resolve_checkpoint("last", output_dir)  # the rule `--resume_from_checkpoint last` follows
    except ValueError:  # only incomplete ones: a kill during the first save
        return None


def record_teacher_results(teacher_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Merge `metrics` into the teacher's ``all_results.json``."""
    results = read_results(teacher_dir) if (Path(teacher_dir) / RESULTS_FILE).is_file() else {}
    save_results(Path(teacher_dir), {**results, **metrics})


def load_teacher(reference: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fine-tuned sequence classifier and its tokenizer; anything else is refused with the fix."""
    config = AutoConfig.from_pretrained(reference)
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"--teacher {reference} is not a sequence classifier (architectures: {', '.join(architectures) or 'none'});"
            " pass a fine-tuned AutoModelForSequenceClassification, or --teacher-base to fine-tune this encoder first"
        )
    model = AutoModelForSequenceClassification.from_pretrained(reference)
    tokenizer = AutoTokenizer.from_pretrained(reference)
    return model.eval(), tokenizer


def check_teacher_labels(model: PreTrainedModel, names: tuple[str, ...] | list[str], reference: str) -> None:
    """The teacher's `id2label` must be the dataset's label set, in the same order (logits are compared by index)."""
    teacher = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    if teacher != list(names):
        same_set = sorted(teacher) == sorted(names)
        raise ValueError(
            f"the teacher {reference} predicts labels {teacher}, the dataset has {list(names)}"
            + (" (same names, different order)" if same_set else "")
            + "; use a teacher fine-tuned on this label set, or --teacher-base to fine-tune one"
        )


# ------------------------------------------------------------------------------------------------- labelling

CHUNK_PREFIX = "chunk-"
CHUNK_SIZE = 4096  # texts per cached Arrow chunk: what a killed labelling loses at most


class CacheMismatchError(ValueError):
    """The output directory holds teacher logits for another teacher or other texts (`what`: which of them)."""

    def __init__(self, message: str, what: str = "") -> None:
        super().__init__(message)
        self.what = what


_WHERE_NOT_WHAT = ("_name_or_path", "transformers_version")  # a moved or re-saved teacher is the same teacher


def teacher_fingerprint(model: PreTrainedModel, reference: str) -> str:
    """Identifies a teacher by its weights (the classifier head and embeddings), not by its path."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in _WHERE_NOT_WHAT}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    state = model.state_dict()
    for name in sorted(state)[-4:] + sorted(state)[:2]:
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def texts_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cache_identity(texts: list[str], identity: dict[str, Any], chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """What a logits cache records about itself: `identity` (teacher, its fingerprint, dataset) and the texts."""
    return {
        **identity,
        "num_texts": len(texts),
        "texts_fingerprint": texts_fingerprint(texts),
        "chunk_size": chunk_size,
    }


def check_cache(cache_dir: str | Path, identity: dict[str, Any]) -> None:
    """Refuse a cache made for other texts or, when `identity` has a ``teacher_fingerprint``, by another teacher."""
    path = Path(cache_dir) / TEACHER_FINGERPRINT_FILE
    if not path.is_file():
        return
    cached = json.loads(path.read_text(encoding="utf-8"))
    if "teacher_fingerprint" in identity and cached.get("teacher_fingerprint") != identity["teacher_fingerprint"]:
        what = f"teacher {cached.get('teacher')!r}, not {identity['teacher']!r}"
    elif cached.get("teacher_windows", 1) != identity.get("teacher_windows", 1):
        windows = (cached.get("teacher_windows", 1), identity.get("teacher_windows", 1))
        what = "the teacher reading {} window(s) per text, not {}".format(*windows)
    elif cached.get("texts_fingerprint") != identity["texts_fingerprint"]:
        what = f"other texts (dataset {cached.get('dataset')!r}, {cached.get('num_texts')} texts)"
    else:
        return
    raise CacheMismatchError(
        f"{cache_dir} holds the cached logits of {what}; distil into another --output_dir, or pass "
        "--overwrite_output_dir to replace that run",
        what,
    )


def label_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    cache_dir: str | Path,
    *,
    identity: dict[str, Any],
    max_length: int = 128,
    batch_size: int = 128,
    chunk_size: int = CHUNK_SIZE,
    windows: int = 1,
) -> Dataset:
    """The teacher's logits for `texts` (in order), as a `datasets` Dataset with ``text`` and ``teacher_logits``.

    Written to `cache_dir` chunk by chunk (each chunk an Arrow file, renamed into place only when complete), so a
    killed run continues from the first missing chunk; a cache made by another teacher or for other texts (the
    fingerprint in `identity`) is refused rather than mixed in. Each chunk is labelled in length-sorted batches.
    """
    cache_dir = Path(cache_dir)
    identity = cache_identity(texts, identity, chunk_size)
    check_cache(cache_dir, identity)
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / TEACHER_FINGERPRINT_FILE).write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    chunks = range(0, len(texts), chunk_size)
    done = [i for i, start in enumerate(chunks) if (cache_dir / f"{CHUNK_PREFIX}{i:05d}").is_dir()]
    if done:
        logger.info(
            "teacher logits: %d of %d chunks cached in %s, labelling the rest", len(done), len(chunks), cache_dir
        )
    model.eval()
    device = next(model.parameters()).device
    with tqdm(total=len(texts), initial=min(len(done) * chunk_size, len(texts)), desc="teacher labelling") as bar:
        for i, start in enumerate(chunks):
            final = cache_dir / f"{CHUNK_PREFIX}{i:05d}"
            if final.is_dir():
                continue
            chunk = texts[start : start + chunk_size]
            logits = _logits(model, tokenizer, chunk, device, max_length, batch_size, bar, windows)
            partial = cache_dir / f".partial-{i:05d}"
            if partial.exists():
                shutil.rmtree(partial)
            Dataset.from_dict({"text": chunk, "teacher_logits": logits.tolist()}).save_to_disk(str(partial))
            partial.rename(final)
    return load_labels(cache_dir)


def load_labels(cache_dir: str | Path) -> Dataset:
    cache_dir = Path(cache_dir)
    parts = sorted(p for p in cache_dir.iterdir() if p.name.startswith(CHUNK_PREFIX))
    return concatenate_datasets([load_from_disk(str(p)) for p in parts])


@torch.no_grad()
def _logits(
    model, tokenizer, texts: list[str], device, max_length: int, batch_size: int, bar, windows: int = 1
) -> np.ndarray:
    """Logits `(texts, labels)`; with `windows` > 1 a text is read as up to that many consecutive windows of
    `max_length` tokens, and its logits are the mean of its windows' (the teacher reads a long document whole)."""
    if windows > 1 and getattr(tokenizer, "is_fast", False):
        return _window_logits(model, tokenizer, texts, device, max_length, batch_size, bar, windows)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in index], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(device)
        out[index] = model(**batch).logits.float().cpu().numpy()
        bar.update(len(index))
    return out


def _window_logits(model, tokenizer, texts, device, max_length: int, batch_size: int, bar, windows: int):
    """`_logits` over windows: each window is tokenized with the model's own special tokens and run as one row."""
    sums = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    counts = np.zeros(len(texts), dtype=np.int64)
    # Texts go through in groups, so a corpus of long documents is never held as windows all at once.
    for group_start in range(0, len(texts), 16 * batch_size):
        end = group_start + 16 * batch_size
        group = [clip_text(text, tokenizer, windows * max_length) for text in texts[group_start:end]]
        encoded = tokenizer(group, truncation=True, max_length=max_length, return_overflowing_tokens=True)
        owners = encoded["overflow_to_sample_mapping"]
        seen: dict[int, int] = {}
        rows = []
        for r, owner in enumerate(owners):
            seen[owner] = seen.get(owner, 0) + 1
            if seen[owner] <= windows:
                rows.append(r)
        rows.sort(key=lambda r: len(encoded["input_ids"][r]))
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        for start in range(0, len(rows), batch_size):
            index = rows[start : start + batch_size]
            features = [{k: encoded[k][r] for k in keys} for r in index]
            batch = tokenizer.pad(features, return_tensors="pt").to(device)
            logits = model(**batch).logits.float().cpu().numpy()
            owner = np.asarray([group_start + owners[r] for r in index])
            np.add.at(sums, owner, logits)
            np.add.at(counts, owner, 1)
        bar.update(len(group))
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def predict_logits(
    model, tokenizer, texts: list[str], *, max_length: int = 128, batch_size: int = 128, windows: int = 1
) -> np.ndarray:
    """Uncached logits (validation and test splits: small, and needed for the teacher's own results)."""
    device = next(model.parameters()).device
    model.eval()
    with tqdm(total=len(texts), desc="teacher on evaluation texts", disable=len(texts) < 2000) as bar:
        return _logits(model, tokenizer, texts, device, max_length, batch_size, bar, windows)
