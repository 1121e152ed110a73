"""Sharing on the Hub: one push is one complete commit that loads back by repo id, even where hf_gru is absent.

Everything runs against the local Hub-compatible server (`local_hub`) with the real `huggingface_hub` and
`transformers` clients. Loading by repo id happens in subprocesses that point `HF_ENDPOINT` at that server and
cannot import hf_gru, so only what the push uploaded can make them work.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import TRAINED_MODEL_FILES, shared_dataset
from fixtures.hub_server import LocalHub
from huggingface_hub import ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, pipeline

from hf_gru import GRUForSequenceClassification
from hf_gru.arguments import parse_training_arguments
from hf_gru.cli import main as cli_main
from hf_gru.hub import check_can_push, push_model
from hf_gru.run import push_trained_model
from hf_gru.run_directory import (
    CARD_FILE,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    CONFUSION_MATRIX_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    TOKENIZER_EXTRA_FILES,
    TRAINER_STATE_FILE,
    TRAINING_ARGS_FILE,
    WEIGHTS_FILE,
)
from hf_gru.training import run_training

TINY_TRAINING = [
    "--preset", "small",
    "--embedding_size", "16",
    "--hidden_size", "16",
    "--vocab_size", "2000",
    "--max_train_samples", "300",
    "--max_length", "32",
    "--num_train_epochs", "1",
    "--eval_strategy", "no",
    "--save_strategy", "no",
    "--load_best_model_at_end", "false",
    "--logging_steps", "1",
    "--report_to", "none",
    "--disable_tqdm", "true",
    "--dataloader_pin_memory", "false",
]  # fmt: skip
TEXTS = [
    "What is the capital of Australia ?",
    "Who wrote the novel Moby Dick ?",
    "How many feet are in a mile ?",
    "What does NASA stand for ?",
    "zzqx unheardofword",
]
# What a push must put in the repository (besides the Hub's own .gitattributes); nothing else from the directory.
PUSHED_FILES = TRAINED_MODEL_FILES
NEVER_PUSHED = (
    TRAINING_ARGS_FILE,
    TRAINER_STATE_FILE,
    f"{CHECKPOINT_PREFIX}5/optimizer.pt",
    f"{TENSORBOARD_DIR}/events.out.tfevents",
)

# Runs where hf_gru cannot be imported: only the repository's files (remote code) can make the loads work.
LOAD_PROBE = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_gru"] = None
    try:
        import hf_gru  # noqa: F401
        raise SystemExit("hf_gru was importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    spec = json.loads(sys.argv[1])
    repo_id, texts, results = spec["repo_id"], spec["texts"], {}
    for revision in spec["revisions"]:
        model = AutoModelForSequenceClassification.from_pretrained(
            repo_id, revision=revision, trust_remote_code=True
        ).eval()
        # No trust_remote_code: the tokenizer is a stock one. (transformers still asks about the config's custom
        # code on a terminal; with no input it falls back to the plain config, which is all a tokenizer needs.)
        tokenizer = AutoTokenizer.from_pretrained(repo_id, revision=revision)
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits
        entry = {"logits": logits.tolist(), "module": type(model).__module__}
        if spec.get("pipeline"):
            classifier = pipeline("text-classification", model=repo_id, revision=revision, trust_remote_code=True)
            entry["pipeline"] = classifier(texts, top_k=None)
        results[str(revision)] = entry
    print("RESULT:" + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small real model, as `hf-gru train` leaves it, plus the leftovers a push must never upload."""
    output_dir = tmp_path_factory.mktemp("hub") / "trec-gru"
    argv = ["--dataset", str(shared_dataset("trec")), "--output_dir", str(output_dir), *TINY_TRAINING]
    run_training(*parse_training_arguments(argv))
    for leftover in NEVER_PUSHED:
        path = output_dir / leftover
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(b"not for the Hub")
    return output_dir


def _push(hub: LocalHub, model_dir: Path, repo_id: str, **kwargs) -> str:
    """push_model against the local hub; returns the commit sha (the returned URL ends with it)."""
    kwargs.setdefault("token", hub.token)
    url = push_model(model_dir, repo_id, endpoint=hub.endpoint, **kwargs)
    assert url.startswith(f"{hub.endpoint}/{repo_id}/commit/"), url
    return url.rsplit("/", 1)[-1]


def _expected_files(model_dir: Path) -> set[str]:
    return PUSHED_FILES | {name for name in TOKENIZER_EXTRA_FILES if (model_dir / name).exists()}


