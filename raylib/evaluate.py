"""Yes/No scoring (TALLRec Sec. 4.2): P(Yes) from the logits of the first answer token.

Two scorings of those logits (`EvalConfig.scoring`):
- "pair" (default): softmax over the Yes/No logits, p_yes / (p_yes + p_no).
- "tallrec": what TALLRec's own evaluate.py computes, softmax([p_yes, p_no]) of the FULL-VOCABULARY
  probabilities (`generation_output.scores[0].softmax(-1)[:, [yes, no]]`, then a second softmax). That is
  sigmoid(p_yes - p_no): it ranks records by the difference of the two probabilities, not by their ratio, so
  its AUC can differ from "pair" (it stays in [0.27, 0.73], so it is no calibrated probability either).

One batched forward pass per batch of prompts, no `generate`. Prompts are sorted by length so a batch pads
little, then the scores are put back in the records' order. With `prefix_cache` the token prefix that every
prompt shares (Alpaca template + instruction + "User Preference: ") runs once; each batch then runs only its
prompts' remaining tokens on a copy of that prefix's key/value cache.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import torch

from raylib import RaylibError
from raylib.data.records import TallrecRecord
from raylib.encoding import answer_token_ids, collate_left_padded, encode_for_scoring
from raylib.metrics import binary_report
from raylib.runtime import progress as progress_bar

SCORINGS = ("pair", "tallrec")


def encode_all(tokenizer, records: list[TallrecRecord], max_length: int):
    return [encode_for_scoring(tokenizer, r, max_length, where=f"record {i}") for i, r in enumerate(records)]


def yes_scores(logits: torch.Tensor, yes_id: int, no_id: int, scoring: str = "pair") -> torch.Tensor:
    """P(Yes) per row of next-token `logits` ([rows, vocab]), computed in fp32 (see the module docstring)."""
    logits = logits.float()
    if scoring == "pair":
        pair = torch.stack([logits[:, yes_id], logits[:, no_id]], dim=-1)
    elif scoring == "tallrec":
        probs = logits.softmax(dim=-1)
        pair = torch.stack([probs[:, yes_id], probs[:, no_id]], dim=-1)
    else:
        raise RaylibError(f"eval.scoring={scoring!r} must be one of {', '.join(SCORINGS)}.")
    return pair.softmax(dim=-1)[:, 0]


def common_prefix_length(encoded) -> int:
    """Length of the token prefix all prompts share, compared as token ids (a template boundary can tokenize
    differently from one prompt to the next), leaving every prompt at least one token of its own."""
    if not encoded:
        return 0
    first = encoded[0].input_ids
    n = min(len(e.input_ids) for e in encoded) - 1
    for e in encoded[1:]:
        ids = e.input_ids
        i = 0
        while i < n and ids[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return max(n, 0)


class _PrefixScorer:
    """Runs the shared prefix once (batch 1) and scores right-padded suffixes on an expanded copy of its cache."""

    def __init__(self, model, prefix_ids: list[int], device):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        if self.decoder is None or self.head is None or self.decoder is model:
            raise RaylibError("prefix caching needs a decoder-only model with a separate LM head.")
        params = inspect.signature(self.decoder.forward).parameters
        # transformers 5 calls the cache argument `cache`; 4.x called it `past_key_values`.
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        self.length = len(prefix_ids)
        self.device = device
        out = self.decoder(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True)
        self.cache = out.get("cache")
        if self.cache is None:
            self.cache = out.get("past_key_values")
        if self.cache is None:
            raise RaylibError("the model returned no key/value cache for the prompt prefix.")

    def logits(self, suffixes: list[list[int]], pad_id: int) -> torch.Tensor:
        """Next-token logits after each prefix + suffix: [len(suffixes), vocab]."""
        rows, width, p = len(suffixes), max(len(s) for s in suffixes), self.length
        ids = torch.full((rows, width), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, p + width), dtype=torch.long)
        mask[:, :p] = 1
        for row, s in enumerate(suffixes):
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, p:p + len(s)] = 1
        positions = (p + torch.arange(width)).unsqueeze(0).expand(rows, -1)
        cache = copy.deepcopy(self.cache)  # forward appends the suffix to the cache: keep the prefix's intact
        cache.batch_repeat_interleave(rows)
        hidden = self.decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), use_cache=True,
                              **{self.cache_arg: cache}).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in suffixes], device=hidden.device)
        logits = self.head(hidden[torch.arange(rows, device=hidden.device), last])
        if self.softcap:  # e.g. Gemma 2 caps its final logits inside the CausalLM forward
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def yes_probabilities(model, tokenizer, records: list[TallrecRecord], max_length: int = 512,
                      batch_size: int = 16, progress: bool = True, scoring: str = "pair",
                      prefix_cache: bool = True) -> np.ndarray:
    """P("Yes." | prompt) for each TALLRec record, in the records' order (`scoring`: "pair" or "tallrec")."""
    return answer_probabilities(model, tokenizer, encode_all(tokenizer, records, max_length),
                                answer_token_ids(tokenizer), batch_size, progress, scoring, prefix_cache)


@torch.no_grad()
def answer_probabilities(model, tokenizer, encoded, answer_ids: tuple[int, int], batch_size: int = 16,
                         progress: bool = True, scoring: str = "pair", prefix_cache: bool = True) -> np.ndarray:
    """P(first answer) from the (first, second) answers' first-token ids after each encoded prompt, in order: the
    scoring every Yes/No method shares (TALLRec's records, CoReLLa's prompts)."""
    if scoring not in SCORINGS:
        raise RaylibError(f"eval.scoring={scoring!r} must be one of {', '.join(SCORINGS)}.")
    yes_id, no_id = answer_ids
    device = next(model.parameters()).device
    order = np.argsort([len(e.input_ids) for e in encoded], kind="stable")
    probs = np.empty(len(encoded), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        prefix = common_prefix_length(encoded) if prefix_cache else 0
        scorer = None
        if prefix > 0:
            try:
                scorer = _PrefixScorer(model, encoded[0].input_ids[:prefix], device)
            except RaylibError:  # a model without the decoder / LM-head split: the plain batched path
                scorer = None
        batches = range(0, len(order), batch_size)
        for start in progress_bar(batches, "scoring", disable=not progress):
            index = order[start:start + batch_size]
            if scorer is not None:
                logits = scorer.logits([encoded[i].input_ids[prefix:] for i in index], tokenizer.pad_token_id)
            else:
                batch = collate_left_padded([encoded[i] for i in index], tokenizer.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1, :]
            probs[index] = yes_scores(logits, yes_id, no_id, scoring).cpu().numpy()
    finally:
        model.train(was_training)
    return probs


def evaluate_records(model, tokenizer, records: list[TallrecRecord], max_length: int = 512,
                     batch_size: int = 16, progress: bool = True, scoring: str = "pair",
                     prefix_cache: bool = True) -> dict[str, float]:
    """AUC, LogLoss and accuracy of P(Yes) against the records' labels."""
    probs = yes_probabilities(model, tokenizer, records, max_length, batch_size, progress, scoring=scoring,
                              prefix_cache=prefix_cache)
    return binary_report([r.label for r in records], probs)
