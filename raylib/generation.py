"""Batched beam search (BIGRec Sec. 4.1: 4 beams; GenRec: 10 beams) returning every beam's text.

Prompts are sorted by token length so a batch pads little, generated in left-padded batches of `batch_size`
prompts, and returned in the prompts' order; each prompt gets `num_beams` candidates, best first.

Plain `generate(num_beams=k)` copies each prompt k times before the first step and then, at every step, appends
to (torch.cat) and re-orders (index_select) the whole key/value cache of all k rows: on a CPU those copies took
57% of the time, more than the matrix products. With `shared_prompt=True` the prompt runs once per query (not
once per beam), its key/value states are written once into a preallocated per-beam buffer, new tokens are
written in place, and the per-step re-ordering touches only the generated tokens: beams of one query share the
prompt, and beam search only ever re-orders beams within a query. The beams are the same (`tests`).

With `allowed` (a `TokenTrie` of every answer the catalogue holds), each step may only extend a beam along the
trie, so every beam is a catalogue answer (constrained decoding; it works with the shared prompt cache, being a
logits processor).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from raylib.encoding import Encoded, collate_left_padded
from raylib.runtime import progress as progress_bar


def _shared_prompt_layer():
    from transformers.cache_utils import DynamicLayer

    class SharedPromptLayer(DynamicLayer):
        """One layer's key/value cache for beam search over prompts that beams share (see the module docstring)."""

        is_croppable = False

        def __init__(self, beams: int, new_tokens: int):
            super().__init__()
            self.beams, self.new_tokens = beams, new_tokens
            self.keys = self.values = None
            self.prompt_len = self.length = 0
            self.is_initialized = False

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:  # the prompt (one row per query): expand to one row per beam, once
                rows, heads, n, dim = key_states.shape
                shape = (rows * self.beams, heads, n + self.new_tokens + 1, dim)
                self.keys = key_states.new_empty(shape)
                self.values = value_states.new_empty(shape)
                self.keys[:, :, :n] = key_states.repeat_interleave(self.beams, dim=0)
                self.values[:, :, :n] = value_states.repeat_interleave(self.beams, dim=0)
                self.prompt_len = self.length = n
                self.is_initialized = True
                return key_states, value_states
            n = key_states.shape[-2]
            self.keys[:, :, self.length:self.length + n] = key_states
            self.values[:, :, self.length:self.length + n] = value_states
            self.length += n
            return self.keys[:, :, :self.length], self.values[:, :, :self.length]

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            start, end = self.prompt_len, self.length
            if end > start:  # the prompt part is identical across a query's beams: only generated tokens move
                index = beam_idx.to(self.keys.device)
                self.keys[:, :, start:end] = self.keys[:, :, start:end].index_select(0, index)
                self.values[:, :, start:end] = self.values[:, :, start:end].index_select(0, index)

        def get_seq_length(self) -> int:
            return self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.length + query_length, 0

        def get_max_length(self) -> int:
            return -1

        def reset(self) -> None:
            self.keys = self.values = None
            self.prompt_len = self.length = 0
            self.is_initialized = False

    return SharedPromptLayer


def _prompt_cache(model, input_ids, attention_mask, beams: int, new_tokens: int):
    """Run all but each prompt's last token once per query; the cache then serves `beams` rows per query."""
    from transformers.cache_utils import Cache

    layer = _shared_prompt_layer()
    cache = Cache(layers=[layer(beams, new_tokens) for _ in range(model.config.num_hidden_layers)])
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    decoder = model.get_decoder()
    decoder(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
            use_cache=True, **{_cache_argument(decoder): cache})
    return cache