def _commit_calls(hub: LocalHub, repo_id: str) -> int:
    return sum(r.method == "POST" and r.path.startswith(f"/api/models/{repo_id}/commit/") for r in hub.requests)


def _run_against_hub(hub: LocalHub, python_args: list[str]) -> subprocess.CompletedProcess:
    """A fresh Python process pointed at the local Hub with an empty cache; it must succeed."""
    result = subprocess.run(
        [sys.executable, *python_args],
        capture_output=True,
        text=True,
        env=hub.subprocess_env(),
        cwd=hub.root,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _load_in_subprocess(hub: LocalHub, repo_id: str, revisions: list[str | None], *, pipeline: bool = False) -> dict:
    spec = {"repo_id": repo_id, "revisions": revisions, "texts": TEXTS, "pipeline": pipeline}
    result = _run_against_hub(hub, ["-c", LOAD_PROBE, json.dumps(spec)])
    return json.loads(result.stdout.rsplit("RESULT:", 1)[-1])


def _local_logits(model_dir: Path) -> torch.Tensor:
    model = GRUForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")).logits


def test_push_then_load_by_repo_id_without_hf_gru(local_hub: LocalHub, trained: Path) -> None:
    local_card = (trained / CARD_FILE).read_bytes()
    sha = _push(local_hub, trained, "alice/trec-gru")

    api = local_hub.api()
    assert sha == local_hub.branch_head("alice/trec-gru")
    assert set(api.list_repo_files("alice/trec-gru")) == {".gitattributes", *_expected_files(trained)}
    assert len(api.list_repo_commits("alice/trec-gru")) == 2  # the Hub's initial commit, then the whole model
    assert _commit_calls(local_hub, "alice/trec-gru") == 1
    assert (trained / CARD_FILE).read_bytes() == local_card  # the card for the repo was rendered in memory

    loaded = _load_in_subprocess(local_hub, "alice/trec-gru", [None], pipeline=True)["None"]
    assert loaded["module"].startswith("transformers_modules"), loaded["module"]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), _local_logits(trained), atol=1e-5, rtol=0)
    local_pipeline = pipeline("text-classification", model=str(trained))(TEXTS, top_k=None)
    assert [[s["label"] for s in scores] for scores in loaded["pipeline"]] == [
        [s["label"] for s in scores] for scores in local_pipeline
    ]
    for remote, local in zip(loaded["pipeline"], local_pipeline):
        assert [s["score"] for s in remote] == pytest.approx([s["score"] for s in local], abs=1e-5)


def test_each_push_is_a_revision_loadable_by_commit_sha(local_hub: LocalHub, trained: Path, tmp_path: Path) -> None:
    first = _push(local_hub, trained, "alice/versions")
    changed = tmp_path / "changed"
    shutil.copytree(trained, changed)
    weights = load_file(changed / WEIGHTS_FILE)
    generator = torch.Generator().manual_seed(0)
    weights = {name: t + 0.05 * torch.randn(t.shape, generator=generator) for name, t in weights.items()}
    save_file(weights, changed / WEIGHTS_FILE, metadata={"format": "pt"})
    (changed / CONFUSION_MATRIX_FILE).unlink()  # the second model has no confusion matrix: its old one must go
    api = local_hub.api()
    api.upload_file(path_or_fileobj=b"stale", path_in_repo="pytorch_model.bin", repo_id="alice/versions")
    api.upload_file(path_or_fileobj=b"mine", path_in_repo="NOTES.md", repo_id="alice/versions")

    second = _push(local_hub, changed, "alice/versions", commit_message="perturbed weights")

    assert first != second and second == local_hub.branch_head("alice/versions")
    assert api.list_repo_commits("alice/versions")[0].title == "perturbed weights"
    files = set(api.list_repo_files("alice/versions"))
    assert "pytorch_model.bin" not in files and CONFUSION_MATRIX_FILE not in files  # stale model files removed
    assert "NOTES.md" in files  # files a push does not manage are left alone
    loaded = _load_in_subprocess(local_hub, "alice/versions", [first, second])
    first_logits, second_logits = _local_logits(trained), _local_logits(changed)
    assert not torch.allclose(first_logits, second_logits, atol=1e-3)
    torch.testing.assert_close(torch.tensor(loaded[first]["logits"]), first_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(loaded[second]["logits"]), second_logits, atol=1e-5, rtol=0)


