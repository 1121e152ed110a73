"""PyTorch GRU text classifiers as `transformers` models.

This file travels to the Hub as remote code next to `configuration_gru.py` and `modeling_gru_layers.py`: it may
import only `torch`, `transformers` and those two, so that `trust_remote_code=True` works where `hf_gru` is not
installed.

Variable-length batches are exact: every layer runs on right-aligned tokens (left padding or holes in the mask are
compacted first), the left-to-right GRU reads padding only after a text's last token, and the right-to-left GRU
reads each text reversed within its own length (one `gather`), so neither direction ever starts on padding while
the fast dense cuDNN / oneDNN kernels keep running. `benchmarks/padding_strategies.py` measures this against
`pack_padded_sequence`.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration_gru import GRUConfig
from .modeling_gru_layers import (
    GRULayer,
    GRUPooler,
    GRUReferenceLayer,
    TokenBagClassifier,
    _prefix_mask,
    _reverse_within_length,
    _right_align,
    join_windows,
    split_into_windows,
)

try:  # transformers >= 5: init helpers that skip weights already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # pragma: no cover - older transformers: plain torch init (no partial-load skipping needed)
    init = nn.init


class GRUPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the `transformers` plumbing shared by the GRU models."""

    config_class = GRUConfig
    config: GRUConfig
    base_model_prefix = "gru"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["GRULayer"]
    # The one place `auto_map` is written. It names every Auto class, not only the saved head's, so remote code can
    # load any head from the directory (`register_for_auto_class` would write a second map, of one head).
    _auto_map = {
        "AutoConfig": "configuration_gru.GRUConfig",
        "AutoModel": "modeling_gru.GRUModel",
        "AutoModelForSequenceClassification": "modeling_gru.GRUForSequenceClassification",
    }

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """Also write `auto_map` and copy this file and `configuration_gru.py` beside the weights (remote code)."""
        self.config.auto_map = {**self._auto_map, **(getattr(self.config, "auto_map", None) or {})}
        if is_main_process and not self.is_remote_code():  # loaded as remote code: transformers copies the files
            os.makedirs(save_directory, exist_ok=True)
            custom_object_save(self, save_directory)
        return super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """
        `transformers`' default init leaves `nn.GRU` at torch's uniform init; GRUs train better with input weights
        Xavier-uniform and recurrent weights orthogonal, one gate block at a time (so each gate's recurrent map
        preserves the state's norm), and zero biases.
        """
        if isinstance(module, (nn.GRU, GRUReferenceLayer)):
            for name, parameter in module.named_parameters():
                if getattr(parameter, "_is_hf_initialized", False):
                    continue  # loaded from a checkpoint
                value = torch.empty_like(parameter)
                if name.startswith("weight_ih"):
                    for block in value.chunk(3, dim=0):
                        nn.init.xavier_uniform_(block)
                elif name.startswith("weight_hh"):
                    for block in value.chunk(3, dim=0):
                        nn.init.orthogonal_(block)
                else:
                    nn.init.zeros_(value)
                init.copy_(parameter, value)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.embedding_init_std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TokenBagClassifier):
            init.zeros_(module.weight)  # the wide part starts silent: the logits are the GRU's until it learns


