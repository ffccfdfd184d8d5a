"""Next-item data (BIGRec Sec. 4.1, GenRec Sec. 3): per-user chronological sequences -> sliding windows of up to
`history_len` items -> the next item, split by global time, plus the catalogue every item is ranked in.

Any rating is an interaction. A window belongs to the split of its TARGET's timestamp: the cut points are the
80% and 90% quantiles of all interaction times (`time_fractions`), so nothing from the validation or test period
is ever a training target. Popularity (the BIGRec re-weighting signal and the popularity baseline) counts the
training period's interactions only.

Tables are Arrow; a user's own data comes as interactions (user_id, item_id, timestamp[, rating]) and titles
(item_id, title) in CSV or Parquet. An interaction naming an item without a title is one clear error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylib import RaylibError
from raylib.data.dataset import time_cutoffs


@dataclasses.dataclass(frozen=True)
class NextItemWindow:
    user_id: str
    history: tuple[str, ...]  # item ids, oldest first (may be empty only where a user brings such data)
    target: str  # item id
    timestamp: int  # the target's time


@dataclasses.dataclass
class Catalogue:
    """Every item that can be recommended, in a fixed order: ranks are over all of them."""
    item_ids: list[str]
    titles: list[str]
    popularity: np.ndarray  # interactions in the training period, per item (float64)

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.item_ids)}

    def __len__(self) -> int:
        return len(self.item_ids)

    def title(self, item_id: str) -> str:
        return self.titles[self.index[item_id]]

    def position(self, item_id: str) -> int:
        if item_id not in self.index:
            raise RaylibError(f"Item {item_id!r} is not in the catalogue.")
        return self.index[item_id]

    def fingerprint(self) -> str:
        """sha1 of ids and titles, in order: keys the catalogue-embedding cache."""
        digest = hashlib.sha1()
        for item, title in zip(self.item_ids, self.titles):
            digest.update(f"{item}\t{title}\n".encode())
        return digest.hexdigest()[:16]


@dataclasses.dataclass
class SequenceData:
    train: list[NextItemWindow]
    valid: list[NextItemWindow]
    test: list[NextItemWindow]
    catalogue: Catalogue
    cutoffs: tuple[int, int]  # first timestamp of the validation period, of the test period
    source: str
    # Validation windows kept apart from `valid` once it is sampled (`held_out_validation`): SASRec picks its best
    # epoch on them, so its epoch and BIGRec's gamma (searched on `valid`) are not chosen on the same windows.
    valid_held: list[NextItemWindow] = dataclasses.field(default_factory=list)


# Articles MovieLens moves behind the title ("Shining, The (1980)", "Cité des enfants perdus, La (1995)").
_TRAILING_ARTICLE = re.compile(r"^(?P<name>.+), (?P<article>The|A|An|La|Le|Les|L'|Il|El|Das|Der|Die)"
                               r"(?P<rest>(?: \([^()]*\))*)$")


def readable_title(title: str) -> str:
    """"Shining, The (1980)" -> "The Shining (1980)": the article back in front, as people (and LLMs) write it."""
    match = _TRAILING_ARTICLE.match(title)
    if not match:
        return title
    glue = "" if match["article"].endswith("'") else " "
    return f"{match['article']}{glue}{match['name']}{match['rest']}"


def item_titles(items: pa.Table) -> dict[str, str]:
    """item_id -> title; an empty or duplicate id is an error, duplicate titles are allowed (ties share ranks)."""
    titles: dict[str, str] = {}
    for item, title in zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()):
        item = str(item).strip()
        if not item:
            raise RaylibError("The item table has a row with an empty item_id.")
        if item in titles:
            raise RaylibError(f"The item table lists item {item!r} twice.")
        title = "" if title is None else str(title).strip()
        if not title:
            raise RaylibError(f"Item {item!r} has no title; every item needs one (the LLM writes titles).")
        titles[item] = title
    return titles


def user_sequences(interactions: pa.Table, titles: dict[str, str]) -> dict[str, list[tuple[str, int]]]:
    """user -> [(item, timestamp)] in time order (ties keep file order). Unknown items are one error naming them."""
    order = pc.sort_indices(interactions, sort_keys=[("timestamp", "ascending")])  # stable
    table = interactions.take(order)
    per_user: dict[str, list[tuple[str, int]]] = {}
    for user, item, stamp in zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(),
                                 table.column("timestamp").to_pylist()):
        item = str(item)
        if item not in titles:
            raise RaylibError(f"An interaction of user {user} names item {item!r}, which has no title in the "
                              "item table: add it there or drop the interaction.")
        per_user.setdefault(str(user), []).append((item, int(stamp)))
    return per_user


def build_windows(per_user: dict[str, list[tuple[str, int]]], history_len: int = 10,
                  min_history: int = 1) -> list[NextItemWindow]:
    """One window per (user, position >= min_history): up to `history_len` items before it -> the item."""
    if history_len < 1 or min_history < 0:
        raise RaylibError(f"history_len must be >= 1 and min_history >= 0 (got {history_len}, {min_history}).")
    windows = []
    for user in sorted(per_user, key=lambda u: (len(u), u)):
        seq = per_user[user]
        for pos in range(min_history, len(seq)):
            history = tuple(item for item, _ in seq[max(0, pos - history_len):pos])
            windows.append(NextItemWindow(user, history, seq[pos][0], seq[pos][1]))
    return windows


def split_windows(windows: list[NextItemWindow], cutoffs: tuple[int, int]) -> tuple[list, list, list]:
    valid_at, test_at = cutoffs
    train = [w for w in windows if w.timestamp < valid_at]
    valid = [w for w in windows if valid_at <= w.timestamp < test_at]
    test = [w for w in windows if w.timestamp >= test_at]
    return train, valid, test


def training_popularity(interactions: pa.Table, item_ids: list[str], valid_at: int) -> np.ndarray:
    """Interactions per item before the validation period (the training period only)."""
    mask = pc.less(interactions.column("timestamp"), valid_at)
    counts = pc.value_counts(interactions.filter(mask).column("item_id").cast(pa.string()))
    table = {c["values"].as_py(): c["counts"].as_py() for c in counts}
    return np.array([float(table.get(item, 0)) for item in item_ids], dtype=np.float64)


def sample_windows(windows: list[NextItemWindow], n: int, seed: int) -> list[NextItemWindow]:
    """A fixed-size seeded sample (all when n == 0 or n >= len), kept in the original order."""
    if n <= 0 or n >= len(windows):
        return list(windows)
    keep = np.sort(np.random.default_rng(seed).choice(len(windows), size=n, replace=False))
    return [windows[i] for i in keep]


def held_out_validation(windows: list[NextItemWindow], n: int, seed: int) -> tuple[list, list]:
    """(a seeded sample of `n` validation windows, the windows outside it). When the sample takes them all
    (n == 0 or n >= len), every other window is held out instead, so that neither part is empty."""
    sample = sample_windows(windows, n, seed)
    if len(sample) == len(windows):
        return list(windows[1::2]), list(windows[::2])
    chosen = {id(w) for w in sample}
    return sample, [w for w in windows if id(w) not in chosen]


def build_sequence_data(interactions: pa.Table, items: pa.Table, history_len: int = 10,
                        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), source: str = "",
                        readable: bool = False) -> SequenceData:
    """All windows of every split (unsampled) and the catalogue with training-period popularity."""
    if interactions.num_rows == 0:
        raise RaylibError("The interaction table is empty.")
    titles = item_titles(items)
    if readable:
        titles = {item: readable_title(title) for item, title in titles.items()}
    per_user = user_sequences(interactions, titles)
    cutoffs = time_cutoffs(interactions.column("timestamp").to_numpy(), fractions)
    train, valid, test = split_windows(build_windows(per_user, history_len), cutoffs)
    if not train:
        raise RaylibError("No training windows: every user needs at least two interactions before the "
                          "validation period.")
    item_ids = list(titles)
    catalogue = Catalogue(item_ids, [titles[i] for i in item_ids],
                          training_popularity(interactions, item_ids, cutoffs[0]))
    return SequenceData(train, valid, test, catalogue, cutoffs, source)


# ------------------------------------------------------------------ a user's own files
