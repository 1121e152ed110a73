"""The local Hub server speaks the protocol of the real `huggingface_hub` client (no mocks): push, list, download.

These tests pin the behaviour other tests rely on when they push models to `local_hub` and load them back by repo
id, including the errors a user sees for private repos and bad tokens.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures.hub_server import LocalHub
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

BINARY = bytes(range(256)) * 7 + b"\x00\xff\x00"


def _make_folder(root: Path) -> dict[str, bytes]:
    """A folder with text, a binary file and a nested path; returns repo path -> expected bytes."""
    files = {
        "config.json": b'{"hidden_size": 32}\n',
        "README.md": b"---\nlicense: apache-2.0\ntags: [gru]\n---\n# Tiny\n",
        "weights.bin": BINARY,
        "nested/deeper/my notes.txt": "unicode: é ✓\n".encode(),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _download(hub: LocalHub, repo_id: str, filename: str, cache: Path, **kwargs) -> bytes:
    kwargs.setdefault("token", hub.token)
    return Path(hf_hub_download(repo_id, filename, endpoint=hub.endpoint, cache_dir=cache, **kwargs)).read_bytes()


def test_whoami_and_invalid_tokens(local_hub: LocalHub) -> None:
    assert local_hub.api().whoami()["name"] == "alice"
    assert local_hub.api(local_hub.token_for("bob")).whoami()["name"] == "bob"
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as err:
        local_hub.api("hf_not_a_token").whoami()
    assert err.value.response.status_code == 401


def test_upload_folder_list_and_download_back(local_hub: LocalHub, tmp_path: Path) -> None:
    api = local_hub.api()
    url = api.create_repo("alice/tiny")
    assert url.repo_id == "alice/tiny" and url.endpoint == local_hub.endpoint
    files = _make_folder(tmp_path / "src")

    info = api.upload_folder(repo_id="alice/tiny", folder_path=tmp_path / "src", commit_message="add model")

    assert info.oid == local_hub.branch_head("alice/tiny")
    commits = api.list_repo_commits("alice/tiny")
    assert [c.title for c in commits] == ["add model", "initial commit"]  # the whole folder in one commit
    assert set(api.list_repo_files("alice/tiny")) == {".gitattributes", *files}
    tree = {e.path: e for e in api.list_repo_tree("alice/tiny", recursive=True)}
    assert {"nested", "nested/deeper"} <= set(tree)
    assert tree["weights.bin"].size == len(BINARY)
    top = [e.path for e in api.list_repo_tree("alice/tiny", path_in_repo="nested")]
    assert top == ["nested/deeper"]
    model = api.model_info("alice/tiny", files_metadata=True)
    assert model.sha == info.oid and model.private is False
    assert {s.rfilename: s.size for s in model.siblings}["weights.bin"] == len(BINARY)
    assert model.card_data["license"] == "apache-2.0" and "gru" in model.tags

    cache = tmp_path / "cache"
    for rel, data in files.items():
        assert _download(local_hub, "alice/tiny", rel, cache) == data
    snapshot = Path(snapshot_download("alice/tiny", endpoint=local_hub.endpoint, token=False, cache_dir=cache))
    assert snapshot.name == info.oid
    assert (snapshot / "nested/deeper/my notes.txt").read_bytes() == files["nested/deeper/my notes.txt"]

    with pytest.raises(EntryNotFoundError):
        _download(local_hub, "alice/tiny", "missing.json", cache)
    with pytest.raises(RevisionNotFoundError):
        _download(local_hub, "alice/tiny", "config.json", cache, revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        _download(local_hub, "alice/missing", "config.json", cache)
    assert api.file_exists("alice/tiny", "nested/deeper/my notes.txt") and not api.file_exists("alice/tiny", "nope")
    assert api.repo_exists("alice/tiny") and not api.repo_exists("alice/missing")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/tiny")
    assert err.value.response.status_code == 409
    assert api.create_repo("alice/tiny", exist_ok=True).repo_id == "alice/tiny"


def test_every_commit_stays_downloadable(local_hub: LocalHub, tmp_path: Path) -> None:
    api = local_hub.api()
    api.create_repo("alice/history")
    files = _make_folder(tmp_path / "src")
    first = api.upload_folder(repo_id="alice/history", folder_path=tmp_path / "src").oid
    second = api.create_commit(
        "alice/history",
        [
            CommitOperationAdd("config.json", b'{"hidden_size": 64}\n'),
            CommitOperationDelete("weights.bin"),
            CommitOperationDelete("nested/deeper/my notes.txt"),
        ],
        commit_message="v2",
        parent_commit=first,
    ).oid
    assert len({first, second}) == 2 and all(len(c) == 40 for c in (first, second))

    cache = tmp_path / "cache"
    assert _download(local_hub, "alice/history", "config.json", cache, revision=first) == files["config.json"]
    assert _download(local_hub, "alice/history", "config.json", cache, revision=second) == b'{"hidden_size": 64}\n'
    assert _download(local_hub, "alice/history", "weights.bin", cache, revision=first) == BINARY
    with pytest.raises(EntryNotFoundError):
        _download(local_hub, "alice/history", "weights.bin", cache, revision=second)
    old = Path(snapshot_download("alice/history", revision=first, endpoint=local_hub.endpoint, cache_dir=cache))
    assert (old / "weights.bin").read_bytes() == BINARY
    assert sorted(api.list_repo_files("alice/history")) == [".gitattributes", "README.md", "config.json"]

    # The client skips unchanged files using the oid the preupload endpoint reports: no empty commit.
    again = api.upload_file(
        path_or_fileobj=b'{"hidden_size": 64}\n', path_in_repo="config.json", repo_id="alice/history"
    )
    assert again.oid == second == local_hub.branch_head("alice/history")
    with pytest.raises(HfHubHTTPError, match="A commit has happened since") as err:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/history", parent_commit=first)
    assert err.value.response.status_code == 412


def test_branches(local_hub: LocalHub, tmp_path: Path) -> None:
    api = local_hub.api()
    api.create_repo("alice/branchy")
    main = api.upload_file(path_or_fileobj=b"main", path_in_repo="f.txt", repo_id="alice/branchy").oid
    cache = tmp_path / "cache"
    for branch in ("dev", "feature/x"):  # a "/" travels URL-encoded as %2F
        api.create_branch("alice/branchy", branch=branch)
        api.create_branch("alice/branchy", branch=branch, exist_ok=True)
        sha = api.upload_file(
            path_or_fileobj=branch.encode(), path_in_repo="f.txt", repo_id="alice/branchy", revision=branch
        ).oid
        assert (
            api.model_info("alice/branchy", revision=branch).sha
            == sha
            == local_hub.branch_head("alice/branchy", branch)
        )
        assert _download(local_hub, "alice/branchy", "f.txt", cache, revision=branch) == branch.encode()
        assert [e.path for e in api.list_repo_tree("alice/branchy", revision=branch)] == [".gitattributes", "f.txt"]
    assert _download(local_hub, "alice/branchy", "f.txt", cache, revision="main") == b"main"
    refs = api.list_repo_refs("alice/branchy")
    assert {b.name: b.target_commit for b in refs.branches}["main"] == main
    assert sorted(b.name for b in refs.branches) == ["dev", "feature/x", "main"]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch("alice/branchy", branch="dev")
    assert err.value.response.status_code == 409
    with pytest.raises(RevisionNotFoundError, match="create_branch"):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/branchy", revision="nope")
    assert api.revision_exists("alice/branchy", "dev") and not api.revision_exists("alice/branchy", "nope")


def test_private_repo_errors_are_clear(local_hub: LocalHub, tmp_path: Path) -> None:
    owner = local_hub.api()
    owner.create_repo("alice/secret", private=True)
    owner.upload_file(path_or_fileobj=b"s3cr3t", path_in_repo="key.txt", repo_id="alice/secret")
    assert owner.model_info("alice/secret").private is True
    cache = tmp_path / "cache"
    assert _download(local_hub, "alice/secret", "key.txt", cache) == b"s3cr3t"

    # No token, or another user's token: the repo looks missing (the Hub never reveals private repos).
    # Fresh caches: on a 401/404 the client would otherwise fall back to the copy cached above.
    for i, token in enumerate((False, local_hub.token_for("bob"))):
        with pytest.raises(RepositoryNotFoundError, match="make sure you are authenticated"):
            _download(local_hub, "alice/secret", "key.txt", tmp_path / f"cache{i}", token=token)
        with pytest.raises(RepositoryNotFoundError, match="Repository Not Found for url"):
            local_hub.api(token).model_info("alice/secret")
    # A wrong token is reported as such (401), not as a missing repo.
    with pytest.raises(HfHubHTTPError, match="Invalid credentials in Authorization header") as err:
        _download(local_hub, "alice/secret", "key.txt", tmp_path / "cache_wrong", token="hf_wrong")
    assert not isinstance(err.value, RepositoryNotFoundError) and err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid credentials") as err:
        local_hub.api("hf_wrong").model_info("alice/secret")
    assert err.value.response.status_code == 401

    # Writes: anonymous -> 401, someone else's repo -> 403.
    owner.create_repo("alice/public")
    with pytest.raises(HfHubHTTPError, match="needs a token with write access") as err:
        local_hub.api(False).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/public")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="write access") as err:
        local_hub.api("hf_test_token_bob").upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/public")
    assert err.value.response.status_code == 403


def test_dataset_repo(local_hub: LocalHub, tmp_path: Path) -> None:
    api = local_hub.api()
    api.create_repo("alice/data", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="alice/data", repo_type="dataset")
    assert api.dataset_info("alice/data").siblings[-1].rfilename == "train.csv"
    data = _download(local_hub, "alice/data", "train.csv", tmp_path / "cache", repo_type="dataset")
    assert data == b"a,b\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):  # same name, other type: a different repo
        _download(local_hub, "alice/data", "train.csv", tmp_path / "cache")


def _run(code: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_hf_endpoint_env_var_route_in_subprocess(local_hub: LocalHub, tmp_path: Path) -> None:
    api = local_hub.api()
    api.create_repo("alice/env", private=True)
    api.upload_file(path_or_fileobj=BINARY, path_in_repo="w.bin", repo_id="alice/env")
    env = local_hub.subprocess_env()
    code = """
        import hashlib, json, tempfile
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import RepositoryNotFoundError
        path = hf_hub_download("alice/env", "w.bin")  # no endpoint/token arguments: HF_ENDPOINT, HF_TOKEN
        try:
            hf_hub_download("alice/env", "w.bin", token=False, cache_dir=tempfile.mkdtemp())
            anonymous = "downloaded"
        except RepositoryNotFoundError as err:
            anonymous = type(err).__name__
        sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
        print(json.dumps({"endpoint": constants.ENDPOINT, "path": path, "sha": sha, "anonymous": anonymous}))
    """
    out = json.loads(_run(code, env, tmp_path).splitlines()[-1])
    assert out["endpoint"] == local_hub.endpoint
    assert out["path"].startswith(env["HF_HOME"])
    assert out["sha"] == hashlib.sha256(BINARY).hexdigest()
    assert out["anonymous"] == "RepositoryNotFoundError"
    assert "HF_TOKEN" not in local_hub.subprocess_env(token=False)


_REMOTE_CONFIG = """
from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""

