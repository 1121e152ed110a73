"""An encoder's vocabulary measured and cut down to the texts a model is trained on.

- `unknown_token_share`: the share of a corpus's tokens that a tokenizer reads as its unknown token. An English
  vocabulary on Chinese text (all-MiniLM-L6-v2 on ChnSentiCorp: 62%) trains a model to chance level without a word;
  the run skeleton warns above `UNKNOWN_WARNING_SHARE`.
- `prune_tokenizer`: a multilingual vocabulary holds 250,002 pieces, of which one corpus uses a few percent; the
  GRU's embedding table (and its AdamW update each step) shrinks with it. The pruned tokenizer keeps the pieces the
  training texts use plus every special token, in their original order, and still loads with `AutoTokenizer`. On
  the training texts it tokenizes exactly as the full one (a unigram Viterbi or WordPiece longest match over a
  subset that holds the full path finds the same path); on other texts a dropped piece is read as the kept pieces
  it is made of, or as the unknown token when none covers it (its row would never have been trained).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

UNKNOWN_WARNING_SHARE = 0.05
PRUNABLE_MODELS = ("Unigram", "WordPiece")
# Prune by default only where the table is large: below this the saving is small and unseen words keep their
# pretrained rows (measured: README "Pretrained starts").
PRUNE_ABOVE_ROWS = 100_000


def unknown_token_share(tokenizer: PreTrainedTokenizerBase, rows: Iterable[Sequence[int]]) -> float:
    """Share of non-special tokens that are the unknown token, over tokenized rows."""
    unknown = tokenizer.unk_token_id
    if unknown is None:
        return 0.0
    special = set(tokenizer.all_special_ids) - {unknown}
    total = hits = 0
    for ids in rows:
        array = np.asarray(ids)
        if special:
            array = array[~np.isin(array, list(special))]
        total += len(array)
        hits += int((array == unknown).sum())
    return hits / total if total else 0.0


def warn_on_unknown_tokens(share: float, source: str) -> bool:
    """One warning line when `source`'s vocabulary does not cover the texts; True if it warned."""
    if share <= UNKNOWN_WARNING_SHARE:
        return False
    from .resolve import MULTILINGUAL_ENCODER

    logger.warning(
        "%.0f%% of the training tokens are unknown to %s's vocabulary: it does not cover this language, and the model "
        "will learn little; use a multilingual one (--init_embeddings %s, or auto; distill: --teacher-base %s)",
        100 * share,
        source,
        MULTILINGUAL_ENCODER,
        MULTILINGUAL_ENCODER,
    )
    return True


def used_token_ids(rows: Iterable[Sequence[int]], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the rows use plus every special and added token, ascending."""
    used = set(tokenizer.all_special_ids)
    used.update(tokenizer.added_tokens_decoder)
    for ids in rows:
        used.update(int(i) for i in ids)
    return sorted(used)


def _remap_processor(node: Any, new_id: dict[int, int]) -> Any:
    """Post-processor JSON with every special-token id renumbered (Template, Bert/Roberta and Sequence processors)."""
    if isinstance(node, list):
        if len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int):  # ("[SEP]", 102)
            return [node[0], new_id[node[1]]]
        return [_remap_processor(item, new_id) for item in node]
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "ids" and isinstance(value, list) and all(isinstance(i, int) for i in value):
                out[key] = [new_id[i] for i in value]
            else:
                out[key] = _remap_processor(value, new_id)
        return out
    return node


def prune_tokenizer(tokenizer: PreTrainedTokenizerBase, keep: Sequence[int]) -> PreTrainedTokenizerBase | None:
    """A copy of `tokenizer` holding only the ids in `keep` (ascending; new id = position), or None when its model
    kind cannot be pruned safely (BPE: dropping a piece breaks the merges that pass through it)."""
    from ..tokenization import load_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            return None
        spec = json.loads(path.read_text(encoding="utf-8"))
        kind = spec["model"].get("type")
        if kind not in PRUNABLE_MODELS:
            logger.info("vocabulary not pruned: a %s tokenizer cannot drop pieces safely", kind)
            return None
        new_id = {old: new for new, old in enumerate(keep)}
        if kind == "Unigram":
            vocab = spec["model"]["vocab"]
            spec["model"]["vocab"] = [vocab[old] for old in keep]
            if spec["model"].get("unk_id") is not None:
                spec["model"]["unk_id"] = new_id[spec["model"]["unk_id"]]
        else:
            by_id = {i: piece for piece, i in spec["model"]["vocab"].items()}
            spec["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(keep)}
        for token in spec.get("added_tokens") or []:
            token["id"] = new_id[token["id"]]
        spec["post_processor"] = _remap_processor(spec.get("post_processor"), new_id)
        path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        for stale in ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json"):
            (Path(folder) / stale).unlink(missing_ok=True)  # slow-tokenizer files would hold the full vocabulary
        pruned = load_tokenizer(folder)
    pruned.model_max_length = tokenizer.model_max_length
    return pruned


def should_prune(setting: str, vocabulary_rows: int) -> bool:
    """`--prune_vocabulary auto|yes|no`: auto prunes tables above `PRUNE_ABOVE_ROWS` rows."""
    if setting not in ("auto", "yes", "no"):
        raise ValueError(f"--prune_vocabulary {setting!r}: choose auto, yes or no")
    return setting == "yes" or (setting == "auto" and vocabulary_rows > PRUNE_ABOVE_ROWS)


def document_frequencies(
    rows: Iterable[Sequence[int]], num_columns: int, features: Callable[[Sequence[int]], Any] | None = None
) -> tuple[np.ndarray, int]:
    """How many rows hold each column at least once, and the number of rows: the TF-IDF bag's idf
    (`GRUConfig.bag_of_tokens`) is computed from these over the training texts. A row's columns are its token ids,
    or what `features` maps its ids to (the bag's hashed token pairs beside them)."""
    counts = np.zeros(num_columns, dtype=np.int64)
    num_rows = 0
    for row in rows:
        columns = np.asarray(row if features is None else features(row), dtype=np.int64)
        counts[np.unique(columns)] += 1
        num_rows += 1
    return counts, num_rows
