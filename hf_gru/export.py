"""ONNX export of a saved classifier: one graph with dynamic batch and sequence axes and the model's exact padding.

The graph reproduces `GRUForSequenceClassification` on any padding (left, right, holes, empty rows, zero-length
batches): it moves each row's real tokens to the front with one `gather`, appends one padding column (so a batch of
empty texts still has a time step and pools to the classifier's bias), runs each layer as one ONNX `GRU` op with
`sequence_lens` (its right-to-left direction reads each text reversed within its own length, as the model's
`gather` does; one fused op was 12% faster than two GRU ops and the gathers), then pools over real tokens only.
The TorchScript exporter (`dynamo=False`) is used: the `torch.export` exporter unrolls `nn.GRU` over the example's
time steps, which fixes the sequence length in the graph.

The export folder follows `optimum`'s layout: `model.onnx`, `config.json` (+ `configuration_gru.py`, so AutoConfig
can read the custom `model_type` with `trust_remote_code=True`) and the tokenizer files, plus `source.json`: the
sha256 of the weights and config it was exported from, which the backends and `push` check before using it.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from .backends import INSTALL_HINT, import_onnxruntime, load_classifier, onnx_session
from .configuration_gru import GRUConfig
from .modeling_gru import GRUForSequenceClassification, join_windows, split_into_windows
from .run_directory import (
    CONFIG_FILE,
    ONNX_DIR,
    ONNX_INT8_FILE,
    ONNX_MODEL_FILE,
    ONNX_SOURCE_FILE,
    STAGING_MARKER_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_EXTRA_FILES,
    TOKENIZER_VOCAB_FILES,
    export_source,
    export_staging_dir,
)

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# Integer Clip (the length clamps) needs opset 12; the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET = 12, 20
MIN_BAG_OPSET = 16  # the TF-IDF bag's scatter-add (ScatterElements reduction="add")
QUANTIZATIONS = ("int8",)
# Copied beside the graph when present, so AutoConfig / AutoTokenizer (and optimum) can read the folder.
_CONFIG_FILES = (CONFIG_FILE, "configuration_gru.py")
_TOKENIZER_FILES = (TOKENIZER_CONFIG_FILE, *TOKENIZER_VOCAB_FILES, *TOKENIZER_EXTRA_FILES)
# Every file an export may write (what it may remove again from the model's own export folder).
_EXPORT_FILES = (ONNX_MODEL_FILE, ONNX_INT8_FILE, ONNX_SOURCE_FILE, *_CONFIG_FILES, *_TOKENIZER_FILES)
PARITY_TEXTS = (
    "A gripping, beautifully acted film that never lets go.",
    "Dull.",
    "",
    "The service was slow, the food cold and the bill wrong; we will not be back.",
    "这本书写得非常好，强烈推荐！",
    "物流很快",
    "   ",
    "What is the capital of Australia ?",
)


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as error:
        raise ImportError(f"onnx is not installed; {INSTALL_HINT}") from error
    return onnx


class _OnnxGRU(torch.autograd.Function):
    """One ONNX `GRU` op (both directions, `sequence_lens`) for a layer; in eager mode, the layer's own result.

    With `sequence_lens` ONNX Runtime reverses each text within its own length for the right-to-left direction,
    exactly as the model does with its `gather`, so one fused op replaces two GRU ops and the gathers around them.
    """

    @staticmethod
    def forward(ctx, inputs, lengths, weight, recurrence, bias, eager):
        return eager.clone()

    @staticmethod
    def symbolic(g, inputs, lengths, weight, recurrence, bias, eager):
        directions, gates = weight.type().sizes()[:2]
        time_major = g.op("Transpose", inputs, perm_i=[1, 0, 2])
        outputs, _ = g.op(
            "GRU", time_major, weight, recurrence, bias, lengths,
            hidden_size_i=gates // 3, direction_s="bidirectional" if directions == 2 else "forward",
            linear_before_reset_i=1, outputs=2,
        )  # fmt: skip
        batch_major = g.op("Transpose", outputs, perm_i=[2, 0, 1, 3])  # (batch, time, directions, hidden)
        return g.op("Reshape", batch_major, g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.long)))


def _onnx_gate_order(tensor: torch.Tensor) -> torch.Tensor:
    """torch stacks gates as (reset, update, new); ONNX as (update, reset, hidden)."""
    reset, update, new = tensor.chunk(3, dim=0)
    return torch.cat([update, reset, new], dim=0)


def _onnx_gru_weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX `GRU` inputs W `(directions, 3H, input)`, R `(directions, 3H, H)`, B `(directions, 6H)`."""
    rnns = [layer.forward_rnn] + ([layer.backward_rnn] if layer.backward_rnn is not None else [])
    weight = torch.stack([_onnx_gate_order(rnn.weight_ih_l0) for rnn in rnns])
    recurrence = torch.stack([_onnx_gate_order(rnn.weight_hh_l0) for rnn in rnns])
    bias = torch.stack(
        [torch.cat([_onnx_gate_order(rnn.bias_ih_l0), _onnx_gate_order(rnn.bias_hh_l0)]) for rnn in rnns]
    )
    return weight.detach(), recurrence.detach(), bias.detach()


