"""Transfer-set augmentation after Tang et al. 2019: masking, n-gram sampling and in-vocabulary word replacement.

The teacher labels every augmented text, so the student learns the teacher's function on many more inputs than
the gold training set has. Tang replace words by words of the same part of speech (a tagger); here the replacement
comes from the training texts' own vocabulary, sampled by frequency, so no extra model or language resource is
needed. Words are whitespace-separated runs; CJK characters are words of their own (Chinese has no spaces), so the
same code serves English and Chinese. Everything is seeded; exact duplicates (of each other and of the originals)
are dropped.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# The augmented texts may take at most this share of the memory available when they are drawn: the teacher, the
# student and the tokenized transfer set need the rest.
MEMORY_SHARE = 0.5
_SLOT_BYTES = 64  # per augmented text besides the string: its list slots and its slot in the duplicate set

# CJK ideographs (incl. extension A and compatibility), kana and hangul: one word each.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_IS_CJK = re.compile(f"[{_CJK}]")


@dataclass(frozen=True)
class AugmentationSettings:
    """Tang et al.'s probabilities; `copies` augmented texts are drawn per training text (Tang: 20)."""

    copies: int = 10
    mask_probability: float = 0.1
    replace_probability: float = 0.1
    ngram_probability: float = 0.25
    max_ngram: int = 5
    seed: int = 42

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ValueError(f"--augment_copies must be >= 0, got {self.copies}")
        for name in ("mask_probability", "replace_probability", "ngram_probability"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1, got {self.max_ngram}")


def split_words(text: str) -> list[str]:
    """Whitespace-separated words, with every CJK character a word of its own."""
    return _WORD.findall(text)


def join_words(words: Sequence[str]) -> str:
    """Inverse of :func:`split_words` up to whitespace: no space next to a CJK character."""
    out: list[str] = []
    for word in words:
        if out and not (_IS_CJK.match(out[-1][-1]) or _IS_CJK.match(word[0])):
            out.append(" ")
        out.append(word)
    return "".join(out)


class Augmenter:
    """Draws augmented copies of texts; `mask_token` None drops masked words instead (a teacher without one)."""

    def __init__(self, texts: Iterable[str], settings: AugmentationSettings, mask_token: str | None):
        self.settings = settings
        self.mask_token = mask_token
        counts = Counter(word for text in texts for word in split_words(text))
        self.vocabulary = list(counts)
        self.cumulative = list(itertools.accumulate(counts[w] for w in self.vocabulary))

    def _replacement(self, rng: random.Random) -> str:
        return rng.choices(self.vocabulary, cum_weights=self.cumulative)[0]  # by frequency, O(log V)

    def augment_one(self, text: str, rng: random.Random) -> str:
        """One draw: per word mask (p_mask) else replace (p_replace); then, with p_ngram, keep a random n-gram."""
        s = self.settings
        words: list[str] = []
        for word in split_words(text):
            draw = rng.random()
            if draw < s.mask_probability:
                if self.mask_token is not None:
                    words.append(self.mask_token)
            elif draw < s.mask_probability + s.replace_probability and self.vocabulary:
                words.append(self._replacement(rng))
            else:
                words.append(word)
        if words and rng.random() < s.ngram_probability:
            n = min(rng.randint(1, s.max_ngram), len(words))
            start = rng.randint(0, len(words) - n)
            words = words[start : start + n]
        return join_words(words)

    def augment(self, texts: Sequence[str]) -> list[str]:
        """`copies` draws per text, seeded per text position; duplicates and copies of an original are dropped."""
        seen = set(texts)
        out: list[str] = []
        bar = tqdm(texts, desc="augmenting the training texts", unit="text", disable=not self.settings.copies)
        for index, text in enumerate(bar):
            rng = random.Random(f"{self.settings.seed}-{index}")
            for _ in range(self.settings.copies):
                new = self.augment_one(text, rng)
                if new.strip() and new not in seen:
                    seen.add(new)
                    out.append(new)
        return out


def augment_texts(
    texts: Sequence[str], settings: AugmentationSettings, mask_token: str | None, vocabulary_texts: Iterable[str] = ()
) -> list[str]:
    """New texts only (the originals are not repeated); the replacement vocabulary is `texts` + `vocabulary_texts`."""
    check_augmentation_fits(texts, settings.copies)
    if mask_token is None and settings.mask_probability > 0:
        logger.warning("the teacher's tokenizer has no mask or unknown token: masked words are dropped instead")
    augmenter = Augmenter(list(texts) + list(vocabulary_texts), settings, mask_token)
    return augmenter.augment(texts)


def mask_token_of(tokenizer) -> str | None:
    """The teacher's mask token; [UNK] when it has none (with a warning); None (drop the word) when neither."""
    if getattr(tokenizer, "mask_token", None):
        return tokenizer.mask_token
    if getattr(tokenizer, "unk_token", None):
        logger.warning(
            "the teacher's tokenizer has no mask token: masked words become its unknown token %s", tokenizer.unk_token
        )
        return tokenizer.unk_token
    return None


def available_memory() -> int:
    """Bytes of memory this process could still take (psutil ships with accelerate; sysconf where it is absent)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


def check_augmentation_fits(texts: Sequence[str], copies: int) -> None:
    """Refuse, before drawing any, `copies` augmented copies of `texts` that would not fit in memory.

    Each copy is sized like its original (an n-gram copy is smaller): an upper estimate, so a refusal is certain
    to be right; the limit is `MEMORY_SHARE` of the memory available now, and the message gives the largest
    ``--augment_copies`` within it.
    """
    if not copies or not texts:
        return
    sample = texts[:: max(1, len(texts) // 2000)]
    per_copy = len(texts) * (sum(sys.getsizeof(t) for t in sample) / len(sample) + _SLOT_BYTES)
    needed, budget = copies * per_copy, MEMORY_SHARE * available_memory()
    if needed <= budget:
        return
    most = int(budget // per_copy)
    fix = f"use --augment_copies {most} or fewer" if most else "use --augment_copies 0 or fewer training texts"
    raise ValueError(
        f"--augment_copies {copies}: {len(texts):,} training texts x {copies:,} copies would take about "
        f"{_gib(needed)} of memory, more than {MEMORY_SHARE:.0%} of the {_gib(budget / MEMORY_SHARE)} this machine "
        f"has available; {fix} (Tang et al. used 20)"
    )
