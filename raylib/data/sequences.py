"""Next-item data (BIGRec Sec. 4.1, GenRec Sec. 3): per-user chronological sequences -> sliding windows of up to
`history_len` items -> the next item, split by global time, plus the catalogue every item is ranked in.

Any rating is an interaction. A window belongs to the split of its TARGET's timestamp: the cut points are the
80% and 90% quantiles of all interaction times (the data section's `time_split`), so nothing from the validation or test period
is ever a training target. Popularity (the BIGRec re-weighting signal and the popularity baseline) counts the
training period's interactions only.

Windows are columns (`Windows`: one row number per window into the users' timelines, `raylib.data.timelines`):
a window becomes a Python object, and its history a list of titles, only where a job reads it (the few-shot
sample, the scored windows). Tables are Arrow; a user's own data comes as interactions (user_id, item_id, timestamp[, rating]) and titles
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
from raylib.data.timelines import TimelineRows, Timelines, build_timelines


@dataclasses.dataclass(frozen=True)
class NextItemWindow:
    """One window, as a Python object: made only for the windows a job reads one by one (samples, prompts)."""
    user_id: str
    history: tuple[str, ...]  # item ids, oldest first (may be empty only where a user brings such data)
    target: str  # item id
    timestamp: int  # the target's time


class Windows(TimelineRows):
    """Windows as columns: the timeline row of each window's target (`at`); its history is the `history_len`
    rows before it of the same user. Indexing with an int gives a `NextItemWindow`; with a slice, a mask or an
    array of positions, the sub-sequence (in that order) as `Windows` again."""

    def __init__(self, timelines: Timelines, at: np.ndarray, history_len: int):
        super().__init__(timelines, at)
        self.history_len = history_len

    def subset(self, at: np.ndarray) -> "Windows":
        return Windows(self.timelines, at, self.history_len)

    def settings(self) -> tuple:
        return (self.history_len,)

    def row(self, at: int) -> NextItemWindow:
        t = self.timelines
        user = int(t.user_of([at])[0])
        start = max(int(t.offsets[user]), at - self.history_len)
        return NextItemWindow(str(t.user_ids[user]), tuple(str(i) for i in t.item_ids[t.items[start:at]]),
                              str(t.item_ids[t.items[at]]), int(t.timestamps[at]))

    @property
    def targets(self) -> np.ndarray:
        """Each window's target as an item position (a catalogue index)."""
        return self.items

    def history_starts(self, length: int | None = None) -> np.ndarray:
        """First timeline row of each window's history, cut to its last `length` items (default: all of it)."""
        return self.timelines.history_starts(self.at, min(length or self.history_len, self.history_len))

    def histories(self, length: int | None = None) -> list[np.ndarray]:
        """Each window's history as item positions, oldest first (for the windows a job reads one by one)."""
        starts, items = self.history_starts(length), self.timelines.items
        return [items[s:a].astype(np.int64) for s, a in zip(starts, self.at)]


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
    train: Windows
    valid: Windows
    test: Windows
    catalogue: Catalogue
    cutoffs: tuple[int, int]  # first timestamp of the validation period, of the test period
    source: str
    # Validation windows kept apart from `valid` once it is sampled (`held_out_validation`): SASRec picks its best
    # epoch on them, so its epoch and BIGRec's gamma (searched on `valid`) are not chosen on the same windows.
    valid_held: Windows | None = None


# Articles MovieLens# Articles MovieLens moves behind the title ("Shining, The (1980)", "Cité des enfants perdus, La (1995)").
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


