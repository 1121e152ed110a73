"""A small Hugging Face Hub-compatible HTTP server, so push/load round trips can be tested offline.

The real `huggingface_hub` client (and `transformers` on top of it) talks to this server unchanged when
`HF_ENDPOINT` / `HfApi(endpoint=...)` points at it: nothing is mocked or patched. It implements the subset of the
Hub's REST protocol those clients use to create repos, commit files, list them and download them back:

- `GET  /api/whoami-v2`, `POST /api/repos/create`, `DELETE /api/repos/delete`, `POST /api/validate-yaml`
- `GET  /api/{models,datasets}/{ns}/{name}[/revision/{rev}]`      repo info (`sha`, `siblings`, `private`, ...)
- `GET  /api/{models,datasets}/{ns}/{name}/tree/{rev}[/{path}]`   tree listing (`recursive`, `expand`)
- `POST /api/{models,datasets}/{ns}/{name}/paths-info/{rev}`      info on given paths
- `GET  /api/{models,datasets}/{ns}/{name}/refs` and `/commits/{rev}`
- `POST|DELETE /api/{models,datasets}/{ns}/{name}/branch/{branch}`, `POST|DELETE .../tag/{rev|tag}`
- `POST /api/{models,datasets}/{ns}/{name}/preupload/{rev}`       always answers `uploadMode: regular`, so the
  client never takes the LFS or Xet upload paths, which this server does not speak
- `POST /api/{models,datasets}/{ns}/{name}/commit/{rev}`          NDJSON commit (header, file, deletedFile, ...)
- `GET|HEAD /[datasets/]{ns}/{name}/resolve/{rev}/{path}`         downloads, with the headers the client checks

Every commit keeps its full file tree (path -> content-addressed blob), so any earlier revision stays downloadable
by commit sha, branch or tag. State lives on disk under `root` and is reloaded if a server restarts on it.

Errors carry the `X-Error-Code` / `X-Error-Message` headers the client turns into typed exceptions, with the Hub's
quirks kept: anonymous reads of a private (or missing) repo get 401 + `RepoNotFound` (-> `RepositoryNotFoundError`),
an unknown token gets 401 "Invalid credentials in Authorization header" (-> `HfHubHTTPError`, which the client
deliberately does not turn into a repo-not-found error).

Use the `local_hub` pytest fixture (see `LocalHub`), or `with LocalHub(root) as hub:` outside pytest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import mimetypes
import os
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

DEFAULT_TOKENS: dict[str, str] = {"hf_test_token": "alice", "hf_test_token_bob": "bob"}
DEFAULT_BRANCH = "main"

# Exact text the client special-cases: with it, a 401 is *not* turned into RepositoryNotFoundError (see
# huggingface_hub.utils._http.hf_raise_for_status), so a wrong token surfaces as a token problem.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

_URL_TYPES = {"models": "model", "datasets": "dataset"}
_TYPE_PREFIX = {"model": "", "dataset": "datasets/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_ARCH_TO_PIPELINE = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
    "ForCausalLM": "text-generation",
    "ForConditionalGeneration": "text2text-generation",
}
_PIPELINE_TO_AUTO = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
}
# Shortened version of the `.gitattributes` the Hub puts in every new repo's initial commit.
_INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)


def _now() -> str:
    """UTC timestamp in the Hub's format (parsed by `huggingface_hub.utils.parse_datetime`)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


