"""The multi-label and regression peers (`benchmarks/label_peers.py`): metrics by hand, the validation carving, and
each peer learning a small synthetic task end to end, through the same functions `accuracy.py` calls."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import label_peers  # noqa: E402
from common import RESULTS_DIR  # noqa: E402
from label_splits import iterative_stratified_split, load_dataset  # noqa: E402
from peers import PEERS_VENV  # noqa: E402

LABELS = 4
FILLER = [f"word{i}" for i in range(60)]


def tagged_texts(rows: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose labels are signalled by cue words among filler; about one row in eight has no label."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((rows, LABELS)) < [0.5, 0.3, 0.2, 0.1]).astype(np.int8)
    texts = []
    for row in targets:
        words = list(rng.choice(FILLER, size=6)) + [f"cue{j}" for j in np.flatnonzero(row)]
        texts.append(" ".join(rng.permutation(words)))
    return texts, targets


def valued_texts(rows: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose value is the count of 'good' minus 'bad' words, plus noise, on a 1-5 scale."""
    rng = np.random.default_rng(seed)
    good, bad = rng.integers(0, 4, rows), rng.integers(0, 4, rows)
    texts = [
        " ".join(rng.permutation(["good"] * g + ["bad"] * b + list(rng.choice(FILLER, 5)))) for g, b in zip(good, bad)
    ]
    return texts, 3 + 0.5 * (good - bad) + rng.normal(0, 0.1, rows)


def test_multilabel_metrics_by_hand():
    gold = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.6], [0.3, 0.1, 0.2]])
    metrics = label_peers.multilabel_metrics(scores, 0.5, gold)  # predicted: {0}, {1, 2}, {}
    assert metrics["f1_micro"] == pytest.approx(2 * 2 / (3 + 3))  # tp 2, predicted 3, gold 3
    assert metrics["f1_macro"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["subset_accuracy"] == pytest.approx(1 / 3)
    assert metrics["hamming_loss"] == pytest.approx(2 / 9)
    assert label_peers.pick_threshold(scores, gold) == (pytest.approx(0.31), pytest.approx(6 / 7))  # 0.31 to 0.4


def test_regression_metrics_by_hand():
    metrics = label_peers.regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 3.0]))
    assert metrics["mse"] == pytest.approx(2 / 3) and metrics["mae"] == pytest.approx(2 / 3)
    assert metrics["pearson"] == pytest.approx(np.corrcoef([1, 2, 4], [1, 3, 3])[0, 1])
    assert metrics["spearman"] == pytest.approx(0.866, abs=1e-3)  # ranks 1,2,3 against 1,2.5,2.5
    assert np.isnan(label_peers.regression_metrics(np.ones(3), np.array([1.0, 2.0, 3.0]))["pearson"])


def test_iterative_stratification_keeps_rare_labels_in_both_folds():
    rng = np.random.default_rng(0)
    targets = (rng.random((2000, 12)) < np.geomspace(0.4, 0.006, 12)).astype(np.int8)
    train, validation = iterative_stratified_split(targets, 0.1, seed=1)
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(2000))
    assert abs(len(validation) - 200) <= 2
    overall, carved = targets.sum(axis=0), targets[validation].sum(axis=0)
    assert np.all(np.abs(carved - 0.1 * overall) <= 1.5)  # each label's share, to a row or so
    random = np.random.default_rng(1).permutation(2000)[:200]
    assert np.abs(targets[random].sum(axis=0) - 0.1 * overall).max() > np.abs(carved - 0.1 * overall).max()
    again = iterative_stratified_split(targets, 0.1, seed=1)
    assert np.array_equal(again[1], validation)


def test_tfidf_one_vs_rest_learns_the_cues_and_picks_a_threshold():
    train, validation, test = tagged_texts(400, 0), tagged_texts(100, 1), tagged_texts(100, 2)
    with label_peers.fit_multilabel_peer("tfidf_ovr_lr", *train, *validation, "en") as fitted:
        scores = fitted.predict_scores(test[0])
        assert scores.shape == (100, LABELS) and 0 <= scores.min() and scores.max() <= 1
        assert 0 < fitted.threshold < 1 and fitted.settings["C"] in label_peers.TFIDF_C
        assert fitted.parameters > LABELS
        assert label_peers.multilabel_metrics(scores, fitted.threshold, test[1])["f1_micro"] > 0.9
        assert np.array_equal(fitted.predict(test[0]), (scores >= fitted.threshold).astype(np.int8))