def _cache_argument(module) -> str:
    """transformers 5 calls the cache argument `cache`; 4.x called it `past_key_values`."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class TokenTrie:
    """A prefix tree of token-id sequences (e.g. every catalogue title's answer + EOS): the tokens that may follow
    a generated prefix. Used by `beam_search(allowed=...)` so that beams only ever spell whole catalogue answers.

    Flat, in arrays: the sequences sorted, each node a distinct prefix numbered in that order, and each node's
    children a contiguous run of nodes (`first_child`, `child_count`) whose tokens are sorted (`token`), found by
    binary search. About 12 bytes a node, where a dict per node took hundreds: a million titles' trie (about 10 M
    nodes) is ~0.1 GiB in each beam actor and Serve replica, not gigabytes."""

    def __init__(self, sequences: list[list[int]], end_token: int):
        self.end_token = end_token
        self.depth = max((len(s) for s in sequences), default=0)
        width = self.depth
        table = np.full((len(sequences), width), -1, dtype=np.int32)  # -1: past a sequence's end
        for row, sequence in enumerate(sequences):
            table[row, :len(sequence)] = sequence
        table = np.unique(table, axis=0) if len(table) else table  # sorted rows, duplicates gone
        tokens, parents = [], []  # per node (root = node 0 has no token)
        parent = np.zeros(len(table), dtype=np.int64)  # each row's node at the previous depth
        count = 1
        for column in range(width):
            present = table[:, column] >= 0
            # a new node where the parent or the token differs from the row above (rows are sorted)
            key_changed = np.ones(len(table), dtype=bool)
            key_changed[1:] = (parent[1:] != parent[:-1]) | (table[1:, column] != table[:-1, column])
            new = present & key_changed
            ids = np.cumsum(new) - 1 + count
            node = np.where(present, ids, -1)
            tokens.append(table[new, column])
            parents.append(parent[new])
            count += int(new.sum())
            parent = np.where(present, node, parent)
        self.token = np.concatenate([[-1]] + tokens).astype(np.int32)
        parent_of = np.concatenate([[-1]] + parents).astype(np.int64)
        self.child_count = np.bincount(parent_of[1:], minlength=count).astype(np.int32)
        # nodes are numbered depth by depth and, within a depth, by parent: parents never decrease, so a node's
        # children are a contiguous run starting where its number first appears among the parents
        self.first_child = (np.searchsorted(parent_of[1:], np.arange(count)) + 1).astype(np.int32)

    @classmethod
    def of_answers(cls, tokenizer, answers: list[str], prompt: str) -> "TokenTrie":
        """Each answer tokenized as training tokenizes it after `prompt` (`encoding.response_ids`), then EOS. The
        prompt's last line stands for it (every prompt ends in the same response header; what comes before a
        newline does not change how the text after it is cut into tokens)."""
        from raylib.encoding import token_ids

        context = prompt[prompt.rstrip("\n").rfind("\n") + 1:]
        context_ids = token_ids(tokenizer, context)
        together = tokenizer([context + a for a in answers])["input_ids"]
        alone = None
        sequences = []
        for k, ids in enumerate(together):
            if ids[:len(context_ids)] == context_ids:
                sequences.append(ids[len(context_ids):] + [tokenizer.eos_token_id])
                continue
            if alone is None:  # the tokenizer merged across the boundary somewhere: as `response_ids` does
                alone = tokenizer(answers, add_special_tokens=False)["input_ids"]
            sequences.append(alone[k] + [tokenizer.eos_token_id])
        return cls(sequences, tokenizer.eos_token_id)

    def _children(self, node: int) -> tuple[int, int]:
        start = int(self.first_child[node])
        return start, start + int(self.child_count[node])

    def next_tokens(self, prefix: list[int]) -> list[int]:
        """Tokens allowed after `prefix`; a prefix that left the trie or ended can only end (EOS)."""
        node = 0
        for token in prefix:
            start, end = self._children(node)
            at = start + int(np.searchsorted(self.token[start:end], int(token)))
            if at >= end or self.token[at] != int(token):
                return [self.end_token]
            node = at
        start, end = self._children(node)
        return self.token[start:end].tolist() or [self.end_token]


# Set when this transformers' cache internals are not the ones `SharedPromptLayer` was written for (it subclasses
# them): every later beam search in the process uses plain `generate`, which gives the same beams, more slowly.
_SHARED_PROMPT_FAILED: list[str] = []


def _generate_with_shared_prompt(model, settings: dict, beams: int, new_tokens: int):
    """`generate` with the shared prompt cache, or None (after one warning) where transformers' internals differ."""
    import warnings

    try:
        cache = _prompt_cache(model, settings["input_ids"], settings["attention_mask"], beams, new_tokens)
        return model.generate(**settings, **{_cache_argument(model): cache})
    except (ImportError, AttributeError, TypeError, NotImplementedError) as err:
        import transformers

        _SHARED_PROMPT_FAILED.append(repr(err))
        warnings.warn(f"transformers {transformers.__version__}: its key/value cache internals differ from what "
                      f"raylib's shared-prompt cache was written for ({err!r}); beam search falls back to plain "
                      "generate (the same beams, slower)", RuntimeWarning, stacklevel=3)
        return None


@torch.no_grad()
def beam_search(model, tokenizer, prompts: list[str], num_beams: int = 4, max_new_tokens: int = 32,
                batch_size: int = 16, progress: bool = True, desc: str = "beam search",
                shared_prompt: bool = True, allowed: TokenTrie | None = None) -> list[list[str]]:
    """`num_beams` generated continuations per prompt (special tokens removed), best beam first; with `allowed`,
    only continuations the trie holds (and up to its depth, whatever `max_new_tokens`)."""
    encoded = [Encoded(tokenizer(p)["input_ids"], [], 0) for p in prompts]
    order = np.argsort([len(e.input_ids) for e in encoded], kind="stable")
    device = next(model.parameters()).device
    out: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for start in progress_bar(range(0, len(order), batch_size), desc, disable=not progress):
            index = order[start:start + batch_size]
            batch = collate_left_padded([encoded[i] for i in index], tokenizer.pad_token_id)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            extra = {}
            if allowed is not None:
                prompt_len = ids.shape[1]  # left-padded: every row's generated tokens start here
                extra["prefix_allowed_tokens_fn"] = lambda _, row: allowed.next_tokens(row[prompt_len:].tolist())
            new_tokens = allowed.depth if allowed is not None else max_new_tokens
            settings = dict(input_ids=ids, attention_mask=mask, num_beams=num_beams, num_return_sequences=num_beams,
                            do_sample=False, early_stopping=True, max_new_tokens=new_tokens,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **extra)
            generated = None
            if shared_prompt and num_beams > 1 and ids.shape[1] > 1 and not _SHARED_PROMPT_FAILED:
                generated = _generate_with_shared_prompt(model, settings, num_beams, new_tokens)
            if generated is None:
                generated = model.generate(**settings)
            texts = tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
            for row, i in enumerate(index):
                out[i] = texts[row * num_beams:(row + 1) * num_beams]
    finally:
        model.train(was_training)
    return out