class GRUModel(GRUPreTrainedModel):
    """Token embeddings and a stack of GRU layers, pooled into one vector per text."""

    def __init__(self, config: GRUConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(
            GRULayer(config, config.embedding_size if i == 0 else config.output_size) for i in range(config.num_layers)
        )
        self.layer_dropout = nn.Dropout(config.layer_dropout)
        self.pooler = GRUPooler(config)
        if config.embedding_pooling == "mean_max":
            self.embedding_mean_norm = nn.LayerNorm(config.embedding_size)
            self.embedding_max_norm = nn.LayerNorm(config.embedding_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def _validate_inputs(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> None:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GRUModel needs exactly one of `input_ids` or `inputs_embeds`")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must have shape (batch, sequence), got {tuple(input_ids.shape)}")
            if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
                raise ValueError(f"`input_ids` must hold integer token ids, got dtype {input_ids.dtype}")
            if input_ids.numel() > 0:
                low, high = int(input_ids.min()), int(input_ids.max())
                if low < 0 or high >= self.config.vocab_size:
                    raise ValueError(
                        f"`input_ids` holds ids outside [0, vocab_size={self.config.vocab_size}): min {low}, "
                        f"max {high}. The tokenizer and the model disagree; use the tokenizer saved with this model, "
                        "or build the model with `vocab_size=len(tokenizer)`."
                    )
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.embedding_size:
                raise ValueError(
                    f"`inputs_embeds` must have shape (batch, sequence, {self.config.embedding_size}), "
                    f"got {tuple(inputs_embeds.shape)}"
                )
        shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape[:2])
        if attention_mask is not None and tuple(attention_mask.shape) != shape:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but the inputs have shape {shape}; "
                "pad them together (e.g. with DataCollatorWithPadding)"
            )

    def _run_layers(self, hidden: torch.Tensor, keep: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's outputs `(batch, time, output_size)` for right-aligned rows, zero at padded positions."""
        reverse_index = None
        if self.config.bidirectional:
            reverse_index = _reverse_within_length(lengths, hidden.shape[1]).unsqueeze(-1)
        outputs = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                hidden = self.layer_dropout(hidden)
            index = None if reverse_index is None else reverse_index.expand(-1, -1, hidden.shape[-1])
            hidden = layer(hidden, index) * keep.to(hidden.dtype)  # padded positions never leak into pooling
            outputs.append(hidden)
        return outputs

    def _run_layers_in_windows(self, hidden: torch.Tensor, lengths: torch.Tensor, window: int) -> list[torch.Tensor]:
        """`_run_layers` over consecutive windows of `window` tokens, each a row of one batch, put back in place."""
        rows, row_lengths, num_windows = split_into_windows(hidden, lengths, window)
        row_keep = _prefix_mask(row_lengths, rows.shape[1]).unsqueeze(-1).to(hidden.dtype)
        outputs = self._run_layers(rows, row_keep, row_lengths)
        return [join_windows(out, num_windows, hidden.shape[1]) for out in outputs]

    def pool(self, outputs: torch.Tensor, embedded: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor):
        """The text vector `(batch, pooled_size)`: pooled GRU outputs, then the embedding pooling if configured."""
        pooled = self.pooler(outputs, mask, lengths)
        if self.config.embedding_pooling == "mean_max":
            pooled = torch.cat([pooled, self._pool_embeddings(embedded, mask, lengths)], dim=-1)
        return pooled

    def _pool_embeddings(self, embedded: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean and max of the token embeddings over each text's real tokens (SWEM), each layer-normalised; an empty
        text gives zeros.

        The normalisation matters: the max over a long text's embeddings sits near the same large value in every
        dimension (about 3.5 for unit-variance embeddings over 2,000 tokens), which un-normalised swamps the GRU's
        tanh-bounded states and makes the first updates jump (20 Newsgroups: loss above chance, gradient norm 10-17).
        """
        mask3 = mask.unsqueeze(-1)
        empty = (lengths == 0).unsqueeze(-1)
        mean = embedded.masked_fill(~mask3, 0.0).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(embedded.dtype)
        peak = embedded.masked_fill(~mask3, torch.finfo(embedded.dtype).min).amax(dim=1).masked_fill(empty, 0.0)
        pooled = torch.cat([self.embedding_mean_norm(mean), self.embedding_max_norm(peak)], dim=-1)
        return pooled.masked_fill(empty, 0.0)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_ids: `(batch, sequence)` token ids in `[0, vocab_size)`.
            attention_mask: `(batch, sequence)`, 1 on real tokens and 0 on padding; left, right or mixed padding
                all give the same result for a text. All ones when `None`.
            inputs_embeds: `(batch, sequence, embedding_size)`, instead of `input_ids`.
            output_hidden_states: also return the embeddings and every layer's outputs.

        Returns:
            [`BaseModelOutputWithPooling`] with `last_hidden_state` `(batch, sequence, num_directions * hidden_size)`
            (zeros at padded positions), `pooler_output` `(batch, config.pooled_size)` (the pooled GRU states,
            then the embedding pooling when `embedding_pooling="mean_max"`) and, if asked,
            `hidden_states`: a tuple of `num_layers + 1` tensors `(batch, sequence, width)`. A row with no real token
            (an empty text) pools to a zero vector, so its logits are the classifier's bias: finite, never NaN.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._validate_inputs(input_ids, inputs_embeds, attention_mask)

        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        batch_size, num_steps = inputs_embeds.shape[:2]
        if attention_mask is None:
            mask = torch.ones(batch_size, num_steps, dtype=torch.bool, device=inputs_embeds.device)
        else:
            mask = attention_mask.to(device=inputs_embeds.device) != 0

        zero_length = num_steps == 0
        if zero_length:  # no time step at all: run one padding step (the GRU kernels refuse none); it pools to 0
            inputs_embeds = inputs_embeds.new_zeros(batch_size, 1, inputs_embeds.shape[-1])
            mask = mask.new_zeros(batch_size, 1)
            num_steps = 1

        # Work on right-aligned rows; undo the move on the way out so outputs line up with the inputs.
        align_index = _right_align(mask)
        if align_index is not None:
            mask = mask.gather(1, align_index)
            inputs_embeds = inputs_embeds.gather(1, align_index.unsqueeze(-1).expand_as(inputs_embeds))
        lengths = mask.sum(dim=1)

        keep = mask.unsqueeze(-1).to(inputs_embeds.dtype)
        embedded = self.embedding_dropout(inputs_embeds)
        all_hidden = [embedded * keep]
        if self.config.chunk_size is None:
            all_hidden += self._run_layers(embedded, keep, lengths)
        else:
            all_hidden += self._run_layers_in_windows(embedded, lengths, self.config.chunk_size)
        pooled = self.pool(all_hidden[-1], all_hidden[0], mask, lengths)

        if align_index is not None:
            restore = torch.argsort(align_index, dim=1).unsqueeze(-1)
            all_hidden = [h.gather(1, restore.expand_as(h)) for h in all_hidden]
        if zero_length:
            all_hidden = [h[:, :0] for h in all_hidden]
        last_hidden_state = all_hidden[-1]
        hidden_states = tuple(all_hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (last_hidden_state, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state, pooler_output=pooled, hidden_states=hidden_states
        )


class GRUForSequenceClassification(GRUPreTrainedModel):
    """[`GRUModel`] with dropout and a linear classifier on the pooled vector: sentiment, topic, multi-label, scores."""

    def __init__(self, config: GRUConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gru = GRUModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.pooled_size, config.num_labels)
        self.token_bag = None
        if config.bag_of_tokens:
            self.token_bag = TokenBagClassifier(config.vocab_size, config.num_labels, config.bag_bigram_buckets)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.gru.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.gru.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_ids, attention_mask, inputs_embeds, output_hidden_states: as in [`GRUModel.forward`].
            labels: for `single_label_classification`, integer class ids `(batch,)` in `[0, num_labels)` (-100 is
                ignored); for `multi_label_classification`, floats `(batch, num_labels)` in {0, 1}; for `regression`,
                floats `(batch,)` or `(batch, num_labels)`. When `config.problem_type` is unset it is inferred exactly
                as `transformers`' own classifiers do.
            token_type_ids: accepted and ignored, so tokenizers that emit them (BERT's) can feed the model directly;
                a GRU reads a single segment.

        Returns:
            [`SequenceClassifierOutput`] with `logits` `(batch, num_labels)` and `loss` when `labels` are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.gru(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        if self.token_bag is not None:
            if input_ids is None:
                raise ValueError(
                    "this model adds a TF-IDF bag of tokens to its logits (config.bag_of_tokens), which needs "
                    "input_ids: pass input_ids instead of inputs_embeds"
                )
            mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask != 0
            logits = logits + self.token_bag(input_ids, mask.to(input_ids.device))

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        if not return_dict:
            rest = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + rest) if loss is not None else rest
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss `transformers`' classifiers compute for `problem_type`, after checking the labels fit it."""
        labels = labels.to(logits.device)
        batch_size = logits.shape[0]
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif self.num_labels > 1 and labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        problem_type = self.config.problem_type

        if problem_type == "single_label_classification":
            if labels.is_floating_point() or labels.dtype == torch.bool:
                raise ValueError(
                    f"single_label_classification needs integer class ids, got labels of dtype {labels.dtype}; "
                    "cast with `labels.long()`, or set problem_type='multi_label_classification' for 0/1 vectors"
                )
            if labels.numel() != batch_size:
                raise ValueError(
                    f"single_label_classification needs one class id per text: labels of shape ({batch_size},), "
                    f"got {tuple(labels.shape)}"
                )
            labels = labels.reshape(-1)
            bad = (labels != -100) & ((labels < 0) | (labels >= self.num_labels))
            if bool(bad.any()):
                raise ValueError(
                    f"labels must be class ids in [0, num_labels={self.num_labels}) or -100 (ignored); "
                    f"got {sorted(set(labels[bad].tolist()))}"
                )
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels)

        if not labels.is_floating_point():
            raise ValueError(f"{problem_type} needs float labels, got dtype {labels.dtype}; cast with `labels.float()`")
        if problem_type == "multi_label_classification":
            if tuple(labels.shape) != tuple(logits.shape):
                raise ValueError(
                    f"multi_label_classification needs labels of shape {tuple(logits.shape)} "
                    f"(one 0/1 column per label), got {tuple(labels.shape)}"
                )
            return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        # regression
        if self.num_labels == 1:
            if labels.numel() != batch_size:
                raise ValueError(
                    f"regression with one output needs labels of shape ({batch_size},), got {tuple(labels.shape)}"
                )
            return MSELoss()(logits.squeeze(-1), labels.reshape(-1).to(logits.dtype))
        if tuple(labels.shape) != tuple(logits.shape):
            raise ValueError(f"regression needs labels of shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        return MSELoss()(logits, labels.to(logits.dtype))


__all__ = ["GRUReferenceLayer", "GRUPreTrainedModel", "GRUModel", "GRUForSequenceClassification"]