def git_blob_oid(data: bytes) -> str:
    """Git blob sha1: the Hub's `oid`/ETag of a regular file, and what the client compares to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error answer: status, message and the `X-Error-Code` the client maps to an exception class."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the JSON error body


def _repo_not_found(user: str | None) -> HubError:
    """Like the Hub: anonymous callers get 401 (the repo may be private), authenticated ones 404; never leaks."""
    return HubError(401 if user is None else 404, "Repository not found", code="RepoNotFound")


@dataclass(frozen=True)
class FileEntry:
    oid: str
    size: int


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    title: str
    description: str
    author: str
    date: str
    files: Mapping[str, FileEntry]

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "files"}
        data["files"] = {path: {"oid": e.oid, "size": e.size} for path, e in sorted(self.files.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        files = {path: FileEntry(**entry) for path, entry in data.pop("files").items()}
        return cls(files=files, **data)


@dataclass
class Repo:
    type: str
    namespace: str
    name: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def meta_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "commits"}


class HubStore:
    """On-disk state: content-addressed blobs plus one JSON file per repo (refs) and per commit (full tree).

    All mutations and reads go through `lock`, so the threaded server stays consistent without finer locking.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._load()

    # -- persistence -------------------------------------------------------------------------------------------
    def _repo_dir(self, repo: Repo) -> Path:
        return self.root / "repos" / f"{repo.type}s" / repo.namespace / repo.name

    def _load(self) -> None:
        for meta_path in sorted(self.root.glob("repos/*/*/*/repo.json")):
            meta = json.loads(meta_path.read_text())
            repo = Repo(**meta)
            for commit_path in (meta_path.parent / "commits").glob("*.json"):
                commit = Commit.from_json(json.loads(commit_path.read_text()))
                repo.commits[commit.id] = commit
            self.repos[(repo.type, repo.repo_id)] = repo

    @staticmethod
    def _write_json(path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def _save_meta(self, repo: Repo) -> None:
        self._write_json(self._repo_dir(repo) / "repo.json", repo.meta_json())

    def _blob_path(self, oid: str) -> Path:
        return self.root / "blobs" / oid[:2] / oid[2:]

    def put_blob(self, data: bytes) -> FileEntry:
        oid = git_blob_oid(data)
        path = self._blob_path(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{oid}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return FileEntry(oid=oid, size=len(data))

    def read_blob(self, oid: str) -> bytes:
        return self._blob_path(oid).read_bytes()

    # -- repos, refs and commits ---------------------------------------------------------------------------------
    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def create_repo(self, repo_type: str, namespace: str, name: str, private: bool) -> Repo:
        repo = Repo(type=repo_type, namespace=namespace, name=name, private=private, created_at=_now())
        initial = self.put_blob(_INITIAL_GITATTRIBUTES)
        self.repos[(repo_type, repo.repo_id)] = repo
        self.add_commit(repo, DEFAULT_BRANCH, None, {".gitattributes": initial}, "initial commit", "", "system")
        return repo

    def delete_repo(self, repo: Repo) -> None:
        del self.repos[(repo.type, repo.repo_id)]
        directory = self._repo_dir(repo)
        for path in sorted(directory.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        directory.rmdir()

    def add_commit(
        self,
        repo: Repo,
        branch: str,
        parent: str | None,
        files: Mapping[str, FileEntry],
        title: str,
        description: str,
        author: str,
    ) -> Commit:
        date = _now()
        fingerprint = json.dumps([repo.repo_id, parent, sorted((p, e.oid) for p, e in files.items()), title, date])
        oid = hashlib.sha1(f"{fingerprint}{uuid.uuid4().hex}".encode()).hexdigest()
        commit = Commit(oid, parent, title, description, author, date, dict(files))
        self._write_json(self._repo_dir(repo) / "commits" / f"{oid}.json", commit.to_json())
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        self._save_meta(repo)
        return commit

    def set_ref(self, repo: Repo, kind: str, name: str, target: str | None) -> None:
        refs = repo.branches if kind == "branch" else repo.tags
        if target is None:
            refs.pop(name, None)
        else:
            refs[name] = target
        self._save_meta(repo)

    def set_private(self, repo: Repo, private: bool) -> None:
        repo.private = private
        self._save_meta(repo)

    @staticmethod
    def resolve(repo: Repo, revision: str) -> Commit:
        """Branch, tag or full commit sha of this repo (with optional `refs/heads/` / `refs/tags/` prefix)."""
        if revision.startswith("refs/heads/") and revision[11:] in repo.branches:
            return repo.commits[repo.branches[revision[11:]]]
        if revision.startswith("refs/tags/") and revision[10:] in repo.tags:
            return repo.commits[repo.tags[revision[10:]]]
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision in repo.tags:
            return repo.commits[repo.tags[revision]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    @staticmethod
    def branch_of(repo: Repo, revision: str) -> str:
        """The branch a write targets: the Hub only commits on top of an existing branch."""
        branch = revision.removeprefix("refs/heads/")
        if branch not in repo.branches:
            raise HubError(
                404,
                f"Invalid rev id: {revision} (commits go to an existing branch; create it first with create_branch)",
                code="RevisionNotFound",
            )
        return branch


# ---------------------------------------------------------------------------------------------------------------
# Helpers turning stored state into the JSON shapes huggingface_hub parses (RepoFile, RepoFolder, ModelInfo, ...)
# ---------------------------------------------------------------------------------------------------------------
def _folder_oid(commit: Commit, folder: str) -> str:
    prefix = folder + "/"
    items = sorted((p, e.oid) for p, e in commit.files.items() if p.startswith(prefix))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()


def _last_change(repo: Repo, commit: Commit, state: Callable[[Commit], Any]) -> Commit:
    """Most recent commit (walking back from `commit`) where `state` changed: the `lastCommit` of a path."""
    current = commit
    while current.parent is not None and state(repo.commits[current.parent]) == state(current):
        current = repo.commits[current.parent]
    return current


def _last_commit_json(commit: Commit) -> dict[str, str]:
    return {"id": commit.id, "title": commit.title, "date": commit.date}


def _file_json(repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    entry = commit.files[path]
    data: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if expand:
        data["lastCommit"] = _last_commit_json(_last_change(repo, commit, lambda c: c.files.get(path)))
    return data


def _folder_json(repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "directory", "oid": _folder_oid(commit, path), "size": 0, "path": path}
    if expand:
        data["lastCommit"] = _last_commit_json(_last_change(repo, commit, lambda c: _folder_oid(c, path)))
    return data


def _is_folder(commit: Commit, path: str) -> bool:
    prefix = path + "/"
    return any(p.startswith(prefix) for p in commit.files)


def _tree(repo: Repo, commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
    path = path.strip("/")
    if path and not _is_folder(commit, path):
        raise HubError(404, f"Entry not found: '{path}' is not a folder at this revision", code="EntryNotFound")
    base = f"{path}/" if path else ""
    folders: set[str] = set()
    files: list[str] = []
    for file_path in sorted(commit.files):
        if not file_path.startswith(base):
            continue
        parts = file_path[len(base) :].split("/")
        if recursive:
            folders.update(base + "/".join(parts[:i]) for i in range(1, len(parts)))
            files.append(file_path)
        elif len(parts) == 1:
            files.append(file_path)
        else:
            folders.add(base + parts[0])
    return [_folder_json(repo, commit, f, expand) for f in sorted(folders)] + [
        _file_json(repo, commit, f, expand) for f in files
    ]


def _front_matter(readme: bytes) -> dict[str, Any] | None:
    """YAML metadata block of a README, as the Hub exposes it in `cardData`; raises ValueError if invalid."""
    text = readme.decode("utf-8", errors="replace").replace("\r\n", "\n")
    match = re.match(r"^---\n(.*?)\n---(?:\n|$)", text, flags=re.DOTALL) or re.match(r"^---\n---(?:\n|$)", text)
    if match is None:
        return None
    import yaml  # dependency of huggingface_hub; imported lazily to keep this module import-light

    try:
        data = yaml.safe_load(match.group(1)) if match.groups() else {}
    except yaml.YAMLError as err:
        raise ValueError(f"Invalid YAML in README.md metadata: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("README.md metadata must be a YAML mapping")
    return data


def _repo_info(store: HubStore, repo: Repo, commit: Commit, blobs: bool, expand: list[str]) -> dict[str, Any]:
    """Repo info in the Hub's shape, with library/pipeline/tags derived like the Hub does (card, then config)."""
    siblings = []
    for path, entry in sorted(commit.files.items()):
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(size=entry.size, blobId=entry.oid)
        siblings.append(sibling)
    card: dict[str, Any] | None = None
    if "README.md" in commit.files:
        try:
            card = _front_matter(store.read_blob(commit.files["README.md"].oid))
        except ValueError:
            card = None
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo.type}/{repo.repo_id}".encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.namespace,
        "sha": commit.id,
        "lastModified": commit.date,
        "createdAt": repo.created_at,
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(e.size for e in commit.files.values()),
    }
    if card is not None:
        info["cardData"] = card
    if repo.type == "model":
        info.update(_model_fields(store, commit, card or {}))
    if expand:
        info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
    return info


def _model_fields(store: HubStore, commit: Commit, card: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "config.json" in commit.files:
        try:
            loaded = json.loads(store.read_blob(commit.files["config.json"].oid))
            config = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            config = {}
    library = card.get("library_name") or ("transformers" if "config.json" in commit.files else None)
    pipeline_tag = card.get("pipeline_tag")
    architectures = config.get("architectures") or []
    if pipeline_tag is None:
        for arch in architectures:
            pipeline_tag = next((t for suffix, t in _ARCH_TO_PIPELINE.items() if str(arch).endswith(suffix)), None)
            if pipeline_tag:
                break
    card_tags = card.get("tags") or []
    tags = [library, config.get("model_type"), pipeline_tag, *(card_tags if isinstance(card_tags, list) else [])]
    if any(p.endswith(".safetensors") for p in commit.files):
        tags.append("safetensors")
    if "auto_map" in config:
        tags.append("custom_code")
    fields: dict[str, Any] = {"tags": list(dict.fromkeys(str(t) for t in tags if t))}
    if library:
        fields["library_name"] = library
    if pipeline_tag:
        fields["pipeline_tag"] = pipeline_tag
    if config:
        fields["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
    if library == "transformers" and pipeline_tag in _PIPELINE_TO_AUTO:
        fields["transformersInfo"] = {"auto_model": _PIPELINE_TO_AUTO[pipeline_tag], "pipeline_tag": pipeline_tag}
    return fields


def _clean_path(path: Any) -> str:
    """Reject paths the Hub rejects (absolute, `..`, empty parts, `.git/`), so bad input fails loudly here too."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _check_ref_name(name: str) -> str:
    if (
        not name
        or name.startswith(("/", "refs/", "-"))
        or name.endswith(("/", ".lock"))
        or ".." in name
        or "//" in name
        or _SHA_RE.match(name)
        or any(c in name for c in " ~^:?*[\\\x7f")
        or any(ord(c) < 32 for c in name)
    ):
        raise HubError(400, f"Invalid reference name: {name!r}")
    return name


# ---------------------------------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(data).encode(), all_headers)

    @classmethod
    def from_error(cls, err: HubError) -> Response:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code is not None:
            headers["X-Error-Code"] = err.code
        return cls.json({**err.extra, "error": err.message}, status=err.status, headers=headers)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered; `LocalHub.requests` lets tests see which endpoints a client used."""

    method: str
    path: str
    status: int


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # keep-alive connections of the client pool must not block shutdown
    hub: LocalHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client pools connections
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid ~40 ms delayed-ACK stalls
    server: _HubHTTPServer
    timeout = 60  # idle keep-alive connections are dropped eventually

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Silenced: tests read `LocalHub.requests` instead of a noisy stderr."""

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        """Always consume the body, even for requests that fail, so keep-alive connections stay in sync."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        hub = self.server.hub
        self.body = self._read_body()
        url = urlsplit(self.path)
        try:
            with hub.store.lock:
                response = self._route(method, url.path, parse_qs(url.query, keep_blank_values=True))
        except HubError as err:
            response = Response.from_error(err)
        except Exception:  # a bug in this server: answer clearly, and make the fixture fail the test
            hub.internal_errors.append(f"{method} {self.path}\n{traceback.format_exc()}")
            response = Response.from_error(HubError(500, f"Internal error in the local test hub on {url.path}"))
        hub.requests.append(RequestRecord(method, url.path, response.status))
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def _user(self) -> str | None:
        """Owner of the `Authorization: Bearer <token>`; unknown tokens are rejected on every route, like the Hub."""
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        user = self.server.hub.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return user

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.hub.endpoint.removeprefix('http://')}"

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Request body is not valid JSON: {err}") from err

    def _form_or_json(self) -> dict[str, list[str]]:
        if "json" in self.headers.get("Content-Type", ""):
            data = self._json_body()
            return {k: v if isinstance(v, list) else [v] for k, v in data.items()}
        return parse_qs(self.body.decode(), keep_blank_values=True)

    # -- routing ---------------------------------------------------------------------------------------------------
    def _route(self, method: str, raw_path: str, query: dict[str, list[str]]) -> Response:
        user = self._user()
        # Split before unquoting: revisions arrive quoted with safe="" so a branch "a/b" is one segment.
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami(user)
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo(user)
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo(user)
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(rest) >= 3 and rest[0] in _URL_TYPES and rest[1] and rest[2]:
                repo_type, repo_id = _URL_TYPES[rest[0]], f"{rest[1]}/{rest[2]}"
                handled = self._repo_api(method, repo_type, repo_id, rest[3:], query, user)
                if handled is not None:
                    return handled
        else:
            repo_type = "model"
            if len(segs) > 3 and segs[0] == "datasets" and segs[3] == "resolve":
                repo_type, segs = "dataset", segs[1:]
            if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), user)
        raise HubError(501, f"The local test hub does not implement {method} {raw_path}")

    def _repo_api(
        self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict[str, list[str]], user: str | None
    ) -> Response | None:
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        flag = {k: v[-1].lower() in ("1", "true") for k, v in query.items()}
        if method == "GET" and not rest:
            return self._info(repo_type, repo_id, None, query, user)
        if method == "GET" and action == "revision" and args:
            return self._info(repo_type, repo_id, "/".join(args), query, user)
        if method == "GET" and action == "tree" and args:
            repo = self._readable(repo_type, repo_id, user)
            commit = HubStore.resolve(repo, args[0])
            entries = _tree(repo, commit, "/".join(args[1:]), flag.get("recursive", False), flag.get("expand", False))
            return Response.json(entries)
        if method == "POST" and action == "paths-info" and args:
            return self._paths_info(repo_type, repo_id, "/".join(args), user)
        if method == "GET" and action == "refs" and not args:
            return self._refs(self._readable(repo_type, repo_id, user))
        if method == "GET" and action == "commits":
            return self._commits(repo_type, repo_id, "/".join(args) or DEFAULT_BRANCH, user)
        if action == "branch" and args and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, "/".join(args), user)
        if action == "tag" and args and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, repo_id, "/".join(args), user)
        if method == "PUT" and action == "settings" and not args:
            return self._settings(repo_type, repo_id, user)
        if method == "POST" and action in ("preupload", "commit") and args:
            if flag.get("create_pr", False):
                raise HubError(400, "create_pr=True is not supported by the local test hub: commit to a branch")
            if action == "preupload":
                return self._preupload(repo_type, repo_id, "/".join(args), user)
            return self._commit(repo_type, repo_id, "/".join(args), user)
        return None

    # -- access control --------------------------------------------------------------------------------------------
    def _readable(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.server.hub.store.get(repo_type, repo_id)
        if repo is None or (repo.private and user != repo.namespace):
            raise _repo_not_found(user)
        return repo

    def _writable(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        if user is None:
            raise HubError(401, f"Authentication required: writing to {repo_id} needs a token with write access")
        repo = self._readable(repo_type, repo_id, user)
        if user != repo.namespace:
            raise HubError(
                403, f"You don't have write access to {repo_type} repo {repo_id} (owned by {repo.namespace})"
            )
        return repo

    # -- endpoints ---------------------------------------------------------------------------------------------------
    def _whoami(self, user: str | None) -> Response:
        if user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return Response.json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local-test-hub", "role": "write"}},
            }
        )

    def _create_repo(self, user: str | None) -> Response:
        if user is None:
            raise HubError(401, "Authentication required: creating a repo needs a token with write access")
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in _TYPE_PREFIX:
            raise HubError(400, f"The local test hub only supports model and dataset repos, not {repo_type!r}")
        name, namespace = payload.get("name"), payload.get("organization") or user
        for part in (namespace, name):
            if not isinstance(part, str) or not _NAME_RE.match(part) or part.endswith(".git") or ".." in part:
                raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        if namespace != user:
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        url = f"{self._base_url()}/{_TYPE_PREFIX[repo_type]}{namespace}/{name}"
        store = self.server.hub.store
        if store.get(repo_type, f"{namespace}/{name}") is not None:
            # The client reads "url" from this 409 body when called with exist_ok=True.
            raise HubError(409, f"You already created this {repo_type} repo: {namespace}/{name}", extra={"url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = store.create_repo(repo_type, namespace, name, private)
        return Response.json({"url": url, "name": repo.repo_id, "id": repo.repo_id})

    def _delete_repo(self, user: str | None) -> Response:
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        repo = self._writable(repo_type if repo_type in _TYPE_PREFIX else "model", repo_id, user)
        self.server.hub.store.delete_repo(repo)
        return Response.json({})

    def _validate_yaml(self) -> Response:
        content = self._json_body().get("content", "")
        try:
            _front_matter(content.encode() if isinstance(content, str) else b"")
        except ValueError as err:
            return Response.json({"errors": [{"message": str(err)}], "warnings": []}, status=400)
        return Response.json({"errors": [], "warnings": []})

    def _info(
        self, repo_type: str, repo_id: str, revision: str | None, query: dict[str, list[str]], user: str | None
    ) -> Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = HubStore.resolve(repo, revision or DEFAULT_BRANCH)
        blobs = query.get("blobs", ["false"])[-1].lower() in ("1", "true")
        expand = query.get("expand", []) + query.get("expand[]", [])
        return Response.json(_repo_info(self.server.hub.store, repo, commit, blobs, expand))

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = HubStore.resolve(repo, revision)
        form = self._form_or_json()
        expand = str(form.get("expand", ["false"])[-1]).lower() in ("1", "true")
        entries = []
        for path in dict.fromkeys(str(p).strip("/") for p in form.get("paths", [])):
            if path in commit.files:
                entries.append(_file_json(repo, commit, path, expand))
            elif path and _is_folder(commit, path):
                entries.append(_folder_json(repo, commit, path, expand))
        return Response.json(entries)

    def _refs(self, repo: Repo) -> Response:
        def refs(kind: str, items: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": t} for n, t in sorted(items.items())]

        return Response.json(
            {
                "branches": refs("heads", repo.branches),
                "converts": [],
                "tags": refs("tags", repo.tags),
                "pullRequests": [],
            }
        )

    def _commits(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> Response:
        repo = self._readable(repo_type, repo_id, user)
        commit: Commit | None = HubStore.resolve(repo, revision)
        items = []
        while commit is not None:
            items.append(
                {
                    "id": commit.id,
                    "title": commit.title,
                    "message": commit.description,
                    "authors": [{"user": commit.author, "avatar": None}],
                    "date": commit.date,
                }
            )
            commit = repo.commits[commit.parent] if commit.parent else None
        return Response.json(items)

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str, user: str | None) -> Response:
        repo = self._writable(repo_type, repo_id, user)
        store = self.server.hub.store
        if method == "DELETE":
            if branch == DEFAULT_BRANCH:
                raise HubError(403, f"Cannot delete the default branch '{DEFAULT_BRANCH}'")
            HubStore.branch_of(repo, branch)
            store.set_ref(repo, "branch", branch, None)
            return Response.json({})
        _check_ref_name(branch)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        starting_point = self._json_body().get("startingPoint") or DEFAULT_BRANCH
        store.set_ref(repo, "branch", branch, HubStore.resolve(repo, starting_point).id)
        return Response.json({})

    def _tag(self, method: str, repo_type: str, repo_id: str, target: str, user: str | None) -> Response:
        repo = self._writable(repo_type, repo_id, user)
        store = self.server.hub.store
        if method == "DELETE":
            if target not in repo.tags:
                raise HubError(404, f"Invalid rev id: {target}", code="RevisionNotFound")
            store.set_ref(repo, "tag", target, None)
            return Response.json({})
        tag = _check_ref_name(str(self._json_body().get("tag", "")))
        if tag in repo.tags:
            raise HubError(409, f"Reference already exists: refs/tags/{tag}")
        store.set_ref(repo, "tag", tag, HubStore.resolve(repo, target).id)
        return Response.json({})

    def _settings(self, repo_type: str, repo_id: str, user: str | None) -> Response:
        repo = self._writable(repo_type, repo_id, user)
        payload = self._json_body()
        if "private" in payload or "visibility" in payload:
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.server.hub.store.set_private(repo, private)
        return Response.json({})

    def _preupload(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> Response:
        repo = self._writable(repo_type, repo_id, user)
        head = repo.commits[repo.branches[HubStore.branch_of(repo, revision)]]
        files = self._json_body().get("files")
        if not isinstance(files, list):
            raise HubError(400, "preupload payload must have a 'files' list")
        answers = []
        for item in files:
            path = _clean_path(item.get("path") if isinstance(item, dict) else None)
            remote = head.files.get(path)
            # "regular" for every file: the content then travels base64-encoded in the commit payload, so the
            # client never needs the LFS batch API nor Xet storage (it only uses them for "lfs" answers).
            answers.append(
                {"path": path, "uploadMode": "regular", "shouldIgnore": False, "oid": remote.oid if remote else None}
            )
        return Response.json({"files": answers, "commitOid": head.id})

    def _commit(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> Response:
        repo = self._writable(repo_type, repo_id, user)
        assert user is not None
        store = self.server.hub.store
        branch = HubStore.branch_of(repo, revision)
        head = repo.commits[repo.branches[branch]]
        try:
            lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Commit payload is not valid NDJSON: {err}") from err
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a 'header' line")
        header = lines[0].get("value") or {}
        title = str(header.get("summary") or "").strip()
        if not title:
            raise HubError(400, "Commit summary (commit_message) must not be empty")
        parent = header.get("parentCommit")
        if parent is not None and parent != head.id:
            raise HubError(
                412, f"A commit has happened since. Please refresh and try again. ({branch} is at {head.id})"
            )
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            if key == "file":
                path = _clean_path(value.get("path"))
                content = value.get("content", "")
                if value.get("encoding") == "base64":
                    try:
                        data = base64.b64decode(content, validate=True)
                    except (binascii.Error, ValueError) as err:
                        raise HubError(400, f"Invalid base64 content for {path}: {err}") from err
                else:
                    data = str(content).encode()
                files[path] = store.put_blob(data)
            elif key == "deletedFile":
                path = _clean_path(value.get("path"))
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                folder = _clean_path(str(value.get("path", "")).rstrip("/"))
                doomed = [p for p in files if p.startswith(folder + "/")]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {folder}", code="EntryNotFound")
                for path in doomed:
                    del files[path]
            elif key == "lfsFile":
                raise HubError(
                    400,
                    "LFS files are not supported by the local test hub (its preupload answers 'regular' for all files)",
                )
            else:
                raise HubError(400, f"Unsupported commit operation: {key!r}")
        for path in files:
            parents = itertools.accumulate(path.split("/")[:-1], lambda a, b: f"{a}/{b}")
            if clash := next((p for p in parents if p in files), None):
                raise HubError(400, f"Path {path!r} conflicts with the existing file {clash!r}")
        commit = store.add_commit(repo, branch, head.id, files, title, str(header.get("description") or ""), user)
        commit_url = f"{self._base_url()}/{_TYPE_PREFIX[repo.type]}{repo.repo_id}/commit/{commit.id}"
        return Response.json(
            {"success": True, "commitOid": commit.id, "commitUrl": commit_url, "hookOutput": "", "pullRequestUrl": None}
        )

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, user: str | None) -> Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = HubStore.resolve(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            # X-Repo-Commit on the 404 lets the client cache the file's absence for this commit (`.no_exist`).
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.id})
        data = self.server.hub.store.read_blob(entry.oid)
        name = path.rsplit("/", 1)[-1]
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
        headers = {
            "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "ETag": f'"{entry.oid}"',  # git blob sha1 for regular files, exactly like the Hub
            "X-Repo-Commit": commit.id,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";",
        }
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if byte_range and any(byte_range.groups()):
            start_s, end_s = byte_range.groups()
            start = int(start_s) if start_s else max(len(data) - int(end_s), 0)
            end = min(int(end_s), len(data) - 1) if start_s and end_s else len(data) - 1
            if start >= len(data) or start > end:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return Response(206, data[start : end + 1], headers)
        return Response(200, data, headers)


# ---------------------------------------------------------------------------------------------------------------
# Public API: the server object and the pytest fixture
# ---------------------------------------------------------------------------------------------------------------
class LocalHub:
    """A running local Hub: `endpoint`, a write `token` for `user`, and helpers to point clients at it.

    In-process clients must be given the endpoint explicitly (`hub.api()` or `endpoint=hub.endpoint`):
    `huggingface_hub` reads `HF_ENDPOINT` into module constants at import time. Subprocesses get it through
    `hub.subprocess_env()`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        tokens: Mapping[str, str] | None = None,
        *,
        user: str = "alice",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tokens: dict[str, str] = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.user = user
        self.token = self.token_for(user)
        self.store = HubStore(self.root)
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []
        self._host, self._port = host, port
        self._server: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._homes = itertools.count()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def token_for(self, user: str) -> str:
        """A valid token of `user` (the server is configured with a token -> user mapping)."""
        try:
            return next(token for token, owner in self.tokens.items() if owner == user)
        except StopIteration:
            raise KeyError(f"No token configured for user {user!r}") from None

    def start(self) -> LocalHub:
        self._server = _HubHTTPServer((self._host, self._port), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def api(self, token: str | bool = True) -> Any:
        """`HfApi` bound to this hub; `token=True` is `hub.token`, `False` is anonymous, a string is used as is."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self._token_value(token) or False)

    def subprocess_env(
        self,
        token: str | bool = True,
        *,
        hf_home: str | os.PathLike[str] | None = None,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a child process that uses this hub through `HF_ENDPOINT`, with a fresh, empty `HF_HOME`.

        `token` as in `api()`. Variables that would override `HF_HOME` or make the child offline are removed.
        """
        env = dict(os.environ if base is None else base)
        for key in list(env):
            if key in _SHADOWING_ENV or key.startswith("HF_DATASETS_"):
                del env[key]
        home = Path(hf_home) if hf_home is not None else self.root / "clients" / f"hf_home_{next(self._homes)}"
        home.mkdir(parents=True, exist_ok=True)
        env.update(HF_ENDPOINT=self.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
        env.update(HF_HUB_DISABLE_UPDATE_CHECK="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        if (value := self._token_value(token)) is not None:
            env["HF_TOKEN"] = value
        return env

    def branch_head(self, repo_id: str, branch: str = DEFAULT_BRANCH, repo_type: str = "model") -> str:
        """Commit sha a branch points to, read from the server side (to cross-check what clients report)."""
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            if repo is None or branch not in repo.branches:
                raise KeyError(f"No branch {branch!r} in {repo_type} repo {repo_id!r}")
            return repo.branches[branch]

    def _token_value(self, token: str | bool) -> str | None:
        if token is True:
            return self.token
        return token or None


# Variables that would make a child process ignore HF_HOME/HF_ENDPOINT/HF_TOKEN or go offline.
_SHADOWING_ENV = frozenset(
    {
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_STORED_TOKENS_PATH",
        "HF_OIDC_RESOURCE",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_ASSETS_CACHE",
        "HUGGINGFACE_ASSETS_CACHE",
        "HF_XET_CACHE",
        "HF_MODULES_CACHE",
        "TRANSFORMERS_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_CO_STAGING",
    }
)


@pytest.fixture
def local_hub(tmp_path: Path) -> Iterator[LocalHub]:
    """A fresh local Hub per test (users `alice` and `bob`), stopped afterwards; server-side bugs fail the test."""
    hub = LocalHub(tmp_path / "hub").start()
    try:
        yield hub
    finally:
        hub.stop()
    if hub.internal_errors:
        pytest.fail("local test hub hit internal errors:\n" + "\n".join(hub.internal_errors), pytrace=False)
