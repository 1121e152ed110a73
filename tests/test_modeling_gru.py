"""The model family: configuration, shapes, exact padding, the reference layer as oracle, losses, saving, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from hf_gru import GRUConfig, GRUForSequenceClassification, GRUModel, GRUReferenceLayer

VOCAB = 50


def small_config(**overrides) -> GRUConfig:
    values = dict(vocab_size=VOCAB, embedding_size=12, hidden_size=10, num_labels=3)
    values.update(overrides)
    return GRUConfig(**values)


def build(seed: int = 0, **overrides) -> GRUForSequenceClassification:
    torch.manual_seed(seed)
    return GRUForSequenceClassification(small_config(**overrides)).eval()


def random_texts(count: int, seed: int = 1, max_len: int = 9) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (count,), generator=generator).tolist()
    return [torch.randint(1, VOCAB, (n,), generator=generator) for n in lengths]


def pad(texts: list[torch.Tensor], side: str = "right", extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(t) for t in texts) + extra
    ids = torch.zeros(len(texts), width, dtype=torch.long)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for row, text in enumerate(texts):
        span = slice(0, len(text)) if side == "right" else slice(width - len(text), width)
        ids[row, span] = text
        mask[row, span] = 1
    return ids, mask


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("pooling", "avg", "last, mean, max, attention"),
        ("gru_implementation", "cuda", "fused, reference"),
        ("hidden_size", 0, "positive integer"),
        ("embedding_size", -4, "positive integer"),
        ("num_layers", 0, "positive integer"),
        ("vocab_size", 2.5, "positive integer"),
        ("embedding_dropout", 1.0, "[0, 1)"),
        ("layer_dropout", -0.1, "[0, 1)"),
        ("classifier_dropout", 1.5, "[0, 1)"),
        ("pad_token_id", 30001, "[0, vocab_size"),
        ("bidirectional", "yes", "True or False"),
    ],
)
def test_config_rejects_invalid_values_naming_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as error:
        GRUConfig(**{field: value})
    assert field in str(error.value)
    assert allowed in str(error.value)


def test_config_round_trip(tmp_path):
    config = GRUConfig(
        vocab_size=123,
        pooling="attention",
        num_layers=2,
        output_gate=True,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
        problem_type="single_label_classification",
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gru" and saved["pooling"] == "attention" and saved["output_gate"] is True
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, GRUConfig)
    assert reloaded.to_diff_dict() == config.to_diff_dict()
    assert reloaded.id2label == {0: "neg", 1: "pos"} and reloaded.num_labels == 2
    assert reloaded.output_size == 2 * reloaded.hidden_size


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shapes(pooling, num_layers, bidirectional):
    model = build(pooling=pooling, num_layers=num_layers, bidirectional=bidirectional)
    ids, mask = pad(random_texts(4))
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    width = (2 if bidirectional else 1) * 10
    assert out.logits.shape == (4, 3)
    assert len(out.hidden_states) == num_layers + 1
    assert out.hidden_states[0].shape == (4, ids.shape[1], 12)
    assert all(h.shape == (4, ids.shape[1], width) for h in out.hidden_states[1:])
    base = model.gru(ids, attention_mask=mask)
    assert base.last_hidden_state.shape == (4, ids.shape[1], width)
    assert base.pooler_output.shape == (4, width)
    # padded positions are zeroed, real ones are not
    assert torch.all(base.last_hidden_state[mask == 0] == 0)
    assert torch.all(base.last_hidden_state[mask == 1].abs().sum(-1) > 0)
    tuple_out = model(ids, attention_mask=mask, return_dict=False)
    assert torch.equal(tuple_out[0], out.logits)


# ---------------------------------------------------------------- exact variable-length batches


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_do_not_depend_on_padding(pooling, bidirectional, side):
    model = build(pooling=pooling, bidirectional=bidirectional, num_layers=2)
    texts = random_texts(6, max_len=11)
    ids, mask = pad(texts, side=side, extra=3)  # every text padded, the longest too
    batched = model(ids, attention_mask=mask).logits
    for row, text in enumerate(texts):
        alone = model(text.unsqueeze(0)).logits[0]
        torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=0)


def test_padding_invariance_with_output_gate_and_mixed_padding():
    model = build(pooling="last", output_gate=True, num_layers=2)
    texts = random_texts(5, max_len=8)
    right_ids, right_mask = pad(texts, "right", extra=2)
    left_ids, left_mask = pad(texts, "left", extra=2)
    mixed_ids, mixed_mask = right_ids.clone(), right_mask.clone()
    mixed_ids[::2], mixed_mask[::2] = left_ids[::2], left_mask[::2]
    alone = torch.stack([model(t.unsqueeze(0)).logits[0] for t in texts])
    for ids, mask in ((right_ids, right_mask), (left_ids, left_mask), (mixed_ids, mixed_mask)):
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, alone, atol=1e-5, rtol=0)


def test_left_padding_keeps_hidden_states_aligned_with_input_positions():
    model = build(pooling="mean")
    texts = random_texts(4)
    right = model.gru(*pad(texts, "right")).last_hidden_state
    left_ids, left_mask = pad(texts, "left")
    left = model.gru(left_ids, attention_mask=left_mask).last_hidden_state
    for row, text in enumerate(texts):
        n = len(text)
        torch.testing.assert_close(left[row, -n:], right[row, :n], atol=1e-5, rtol=0)


def test_all_padding_row_gives_finite_logits_equal_to_classifier_bias():
    for pooling in ("last", "mean", "max", "attention"):
        model = build(pooling=pooling)
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        ids, mask = pad(random_texts(3))
        mask[1] = 0  # an empty text
        logits = model(ids, attention_mask=mask).logits
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(logits[1], model.classifier.bias)


# ---------------------------------------------------------------- the reference layer is the oracle


def copy_gru_weights(source: nn.Module, target: nn.Module) -> None:
    target.load_state_dict(source.state_dict())


def test_reference_layer_matches_nn_gru_forward_and_gradients():
    torch.manual_seed(0)
    fused = nn.GRU(7, 5, batch_first=True)
    reference = GRUReferenceLayer(7, 5)
    copy_gru_weights(fused, reference)
    x = torch.randn(4, 9, 7)
    h0 = torch.randn(1, 4, 5)
    x_fused, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fused, h_fused = fused(x_fused, h0)
    out_ref, h_ref = reference(x_ref, h0)
    torch.testing.assert_close(out_ref, out_fused, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_ref, h_fused, atol=1e-5, rtol=0)
    weights = torch.randn_like(out_fused)
    (out_fused * weights).sum().backward()
    (out_ref * weights).sum().backward()
    torch.testing.assert_close(x_ref.grad, x_fused.grad, atol=1e-5, rtol=0)
    for name, parameter in fused.named_parameters():
        torch.testing.assert_close(getattr(reference, name).grad, parameter.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output_gate", [False, True])
def test_fused_model_matches_reference_model_on_variable_lengths(bidirectional, output_gate):
    fused = build(bidirectional=bidirectional, output_gate=output_gate, num_layers=2, pooling="last")
    reference = GRUForSequenceClassification(
        small_config(
            bidirectional=bidirectional,
            output_gate=output_gate,
            num_layers=2,
            pooling="last",
            gru_implementation="reference",
        )
    ).eval()
    assert isinstance(reference.gru.layers[0].forward_rnn, GRUReferenceLayer)
    reference.load_state_dict(fused.state_dict())  # same parameter names in both implementations
    ids, mask = pad(random_texts(5, max_len=12), side="left", extra=1)
    labels = torch.tensor([0, 1, 2, 1, 0])
    out_fused = fused(ids, attention_mask=mask, labels=labels)
    out_ref = reference(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out_ref.logits, out_fused.logits, atol=1e-5, rtol=0)
    out_fused.loss.backward()
    out_ref.loss.backward()
    ref_params = dict(reference.named_parameters())
    for name, parameter in fused.named_parameters():
        torch.testing.assert_close(ref_params[name].grad, parameter.grad, atol=1e-5, rtol=0, msg=name)


def test_gru_weights_are_initialised_deliberately():
    model = build(hidden_size=16, embedding_size=16)
    rnn = model.gru.layers[0].forward_rnn
    for block in rnn.weight_hh_l0.detach().chunk(3):
        torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)  # orthogonal per gate
    assert torch.all(rnn.bias_ih_l0 == 0) and torch.all(rnn.bias_hh_l0 == 0)
    assert torch.all(model.gru.embeddings.weight[0] == 0)  # padding row


# ---------------------------------------------------------------- losses by problem type


def test_single_label_loss_matches_hand_computation():
    model = build()
    ids, mask = pad(random_texts(4))
    labels = torch.tensor([2, 0, 1, 2])
    out = model(ids, attention_mask=mask, labels=labels)
    log_probs = torch.log_softmax(out.logits, dim=-1)
    expected = -log_probs[torch.arange(4), labels].mean()
    torch.testing.assert_close(out.loss, expected)
    assert model.config.problem_type == "single_label_classification"


def test_multi_label_loss_matches_hand_computation():
    model = build()
    ids, mask = pad(random_texts(4))
    labels = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    out = model(ids, attention_mask=mask, labels=labels)
    p = torch.sigmoid(out.logits)
    expected = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean()
    torch.testing.assert_close(out.loss, expected)
    assert model.config.problem_type == "multi_label_classification"


def test_regression_loss_matches_hand_computation():
    model = build(num_labels=1)
    ids, mask = pad(random_texts(4))
    labels = torch.tensor([0.5, -1.0, 2.0, 3.5])
    out = model(ids, attention_mask=mask, labels=labels)
    expected = ((out.logits[:, 0] - labels) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)
    assert model.config.problem_type == "regression"


def test_ignored_label_index_is_skipped():
    model = build()
    ids, mask = pad(random_texts(3))
    out = model(ids, attention_mask=mask, labels=torch.tensor([1, -100, 2]))
    log_probs = torch.log_softmax(out.logits, dim=-1)
    torch.testing.assert_close(out.loss, -(log_probs[0, 1] + log_probs[2, 2]) / 2)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad_id", [VOCAB, VOCAB + 7, -1])
def test_out_of_range_ids_raise_value_error(bad_id):
    model = build()
    ids, mask = pad(random_texts(2))
    ids[0, 0] = bad_id
    with pytest.raises(ValueError, match="vocab_size"):
        model(ids, attention_mask=mask)


def test_mismatched_attention_mask_raises_value_error():
    model = build()
    ids, mask = pad(random_texts(2))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=mask[:, :-1])


@pytest.mark.parametrize(
    "problem_type, labels, message",
    [
        ("single_label_classification", torch.tensor([0.0, 1.0]), "integer class ids"),
        ("single_label_classification", torch.tensor([0, 1, 2]), "one class id per text"),
        ("single_label_classification", torch.tensor([0, 3]), "num_labels=3"),
        ("multi_label_classification", torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "shape (2, 3)"),
        ("multi_label_classification", torch.tensor([[1, 0, 1], [0, 1, 0]]), "float labels"),
        ("regression", torch.tensor([[1.0, 0.0]]), "shape (2, 3)"),
    ],
)
def test_badly_shaped_or_typed_labels_raise_value_error(problem_type, labels, message):
    model = build(problem_type=problem_type)
    ids, mask = pad(random_texts(2))
    with pytest.raises(ValueError) as error:
        model(ids, attention_mask=mask, labels=labels)
    assert message in str(error.value)


def test_float_input_ids_raise_value_error():
    model = build()
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.ones(1, 3))


# ---------------------------------------------------------------- saving, loading, remote code


def test_save_and_load_give_identical_logits(tmp_path):
    model = build(
        pooling="attention", num_layers=2, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}
    )
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_gru.py", "modeling_gru.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_gru.GRUForSequenceClassification"
    assert auto_map["AutoModel"] == "modeling_gru.GRUModel"
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, GRUForSequenceClassification)
    ids, mask = pad(random_texts(4))
    assert torch.equal(reloaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, GRUModel)
    assert torch.equal(base.embeddings.weight, model.gru.embeddings.weight)


REMOTE_CODE_PROBE = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_gru"] = None  # importing hf_gru now fails: only the files saved beside the weights can help
    try:
        import hf_gru  # noqa: F401
        raise SystemExit("hf_gru was importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    model_dir, ids, mask = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        logits = model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    print(json.dumps({"logits": logits.tolist(), "base": type(base).__name__}))
    """
)


def test_loads_with_trust_remote_code_where_hf_gru_cannot_be_imported(tmp_path):
    model = build(num_layers=2, output_gate=True)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    ids, mask = pad(random_texts(3), side="left")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_PROBE, str(model_dir), json.dumps(ids.tolist()), json.dumps(mask.tolist())],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["base"] == "GRUModel"
    expected = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(torch.tensor(payload["logits"]), expected, atol=1e-6, rtol=0)