def user_sequences(interactions: pa.Table, titles: dict[str, str]) -> Timelines:
    """Every user's interactions in time order (ties keep file order), over the items of `titles` (in its
    order: item positions are catalogue indices). An unknown item is one error naming it."""
    users, items = interactions.column("user_id"), interactions.column("item_id")

    def unknown(row: int) -> str:
        return (f"An interaction of user {users[row].as_py()} names item {str(items[row].as_py())!r}, which has no "
                "title in the item table: add it there or drop the interaction.")

    table = pa.table({"user_id": users.cast(pa.string()), "item_id": items.cast(pa.string()),
                      "timestamp": interactions.column("timestamp")})
    return build_timelines(table, np.array(list(titles), dtype=object), unknown)


def build_windows(timelines: Timelines, history_len: int = 10, min_history: int = 1) -> Windows:
    """One window per (user, position >= min_history): up to `history_len` items before it -> the item. Users in
    (id length, id) order, each user's windows in time order."""
    if history_len < 1 or min_history < 0:
        raise RaylibError(f"history_len must be >= 1 and min_history >= 0 (got {history_len}, {min_history}).")
    return Windows(timelines, np.flatnonzero(timelines.positions() >= min_history), history_len)


def split_windows(windows: Windows, cutoffs: tuple[int, int]) -> tuple[Windows, Windows, Windows]:
    valid_at, test_at = cutoffs
    stamps = windows.timestamps
    return (windows[stamps < valid_at], windows[(stamps >= valid_at) & (stamps < test_at)],
            windows[stamps >= test_at])


def training_popularity(interactions: pa.Table, item_ids: list[str], valid_at: int) -> np.ndarray:
    """Interactions per item before the validation period (the training period only)."""
    mask = pc.less(interactions.column("timestamp"), valid_at)
    counts = pc.value_counts(interactions.filter(mask).column("item_id").cast(pa.string()))
    position = pc.index_in(counts.field("values"), value_set=pa.array(item_ids, pa.string()))
    out = np.zeros(len(item_ids), dtype=np.float64)
    known = np.asarray(position.is_valid().to_numpy(zero_copy_only=False))
    out[np.asarray(position.to_numpy(zero_copy_only=False))[known].astype(np.int64)] = \
        np.asarray(counts.field("counts").to_numpy())[known]
    return out


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Positions of a fixed-size seeded sample of n rows (all when size == 0 or size >= n), in their order."""
    if size <= 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def sample_windows(windows: Windows, n: int, seed: int) -> Windows:
    """A fixed-size seeded sample (all when n == 0 or n >= len), kept in the original order."""
    return windows[sample_indices(len(windows), n, seed)]


def held_out_validation(windows: Windows, n: int, seed: int) -> tuple[Windows, Windows]:
    """(a seeded sample of `n` validation windows, the windows outside it). When the sample takes them all
    (n == 0 or n >= len), every other window is held out instead, so that neither part is empty."""
    chosen = sample_indices(len(windows), n, seed)
    if len(chosen) == len(windows):
        return windows[1::2], windows[::2]
    rest = np.ones(len(windows), dtype=bool)
    rest[chosen] = False
    return windows[chosen], windows[rest]


def build_sequence_data(interactions: pa.Table, items: pa.Table, history_len: int = 10,
                        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), source: str = "",
                        readable: bool = False) -> SequenceData:
    """All windows of every split (unsampled, as columns) and the catalogue with training-period popularity."""
    if interactions.num_rows == 0:
        raise RaylibError("The interaction table is empty.")
    titles = item_titles(items)
    if readable:
        titles = {item: readable_title(title) for item, title in titles.items()}
    timelines = user_sequences(interactions, titles)
    cutoffs = time_cutoffs(interactions.column("timestamp").to_numpy(), fractions)
    train, valid, test = split_windows(build_windows(timelines, history_len), cutoffs)
    if not len(train):
        raise RaylibError("No training windows: every user needs at least two interactions before the "
                          "validation period.")
    item_ids = list(titles)
    catalogue = Catalogue(item_ids, [titles[i] for i in item_ids],
                          training_popularity(interactions, item_ids, cutoffs[0]))
    return SequenceData(train, valid, test, catalogue, cutoffs, source)