def test_revision_pushes_to_a_branch_and_leaves_main_alone(local_hub: LocalHub, trained: Path, tmp_path: Path) -> None:
    main = _push(local_hub, trained, "alice/branches")
    on_branch = _push(local_hub, trained, "alice/branches", revision="experiment")

    api = local_hub.api()
    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs("alice/branches").branches}
    assert refs == {"main": main, "experiment": on_branch}
    assert [c.commit_id for c in api.list_repo_commits("alice/branches", revision="experiment")][:2] == [
        on_branch,
        main,
    ]
    card = Path(
        hf_hub_download(
            "alice/branches",
            CARD_FILE,
            revision="experiment",
            endpoint=local_hub.endpoint,
            token=False,
            cache_dir=tmp_path,
        )
    ).read_text(encoding="utf-8")
    assert 'revision="experiment"' in card

    # A branch of a new repository: main keeps only the Hub's initial commit.
    _push(local_hub, trained, "alice/branch-only", revision="dev")
    assert api.list_repo_files("alice/branch-only") == [".gitattributes"]
    assert set(api.list_repo_files("alice/branch-only", revision="dev")) == {
        ".gitattributes",
        *_expected_files(trained),
    }
    with pytest.raises(ValueError, match="commit sha"):
        push_model(trained, "alice/branches", revision=main, token=local_hub.token, endpoint=local_hub.endpoint)


@pytest.fixture
def no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No token anywhere the client looks: not in the environment, no saved login."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-login"))


def test_private_repo_needs_the_right_token(local_hub: LocalHub, trained: Path, tmp_path: Path, no_token: None) -> None:
    api = local_hub.api()
    with pytest.raises(ValueError, match=r"needs a Hugging Face token.*--token.*HF_TOKEN.*hf auth login"):
        push_model(trained, "alice/secret", private=True, endpoint=local_hub.endpoint)
    with pytest.raises(PermissionError, match=r"rejected the token for alice/secret.*401.*HF_TOKEN"):
        push_model(trained, "alice/secret", private=True, token="hf_wrong", endpoint=local_hub.endpoint)
    assert not api.repo_exists("alice/secret") and _commit_calls(local_hub, "alice/secret") == 0
    # The same checks, up front and read-only, for callers that want to fail before a long training run.
    assert check_can_push("alice/secret", token=local_hub.token, endpoint=local_hub.endpoint) == "alice"
    with pytest.raises(PermissionError, match="rejected the token"):
        check_can_push("alice/secret", token="hf_wrong", endpoint=local_hub.endpoint)
    with pytest.raises(ValueError, match="needs a Hugging Face token"):
        check_can_push("alice/secret", endpoint=local_hub.endpoint)

    sha = _push(local_hub, trained, "alice/secret", private=True)
    assert api.model_info("alice/secret").private is True
    with pytest.raises(PermissionError, match="cannot write to alice/secret"):  # bob can neither read nor write it
        push_model(trained, "alice/secret", token=local_hub.token_for("bob"), endpoint=local_hub.endpoint)
    with pytest.raises(PermissionError, match="rejected the token"):
        push_model(trained, "alice/secret", token="hf_wrong", endpoint=local_hub.endpoint)
    assert local_hub.branch_head("alice/secret") == sha

    def download(token: str | bool, cache: str) -> str:
        return hf_hub_download(
            "alice/secret", CONFIG_FILE, endpoint=local_hub.endpoint, token=token, cache_dir=tmp_path / cache
        )

    with pytest.raises(RepositoryNotFoundError):
        download(False, "anonymous")
    with pytest.raises(HfHubHTTPError) as wrong:
        download("hf_wrong", "wrong")
    assert wrong.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        download(local_hub.token_for("bob"), "bob")
    assert json.loads(Path(download(local_hub.token, "alice")).read_text()) == json.loads(
        (trained / CONFIG_FILE).read_text()
    )
    snapshot = snapshot_download("alice/secret", endpoint=local_hub.endpoint, token=local_hub.token, cache_dir=tmp_path)
    torch.testing.assert_close(_local_logits(Path(snapshot)), _local_logits(trained), atol=0, rtol=0)

    # A public repository is never turned private (or the reverse) by a push.
    _push(local_hub, trained, "alice/open")
    with pytest.raises(ValueError, match="already exists and is public"):
        push_model(trained, "alice/open", private=True, token=local_hub.token, endpoint=local_hub.endpoint)
    assert _commit_calls(local_hub, "alice/open") == 1 and api.model_info("alice/open").private is False