def _layer_for_export(layer: nn.Module, hidden: torch.Tensor, lengths: torch.Tensor, index: torch.Tensor | None):
    """`layer(hidden, index)` whose recurrence exports as one ONNX GRU op; the output gate stays plain torch."""
    gate = layer.output_gate
    layer.output_gate = None
    try:
        eager = layer(hidden, index)
    finally:
        layer.output_gate = gate
    outputs = _OnnxGRU.apply(hidden, lengths, *_onnx_gru_weights(layer), eager)
    if gate is not None:
        outputs = torch.sigmoid(gate(torch.cat([outputs, hidden], dim=-1))) * torch.tanh(outputs)
    return outputs


class ExportableClassifier(nn.Module):
    """`GRUForSequenceClassification`'s inference forward with no data-dependent Python branches, so one traced graph
    serves every batch shape and padding. Reuses the model's own layers, pooler and classifier."""

    def __init__(self, model: GRUForSequenceClassification):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        gru = self.model.gru
        # One extra padding column: zero-length batches still have a time step (which pools to nothing).
        pad = torch.zeros_like(input_ids.sum(dim=1, keepdim=True))
        input_ids = torch.cat([input_ids, pad], dim=1)
        mask = torch.cat([attention_mask.to(pad.dtype), pad], dim=1) != 0
        num_steps = input_ids.shape[1]
        steps = torch.arange(num_steps, device=input_ids.device).unsqueeze(0)
        # Right-align: real tokens first, in order. The keys are unique, so the sort order is exact (no stability).
        keys = (~mask).to(steps.dtype) * num_steps + steps
        input_ids = input_ids.gather(1, torch.argsort(keys, dim=1))
        lengths = mask.sum(dim=1)
        mask = steps < lengths.unsqueeze(1)
        embedded = gru.embeddings(input_ids)
        if gru.config.chunk_size is None:
            outputs = self._layers(embedded, lengths)
        else:
            rows, row_lengths, num_windows = split_into_windows(embedded, lengths, gru.config.chunk_size)
            outputs = join_windows(self._layers(rows, row_lengths), num_windows, num_steps)
        logits = self.model.classifier(gru.pool(outputs, embedded, mask, lengths))
        if self.model.token_bag is not None:
            logits = logits + self.model.token_bag(input_ids, mask)
        return logits

    def _layers(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The GRU stack over right-aligned rows, each recurrence one ONNX GRU op; zero at padded positions."""
        gru = self.model.gru
        steps = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        column = lengths.unsqueeze(1)
        keep = (steps < column).unsqueeze(-1).to(hidden.dtype)
        reverse_index = None
        if gru.config.bidirectional:
            reverse_index = torch.where(steps < column, column - 1 - steps, steps).unsqueeze(-1)
        # ONNX Runtime wants every length in [1, time]; a row with no token reads padding and its outputs are
        # masked below, so it still pools to nothing.
        sequence_lens = lengths.clamp(min=1).to(torch.int32)
        for layer in gru.layers:
            index = None if reverse_index is None else reverse_index.expand(-1, -1, hidden.shape[-1])
            hidden = _layer_for_export(layer, hidden, sequence_lens, index) * keep
        return hidden


def exportable_model(model: GRUForSequenceClassification) -> ExportableClassifier:
    """The wrapper on an fp32, eval-mode copy; a `reference` model is moved onto `nn.GRU` (same parameter names)."""
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.gru_implementation = "fused"
    fused = GRUForSequenceClassification(config)
    fused.load_state_dict(model.state_dict())
    return ExportableClassifier(fused.float().eval()).eval()


@dataclass
class ExportResult:
    output_dir: Path
    files: list[str]
    max_abs_diff: float  # fp32 graph against PyTorch on the parity texts
    int8_max_abs_diff: float | None = None
    int8_agreement: float | None = None  # share of parity texts with the same top label
    parity_texts: int = 0


def check_opset(opset: int, config: GRUConfig | None = None) -> int:
    """`opset`, if the graph can be written in it; a model with a TF-IDF bag needs ScatterElements' add (16+)."""
    lowest = MIN_BAG_OPSET if config is not None and getattr(config, "bag_of_tokens", False) else MIN_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or not lowest <= opset <= MAX_OPSET:
        why = " with its TF-IDF bag of tokens (bag_of_tokens)" if lowest != MIN_OPSET else ""
        raise ValueError(
            f"--opset {opset} is not supported: the GRU export{why} needs an ONNX opset in [{lowest}, {MAX_OPSET}] "
            f"(default {DEFAULT_OPSET})"
        )
    return opset


def export_graph(model: GRUForSequenceClassification, path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Writes `model` as an ONNX graph (inputs `input_ids`, `attention_mask` int64 `(batch, sequence)`; output
    `logits` float32 `(batch, num_labels)`) and checks it with `onnx.checker`."""
    onnx = _import_onnx()
    check_opset(opset, model.config)
    path = Path(path)
    wrapper = exportable_model(model)
    example = torch.ones(2, 3, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which cannot keep the GRU's time axis dynamic;
        # its GRU batch-size warning concerns given initial states, which this graph never has.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example, example),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """ONNX Runtime dynamic quantization: int8 weights for the embeddings (`Gather`) and the classifier / attention
    projections (`MatMul`/`Gemm`); ONNX Runtime has no integer GRU kernel, so the recurrence stays fp32."""
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs per-tensor notes and a pre-processing tip to the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(target)


def _parity_batches(tokenizer, texts: list[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """The parity texts padded on the right and on the left, and one row per text (no padding at all)."""
    batches = []
    for side in ("right", "left"):
        tokenizer.padding_side, saved = side, tokenizer.padding_side
        try:
            encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        finally:
            tokenizer.padding_side = saved
        batches.append({k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    return batches


def parity(
    model: GRUForSequenceClassification, session, batches: list[dict[str, np.ndarray]]
) -> tuple[float, float, np.ndarray]:
    """(max abs logit difference, top-label agreement, reference logits) of an ONNX session against PyTorch."""
    worst, agree, total, reference = 0.0, 0, 0, []
    model = model.float().eval()
    for batch in batches:
        with torch.inference_mode():
            expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
        got = session.run(["logits"], batch)[0]
        worst = max(worst, float(np.abs(expected - got).max()) if expected.size else 0.0)
        agree += int((expected.argmax(-1) == got.argmax(-1)).sum())
        total += len(expected)
        reference.append(expected)
    return worst, agree / max(total, 1), np.concatenate(reference) if reference else np.zeros(0)


def _portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class `PreTrainedTokenizerFast`: transformers 5 writes `TokenizersBackend` (the same class
    under its new name), which the transformers 4 that `optimum-onnx` pins cannot load."""
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_model(
    model_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    quantize: str | None = None,
    opset: int | None = None,
    texts: list[str] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Exports a saved model to `output_dir` (default `<model_dir>/onnx`), checks the graph and its parity with
    PyTorch, and only then moves the files into place (a failed export leaves an existing folder untouched).

    The export records the sha256 of the weights and config it was made from (`ONNX_SOURCE_FILE`, moved in last),
    so a backend uses it only while they are unchanged. A non-empty `output_dir` other than the model's own `onnx/`
    is refused unless `overwrite`; even then only the files an export writes are replaced there.
    """
    from .data import resolve_max_length

    opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize {quantize!r} is not supported; choose one of: {', '.join(QUANTIZATIONS)}")
    import_onnxruntime()
    _import_onnx()
    model_dir = Path(model_dir)
    output_dir = Path(output_dir) if output_dir is not None else model_dir / ONNX_DIR
    own = output_dir.resolve() == (model_dir / ONNX_DIR).resolve()  # the model's own export folder: ours entirely
    _check_output(output_dir, own=own, overwrite=overwrite)
    model, tokenizer = load_classifier(model_dir, device="cpu")
    if not isinstance(model, GRUForSequenceClassification):
        raise ValueError(f"{model_dir} holds a {type(model).__name__}; only hf_gru GRU classifiers can be exported")
    model = model.float().eval()
    texts = list(texts) if texts else list(PARITY_TEXTS)
    batches = _parity_batches(tokenizer, texts, resolve_max_length(tokenizer))

    staging = _open_staging(output_dir)
    try:
        export_graph(model, staging / ONNX_MODEL_FILE, opset=opset)
        worst, _, _ = parity(model, onnx_session(staging / ONNX_MODEL_FILE), batches)
        if not worst <= 1e-4:
            raise RuntimeError(f"the ONNX graph differs from PyTorch by {worst:.3g} (> 1e-4) on the parity texts")
        result = ExportResult(output_dir, [ONNX_MODEL_FILE], worst, parity_texts=len(texts))
        if quantize == "int8":
            quantize_int8(staging / ONNX_MODEL_FILE, staging / ONNX_INT8_FILE)
            result.int8_max_abs_diff, result.int8_agreement, _ = parity(
                model, onnx_session(staging / ONNX_INT8_FILE), batches
            )
            result.files.append(ONNX_INT8_FILE)
        for name in (*_CONFIG_FILES, *_TOKENIZER_FILES):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, staging / name)
                result.files.append(name)
        _portable_tokenizer_config(staging / TOKENIZER_CONFIG_FILE)
        source = json.dumps(export_source(model_dir), indent=2) + "\n"
        (staging / ONNX_SOURCE_FILE).write_text(source, encoding="utf-8")
        result.files.append(ONNX_SOURCE_FILE)
        _move_into_place(staging, output_dir, result.files, own=own)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s to %s (max abs logit difference %.2e)", model_dir, output_dir, result.max_abs_diff)
    return result


def _check_output(output_dir: Path, *, own: bool, overwrite: bool) -> None:
    """Refuse, before any work, an output that is a file, or a non-empty folder of the user's without `overwrite`."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} exists and is not a directory; name a folder")
    if not own and not overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(
            f"--output {output_dir} is not empty; pass --overwrite to replace the export's files in it "
            f"({ONNX_MODEL_FILE}, {CONFIG_FILE}, the tokenizer files, ...; nothing else is touched), or choose an "
            "empty or new folder"
        )


def _open_staging(output_dir: Path) -> Path:
    """The fixed staging sibling, emptied of what a killed export left there (marked as an export's own)."""
    staging = export_staging_dir(output_dir)
    if staging.exists():
        if staging.is_dir() and ((staging / STAGING_MARKER_FILE).is_file() or not any(staging.iterdir())):
            shutil.rmtree(staging)
        else:
            raise ValueError(f"{staging} is in the way of the export's staging folder and is not one; remove it")
    staging.mkdir(parents=True)
    (staging / STAGING_MARKER_FILE).write_text(f"staging for {output_dir}\n", encoding="utf-8")
    return staging


def _move_into_place(staging: Path, output_dir: Path, files: list[str], *, own: bool) -> None:
    """A new folder is renamed into place whole. Into an existing one the old source record goes first and the new
    one comes last, so an interruption leaves an export that reads as stale (never a new graph judged by an old
    record); the old export's graphs it did not rewrite go too (and in the model's own folder, its other files)."""
    if not output_dir.exists():
        (staging / STAGING_MARKER_FILE).unlink()
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(output_dir)
        return
    (output_dir / ONNX_SOURCE_FILE).unlink(missing_ok=True)
    owned = _EXPORT_FILES if own else (ONNX_MODEL_FILE, ONNX_INT8_FILE)
    for name in owned:
        if name not in files and (output_dir / name).is_file():
            (output_dir / name).unlink()  # e.g. a stale int8 graph must not outlive a new fp32 export
    for name in sorted(files, key=lambda name: name == ONNX_SOURCE_FILE):
        (staging / name).replace(output_dir / name)
