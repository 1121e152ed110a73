"""Start a GRU's embedding matrix from a transformers model's input embeddings (Kim 2014: +4-5 points on SST-2/MR).

The rows are the source model's vocabulary, so the GRU must use that model's tokenizer (`hf-gru train
--init_embeddings MODEL` and `hf-gru distill` both do); rows the tokenizer cannot produce (multilingual-e5-small
keeps 250,037 rows for 250,002 pieces) are dropped, and a pruned vocabulary takes just its own rows. The width is
reduced to the GRU's `embedding_size`:

- ``pca`` (default): the top principal directions of the centred matrix. Deterministic, instant, and it keeps the
  most variance a linear map of that width can keep.
- ``learned``: a linear map fitted (starting from PCA) so the reduced vectors keep the source's cosine similarities
  between tokens, the geometry a classifier reads, rather than its variance.

Either way the matrix is rescaled to the GRU's `embedding_init_std`, the scale its input weights are initialised
for (transformer embeddings are ~20x smaller), and the padding row is zeroed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import TrainingArguments

from ..modeling_gru import GRUForSequenceClassification

logger = logging.getLogger(__name__)

METHODS = ("pca", "learned")


def load_input_embeddings(source: str | Path) -> torch.Tensor:
    """The input-embedding matrix (vocab, width) of any transformers model, loaded once on CPU."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a classifier's head is "unexpected" here: expected, not news
    try:
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--init_embeddings {source}: not a transformers model this machine can load ({error})"
        ) from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    embeddings = model.get_input_embeddings()
    if embeddings is None or not hasattr(embeddings, "weight"):
        raise ValueError(f"--init_embeddings {source}: the model has no input-embedding matrix to start from")
    return embeddings.weight.detach().float().clone()


def pca_project(matrix: torch.Tensor, width: int) -> torch.Tensor:
    """(vocab, d) → (vocab, width): the centred matrix on its top `width` principal directions."""
    centred = matrix - matrix.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:width].T


def learned_project(
    matrix: torch.Tensor, width: int, *, steps: int = 300, sample: int = 2048, seed: int = 0
) -> torch.Tensor:
    """(vocab, d) → (vocab, width) by a linear map trained to keep the tokens' pairwise cosine similarities."""
    generator = torch.Generator().manual_seed(seed)
    centred = matrix - matrix.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.nn.Parameter(v[:width].T.clone())
    optimizer = torch.optim.Adam([projection], lr=1e-3)
    for _ in range(steps):
        rows = centred[torch.randint(len(centred), (sample,), generator=generator)]
        target = torch.nn.functional.normalize(rows, dim=-1)
        reduced = torch.nn.functional.normalize(rows @ projection, dim=-1)
        loss = (reduced @ reduced.T - target @ target.T).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (centred @ projection).detach()


def reduce_embeddings(matrix: torch.Tensor, width: int, method: str = "pca") -> torch.Tensor:
    """The source matrix at the student's width (identity when they already match)."""
    if method not in METHODS:
        raise ValueError(f"unknown embedding reduction {method!r}; choose one of {', '.join(METHODS)}")
    if width > matrix.shape[1]:
        raise ValueError(
            f"embedding_size {width} is wider than the source embeddings ({matrix.shape[1]}); "
            f"use --embedding_size {matrix.shape[1]} or less"
        )
    if width == matrix.shape[1]:
        return matrix.clone()
    return pca_project(matrix, width) if method == "pca" else learned_project(matrix, width)


def initialize_embeddings(
    model: GRUForSequenceClassification,
    source: str | Path,
    method: str = "pca",
    *,
    rows: Sequence[int] | None = None,
    name: str | None = None,
) -> None:
    """Copy `source`'s input embeddings, reduced to the model's `embedding_size`, into the model (in place).

    `rows`: the source rows of the model's tokens in order (a pruned vocabulary); default the first `vocab_size` rows
    (the tokenizer's own, without the padding rows some models keep). Rows past the source's (tokens the tokenizer
    added) keep their random start. `name` is how the source is called in messages.
    """
    name = name or str(source)
    matrix = load_input_embeddings(source)
    embedding = model.get_input_embeddings()
    vocab, width = embedding.weight.shape
    if rows is not None:
        rows = torch.as_tensor(list(rows), dtype=torch.long)
        if len(rows) != vocab or int(rows.max()) >= matrix.shape[0]:
            raise ValueError(f"the pruned vocabulary ({len(rows)} rows) does not fit {name} or the GRU ({vocab} rows)")
        matrix = matrix[rows]
    elif vocab < matrix.shape[0]:
        from ..tokenization import load_tokenizer

        if len(load_tokenizer(str(source))) != vocab:
            raise ValueError(
                f"the GRU's vocabulary has {vocab} tokens but {name} has {matrix.shape[0]} embedding rows: the GRU "
                f"must use {name}'s tokenizer (rows follow its vocabulary)"
            )
        logger.info("embeddings: %s keeps %d rows for %d tokens (padding rows dropped)", name, len(matrix), vocab)
        matrix = matrix[:vocab]
    reduced = reduce_embeddings(matrix, width, method)
    reduced = reduced * (model.config.embedding_init_std / reduced.std().clamp_min(1e-8))
    with torch.no_grad():
        embedding.weight[: len(reduced)] = reduced.to(embedding.weight.dtype)
        pad = model.config.pad_token_id
        if pad is not None and 0 <= pad < vocab:
            embedding.weight[pad].zero_()
    logger.info(
        "embeddings: %d rows from %s (%d → %d dims, %s)",
        len(reduced),
        name,
        matrix.shape[1],
        width,
        method if width != matrix.shape[1] else "identity",
    )


def scale_embedding_learning_rate(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, training_args: TrainingArguments
) -> None:
    """Move the input-embedding table into its own parameter group at `embedding_learning_rate_multiplier` × its
    group's learning rate (1, nothing moved, for arguments without the field), and the TF-IDF bag's weights
    (`bag_of_tokens`) into one at `bag_learning_rate_multiplier` ×.

    Why: under Adam every weight moves about `lr` a step, so a table drawn from N(0, 1) stays nearly random at the
    rate that suits the GRU (cosine good/great 0.10 after 10 SST-2 epochs; 0.31 at 30x). Its accuracy effect is
    mixed (BENCHMARKS.md), so the default is 1. The bag is a linear model over unit-norm rows that starts at zero:
    at the GRU's rate it is still far from fitted after the epochs the GRU needs (20 Newsgroups alone: 82.8% after
    6 epochs at 2e-3, 83.9% after 3 at 2e-2). Both engines call this before the scheduler is built; idempotent.
    """
    unwrapped = getattr(model, "module", model)
    bag = getattr(unwrapped, "token_bag", None)
    _own_group(optimizer, model.get_input_embeddings().weight, training_args, "embedding_learning_rate_multiplier")
    if bag is not None:
        _own_group(optimizer, bag.weight, training_args, "bag_learning_rate_multiplier")


def _own_group(
    optimizer: torch.optim.Optimizer, parameter: torch.nn.Parameter, training_args: TrainingArguments, field: str
) -> None:
    multiplier = getattr(training_args, field, 1.0)
    if multiplier == 1 or any(group.get("scaled_by") == field for group in optimizer.param_groups):
        return
    for group in optimizer.param_groups:
        if any(param is parameter for param in group["params"]):
            group["params"] = [param for param in group["params"] if param is not parameter]
            settings = {key: value for key, value in group.items() if key != "params"}
            optimizer.add_param_group(
                {**settings, "params": [parameter], "lr": group["lr"] * multiplier, "scaled_by": field}
            )
            return
