"""Train a subword tokenizer from raw texts and load tokenizers, the Hugging Face way.

The result is always a plain `transformers.PreTrainedTokenizerFast` (a `tokenizer.json` plus config), so a saved
tokenizer reloads with `AutoTokenizer.from_pretrained` anywhere, without `hf_gru` installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .run_directory import TOKENIZER_CONFIG_FILE, TOKENIZER_VOCAB_FILES

logger = logging.getLogger(__name__)

__all__ = ["ALGORITHMS", "PAD_TOKEN", "SPECIAL_TOKENS", "UNK_TOKEN", "load_tokenizer", "train_tokenizer"]

ALGORITHMS = ("wordpiece", "bpe", "unigram")
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
# Order fixes the ids: [PAD] = 0 (matches the usual embedding padding_idx), [UNK] = 1.
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]

# The code points BERT's `handle_chinese_chars` treats as CJK ideographs (one token per character).
_CJK_CLASS = (
    "[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f]"
)
_METASPACE = "\u2581"  # "▁", SentencePiece's word-start marker
_BATCH = 1000  # texts per batch handed to the Rust trainer: fewer Python -> Rust crossings
_TOKENIZER_FILES = (TOKENIZER_CONFIG_FILE, *TOKENIZER_VOCAB_FILES)  # any of them marks a tokenizer folder


def train_tokenizer(
    texts: Iterable[str],
    *,
    algorithm: str = "wordpiece",
    vocab_size: int = 30_000,
    min_frequency: int = 2,
    lowercase: bool = True,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a WordPiece, BPE or Unigram tokenizer on `texts` (any iterable of strings, read in batches).

    WordPiece and BPE training is deterministic: the same texts give the same vocabulary and ids in every run and
    process (the Rust trainers alone are not; see `_continuation_pieces`). They read the texts twice, so a one-shot
    iterator is buffered; pass a re-iterable (a list, a `datasets` column) for huge corpora. Unigram reads them once
    and its vocabulary can still differ slightly between runs (upstream trainer).

    Normalisation is BERT's (`BertNormalizer`: clean control characters, lowercase and strip accents when
    `lowercase`), and every algorithm splits on whitespace and punctuation and puts each CJK ideograph in a token of
    its own, so Chinese is tokenized per character whatever the algorithm:

    - ``wordpiece`` / ``bpe``: BERT pre-tokenization, continuation pieces prefixed ``##`` and the WordPiece decoder,
      so both decode like BERT (``"我 爱 你"``, ``"hello, world"``).
    - ``unigram``: SentencePiece-style ``▁`` word-start marker (`Metaspace`) with CJK characters and punctuation
      isolated, so decoding restores the normalised text exactly, spaces included. The Unigram trainer has no
      frequency cut-off: `min_frequency` is ignored for it.

    Only ``[PAD]`` (id 0) and ``[UNK]`` (id 1) are special: the GRU classifier reads the whole masked sequence, so
    it needs no ``[CLS]``/``[SEP]`` and no post-processor adds them; `model_input_names` omits ``token_type_ids``
    because the model does not take them. Characters never seen in training map to ``[UNK]``.
    """
    algorithm = _check_args(texts, algorithm, vocab_size, min_frequency, model_max_length)
    tokenizer, trainer = _build(algorithm, vocab_size, min_frequency, lowercase, show_progress)
    if algorithm != "unigram":
        # One pass to fix the continuation pieces' ids up front (see `_continuation_pieces`); a one-shot
        # iterator is buffered so that it can be read twice.
        if iter(texts) is texts:
            texts = list(texts)
        continuation = _continuation_pieces(texts, tokenizer.normalizer)
        trainer.special_tokens = [*SPECIAL_TOKENS, *continuation]

    counter = [0]
    length = len(texts) if hasattr(texts, "__len__") else None  # only feeds the progress bar
    tokenizer.train_from_iterator(_batches(texts, counter), trainer=trainer, length=length)
    if counter[0] == 0:
        raise ValueError("train_tokenizer got no texts: `texts` was empty (was a generator already consumed?)")
    tokenizer = _canonical(tokenizer, algorithm)

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
        model_input_names=list(MODEL_INPUT_NAMES),
        # The decoders already clean up (WordPiece) or restore spaces exactly (Metaspace); a second pass would
        # only damage Unigram's exact round trip.
        clean_up_tokenization_spaces=False,
    )


