"""Sharing on the Hub: a trained model directory becomes one commit holding everything needed to use and judge it.

One commit, so that every revision of a repository is a complete model: weights, `config.json` with `auto_map`, the
remote code, the tokenizer, results, plots, a card rendered for that repository and the ONNX export (`onnx/`) when it
was made from these very weights and config (a stale one is left out, and an earlier push's removed). Everything
that can be checked locally (files, config, repository id, token) is checked before the first request that writes,
so a failed push leaves no partial commit behind.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from transformers.dynamic_module_utils import get_relative_import_files

from .model_card import build_model_card
from .run_directory import (
    CARD_FILE,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    CONFUSION_MATRIX_FILE,
    ONNX_DIR,
    ONNX_MODEL_FILE,
    ONNX_SOURCE_FILE,
    RESULTS_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_EXTRA_FILES,
    TOKENIZER_VOCAB_FILES,
    TRAINING_CURVES_FILE,
    TRAINING_SUMMARY_FILE,
    WEIGHTS_FILE,
    export_is_fresh,
)

try:  # huggingface_hub's HTTP library: its connection errors are not OSErrors, so the CLI would show a traceback
    from httpx2 import TransportError as _TransportError

    _TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (_TransportError,)
except ImportError:  # pragma: no cover - another huggingface_hub HTTP backend
    _TRANSPORT_ERRORS = ()

logger = logging.getLogger(__name__)

# Files a trained directory must hold (the remote-code files named in `auto_map` are required too).
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_CONFIG_FILE, RESULTS_FILE, TRAINING_SUMMARY_FILE)
# At least one of TOKENIZER_VOCAB_FILES carries the vocabulary; whichever exist are uploaded.
OPTIONAL_FILES = (*TOKENIZER_EXTRA_FILES, TRAINING_CURVES_FILE, CONFUSION_MATRIX_FILE)
# Remote files a push owns: when the new upload lacks one, it is deleted in the same commit, so an earlier push's
# weights, tokenizer or plot can never be loaded with this push's config; so is everything under `onnx/` (an export
# of earlier weights). Anything else (notes, .gitattributes) stays.
MANAGED_PATTERNS = (
    *REQUIRED_FILES,
    *TOKENIZER_VOCAB_FILES,
    *OPTIONAL_FILES,
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "configuration_*.py",
    "modeling_*.py",
)
REQUIRED_AUTO_CLASSES = ("AutoConfig", "AutoModelForSequenceClassification")
DEFAULT_BRANCH = "main"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?"
_REPO_ID_RE = re.compile(rf"^{_NAME}/{_NAME}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_TOKEN_HELP = "pass --token (hf-gru push) or --hub_token (hf-gru train), set HF_TOKEN, or run `hf auth login`"


def validate_repo_id(repo_id: str) -> str:
    """Repository ids must name their namespace: a bare name would land wherever the token's owner happens to be."""
    if not isinstance(repo_id, str) or not _REPO_ID_RE.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(
            f"repository id {repo_id!r} is not of the form NAMESPACE/NAME (e.g. your-user/trec-gru): "
            "letters, digits, '-', '_' and '.', one '/'"
        )
    return repo_id


