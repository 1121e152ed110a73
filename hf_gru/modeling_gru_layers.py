"""The building blocks of `modeling_gru.py`: the GRU layers written out and fused, the pooling, and the index work
that makes padding exact and cuts long texts into windows.

Remote code like `modeling_gru.py` (which imports it, so `save_pretrained` copies it beside the weights): it may
import only `torch`, `transformers` and the configuration.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_gru import GRUConfig


class GRUReferenceLayer(nn.Module):
    r"""
    One left-to-right GRU layer written out gate by gate (Cho et al., 2014), the seed article's subject done right.

    It follows the convention of `torch.nn.GRU` and cuDNN, including its parameter names and shapes, so the same
    weights load into either and the fast kernel can be checked against these equations:

    ```
    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate (share of the old state kept)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))     candidate state
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    ```

    The seed writes the update with the roles of `z_t` and `1 - z_t` swapped and applies the reset gate before the
    matrix product (`W (r_t * h_{t-1})`, Cho's original); both are equivalent reparametrisations. There is no output
    gate: a GRU emits `h_t` itself.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # torch.nn.GRU's default, for use outside a PreTrainedModel
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            inputs: `(batch, time, input_size)`.
            state: initial state `(1, batch, hidden_size)`, zeros when `None`.

        Returns:
            outputs `(batch, time, hidden_size)` and the final state `(1, batch, hidden_size)`, as `nn.GRU`.
        """
        batch_size, num_steps, _ = inputs.shape
        h = inputs.new_zeros(batch_size, self.hidden_size) if state is None else state[0]
        # The input half of every gate does not depend on the recurrence: one matrix product for all time steps.
        input_reset, input_update, input_candidate = nn.functional.linear(
            inputs, self.weight_ih_l0, self.bias_ih_l0
        ).chunk(3, dim=-1)
        outputs = []
        for t in range(num_steps):
            hidden_reset, hidden_update, hidden_candidate = nn.functional.linear(
                h, self.weight_hh_l0, self.bias_hh_l0
            ).chunk(3, dim=-1)
            reset = torch.sigmoid(input_reset[:, t] + hidden_reset)
            update = torch.sigmoid(input_update[:, t] + hidden_update)
            candidate = torch.tanh(input_candidate[:, t] + reset * hidden_candidate)
            h = (1.0 - update) * candidate + update * h
            outputs.append(h)
        if not outputs:
            return inputs.new_zeros(batch_size, 0, self.hidden_size), h.unsqueeze(0)
        return torch.stack(outputs, dim=1), h.unsqueeze(0)


def _recurrent_layer(config: GRUConfig, input_size: int) -> nn.Module:
    if config.gru_implementation == "reference":
        return GRUReferenceLayer(input_size, config.hidden_size)
    return nn.GRU(input_size, config.hidden_size, num_layers=1, batch_first=True)


class GRULayer(nn.Module):
    """
    One stacked layer: a left-to-right GRU, optionally a right-to-left one, and the seed's optional output gate.

    Inputs are right-aligned (each text's tokens first, padding after), which the layer relies on for exactness.
    """

    def __init__(self, config: GRUConfig, input_size: int):
        super().__init__()
        self.forward_rnn = _recurrent_layer(config, input_size)
        self.backward_rnn = _recurrent_layer(config, input_size) if config.bidirectional else None
        # Seed §3.2.4-3.2.5: y_t = sigmoid(W_o [h_t; x_t] + b_o) * tanh(h_t); the recurrence itself keeps h_t.
        self.output_gate = (
            nn.Linear(config.output_size + input_size, config.output_size) if config.output_gate else None
        )

    def forward(self, inputs: torch.Tensor, reverse_index: torch.Tensor | None) -> torch.Tensor:
        """
        Args:
            inputs: `(batch, time, input_size)`, right-aligned.
            reverse_index: `(batch, time, input_size)` gather index reversing each text within its own length
                (padding stays in place); required when the layer is bidirectional.

        Returns:
            `(batch, time, num_directions * hidden_size)`; values at padded positions are meaningless.
        """
        outputs, _ = self.forward_rnn(inputs)
        if self.backward_rnn is not None:
            reversed_inputs = inputs.gather(1, reverse_index)
            backward_outputs, _ = self.backward_rnn(reversed_inputs)
            index = reverse_index[..., :1].expand(-1, -1, backward_outputs.shape[-1])
            outputs = torch.cat([outputs, backward_outputs.gather(1, index)], dim=-1)
        if self.output_gate is not None:
            gate = torch.sigmoid(self.output_gate(torch.cat([outputs, inputs], dim=-1)))
            outputs = gate * torch.tanh(outputs)
        return outputs


class GRUPooler(nn.Module):
    """Turns per-token outputs into one vector per text, looking at real tokens only."""

    def __init__(self, config: GRUConfig):
        super().__init__()
        self.pooling = config.pooling
        self.hidden_size = config.hidden_size
        self.bidirectional = config.bidirectional
        if self.pooling == "attention":
            self.attention_projection = nn.Linear(config.output_size, config.output_size)
            self.attention_score = nn.Linear(config.output_size, 1, bias=False)

    def forward(self, outputs: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """
        Args:
            outputs: `(batch, time, output_size)`, right-aligned.
            mask: `(batch, time)` bool, True on real tokens (a prefix of each row).
            lengths: `(batch,)` number of real tokens; a text with none pools to a zero vector.

        Returns:
            `(batch, output_size)`.
        """
        mask3 = mask.unsqueeze(-1)
        if self.pooling == "mean":
            summed = outputs.masked_fill(~mask3, 0.0).sum(dim=1)
            return summed / lengths.clamp(min=1).unsqueeze(-1).to(outputs.dtype)
        if self.pooling == "max":
            pooled = outputs.masked_fill(~mask3, torch.finfo(outputs.dtype).min).amax(dim=1)
            return pooled.masked_fill((lengths == 0).unsqueeze(-1), 0.0)
        if self.pooling == "attention":
            scores = self.attention_score(torch.tanh(self.attention_projection(outputs))).squeeze(-1)
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)  # empty rows weigh nothing
            return torch.bmm(weights.unsqueeze(1), outputs).squeeze(1)
        # "last": the left-to-right state after the last real token, and the right-to-left state after the first.
        last_index = (lengths - 1).clamp(min=0)
        batch_index = torch.arange(outputs.shape[0], device=outputs.device)
        pooled = outputs[batch_index, last_index, : self.hidden_size]
        if self.bidirectional:
            pooled = torch.cat([pooled, outputs[:, 0, self.hidden_size :]], dim=-1)
        return pooled.masked_fill((lengths == 0).unsqueeze(-1), 0.0)


def _right_align(mask: torch.Tensor) -> torch.Tensor | None:
    """Gather index `(batch, time)` moving each row's real tokens to the front in order, or None if already so."""
    if bool((mask[:, 1:] <= mask[:, :-1]).all()):
        return None
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)


def _reverse_within_length(lengths: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Index `(batch, time)`: position t of row b reads position len_b - 1 - t; padding maps to itself."""
    steps = torch.arange(num_steps, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


def _prefix_mask(lengths: torch.Tensor, num_steps) -> torch.Tensor:
    """`(batch, time)` bool, True on the first `lengths[b]` positions of row b."""
    return torch.arange(num_steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def split_into_windows(
    hidden: torch.Tensor, lengths: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-aligned `(batch, time, width)` as rows `(batch * windows, step, width)` of consecutive windows.

    `step` is `window`, or the batch's length when that is shorter (one window, no padding added). A text's windows
    therefore depend on the text alone: it is read whole when it fits in `window` tokens, else cut at multiples of
    `window`; its logits do not depend on what it is batched with. Sizes are tensors, so a traced (ONNX) graph keeps
    the time axis and the number of windows dynamic. Returns the rows, each row's number of real tokens, and the
    number of windows per text.
    """
    batch_size, width = hidden.shape[0], hidden.shape[-1]
    num_steps = torch.ones_like(lengths[:1]).mul(hidden.shape[1]).squeeze(0)
    step = num_steps.clamp(max=window)
    num_windows = torch.div(num_steps + step - 1, step, rounding_mode="floor")
    padded = nn.functional.pad(hidden, [0, 0, 0, num_windows * step - num_steps])
    rows = padded.reshape(batch_size * num_windows, step, width)
    starts = torch.arange(num_windows, device=lengths.device).unsqueeze(0) * step
    row_lengths = (lengths.unsqueeze(1) - starts).clamp(min=0).clamp(max=step).reshape(-1)
    return rows, row_lengths, num_windows


def join_windows(rows: torch.Tensor, num_windows: torch.Tensor, num_steps) -> torch.Tensor:
    """The inverse of `split_into_windows` for per-token outputs: `(batch, num_steps, width)`."""
    batch_size = torch.div(rows.shape[0], num_windows, rounding_mode="floor")
    return rows.reshape(batch_size, -1, rows.shape[-1])[:, :num_steps]


class TokenBagClassifier(nn.Module):
    """Logits from the text's TF-IDF bag of tokens: a linear model over the whole vocabulary (`bag_of_tokens`).

    The bag is exactly scikit-learn's `TfidfVectorizer(sublinear_tf=True)` over token ids (and, with
    `bigram_buckets`, over pairs of consecutive token ids hashed into that many extra columns): `1 + log(count)` for
    each feature present, times `idf`, L2-normalised. `idf` is a buffer saved with the weights; training fills it
    from the training texts (`set_idf`), and it stays all ones (plain term frequency) otherwise. An empty text gives
    zeros.
    """

    # Pair (a, b) -> column vocab_size + (a * BIGRAM_HASH_MULTIPLIER + b) mod bigram_buckets: an odd prime spreads
    # the pairs of one first token over the buckets; products of ids below 2**40 stay exact in int64.
    BIGRAM_HASH_MULTIPLIER = 1_000_003

    def __init__(self, vocab_size: int, num_labels: int, bigram_buckets: int = 0):
        super().__init__()
        self.vocab_size, self.bigram_buckets = vocab_size, bigram_buckets
        self.weight = nn.Parameter(torch.zeros(num_labels, vocab_size + bigram_buckets))
        self.register_buffer("idf", torch.ones(vocab_size + bigram_buckets))

    def features(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each text's feature columns `(batch, n)` and which of them are real: its tokens, then (with bigram
        buckets) the hashed pairs of consecutive real tokens."""
        if not self.bigram_buckets:
            return input_ids, mask
        pairs = input_ids[:, :-1] * self.BIGRAM_HASH_MULTIPLIER + input_ids[:, 1:]
        columns = torch.remainder(pairs, self.bigram_buckets) + self.vocab_size
        return torch.cat([input_ids, columns], dim=1), torch.cat([mask, mask[:, :-1] & mask[:, 1:]], dim=1)

    def bag(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(batch, columns)` TF-IDF rows; a scatter-add of the real features (padding counts nothing)."""
        columns, real = self.features(input_ids, mask.bool())
        counts = torch.zeros(input_ids.shape[0], self.idf.shape[0], dtype=self.idf.dtype, device=input_ids.device)
        counts = counts.scatter_add(1, columns, real.to(counts.dtype))
        present = (counts > 0).to(counts.dtype)
        weights = (counts.clamp(min=1.0).log() + 1.0) * present * self.idf
        return weights / weights.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.bag(input_ids, mask), self.weight)

    def row_features(self, ids: list[int]) -> torch.Tensor:
        """The feature columns of one unpadded text (for counting document frequencies)."""
        row = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
        columns, real = self.features(row, torch.ones_like(row, dtype=torch.bool))
        return columns[real]

    @torch.no_grad()
    def set_idf(self, document_frequencies: torch.Tensor, num_documents: int) -> None:
        """scikit-learn's smooth idf, `ln((1 + n) / (1 + df)) + 1`, from each feature's document count in training."""
        frequencies = document_frequencies.to(device=self.idf.device, dtype=self.idf.dtype)
        self.idf.copy_(torch.log((1.0 + num_documents) / (1.0 + frequencies)) + 1.0)