def test_model_card_metadata_and_results_read_back(local_hub: LocalHub, trained: Path, tmp_path: Path) -> None:
    _push(local_hub, trained, "alice/card")
    path = hf_hub_download(
        "alice/card", CARD_FILE, endpoint=local_hub.endpoint, token=False, cache_dir=tmp_path / "cache"
    )
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert {"hf_gru", "gru", "text-classification"} <= set(data.tags)
    assert data.language == "en" and data.license == "apache-2.0"
    assert {"accuracy", "f1"} <= set(data.metrics)
    assert card.content.count("model-index") == 1 and data.model_name == "card"
    results = json.loads((trained / RESULTS_FILE).read_text())
    read_back = {r.metric_name: r for r in data.eval_results}
    assert set(read_back) == {"accuracy", "f1 macro", "precision macro", "recall macro"}
    for name, result in read_back.items():
        assert result.dataset_split == "test" and result.task_type == "text-classification"
        assert result.metric_value == round(results[f"test_{name.replace(' ', '_')}"], 4)
    assert 'from_pretrained("alice/card", trust_remote_code=True' in card.text
    assert str(trained) not in card.text  # rendered for the repository, not the local directory
    # Every link leads somewhere real: the Hub (dataset, base model) or a file pushed to this repository.
    pushed = set(local_hub.api().list_repo_files("alice/card"))
    links = re.findall(r"\]\(([^)\s]+)\)", card.text)
    assert links and all(link.startswith("https://huggingface.co/") or link in pushed for link in links), links

    info = local_hub.api().model_info("alice/card")  # the Hub reads the same metadata
    assert info.pipeline_tag == "text-classification" and "custom_code" in info.tags


@pytest.mark.parametrize("broken", ["empty", "partial", "no_auto_map", "not_gru"])
def test_push_of_a_directory_that_is_not_a_trained_model(
    local_hub: LocalHub, trained: Path, tmp_path: Path, broken: str
) -> None:
    model_dir = tmp_path / broken
    if broken == "empty":
        model_dir.mkdir()
        expected = r"is not a trained hf_gru model: missing model\.safetensors, config\.json.*hf-gru train"
    else:
        shutil.copytree(trained, model_dir)
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        if broken == "partial":
            (model_dir / WEIGHTS_FILE).unlink()
            (model_dir / RESULTS_FILE).unlink()
            expected = (
                r"not a trained hf_gru model \(.*unfinished run.*\): missing model\.safetensors, all_results\.json;"
            )
        elif broken == "no_auto_map":
            del config["auto_map"]
            expected = "lacks auto_map entries for AutoConfig, AutoModelForSequenceClassification"
        else:
            config["model_type"] = "bert"
            expected = "has model_type 'bert', not 'gru'"
        (model_dir / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=expected):
        push_model(model_dir, "alice/broken", token=local_hub.token, endpoint=local_hub.endpoint)
    assert local_hub.requests == []  # validation happens before the first request: no repo, no commit


