"""Which language a corpus is in, from its characters: picks a pretrained start and fills the model card."""

from __future__ import annotations


def detect_language(texts: list[str]) -> str | None:
    """'zh' when CJK ideographs dominate, 'en' when ASCII letters do, else unknown (None)."""
    sample = "".join(texts[:2000])
    letters = [c for c in sample if c.isalpha()]
    if not letters:
        return None
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    if cjk / len(letters) > 0.3:
        return "zh"
    ascii_letters = sum(c.isascii() for c in letters)
    return "en" if ascii_letters / len(letters) > 0.9 else None
