"""BIGRec step 2 (Bao et al. 2023, "A Bi-Step Grounding Paradigm for LLMs in Recommendation", Sec. 3.2): ground
the text the LLM generated to real items, ranking the WHOLE catalogue.

- Embedding (Sec. 3.2, "grounding to actual item space"): a text's embedding is the last layer's hidden state of
  its last token (`hidden_states[-1][:, -1]` in the authors' code, i.e. after the final norm).
- Distance: L2 between the generated text's and every title's embedding; lower ranks higher.
- Statistical re-weighting (Sec. 3.2, Eq. 4): per-query min-max-normalised distances times `(1 + W)^-gamma`,
  W a min-max-normalised popularity count or a conventional model's normalised scores; gamma is searched on
  validation data (`raylib.tune`).
- Ranks are 1-based, tied items share the best rank (duplicate titles tie).

GenRec (Ji et al. 2024) ranks its beams instead: by exact title match (its own protocol) or with each beam
grounded as above (`beam_ranks`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from raylib import RaylibError
from raylib.encoding import Encoded, collate_left_padded
from raylib.runtime import progress as progress_bar


# ------------------------------------------------------------------ embeddings
@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 64, progress: bool = True,
                pooling: str = "last") -> torch.Tensor:
    """[len(texts), hidden] float32 on CPU: each text's last-token hidden state after the final norm (BIGRec's
    choice, `pooling="last"`), or the mean over its tokens (`"mean"`: on the 135M default the last token,
    always the ")" of "(Year)", carries too little of the title: see docs/nextitem.md).

    Each distinct text is embedded once (duplicate titles get the very same vector, so they tie exactly), in
    batches of similar length (less padding), and the rows come back in the given order. The tokenizer's
    special tokens are added; a text with no token at all (an empty string with a tokenizer that adds no BOS)
    is embedded as the end-of-text token, so an empty generation still grounds somewhere.
    """
    unique = list(dict.fromkeys(texts))
    ids = [tokenizer(text)["input_ids"] or [tokenizer.eos_token_id] for text in unique]
    order = np.argsort([len(i) for i in ids], kind="stable")
    device = next(model.parameters()).device
    decoder = model.get_decoder()  # the transformer without the LM head: last_hidden_state is after the norm
    rows: list[torch.Tensor] = [None] * len(unique)  # type: ignore[list-item]
    was_training = model.training
    model.eval()
    try:
        for start in progress_bar(range(0, len(order), batch_size), "embedding", disable=not progress):
            index = order[start:start + batch_size]
            # Left padding puts every text's last token in the last column; position ids skip the padding.
            batch = collate_left_padded([Encoded(ids[i], [], 0) for i in index], tokenizer.pad_token_id)
            hidden = decoder(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).last_hidden_state
            if pooling == "mean":
                mask = batch["attention_mask"].to(hidden.device).unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1)
            else:
                pooled = hidden[:, -1, :]
            for i, row in zip(index, pooled.float().cpu()):
                rows[i] = row
    finally:
        model.train(was_training)
    if not rows:
        return torch.empty((0, model.config.hidden_size), dtype=torch.float32)
    position = {text: i for i, text in enumerate(unique)}
    return torch.stack(rows)[torch.tensor([position[text] for text in texts])]


def catalogue_cache(cache_dir: Path | None, model_key: str, catalogue_key: str, pooling: str) -> Path:
    """Where one (model, catalogue, pooling)'s title embeddings are cached:
    `<cache_dir or <cache>/grounding>/<sha1(model_key|catalogue_key|pooling)[:16]>.safetensors`."""
    from raylib.assets import cache_root

    folder = Path(cache_dir).expanduser() if cache_dir else cache_root() / "grounding"
    return folder / f"{hashlib.sha1(f'{model_key}|{catalogue_key}|{pooling}'.encode()).hexdigest()[:16]}.safetensors"


def read_cached(path: Path, items: int) -> torch.Tensor | None:
    """The cached embeddings, or None (absent, or a stale file of another size under a reused key)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    cached = load_file(str(path))["embeddings"]
    return cached if cached.shape[0] == items else None


def write_cached(path: Path, embeddings: torch.Tensor, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}")
    save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # atomic: a half-written file is never read as a finished one


