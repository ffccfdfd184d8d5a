"""Causal-LM loss for rec-tuning.

With the response-only loss (TALLRec's answer "Yes."/"No." + EOS) only the last few positions of each
left-padded row carry labels, so the LM head and the vocabulary-wide cross-entropy run on those positions alone
(`logits_to_keep`) instead of on every prompt token: same loss, a large share of the step saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylib.encoding import IGNORE_INDEX


def causal_lm_loss(model, batch: dict[str, torch.Tensor], loss_on: str = "response") -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    labels = batch["labels"]
    if loss_on == "all":
        return model(**inputs, labels=labels, use_cache=False).loss
    # Distance from the row's end to its first label: the answer lies in the last `span` columns.
    width = labels.shape[1]
    first = torch.where(labels != IGNORE_INDEX, torch.arange(width, device=labels.device), width).min(dim=-1).values
    span = int((width - first).max())
    # logits at position t predict token t+1: the last span+1 positions cover the last span labels.
    logits = model(**inputs, use_cache=False, logits_to_keep=span + 1).logits[:, :-1, :]
    targets = labels[:, -span:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
