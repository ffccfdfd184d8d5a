"""Causal-LM loss for prompt -> response tuning.

With the response-only loss (TALLRec's answer "Yes."/"No." + EOS, a next title) only the last few positions of
each left-padded row carry labels, so the LM head and the vocabulary-wide cross-entropy run on those positions
alone (`logits_to_keep`) instead of on every prompt token: same loss, a large share of the step saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylib.encoding import IGNORE_INDEX


def _response_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) for the last columns that hold labels: the answer sits there in left-padded rows."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    labels = batch["labels"]
    width = labels.shape[1]
    # Distance from the row's end to its first label: the answer lies in the last `span` columns.
    first = torch.where(labels != IGNORE_INDEX, torch.arange(width, device=labels.device), width).min(dim=-1).values
    # The first column's label is never predicted (no position before it): at most width - 1 labels count, as
    # in the whole-sequence loss (`loss_on: all`, where every column is labelled).
    span = min(int((width - first).max()), width - 1)
    # logits at position t predict token t+1: the last span+1 positions cover the last span labels.
    logits = model(**inputs, use_cache=False, logits_to_keep=span + 1).logits[:, :-1, :]
    return logits.float(), labels[:, -span:]


def causal_lm_loss(model, batch: dict[str, torch.Tensor], loss_on: str = "response") -> torch.Tensor:
    if loss_on == "all":
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
        return model(**inputs, labels=batch["labels"], use_cache=False).loss
    logits, targets = _response_logits(model, batch)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def per_row_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean loss over each row's labelled tokens (validation: one value per record)."""
    logits, targets = _response_logits(model, batch)
    token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (targets != IGNORE_INDEX).sum(-1).clamp(min=1)
    return token_loss.sum(-1) / counts
