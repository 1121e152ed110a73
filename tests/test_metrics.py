"""The shipped `evaluate` modules against scikit-learn, the Trainer-facing factory, and offline loading."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import evaluate
import numpy as np
import pytest
from transformers import EvalPrediction

from hf_gru.metrics import METRICS, build_compute_metrics, load_metric, metric_path

sklearn_metrics = pytest.importorskip("sklearn.metrics")

ROOT = Path(__file__).resolve().parents[1]
METRICS_DIR = ROOT / "hf_gru" / "metrics"
PRF = ("f1", "precision", "recall")


@pytest.fixture(scope="module")
def modules() -> dict[str, evaluate.EvaluationModule]:
    return {name: load_metric(name) for name in METRICS}


def _labels(rng: np.random.Generator, n_classes: int, n: int = 400, drop_from_preds: int | None = None):
    refs = rng.integers(0, n_classes, n)
    preds = np.where(rng.random(n) < 0.6, refs, rng.integers(0, n_classes, n))
    if drop_from_preds is not None:  # a class that is never predicted: precision 0/0
        preds[preds == drop_from_preds] = (drop_from_preds + 1) % n_classes
    return preds, refs


def test_load_metric_gives_evaluate_metrics_and_rejects_unknown_names(modules) -> None:
    for name, module in modules.items():
        assert isinstance(module, evaluate.Metric)
        assert module.name == name
    with pytest.raises(ValueError, match="accuracy, f1, precision, recall, multilabel"):
        load_metric("bleu")


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_matches_sklearn(modules, n_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    preds, refs = _labels(rng, n_classes)
    weights = rng.random(preds.size)
    acc = modules["accuracy"]
    assert acc.compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(refs, preds)
    )
    assert acc.compute(predictions=preds, references=refs, sample_weight=weights)["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(refs, preds, sample_weight=weights)
    )
    assert acc.compute(predictions=preds, references=refs, normalize=False)["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(refs, preds, normalize=False)
    )


@pytest.mark.parametrize("name", PRF)
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
@pytest.mark.parametrize(("n_classes", "dropped"), [(2, None), (2, 1), (6, None), (6, 3)])
def test_prf_matches_sklearn(modules, name: str, average: str | None, n_classes: int, dropped: int | None) -> None:
    preds, refs = _labels(np.random.default_rng(n_classes), n_classes, drop_from_preds=dropped)
    if dropped is not None:
        assert dropped not in preds and dropped in refs
    oracle = getattr(sklearn_metrics, f"{name}_score")
    expected = oracle(refs, preds, average=average, zero_division=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero division must be silent
        got = modules[name].compute(predictions=preds, references=refs, average=average)[name]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("name", PRF)
def test_prf_binary_labels_subset_and_weights_match_sklearn(modules, name: str) -> None:
    rng = np.random.default_rng(7)
    oracle = getattr(sklearn_metrics, f"{name}_score")
    module = modules[name]

    preds, refs = _labels(rng, 2)
    for pos_label in (0, 1):
        got = module.compute(predictions=preds, references=refs, average="binary", pos_label=pos_label)[name]
        assert got == pytest.approx(oracle(refs, preds, average="binary", pos_label=pos_label))

    preds, refs = _labels(rng, 5)
    weights = rng.random(preds.size)
    for average in ("macro", "micro", "weighted"):
        kwargs = {"labels": [0, 2, 4, 9], "sample_weight": weights, "average": average}  # 9: a class never seen
        got = module.compute(predictions=preds, references=refs, **kwargs)[name]
        assert got == pytest.approx(oracle(refs, preds, zero_division=0, **kwargs))
    with pytest.raises(ValueError, match="binary"):
        module.compute(predictions=preds, references=refs, average="binary")


def test_multilabel_matches_sklearn(modules) -> None:
    rng = np.random.default_rng(3)
    refs = (rng.random((300, 6)) < 0.3).astype(int)
    preds = np.where(rng.random((300, 6)) < 0.8, refs, 1 - refs)
    refs[:, 5] = preds[:, 5] = 0  # a label nobody has: 0/0 everywhere
    preds[:, 4] = 0  # a label never predicted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = modules["multilabel"].compute(predictions=preds.tolist(), references=refs.tolist())
    for name in PRF:
        oracle = getattr(sklearn_metrics, f"{name}_score")
        for average in ("micro", "macro"):
            assert got[f"{name}_{average}"] == pytest.approx(oracle(refs, preds, average=average, zero_division=0))
    assert got["subset_accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds))
    with pytest.raises(ValueError, match="only 0 and 1"):
        modules["multilabel"].compute(predictions=[[0.7, 0.2]], references=[[1, 0]])


def test_compute_metrics_single_label_takes_logits_from_a_tuple() -> None:
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(500, 4))
    labels = rng.integers(0, 4, 500)
    hidden = rng.normal(size=(500, 8))
    compute = build_compute_metrics()
    scores = compute(EvalPrediction(predictions=(logits, hidden), label_ids=labels))
    preds = logits.argmax(-1)
    assert scores == pytest.approx(
        {
            "accuracy": sklearn_metrics.accuracy_score(labels, preds),
            "f1_macro": sklearn_metrics.f1_score(labels, preds, average="macro"),
            "precision_macro": sklearn_metrics.precision_score(labels, preds, average="macro"),
            "recall_macro": sklearn_metrics.recall_score(labels, preds, average="macro"),
        }
    )
    assert all(type(v) is float for v in scores.values())  # JSON-serialisable for the Trainer's logs
    assert compute(((logits, hidden), labels)) == scores  # a plain (predictions, labels) pair works too
    assert compute((preds, labels)) == scores  # already-argmaxed ids (preprocess_logits_for_metrics)
    padded = compute((np.vstack([logits, logits[:3]]), np.concatenate([labels, [-100] * 3])))
    assert padded == scores  # the Trainer's ignore index is skipped
    public = {"accuracy": load_metric("accuracy").compute(predictions=preds, references=labels)["accuracy"]}
    for name in PRF:
        public[f"{name}_macro"] = load_metric(name).compute(predictions=preds, references=labels)[name]
    assert public == scores  # the fast `_compute` path gives what evaluate's public `compute` gives


def test_compute_metrics_multi_label_applies_the_threshold() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(200, 5))
    labels = (rng.random((200, 5)) < 0.4).astype(np.float32)  # BCE targets arrive as floats
    compute = build_compute_metrics("multi_label_classification", threshold=0.3)
    scores = compute(EvalPrediction(predictions=logits, label_ids=labels))
    preds = (1 / (1 + np.exp(-logits)) > 0.3).astype(int)
    assert set(scores) == {"f1_micro", "f1_macro", "subset_accuracy"}
    assert scores["f1_micro"] == pytest.approx(sklearn_metrics.f1_score(labels, preds, average="micro"))
    assert scores["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(labels, preds, average="macro"))
    assert scores["subset_accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, preds))
    default = build_compute_metrics("multi_label_classification")(EvalPrediction(predictions=logits, label_ids=labels))
    assert default["f1_micro"] != scores["f1_micro"]


def test_compute_metrics_regression_and_bad_arguments() -> None:
    rng = np.random.default_rng(2)
    preds, labels = rng.normal(size=(100, 1)), rng.normal(size=100)
    scores = build_compute_metrics("regression")(EvalPrediction(predictions=preds, label_ids=labels))
    assert scores["mse"] == pytest.approx(sklearn_metrics.mean_squared_error(labels, preds[:, 0]))
    assert scores["mae"] == pytest.approx(sklearn_metrics.mean_absolute_error(labels, preds[:, 0]))
    with pytest.raises(ValueError, match="single_label_classification"):
        build_compute_metrics("token_classification")
    with pytest.raises(ValueError, match="threshold"):
        build_compute_metrics("multi_label_classification", threshold=1.0)


def test_package_data_ships_every_metric_file() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hf_gru"]
    shipped = [p.relative_to(ROOT / "hf_gru").as_posix() for p in (METRICS_DIR / "modules").glob("*.py")]
    assert {Path(p).stem for p in shipped} == {*METRICS, "_scoring"}
    assert all(metric_path(name).is_file() for name in METRICS)
    for path in shipped:
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), f"{path} is not in package-data"


def test_loads_offline_with_a_fresh_hf_home_and_no_network(tmp_path: Path) -> None:
    script = r"""
import json, socket, sys, time

def refuse(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args!r}")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import evaluate  # noqa: E402  (the first import is the slow part, timed separately)
from hf_gru.metrics import METRICS, build_compute_metrics, load_metric

seconds = {}
for name in METRICS:
    start = time.perf_counter()
    load_metric(name)
    seconds[name] = time.perf_counter() - start
start = time.perf_counter()
compute = build_compute_metrics()
seconds["factory"] = time.perf_counter() - start
scores = compute(([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 0, 0]))
print(json.dumps({"seconds": seconds, "scores": scores}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["scores"]["accuracy"] == pytest.approx(2 / 3)
    assert result["scores"]["f1_macro"] == pytest.approx(2 / 3)
    assert max(result["seconds"].values()) < 1.0, result["seconds"]
    # The modules were copied into the fresh HF_HOME, not fetched from or found in any other cache.
    assert list((tmp_path / "hf_home").rglob("accuracy.py"))
    # Each module that imports the shared scoring file got its own copy of it, next to its own script.
    for name in METRICS:
        (script,) = (tmp_path / "hf_home").rglob(f"{name}.py")
        assert (script.parent / "_scoring.py").is_file(), name