def test_cli_push_errors_name_the_problem(
    local_hub: LocalHub, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert cli_main(["push", "--model", str(tmp_path / "empty"), "--repo-id", "alice/x", "--token", "t"]) == 2
    assert "hf-gru: error:" in capsys.readouterr().err
    assert cli_main(["push", "--model", str(trained), "--repo-id", "no-namespace", "--token", "t"]) == 2
    assert "not of the form NAMESPACE/NAME" in capsys.readouterr().err

    # No token anywhere (fresh HF_HOME, no HF_TOKEN): a message saying how to provide one, and nothing sent.
    result = subprocess.run(
        [sys.executable, "-m", "hf_gru.cli", "push", "--model", str(trained), "--repo-id", "alice/x"],
        capture_output=True,
        text=True,
        env=local_hub.subprocess_env(token=False),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "hf-gru: error: pushing to alice/x needs a Hugging Face token" in result.stderr
    assert "--token" in result.stderr and "HF_TOKEN" in result.stderr and "hf auth login" in result.stderr
    assert "Traceback" not in result.stderr
    assert local_hub.requests == []


def test_trainer_push_to_hub_gives_the_same_repository(
    local_hub: LocalHub,
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output_dir = tmp_path / "trained-by-cli"
    argv = ["--dataset", str(shared_dataset("trec")), "--output_dir", str(output_dir), *TINY_TRAINING]
    argv += ["--push_to_hub", "--hub_model_id", "alice/from-trainer", "--hub_private_repo", "true"]
    argv += ["--hub_token", local_hub.token]  # the environment has no token: --hub_token must reach the push
    result = subprocess.run(
        [sys.executable, "-m", "hf_gru.cli", "train", *argv],
        capture_output=True,
        text=True,
        env=local_hub.subprocess_env(token=False),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # `hf-gru push` of the same kind of directory, reaching the hub the way the CLI does (HF_ENDPOINT, HF_TOKEN).
    capsys.readouterr()
    with monkeypatch.context() as patch:  # only around the push: hf_hub_download builds URLs differently
        patch.setattr(huggingface_hub.constants, "ENDPOINT", local_hub.endpoint)
        patch.setenv("HF_TOKEN", local_hub.token)
        assert cli_main(["push", "--model", str(trained), "--repo-id", "alice/from-push"]) == 0
    sha = local_hub.branch_head("alice/from-push")
    assert capsys.readouterr().out.strip() == f"{local_hub.endpoint}/alice/from-push/commit/{sha}"

    api = local_hub.api()
    trainer_files = set(api.list_repo_files("alice/from-trainer"))
    assert trainer_files == set(api.list_repo_files("alice/from-push")) == {".gitattributes", *_expected_files(trained)}
    assert api.model_info("alice/from-trainer").private is True
    assert len(api.list_repo_commits("alice/from-trainer")) == 2 and _commit_calls(local_hub, "alice/from-trainer") == 1
    card = Path(
        hf_hub_download(
            "alice/from-trainer", CARD_FILE, endpoint=local_hub.endpoint, token=local_hub.token, cache_dir=tmp_path
        )
    )
    assert 'model="alice/from-trainer"' in card.read_text(encoding="utf-8")


def test_a_failed_push_after_training_says_where_the_model_is(
    trained: Path, no_token: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="hf_gru"), pytest.raises(ValueError, match="needs a Hugging Face token"):
        push_trained_model(trained, "alice/late", private=False, revision=None, token=None)
    assert f"model is saved in {trained}" in caplog.text
    assert f"`hf-gru push --model {trained} --repo-id alice/late`" in caplog.text


def _predict_by_repo_id(hub: LocalHub, repo_id: str, source: Path) -> tuple[list[str], str]:
    """`hf-gru predict --model REPO_ID` in a fresh process with an empty cache: (labels, the backend line it logged)."""
    result = _run_against_hub(hub, ["-m", "hf_gru.cli", "predict", "--model", repo_id, "--input", str(source)])
    backend = [line for line in result.stderr.splitlines() if "backend: " in line]
    assert len(backend) == 1, result.stderr  # said once
    return [json.loads(line)["label"] for line in result.stdout.splitlines()], backend[0]


def test_push_carries_a_fresh_onnx_export_only_and_a_hub_id_runs_it(
    local_hub: LocalHub, trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 30 item 5: `onnx/` goes up with the weights it was exported from, never with others."""
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
    from hf_gru.backends import load_backend
    from hf_gru.export import export_model

    model_dir = tmp_path / "model"
    shutil.copytree(trained, model_dir)
    export_model(model_dir)
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")

    def torch_labels() -> list[str]:
        classifier = load_backend(model_dir, backend="torch", device="cpu")
        return [classifier.config.id2label[int(i)] for i in classifier.predict_logits(TEXTS).argmax(-1)]

    _push(local_hub, model_dir, "alice/with-onnx")
    remote = set(local_hub.api().list_repo_files("alice/with-onnx"))
    exported = {f"onnx/{path.name}" for path in (model_dir / "onnx").iterdir()}
    assert {"onnx/model.onnx", "onnx/source.json", "onnx/config.json"} <= exported <= remote
    labels, backend = _predict_by_repo_id(local_hub, "alice/with-onnx", source)
    assert "backend: onnx" in backend and labels == torch_labels()

    # Other weights, the export left as it was: the push says it skips the export and removes the earlier one.
    weights = load_file(model_dir / WEIGHTS_FILE)
    generator = torch.Generator().manual_seed(3)
    weights = {name: value + 0.5 * torch.randn(value.shape, generator=generator) for name, value in weights.items()}
    save_file(weights, model_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="hf_gru"):
        _push(local_hub, model_dir, "alice/with-onnx")
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(skipped) == 1 and "skipping the ONNX export" in skipped[0] and "hf-gru export" in skipped[0]
    remote = set(local_hub.api().list_repo_files("alice/with-onnx"))
    assert not [name for name in remote if name.startswith("onnx/")]
    assert remote == {".gitattributes", *_expected_files(model_dir)}
    labels, backend = _predict_by_repo_id(local_hub, "alice/with-onnx", source)
    assert "backend: torch" in backend and labels == torch_labels()