def catalogue_embeddings(model, tokenizer, titles: list[str], model_key: str, catalogue_key: str,
                         cache_dir: Path | None = None, batch_size: int = 64,
                         pooling: str = "last") -> tuple[torch.Tensor, bool]:
    """Every catalogue title's embedding with the model in this process, computed once per (model, catalogue)
    and cached (`catalogue_cache`). Returns (embeddings [n, hidden] float32, computed_now). Jobs embed a
    catalogue in a pool of actors instead (`raylib.methods.nextitem.pipeline.catalogue_embedding`)."""
    path = catalogue_cache(cache_dir, model_key, catalogue_key, pooling)
    cached = read_cached(path, len(titles))
    if cached is not None:
        return cached, False
    embeddings = embed_texts(model, tokenizer, titles, batch_size, progress=True, pooling=pooling)
    write_cached(path, embeddings, {"model": model_key, "catalogue": catalogue_key, "items": str(len(titles)),
                                    "pooling": pooling})
    return embeddings, True


# ------------------------------------------------------------------ distances and re-weighting
# Catalogue items per step of chunked grounding: memory [queries, chunk], never [queries, catalogue]; a chunk this
# size stays in the CPU's cache between the matrix product and the comparisons that follow it (measured: 4096 to
# 16384 items equally fast, 65536 1.5x slower).
CHUNK_ITEMS = 1 << 13
QUERY_BLOCK = 256  # queries per block: with a chunk of items, [256 x 8192] float32 = 8 MiB at a time