def test_fasttext_ova_learns_the_cues_and_keeps_untagged_rows():
    train, validation, test = tagged_texts(400, 0), tagged_texts(100, 1), tagged_texts(100, 2)
    assert (train[1].sum(axis=1) == 0).any()  # rows with no tag: fastText would drop them without NO_LABEL
    settings = {"lr": 0.25, "epoch": 25, "wordNgrams": 1}  # one grid point: the search itself is peers.py's
    with label_peers.fit_multilabel_peer("fasttext_ova", *train, *validation, "en", settings) as fitted:
        scores = fitted.predict_scores(test[0])
        assert scores.shape == (100, LABELS)  # the NO_LABEL output is not a column
        assert fitted.settings["grid_size"] == 1 and fitted.settings["threshold"] == fitted.threshold
        assert label_peers.multilabel_metrics(scores, fitted.threshold, test[1])["f1_micro"] > 0.9


def test_tfidf_ridge_predicts_the_value():
    train, validation, test = valued_texts(400, 0), valued_texts(100, 1), valued_texts(100, 2)
    with label_peers.fit_regression_peer("tfidf_ridge", *train, *validation, "en") as fitted:
        predicted = fitted.predict(test[0])
        assert predicted.shape == (100,) and fitted.settings["alpha"] in label_peers.RIDGE_ALPHA
        assert label_peers.regression_metrics(predicted, test[1])["pearson"] > 0.8


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (np.zeros((3, 2)), "no positive label"),
        (np.ones((2, 2)), "expected \\(3, labels\\)"),
        (np.full((3, 2), 2), "other than 0 and 1"),
    ],
)
def test_multilabel_refuses_bad_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        label_peers.fit_multilabel_peer("tfidf_ovr_lr", ["a", "b", "c"], targets, ["a"], np.ones((1, 2)), "en")


def test_refusals_name_the_problem():
    texts, targets = ["a b", "c d"], np.array([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="unknown multi-label peer 'svm'; choose one of tfidf_ovr_lr"):
        label_peers.fit_multilabel_peer("svm", texts, targets, texts, targets, "en")
    with pytest.raises(ValueError, match="validation targets have 3 label columns, train has 2"):
        label_peers.fit_multilabel_peer("tfidf_ovr_lr", texts, targets, texts, np.ones((2, 3)), "en")
    with pytest.raises(ValueError, match="NaN or infinity at row 1"):
        label_peers.fit_regression_peer("tfidf_ridge", texts, [1.0, float("nan")], texts, [1.0, 2.0], "en")
    with pytest.raises(ValueError, match="English sets only"):
        label_peers.fit_multilabel_peer("model2vec", texts, targets, texts, targets, "zh")


def test_load_dataset_carves_validation_and_ignores_unseen_test_labels(tmp_path, capsys):
    import gzip
    import json

    def write(split, rows):
        with gzip.open(tmp_path / f"{split}.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)

    write("train", [{"text": f"t{i}", "labels": ["b"] if i % 3 else ["a", "b"]} for i in range(30)])
    write("test", [{"text": "x", "labels": ["a", "zzz"]}])
    data = load_dataset(tmp_path)
    assert data["labels"] == ["a", "b"] and data["validation_carved"]
    assert len(data["splits"]["validation"][0]) == 3 and data["splits"]["validation"][1][:, 0].sum() == 1
    assert data["splits"]["test"][1].tolist() == [[1, 0]]
    assert "1 test labels are not in train's label set" in capsys.readouterr().err


@pytest.mark.skipif(
    not (PEERS_VENV / "bin" / "python").exists()
    or not (RESULTS_DIR / "models" / "model2vec_minilm_pca256" / "config.json").is_file(),
    reason="Model2Vec's venv (benchmarks/.peers-venv) or its distilled MiniLM is absent: run label_peers.py once",
)
def test_model2vec_multilabel_and_regression():
    train, validation, test = tagged_texts(300, 0), tagged_texts(100, 1), tagged_texts(50, 2)
    with label_peers.fit_multilabel_peer("model2vec", *train, *validation, "en", {"max_epochs": 20}) as fitted:
        scores = fitted.predict_scores(test[0])
        assert scores.shape == (50, LABELS) and fitted.parameters > 0
        assert label_peers.multilabel_metrics(scores, fitted.threshold, test[1])["f1_micro"] > 0.6
    train, validation, test = valued_texts(300, 0), valued_texts(100, 1), valued_texts(50, 2)
    with label_peers.fit_regression_peer("model2vec", *train, *validation, "en", {"max_epochs": 20}) as fitted:
        assert label_peers.regression_metrics(fitted.predict(test[0]), test[1])["pearson"] > 0.5
