"""Start a GRU's embedding matrix from a transformers model's input embeddings (Kim 2014: +4-5 points on SST-2/MR).

The rows are the source model's vocabulary, so the GRU must use that model's tokenizer (`hf-gru train
--init_embeddings MODEL` and `hf-gru distill` both do). The width is reduced to the GRU's `embedding_size`:

- ``pca`` (default): the top principal directions of the centred matrix. Deterministic, instant, and it keeps the
  most variance a linear map of that width can keep.
- ``learned``: a linear map fitted (starting from PCA) so the reduced vectors keep the source's cosine similarities
  between tokens, the geometry a classifier reads, rather than its variance.

Either way the matrix is rescaled to the GRU's `embedding_init_std`, the scale its input weights are initialised
for (transformer embeddings are ~20x smaller), and the padding row is zeroed.
"""

from __future__ import annotations

import logging

import torch

from ..modeling_gru import GRUForSequenceClassification

logger = logging.getLogger(__name__)

METHODS = ("pca", "learned")


def load_input_embeddings(source: str) -> torch.Tensor:
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


def initialize_embeddings(model: GRUForSequenceClassification, source: str, method: str = "pca") -> None:
    """Copy `source`'s input embeddings, reduced to the model's `embedding_size`, into the model (in place).

    The model's vocabulary must be the source's (its tokenizer); extra rows the tokenizer added keep their random
    start. Raises ValueError naming both sizes when the vocabularies cannot line up.
    """
    matrix = load_input_embeddings(source)
    embedding = model.get_input_embeddings()
    vocab, width = embedding.weight.shape
    if vocab < matrix.shape[0]:
        raise ValueError(
            f"the GRU's vocabulary has {vocab} tokens but {source} has {matrix.shape[0]} embedding rows: the GRU "
            f"must use {source}'s tokenizer (rows follow its vocabulary)"
        )
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
        source,
        matrix.shape[1],
        width,
        method if width != matrix.shape[1] else "identity",
    )