def l2_distances(queries: torch.Tensor, items: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[q, n] float32 L2 distances, one batched `torch.cdist` per chunk of `chunk` queries. The whole matrix: for
    a few queries (a validation sample); `grounded_ranks` and `nearest_items` ground any number of queries
    against any catalogue in memory bounded by a chunk."""
    queries, items = torch.as_tensor(queries).float(), torch.as_tensor(items).float()
    if len(queries) == 0:
        return torch.empty((0, len(items)), dtype=torch.float32)
    return torch.cat([torch.cdist(queries[i:i + chunk], items) for i in range(0, len(queries), chunk)])


def _squares(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=1).square()


def _partial(queries: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """|x|^2 - 2 q.x for each query and item of `part` (one matrix product): the squared L2 distance less the
    query's own |q|^2, so it orders each query's items as the distance does."""
    return torch.addmm(_squares(part).unsqueeze(0), queries, part.T, alpha=-2)


class ChunkedScores:
    """What ranks the catalogue for each query (lower is better), a chunk of items at a time: the L2 distance to
    the query (as `_partial`, which orders items the same way), or BIGRec's re-weighted score
    `minmax(d) * (1 + minmax(W))^-gamma` (Eq. 4, `reweight`) when a signal W is given. Memory [queries, chunk]
    however large the catalogue. A first pass over the catalogue finds the per-query minimum and maximum that
    normalise d (when re-weighting) and each query's score of its own `targets` item as that chunk computed it
    (so every value compared comes from the same computation, and duplicate titles still tie exactly)."""

    def __init__(self, queries, items, targets=None, signal=None, gamma: float = 0.0, chunk: int = CHUNK_ITEMS):
        self.queries, self.items = torch.as_tensor(queries).float(), torch.as_tensor(items).float()
        self.chunk, n = chunk, len(self.queries)
        self.query_squares = _squares(self.queries)
        self.weights = None  # [1 or queries, items]: (1 + minmax(W))^-gamma
        if signal is not None:
            w = torch.atleast_2d(torch.as_tensor(_numpy(signal).astype(np.float64)))
            if w.shape[-1] != len(self.items) or w.shape[0] not in (1, n):
                raise RaylibError(f"The re-weighting signal has shape {tuple(w.shape)} for {n} queries and "
                                  f"{len(self.items)} items: give one value per item, or one row per query.")
            low, high = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
            self.weights = torch.pow(1.0 + (w - low) / torch.where(high > low, high - low, 1.0), -float(gamma))
        self.low = torch.full((n,), float("inf"), dtype=torch.float64)
        self.high, self.own = torch.full_like(self.low, -float("inf")), torch.zeros_like(self.low)
        if targets is None and self.weights is None:
            return  # plain distances need no first pass
        targets = None if targets is None else torch.as_tensor(np.asarray(targets, dtype=np.int64))
        rows = torch.arange(n)
        for start, d in self._values():
            if self.weights is not None:
                self.low = torch.minimum(self.low, d.min(1).values)
                self.high = torch.maximum(self.high, d.max(1).values)
            if targets is not None:
                inside = (targets >= start) & (targets < start + d.shape[1])
                self.own[inside] = d[rows[inside], targets[inside] - start].double()
        self.span = torch.where(self.high > self.low, self.high - self.low, torch.ones_like(self.high))
        if targets is not None:
            self.own = self._scored(self.own.unsqueeze(1), targets.unsqueeze(1)).squeeze(1)

    def _values(self):
        """(first item, [queries, chunk]): distances (float64) when re-weighting, else `_partial` (float32)."""
        for start in range(0, len(self.items), self.chunk):
            partial = _partial(self.queries, self.items[start:start + self.chunk])
            if self.weights is None:
                yield start, partial
            else:
                yield start, self.distances(partial).double()

    def distances(self, partial: torch.Tensor) -> torch.Tensor:
        """L2 distances from `_partial` values (as `torch.cdist` computes them: clamped at 0, then the root)."""
        return (partial + self.query_squares.unsqueeze(1)).clamp(min=0).sqrt()

    def _scored(self, d: torch.Tensor, columns) -> torch.Tensor:
        if self.weights is None:
            return d
        w = self.weights[0][columns] if len(self.weights) == 1 else self.weights.gather(1, columns)
        return (d - self.low.unsqueeze(1)) / self.span.unsqueeze(1) * w

    def chunks(self):
        """(first item, scores [queries, items of the chunk]) for each chunk."""
        for start, d in self._values():
            yield start, self._scored(d, torch.arange(start, start + d.shape[1]).expand(len(d), -1))


def _chunk_mask(seen: "Seen", start: int, shape: tuple[int, int]) -> torch.Tensor:
    """True where a query's `seen` item falls in the chunk of items starting at `start`."""
    return torch.as_tensor(_seen_mask([{i - start for i in s if start <= i < start + shape[1]} for s in seen], shape))


@torch.no_grad()
def grounded_ranks(queries, items, targets, seen: "Seen" = None, signal=None, gamma: float = 0.0,
                   chunk: int = CHUNK_ITEMS) -> np.ndarray:
    """Rank of each query's target when the whole catalogue is ranked by L2 distance to the query (BIGRec step
    2), re-weighted by `(1 + W)^-gamma` when `signal` is given: the ranks of `target_ranks(reweight(
    l2_distances(...), ...))`, in memory bounded by a chunk of items (`ChunkedScores`). Plain distances take
    one pass over the catalogue (`_ranks_in_one_pass`), re-weighted ones two."""
    if len(targets) != len(queries):
        raise RaylibError(f"{len(targets)} targets for {len(queries)} queries: give one target per query.")
    if len(queries) > QUERY_BLOCK:  # a block of queries at a time, so that what a chunk takes stays bounded too
        signal = None if signal is None else np.atleast_2d(_numpy(signal))
        return np.concatenate([grounded_ranks(
            queries[a:a + QUERY_BLOCK], items, targets[a:a + QUERY_BLOCK],
            None if seen is None else seen[a:a + QUERY_BLOCK],
            None if signal is None else (signal if len(signal) == 1 else signal[a:a + QUERY_BLOCK]), gamma, chunk)
            for a in range(0, len(queries), QUERY_BLOCK)])
    if signal is None:
        ranks = _ranks_in_one_pass(queries, items, targets, seen, chunk)
        if ranks is not None:
            return ranks
    scores = ChunkedScores(queries, items, targets, signal, gamma, chunk)
    better = torch.zeros(len(targets), dtype=torch.int64)
    for start, score in scores.chunks():
        ahead = score < scores.own.unsqueeze(1).to(score.dtype)
        if seen is not None:
            ahead &= ~_chunk_mask(seen, start, tuple(ahead.shape))
        better += ahead.sum(1)
    return (better + 1).numpy()


def _ranks_in_one_pass(queries, items, targets, seen: "Seen", chunk: int) -> np.ndarray | None:
    """Plain L2 ranks in one pass. Each query's `_partial` value of its target is first estimated directly; items
    clearly nearer are counted as the chunks go by, and the few within a narrow band of the estimate are kept and
    compared, at the end, with the target's value as its own chunk computed it (so ties stay exact). None when
    an estimate missed its band (numerical trouble): the caller then takes two passes."""
    queries, items = torch.as_tensor(queries).float(), torch.as_tensor(items).float()
    targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    rows = torch.arange(len(queries))
    own_items = items[targets]
    estimate = _squares(own_items) - 2 * (queries * own_items).sum(1)
    # a product of `hidden` terms in float32 is off by far less than 1e-5 of |x|^2 + 2 |q| |x|
    band = 1e-5 * (_squares(own_items) + 2 * _squares(queries).sqrt() * _squares(own_items).sqrt()) + 1e-6
    low, high = (estimate - band).unsqueeze(1), (estimate + band).unsqueeze(1)
    below = torch.zeros(len(queries), dtype=torch.int64)
    own = torch.full((len(queries),), float("nan"))
    near_rows, near_values = [], []
    for start in range(0, len(items), chunk):
        values = _partial(queries, items[start:start + chunk])
        counted = ~_chunk_mask(seen, start, tuple(values.shape)) if seen is not None else None
        nearer, up_to_high = values < low, values <= high
        if counted is not None:
            nearer, up_to_high = nearer & counted, up_to_high & counted
        in_band = up_to_high.sum(1) - nearer.sum(1)
        below += nearer.sum(1)
        inside = rows[(targets >= start) & (targets < start + values.shape[1])]
        own[inside] = values[inside, targets[inside] - start]
        banded = torch.zeros(len(queries), dtype=torch.bool)  # rows whose band holds more than their target
        at = targets[inside] - start
        in_band[inside] -= (up_to_high[inside, at] & ~nearer[inside, at]).long()
        banded[in_band > 0] = True
        for r in rows[banded].tolist():  # few: only near-ties need a second look
            close = up_to_high[r] & ~nearer[r]
            if start <= int(targets[r]) < start + values.shape[1]:
                close[int(targets[r]) - start] = False  # the target is never ahead of itself
            near_rows.append(torch.full((int(close.sum()),), r, dtype=torch.int64))
            near_values.append(values[r][close])
    if not ((own - estimate).abs() <= band).all():
        return None
    if not near_rows:
        return (below + 1).numpy()
    r, v = torch.cat(near_rows), torch.cat(near_values)
    return (below + torch.bincount(r[v < own[r]], minlength=len(queries)) + 1).numpy()


@torch.no_grad()
def nearest_items(queries, items, k: int = 1, exclude: "Seen" = None, signal=None, gamma: float = 0.0,
                  chunk: int = CHUNK_ITEMS) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) of each query's `k` best catalogue items, best first: L2 distances, or re-weighted
    scores (`ChunkedScores`), by a running top-k over chunks of items (memory [queries, chunk + k]);
    `exclude`: per query, positions left out."""
    if len(queries) > QUERY_BLOCK:  # a block of queries at a time (see `grounded_ranks`)
        signal = None if signal is None else np.atleast_2d(_numpy(signal))
        found = [nearest_items(queries[a:a + QUERY_BLOCK], items, k,
                               None if exclude is None else exclude[a:a + QUERY_BLOCK],
                               None if signal is None else (signal if len(signal) == 1 else signal[a:a + QUERY_BLOCK]),
                               gamma, chunk) for a in range(0, len(queries), QUERY_BLOCK)]
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    scores = ChunkedScores(queries, items, signal=signal, gamma=gamma, chunk=chunk)
    n = len(scores.queries)
    best, best_at = torch.empty((n, 0)), torch.empty((n, 0), dtype=torch.int64)
    for start, score in scores.chunks():
        if exclude is not None:
            score = score.masked_fill(_chunk_mask(exclude, start, tuple(score.shape)), float("inf"))
        merged = torch.cat([best.to(score.dtype), score], 1)
        at = torch.cat([best_at, torch.arange(start, start + score.shape[1]).expand(n, -1)], 1)
        top = torch.topk(merged, min(k, merged.shape[1]), dim=1, largest=False, sorted=True)
        best, best_at = top.values, at.gather(1, top.indices)
    return best_at.numpy(), (best if scores.weights is not None else scores.distances(best)).numpy()


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy()
    return np.asarray(x)


def _minmax(x: np.ndarray) -> np.ndarray:
    """Min-max normalised to [0, 1] along the last axis (per row); a constant row becomes 0."""
    low, high = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    return (x - low) / np.where(high > low, high - low, 1.0)


def reweight(distances, signal, gamma: float) -> np.ndarray:
    """BIGRec Eq. 4: `minmax(D) * (1 + minmax(W))^-gamma` per query; lower is better.

    `distances` [q, n]; `signal` W is [n] (popularity, shared by all queries) or [q, n] (a conventional model's
    scores per query), normalised per row. gamma = 0 leaves each query's ranking as it was. As in the authors'
    code, the nearest item's normalised distance is 0, so it stays first whatever gamma; the weight reorders the
    others."""
    d = _minmax(_numpy(distances).astype(np.float64))
    w = _minmax(_numpy(signal).astype(np.float64))
    if w.shape[-1] != d.shape[-1] or (w.ndim == 2 and w.shape != d.shape):
        raise RaylibError(f"The re-weighting signal has shape {w.shape}; the distances have {d.shape}: give one "
                          "value per item, or one row per query.")
    return d * np.power(1.0 + w, -float(gamma))


# ------------------------------------------------------------------ ranks (1-based, ties share the best rank)
# `seen` (optional, every ranking alike): per query, the catalogue positions of the user's history items; they are
# taken out of the ranking (they never count as ranked above the target), as a recommender that does not
# recommend what the user already has.
Seen = list[set[int]] | None


def target_ranks(scores, targets, lower_is_better: bool = True, seen: Seen = None) -> np.ndarray:
    """Rank of each query's target item (a catalogue index): 1 + the number of items strictly better."""
    s = np.atleast_2d(_numpy(scores))
    t = np.asarray(targets, dtype=np.int64)
    if len(t) != len(s):
        raise RaylibError(f"{len(t)} targets for {len(s)} rows of scores: give one target per query.")
    own = s[np.arange(len(t)), t][:, None]
    better = (s < own) if lower_is_better else (s > own)
    if seen is not None:
        better = better & ~_seen_mask(seen, s.shape)
    return better.sum(axis=1) + 1