def files_to_upload(model_dir: str | Path) -> list[str]:
    """Names (relative to `model_dir`) of the files one push uploads, besides the re-rendered `README.md`.

    Raises ValueError naming everything that is missing or wrong, before any network request.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir} is not a directory: give the --output_dir of a finished `hf-gru train` run")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    vocab = [name for name in TOKENIZER_VOCAB_FILES if (model_dir / name).is_file()]
    if not vocab:
        missing.append("tokenizer.json (or another tokenizer vocabulary file)")
    code_files: list[str] = []
    if (model_dir / CONFIG_FILE).is_file():
        code_files = _remote_code_files(model_dir / CONFIG_FILE)
        missing += [name for name in code_files if not (model_dir / name).is_file()]
    if missing:
        hint = ""
        if WEIGHTS_FILE in missing and any(model_dir.glob(f"{CHECKPOINT_PREFIX}*")):
            hint = " (its checkpoint-* folders suggest an unfinished run: finish it with --resume_from_checkpoint)"
        raise ValueError(
            f"{model_dir} is not a trained hf_gru model{hint}: missing {', '.join(missing)}; "
            f"train one with `hf-gru train --output_dir {model_dir} ...`"
        )
    optional = [name for name in OPTIONAL_FILES if (model_dir / name).is_file()]
    return list(dict.fromkeys([*REQUIRED_FILES, *code_files, *vocab, *optional, *_onnx_files(model_dir)]))


def _onnx_files(model_dir: Path) -> list[str]:
    """`onnx/...` names to upload: the export's files when it was made from the weights and config being pushed;
    none (and a warning saying so) when it is stale."""
    folder = model_dir / ONNX_DIR
    if not (folder / ONNX_MODEL_FILE).is_file():
        return []
    if not export_is_fresh(model_dir, folder):
        logger.warning(
            "skipping the ONNX export in %s: it was not made from the weights and config now in %s (its %s does not "
            "match them); re-run `hf-gru export --model %s` and push again to include it",
            folder,
            model_dir,
            ONNX_SOURCE_FILE,
            model_dir,
        )
        return []
    return [f"{ONNX_DIR}/{path.name}" for path in sorted(folder.iterdir()) if path.is_file() and path.name[0] != "."]


def _remote_code_files(config_path: Path) -> list[str]:
    """The code files `auto_map` points at: without them, users without hf_gru could not load the model."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); save the model again") from error
    if config.get("model_type") != "gru":
        raise ValueError(
            f"{config_path} has model_type {config.get('model_type')!r}, not 'gru': only hf_gru models can be pushed"
        )
    auto_map = config.get("auto_map") or {}
    absent = [name for name in REQUIRED_AUTO_CLASSES if name not in auto_map]
    if absent:
        raise ValueError(
            f"{config_path} lacks auto_map entries for {', '.join(absent)}, so the model could not be loaded with "
            "trust_remote_code=True where hf_gru is not installed; save it again with hf_gru "
            "(its `save_pretrained` writes auto_map and the code files)"
        )
    references = [ref for value in auto_map.values() for ref in ([value] if isinstance(value, str) else value) if ref]
    modules = [ref.split("--")[-1].rsplit(".", 1)[0] for ref in references]  # "repo--module.Class" -> "module"
    names = [f"{module.replace('.', '/')}.py" for module in modules]
    # The modules those import relatively (`from .modeling_gru_layers import ...`) travel too, as transformers'
    # `custom_object_save` copies them: without them remote code fails to import.
    model_dir = config_path.parent
    for name in list(names):
        if (model_dir / name).is_file():
            names += [
                Path(path).relative_to(model_dir).as_posix() for path in get_relative_import_files(model_dir / name)
            ]
    return list(dict.fromkeys(names))


def resolve_token(repo_id: str, token: str | None = None) -> str:
    """The token to write with: explicit, else HF_TOKEN, else the saved login; none is an error that says how."""
    resolved = token or get_token()
    if not resolved:
        raise ValueError(f"pushing to {repo_id} needs a Hugging Face token with write access: {_TOKEN_HELP}")
    return resolved