_REMOTE_MODELING = """
import torch
from transformers import PreTrainedModel

from .configuration_tinyremote import TinyRemoteConfig


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, 2)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
"""


@pytest.mark.slow
def test_transformers_loads_by_repo_id_from_local_hub(local_hub: LocalHub, tmp_path: Path) -> None:
    """from_pretrained / pipeline / trust_remote_code by repo id, in a fresh process that only knows HF_ENDPOINT."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    api = local_hub.api()
    api.create_repo("alice/tiny")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(95))]) + "\n")
    input_ids = [[2, 7, 8, 3]]
    logits = {}
    for seed, revision in ((0, "main"), (1, "v2")):
        torch.manual_seed(seed)
        config = transformers.BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
        )
        model = transformers.BertForSequenceClassification(config).eval()
        model.save_pretrained(tmp_path / revision)
        transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path / revision)
        (tmp_path / revision / "README.md").write_text("---\npipeline_tag: text-classification\n---\n")
        if revision != "main":
            api.create_branch("alice/tiny", branch=revision)
        api.upload_folder(repo_id="alice/tiny", folder_path=tmp_path / revision, revision=revision)
        with torch.no_grad():
            logits[revision] = model(torch.tensor(input_ids)).logits.tolist()

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "configuration_tinyremote.py").write_text(_REMOTE_CONFIG)
    (remote / "modeling_tinyremote.py").write_text(_REMOTE_MODELING)
    auto_map = {
        "AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
        "AutoModel": "modeling_tinyremote.TinyRemoteModel",
    }
    config = {"model_type": "tiny-remote", "architectures": ["TinyRemoteModel"], "width": 4, "auto_map": auto_map}
    (remote / "config.json").write_text(json.dumps(config))
    weights = {"proj.weight": torch.arange(8.0).reshape(2, 4), "proj.bias": torch.tensor([1.0, -1.0])}
    save_file(weights, str(remote / "model.safetensors"), metadata={"format": "pt"})
    api.create_repo("alice/remote", private=True)
    remote_sha = api.upload_folder(repo_id="alice/remote", folder_path=remote).oid
    api.upload_file(path_or_fileobj=b"later", path_in_repo="later.txt", repo_id="alice/remote")  # main moves on

    code = f"""
        import json, tempfile, torch
        from transformers import AutoModel, AutoModelForSequenceClassification, pipeline
        ids = torch.tensor({input_ids})
        out = {{}}
        for rev in ("main", "v2"):
            model = AutoModelForSequenceClassification.from_pretrained("alice/tiny", revision=rev).eval()
            with torch.no_grad():
                out[rev] = model(ids).logits.tolist()
        classifier = pipeline(model="alice/tiny")  # task read from the card's pipeline_tag in the repo info
        out["task"] = [classifier.task, classifier("w1 w2")[0]["label"]]
        remote = AutoModel.from_pretrained("alice/remote", revision="{remote_sha}", trust_remote_code=True)
        out["remote"] = [type(remote).__name__, remote.proj.bias.tolist()]
        try:
            AutoModel.from_pretrained("alice/remote", trust_remote_code=True, token=False, cache_dir=tempfile.mkdtemp())
        except OSError as err:
            out["anonymous"] = str(err)
        print(json.dumps(out))
    """
    out = json.loads(_run(code, local_hub.subprocess_env(), tmp_path).splitlines()[-1])
    for revision in ("main", "v2"):
        assert torch.allclose(torch.tensor(out[revision]), torch.tensor(logits[revision]), atol=1e-5)
    assert not torch.allclose(torch.tensor(logits["main"]), torch.tensor(logits["v2"]))
    assert out["remote"] == ["TinyRemoteModel", [1.0, -1.0]]
    assert "alice/remote" in out["anonymous"]
    assert out["task"][0] == "text-classification" and out["task"][1] in ("LABEL_0", "LABEL_1")