def _seen_mask(seen: list[set[int]], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, items in enumerate(seen):
        mask[row, list(items)] = True
    return mask


def popularity_ranks(popularity, targets, seen: Seen = None) -> np.ndarray:
    """The popularity baseline: every query ranks items by their training-period count (higher is better)."""
    pop = _numpy(popularity).astype(np.float64).ravel()
    if seen is not None:
        return target_ranks(np.broadcast_to(pop, (len(seen), len(pop))), targets, lower_is_better=False, seen=seen)
    ascending = np.sort(pop)
    own = pop[np.asarray(targets, dtype=np.int64)]
    return len(pop) - np.searchsorted(ascending, own, side="right") + 1  # 1 + items with a larger count


def beam_ranks(beam_embeddings: list, items, targets, seen: Seen = None, chunk: int = CHUNK_ITEMS) -> np.ndarray:
    """GenRec, grounded: each beam grounds to its nearest item; the ranked list is those items, deduplicated in
    beam order, then every other item by the FIRST beam's distance. Rank of each target in its list.
    `beam_embeddings[i]` is [beams_i, hidden]: query i's beams in beam order. Memory bounded by a chunk of items
    (`nearest_items`, `grounded_ranks`)."""
    beams = torch.cat([torch.as_tensor(b).float() for b in beam_embeddings])
    nearest, _ = nearest_items(beams, items, 1, chunk=chunk)
    cuts = np.cumsum([len(b) for b in beam_embeddings])[:-1]
    grounded = []
    for i, group in enumerate(np.split(nearest[:, 0], cuts)):
        skip = seen[i] if seen is not None else set()
        grounded.append([item for item in dict.fromkeys(int(j) for j in group) if item not in skip])
    firsts = torch.stack([torch.as_tensor(b[0]).float() for b in beam_embeddings])
    # the items no beam grounded to, by the first beam's distance: the grounded (and seen) ones taken out
    others = [set(g) | (seen[i] if seen is not None else set()) for i, g in enumerate(grounded)]
    rest = grounded_ranks(firsts, items, targets, seen=others, chunk=chunk)
    return np.asarray([g.index(int(t)) + 1 if int(t) in g else len(g) + int(r)
                       for g, t, r in zip(grounded, targets, rest)], dtype=np.int64)


def normalise_title(text: str) -> str:
    """For exact matching: first line, surrounding whitespace and double quotes removed, case folded."""
    return text.strip().split("\n", 1)[0].strip().strip('"').strip().casefold()


def exact_match_ranks(beams: list[list[str]], target_titles: list[str], miss_rank: int,
                      seen_titles: list[set[str]] | None = None) -> np.ndarray:
    """GenRec's protocol: 1 + the index of the first beam that is the target's title, else `miss_rank`
    (e.g. catalogue size + 1: the target was not generated). `seen_titles`: per query, titles of the user's
    history; beams naming one are taken out of the list."""
    ranks = []
    for i, (texts, title) in enumerate(zip(beams, target_titles, strict=True)):
        wanted = normalise_title(title)
        skip = {normalise_title(t) for t in seen_titles[i]} if seen_titles is not None else set()
        kept = [normalise_title(text) for text in texts if normalise_title(text) not in skip]
        hits = [k for k, text in enumerate(kept) if text == wanted]
        ranks.append(hits[0] + 1 if hits else miss_rank)
    return np.asarray(ranks, dtype=np.int64)
