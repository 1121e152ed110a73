"""The TF-IDF bag of tokens (`GRUConfig.bag_of_tokens`): scikit-learn's TF-IDF exactly, batch-invariant, exported
exactly, its idf fitted from the training texts, its weights in their own learning-rate group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset

from hf_gru import GRUConfig, GRUForSequenceClassification
from hf_gru.arguments import parse_training_arguments
from hf_gru.encoders import document_frequencies

VOCAB = 40


def bag_model(seed: int = 0, **overrides) -> GRUForSequenceClassification:
    torch.manual_seed(seed)
    config = GRUConfig(
        vocab_size=VOCAB, embedding_size=8, hidden_size=8, num_labels=3, chunk_size=4,
        embedding_pooling="mean_max", bag_of_tokens=True, **overrides,
    )  # fmt: skip
    model = GRUForSequenceClassification(config).eval()
    with torch.no_grad():
        model.token_bag.weight.normal_()  # a trained bag: zero weights would hide every mistake below
    return model


def test_the_bag_is_scikit_learns_sublinear_tfidf_over_token_ids():
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text", reason="scikit-learn (the dev extra)")
    generator = torch.Generator().manual_seed(1)
    train = [torch.randint(1, VOCAB, (int(n),), generator=generator).tolist() for n in torch.randint(1, 30, (25,))]
    train[0] = [5, 5, 5, 7]  # repeated tokens: sublinear term frequency
    model = bag_model()
    counts, rows = document_frequencies(train, VOCAB)
    model.token_bag.set_idf(torch.from_numpy(counts), rows)

    vectorizer = sklearn_text.TfidfVectorizer(
        analyzer=lambda ids: [str(i) for i in ids], sublinear_tf=True, vocabulary=[str(i) for i in range(VOCAB)]
    )
    expected = vectorizer.fit(train).transform(train[:6]).toarray()
    width = max(len(row) for row in train[:6])
    ids = torch.tensor([row + [0] * (width - len(row)) for row in train[:6]])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in train[:6]])
    got = model.token_bag.bag(ids, mask).numpy()
    assert np.abs(got - expected).max() < 1e-6


def test_the_bag_reads_a_text_the_same_alone_or_padded_in_any_batch_and_an_empty_text_adds_nothing():
    model = bag_model()
    model.token_bag.set_idf(torch.arange(VOCAB), 50)
    ids = torch.randint(1, VOCAB, (4, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, :5] = 0  # left padding
    mask[3] = 0  # empty
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask).logits
        for row in range(3):
            alone = model(input_ids=ids[row][mask[row] != 0].unsqueeze(0)).logits[0]
            assert torch.allclose(batched[row], alone, atol=1e-5), row
    assert torch.allclose(batched[3], model.classifier.bias)


def test_a_bag_model_needs_input_ids_and_a_boolean_setting():
    model = bag_model()
    with pytest.raises(ValueError, match="needs input_ids"):
        model(inputs_embeds=torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="bag_of_tokens"):
        GRUConfig(vocab_size=VOCAB, bag_of_tokens="yes")


def test_onnx_export_of_the_bag_is_exact_and_old_opsets_are_refused(tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
    from hf_gru.backends import onnx_session
    from hf_gru.export import export_graph

    model = bag_model()
    model.token_bag.set_idf(torch.arange(VOCAB), 50)
    with pytest.raises(ValueError, match=r"bag_of_tokens.*\[16, "):
        export_graph(model, tmp_path / "old.onnx", opset=12)
    session = onnx_session(export_graph(model, tmp_path / "model.onnx", opset=17))
    ids = torch.randint(1, VOCAB, (3, 30), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2] = 0
    for batch_ids, batch_mask in ((ids, mask), (ids[:, :0], mask[:, :0])):
        with torch.inference_mode():
            expected = model(input_ids=batch_ids, attention_mask=batch_mask).logits.numpy()
        got = session.run(["logits"], {"input_ids": batch_ids.numpy(), "attention_mask": batch_mask.numpy()})[0]
        assert np.abs(got - expected).max() <= 1e-4


def test_the_bag_learns_at_its_own_rate_in_both_engines(tmp_path):
    from hf_gru.accelerate_loop import _optimizer
    from hf_gru.training import GRUTrainer

    no_evaluation = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    *_, args = parse_training_arguments(["--output_dir", str(tmp_path), "--report_to", "none", *no_evaluation])
    assert args.bag_learning_rate_multiplier == 10.0
    model = bag_model()
    for optimizer in (GRUTrainer(model=model, args=args).create_optimizer(), _optimizer(model, args)):
        groups = [g for g in optimizer.param_groups if g["params"]]
        params = [p for g in groups for p in g["params"]]
        assert len(params) == len(list(model.parameters())) == len({id(p) for p in params})
        (bag,) = [g for g in groups if any(p is model.token_bag.weight for p in g["params"])]
        assert bag["params"] == [model.token_bag.weight] and bag["lr"] == pytest.approx(10 * args.learning_rate)


def test_training_fits_the_idf_to_the_training_texts_and_saves_it_with_the_weights(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hf_gru.tokenization import load_tokenizer
    from hf_gru.training import run_training

    source = shared_dataset("trec")
    rows = [json.loads(line) for line in __import__("gzip").open(source / "train.jsonl.gz", "rt")][:120]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_training(*parse_training_arguments([
        "--dataset", str(data), "--output_dir", str(tmp_path / "model"), "--preset", "small", "--max_steps", "2",
        "--validation_fraction", "0.25", "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no",
        "--load_best_model_at_end", "false", "--seed", "3", "--bag_of_tokens", "true",  # questions: auto is off
        "--bag_bigram_buckets", "500",
    ]))  # fmt: skip
    output = Path(result.output_dir)
    config = json.loads((output / "config.json").read_text())
    assert config["bag_of_tokens"] is True and config["bag_bigram_buckets"] == 500
    model = AutoModelForSequenceClassification.from_pretrained(output, trust_remote_code=True)
    tokenizer = load_tokenizer(str(output))
    texts = [r["text"] for r in rows]
    ids = tokenizer(texts, truncation=True)["input_ids"]
    idf, pair_idf = np.split(model.token_bag.idf.numpy(), [config["vocab_size"]])
    assert idf.min() >= 1.0 and idf.max() > 4.0  # fitted, not the all-ones default
    assert len(pair_idf) == 500 and pair_idf.min() < 2.0 < pair_idf.max()  # "what is" is in most questions
    # A token no text holds gets the largest idf, ln(1 + n) + 1 for n training texts (the rest is validation);
    # "the" is in most questions, so its idf is near 1.
    trained_on = json.loads((output / "all_results.json").read_text())["train_samples"]
    unseen = np.setdiff1d(np.arange(len(idf)), np.unique(np.concatenate([np.asarray(row) for row in ids])))
    assert len(unseen) > 1000 and np.allclose(idf[unseen], np.log(1.0 + trained_on) + 1.0, atol=1e-5)
    assert idf[tokenizer.convert_tokens_to_ids("the")] < 2.0


def test_auto_adds_the_bag_for_documents_and_not_for_sentences():
    from hf_gru.arguments import BAG_OF_TOKENS_MEDIAN_TOKENS

    def resolved(setting: str, counts: list[int]) -> tuple[bool, dict]:
        model_args, _, _ = parse_training_arguments(["--output_dir", "x", "--bag_of_tokens", setting])
        return model_args.resolve_bag_of_tokens(counts), model_args.architecture()

    documents = [BAG_OF_TOKENS_MEDIAN_TOKENS - 100, BAG_OF_TOKENS_MEDIAN_TOKENS, 2048]
    sentences = [12, 25, BAG_OF_TOKENS_MEDIAN_TOKENS - 1, 4000]
    on, architecture = resolved("auto", documents)
    assert on and architecture["bag_of_tokens"] is True
    assert resolved("auto", sentences)[1]["bag_of_tokens"] is False
    assert resolved("auto", [])[0] is False
    assert resolved("yes", sentences)[1]["bag_of_tokens"] is True  # an explicit setting is kept
    assert resolved("false", documents)[1]["bag_of_tokens"] is False
    with pytest.raises(ValueError, match="--bag_of_tokens 'sometimes'"):
        parse_training_arguments(["--output_dir", "x", "--bag_of_tokens", "sometimes"])


def test_bigram_buckets_are_scikit_learns_tfidf_over_tokens_and_hashed_pairs_and_export_exactly(tmp_path):
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text", reason="scikit-learn (the dev extra)")
    buckets = 13
    model = bag_model(bag_bigram_buckets=buckets)
    bag = model.token_bag
    assert bag.weight.shape == (3, VOCAB + buckets) and bag.idf.shape == (VOCAB + buckets,)
    generator = torch.Generator().manual_seed(2)
    train = [torch.randint(1, VOCAB, (int(n),), generator=generator).tolist() for n in torch.randint(1, 30, (25,))]

    def columns(row: list[int]) -> list[str]:  # written out independently of the model's tensor code
        pairs = [VOCAB + (a * bag.BIGRAM_HASH_MULTIPLIER + b) % buckets for a, b in zip(row, row[1:])]
        return [str(i) for i in row + pairs]

    counts, rows = document_frequencies(train, VOCAB + buckets, bag.row_features)
    bag.set_idf(torch.from_numpy(counts), rows)
    vectorizer = sklearn_text.TfidfVectorizer(analyzer=columns, sublinear_tf=True)
    vectorizer.fit(train)
    test = train[:4] + [[3, 9, 3, 9, 3]]
    expected = np.zeros((len(test), VOCAB + buckets))
    sparse = vectorizer.transform(test)
    for name, column in vectorizer.vocabulary_.items():
        expected[:, int(name)] = sparse[:, column].toarray().ravel()
    width = max(map(len, test))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in test])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in test])
    np.testing.assert_allclose(bag.bag(ids, mask).numpy(), expected, atol=1e-6)
    # a pair never spans padding: the same text left-padded gives the same bag
    left = torch.tensor([[0] * (width - len(row)) + row for row in test])
    np.testing.assert_allclose(bag.bag(left, mask.flip(1)).numpy(), expected, atol=1e-6)

    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
    from hf_gru.backends import onnx_session
    from hf_gru.export import export_graph

    session = onnx_session(export_graph(model, tmp_path / "model.onnx", opset=17))
    batches = ((ids, mask), (left, mask.flip(1)), (ids[:, :1], mask[:, :1]), (ids[:, :0], mask[:, :0]))
    for batch_ids, batch_mask in batches:
        with torch.inference_mode():
            expected_logits = model(input_ids=batch_ids, attention_mask=batch_mask).logits.numpy()
        got = session.run(["logits"], {"input_ids": batch_ids.numpy(), "attention_mask": batch_mask.numpy()})[0]
        assert np.abs(got - expected_logits).max() <= 1e-4
    with pytest.raises(ValueError, match="bag_bigram_buckets"):
        GRUConfig(vocab_size=VOCAB, bag_of_tokens=True, bag_bigram_buckets=-1)