def check_can_push(repo_id: str, *, token: str | None = None, endpoint: str | None = None) -> str:
    """Fail fast, before a long training run, on a bad repository id or token; returns the token owner's name.

    Read-only: creates nothing. `run_training` can call it before training when `--push_to_hub` is set.
    """
    validate_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=resolve_token(repo_id, token))
    with _hub_errors(repo_id, api.endpoint):
        return api.whoami()["name"]


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload a trained model directory to `repo_id` in one commit; returns the commit URL (it ends in the sha).

    `revision` is a branch (created from main when missing). `private` applies when the repository is created; an
    existing public repository is never made private (nor a private one public) behind the user's back: asking for
    `private=True` on a public repository is an error. `endpoint` defaults to HF_ENDPOINT / the public Hub.
    Checkpoints, optimizer states, `training_args.bin`, `trainer_state.json` and `runs/` are never uploaded.
    """
    model_dir = Path(model_dir)
    validate_repo_id(repo_id)
    branch = (revision or DEFAULT_BRANCH).removeprefix("refs/heads/")
    if _SHA_RE.match(branch):
        raise ValueError(f"--revision {revision} is a commit sha; a push needs a branch name to commit to")
    names = files_to_upload(model_dir)
    # Rendered into memory for this repo id: the local README keeps describing the local directory.
    card = build_model_card(model_dir, repo_id=repo_id, revision=revision).content.encode("utf-8")
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name)) for name in names
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card))
    commit_message = commit_message or _default_commit_message(model_dir)
    api = HfApi(endpoint=endpoint, token=resolve_token(repo_id, token))

    with _hub_errors(repo_id, api.endpoint):
        try:
            info = api.model_info(repo_id)
        except RepositoryNotFoundError:
            info = None
        if info is None:
            api.create_repo(repo_id, private=private, exist_ok=True)
            logger.info("created %s repository %s", "private" if private else "public", repo_id)
        elif private and not info.private:
            raise ValueError(
                f"{repo_id} already exists and is public; a push does not change its visibility. Make it private "
                "in its settings on the Hub first, or push without --private / --hub_private_repo"
            )
        elif info.private and not private:
            logger.info("%s is private and stays private", repo_id)
        if branch != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        head = api.model_info(repo_id, revision=branch)
        uploaded = {operation.path_in_repo for operation in operations}
        remote = [sibling.rfilename for sibling in head.siblings or []]
        operations += [CommitOperationDelete(path_in_repo=name) for name in _stale(remote, uploaded)]
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message,
            revision=branch,
            parent_commit=head.sha,  # a concurrent push in between fails instead of mixing two models
        )
    logger.info("pushed %s to %s (%s)", model_dir, repo_id, commit.oid)
    return commit.commit_url


def _stale(remote: Iterable[str], uploaded: set[str]) -> list[str]:
    return sorted(
        name
        for name in remote
        if name not in uploaded
        and (
            name.startswith(f"{ONNX_DIR}/")
            or ("/" not in name and any(fnmatch.fnmatch(name, p) for p in MANAGED_PATTERNS))
        )
    )


def local_model(model: str) -> str:
    """A model directory as given, or a Hub id downloaded (cached) to one, `onnx/` included; an id that is neither
    is one line. `predict`, `evaluate` and `serve` read a Hub model through it."""
    if Path(model).exists() or model.count("/") != 1 or model.startswith((".", "/")):
        return model
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model)
    except (HfHubHTTPError, LocalEntryNotFoundError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = f"--model {model} is not a local folder and could not be fetched from the Hub ({first})"
        raise ValueError(message) from None


def snapshot_revision(model_dir: str | Path) -> str | None:
    """The Hub commit a model folder from `local_model` was downloaded at (its snapshot folder's name), or None
    for a folder of the user's own."""
    path = Path(model_dir).resolve()
    is_commit = len(path.name) == 40 and all(c in "0123456789abcdef" for c in path.name)
    return path.name if is_commit and path.parent.name == "snapshots" else None


def _default_commit_message(model_dir: Path) -> str:
    results = json.loads((model_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    for key in ("test_accuracy", "eval_accuracy"):
        if isinstance(results.get(key), (int, float)):
            split = "test" if key.startswith("test") else "validation"
            return f"Upload hf_gru GRU classifier ({split} accuracy {results[key]:.4f})"
    return "Upload hf_gru GRU classifier"


@contextmanager
def _hub_errors(repo_id: str, endpoint: str) -> Iterator[None]:
    """Turn the client's HTTP and connection errors into ValueError/PermissionError/OSError that say what to do."""
    try:
        yield
    except HfHubHTTPError as error:
        raise _translate(error, f"{repo_id} on {endpoint}") from error
    except _TRANSPORT_ERRORS as error:
        raise ConnectionError(
            f"cannot reach the Hub at {endpoint} for {repo_id} ({error}); check the network and HF_ENDPOINT"
        ) from error


def _translate(error: HfHubHTTPError, where: str) -> Exception:
    status = error.response.status_code if error.response is not None else None
    detail = error.server_message or str(error).splitlines()[0]
    if status == 401:
        return PermissionError(f"the Hub rejected the token for {where} (401: {detail}): {_TOKEN_HELP}")
    if status == 403:
        return PermissionError(
            f"the token cannot write to {where} (403: {detail}): push to a namespace you own or may write to, "
            "or use a token with write access"
        )
    if isinstance(error, RevisionNotFoundError):
        return ValueError(f"branch not found in {where} ({detail})")
    if status == 412:
        return ValueError(f"{where} changed while pushing ({detail}); push again")
    return OSError(f"pushing to {where} failed ({status}: {detail})")