def _check_args(texts: object, algorithm: str, vocab_size: int, min_frequency: int, model_max_length: int) -> str:
    """Fail before training starts, naming the argument, rather than deep inside the Rust trainer."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("train_tokenizer: `texts` must be an iterable of strings, not a single string")
    if not isinstance(texts, Iterable):
        raise TypeError(f"train_tokenizer: `texts` must be an iterable of strings, got {type(texts).__name__}")
    algo = algorithm.lower() if isinstance(algorithm, str) else algorithm
    if algo not in ALGORITHMS:
        raise ValueError(f"train_tokenizer: unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if not _is_int(vocab_size) or vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"train_tokenizer: vocab_size must be an int greater than {len(SPECIAL_TOKENS)} (the special tokens), "
            f"got {vocab_size!r}"
        )
    if not _is_int(min_frequency) or min_frequency < 0:
        raise ValueError(f"train_tokenizer: min_frequency must be an int >= 0, got {min_frequency!r}")
    if not _is_int(model_max_length) or model_max_length <= 0:
        raise ValueError(f"train_tokenizer: model_max_length must be a positive int, got {model_max_length!r}")
    return algo


def _continuation_pieces(texts: Iterable[str], normalizer: normalizers.Normalizer) -> list[str]:
    """`##c` for every character `c` of the normalised texts, sorted.

    The Rust BPE/WordPiece trainers create these pieces lazily while iterating a hash map, so their ids, and through
    merge tie-breaking even the vocabulary, change from run to run (huggingface/tokenizers#1794). Declared up front
    they get fixed ids and training becomes deterministic; `_canonical` then demotes them to ordinary tokens.
    """
    alphabet: set[str] = set()
    for batch in _batches(texts, [0]):
        alphabet.update(normalizer.normalize_str("\n".join(batch)))
    # CJK ideographs are always split off as words of their own: they never continue a word.
    cjk = re.compile(_CJK_CLASS)
    return ["##" + c for c in sorted(alphabet) if not c.isspace() and not cjk.match(c)]


def _canonical(tokenizer: Tokenizer, algorithm: str) -> Tokenizer:
    """The trained tokenizer with only [PAD]/[UNK] special, and ids that do not depend on hash-map order."""
    state = json.loads(tokenizer.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    if algorithm == "unigram":
        # Pieces with equal scores come out in hash-map order: sort them (specials keep their leading ids).
        vocab = state["model"]["vocab"]
        head = [piece for piece in vocab if piece[0] in SPECIAL_TOKENS]
        rest = sorted((piece for piece in vocab if piece[0] not in SPECIAL_TOKENS), key=lambda p: (-p[1], p[0]))
        state["model"]["vocab"] = head + rest
        state["model"]["unk_id"] = [piece[0] for piece in head].index(UNK_TOKEN)
    return Tokenizer.from_str(json.dumps(state))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _batches(texts: Iterable[str], counter: list[int]) -> Iterator[list[str]]:
    """Stream `texts` in lists (the trainer accepts batches) while type-checking and counting them."""
    batch: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"train_tokenizer: text #{i} is {type(text).__name__}, expected str")
        batch.append(text)
        if len(batch) == _BATCH:
            counter[0] += len(batch)
            yield batch
            batch = []
    if batch:
        counter[0] += len(batch)
        yield batch


def _build(
    algorithm: str, vocab_size: int, min_frequency: int, lowercase: bool, show_progress: bool
) -> tuple[Tokenizer, trainers.Trainer]:
    special = list(SPECIAL_TOKENS)
    if algorithm == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        # BERT's handle_chinese_chars would put spaces around ideographs, which Metaspace would then turn into a
        # "▁" token before every character; isolating ideographs in the pre-tokenizer keeps them one token each.
        tokenizer.normalizer = _normalizer(lowercase, handle_chinese_chars=False)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True),
                pre_tokenizers.Split(Regex(_CJK_CLASS), behavior="isolated"),
                pre_tokenizers.Punctuation(behavior="isolated"),
            ]
        )
        tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special, unk_token=UNK_TOKEN, show_progress=show_progress
        )
        return tokenizer, trainer

    if algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special,
            continuing_subword_prefix="##",
            show_progress=show_progress,
        )
    else:  # bpe: "##" continuation pieces, so it decodes exactly like WordPiece
        tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special,
            continuing_subword_prefix="##",
            show_progress=show_progress,
        )
    tokenizer.normalizer = _normalizer(lowercase, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tokenizer, trainer


def _normalizer(lowercase: bool, *, handle_chinese_chars: bool) -> normalizers.Normalizer:
    # Accents are stripped only with lowercasing, as in BERT's uncased/cased pair.
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=handle_chinese_chars, strip_accents=lowercase, lowercase=lowercase
    )


def load_tokenizer(name_or_path: str, **kwargs: object) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained`, with errors that say what was looked for, and a pad token guaranteed.

    Batching needs a pad token; tokenizers without one (GPT-2 style) get ``unk`` or ``eos`` as pad, or a new
    ``[PAD]`` token as a last resort (then ``len(tokenizer)`` grew by one: size the embeddings from it).
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    expected = (
        "a directory written by `tokenizer.save_pretrained()` (with tokenizer.json or tokenizer_config.json) "
        "or a Hugging Face Hub model id such as 'org/name'"
    )
    if path.exists():
        if not path.is_dir() or not any((path / f).is_file() for f in _TOKENIZER_FILES):
            raise ValueError(f"load_tokenizer: {str(path)!r} holds no tokenizer; expected {expected}")
        name = str(path)
    elif _looks_like_path(name):
        raise OSError(f"load_tokenizer: no such directory {str(path)!r}; expected {expected}")

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except ValueError as err:
        msg = f"load_tokenizer: could not build a tokenizer from {name!r} ({err}); expected {expected}"
        raise ValueError(msg) from err
    except OSError as err:
        offline = " HF_HUB_OFFLINE is set, so only locally cached Hub files are used." if _offline() else ""
        raise OSError(f"load_tokenizer: could not load {name!r}; expected {expected}.{offline} Cause: {err}") from err

    if tokenizer.pad_token is None:
        _add_pad_token(tokenizer, name)
    return tokenizer


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else with separators is meant as a local path."""
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _add_pad_token(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    for role in ("unk_token", "eos_token"):
        token = getattr(tokenizer, role, None)
        if token is not None:
            tokenizer.pad_token = token
            logger.warning("Tokenizer %r has no pad token; using its %s %r for padding", name, role, str(token))
            return
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    logger.warning(
        "Tokenizer %r has no pad, unk or eos token; added %r (vocabulary is now %d: resize the embeddings)",
        name,
        PAD_TOKEN,
        len(tokenizer),
    )
