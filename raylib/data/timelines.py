"""Every user's interactions in time order, as flat NumPy columns: the one base the columnar views are cut from
(next-item windows, TALLRec records, CTR samples).

User u's interactions are rows `offsets[u]:offsets[u + 1]` of `items`, `timestamps`, `ratings` and `rows`, oldest
first (ties keep the interaction file's order). Users are ordered by (id length, id), which puts numeric ids in
numeric order. A view is then a set of row numbers into these columns (the "target" of a window or record, the
interaction of a CTR sample); its history is the rows just before it of the same user. Histories, titles and
prompts are made only for the rows a job uses (`ranges` gathers them chunk by chunk), so nothing in memory grows
by a Python object per interaction: at 25 M interactions the columns take ~0.7 GiB.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylib import RaylibError


@dataclasses.dataclass(frozen=True)
class Timelines:
    user_ids: np.ndarray  # object array of str, users in (id length, id) order
    offsets: np.ndarray  # int64 [users + 1]
    items: np.ndarray  # int32: the item's position in `item_ids`
    timestamps: np.ndarray  # int64
    ratings: np.ndarray | None  # float64, where the interactions have ratings
    rows: np.ndarray  # int64: each interaction's row in the interaction table it was built from
    item_ids: np.ndarray  # object array of str: the items positions refer to

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def user_of(self, at: np.ndarray) -> np.ndarray:
        """The user (index into `user_ids`) of each row in `at`."""
        return np.searchsorted(self.offsets, np.asarray(at, dtype=np.int64), side="right") - 1

    def positions(self) -> np.ndarray:
        """Each row's position in its user's timeline (0 = the user's first interaction)."""
        return np.arange(len(self.items), dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths)

    def history_starts(self, at: np.ndarray, length: int) -> np.ndarray:
        """First row of the history of each row in `at`: up to `length` rows back, never before its user's first."""
        at = np.asarray(at, dtype=np.int64)
        return np.maximum(self.offsets[self.user_of(at)], at - length)


def ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(every row of every [start, end) range, concatenated; each range's length): one gather for many
    histories, in NumPy. Callers chunk `starts` so that the gather stays small."""
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    lengths = ends - starts
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + shift, lengths


def list_offsets(lengths: np.ndarray) -> np.ndarray:
    """Arrow list offsets (int32) of lists of these lengths."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out.astype(np.int32)


def chunks(n: int, size: int):
    """Row ranges [start, stop) of at most `size` rows covering 0..n."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


def unique_items(item_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(distinct item ids in the order they first appear, the row of each one's LAST appearance): a duplicated
    item's fields are its last row's, as a dict built over the rows would keep them."""
    last = {item: row for row, item in enumerate(item_ids.to_pylist())}
    return np.array(list(last), dtype=object), np.fromiter(last.values(), dtype=np.int64, count=len(last))


def build_timelines(interactions: pa.Table, item_ids: np.ndarray,
                    unknown_item: Callable[[int], str]) -> Timelines:
    """The timelines of `interactions` (user_id, item_id, timestamp and optional rating columns); `item_ids` are
    the known items (distinct). The first interaction in time order naming an unknown item stops here with
    `unknown_item(row)`'s message (row: its row in `interactions`)."""
    stamps = np.asarray(interactions.column("timestamp").to_numpy(), dtype=np.int64)
    position = pc.index_in(interactions.column("item_id"), value_set=pa.array(list(item_ids), pa.string()))
    if position.null_count:
        missing = np.flatnonzero(np.asarray(position.is_null().to_numpy(zero_copy_only=False)))
        raise RaylibError(unknown_item(int(missing[np.argmin(stamps[missing])])))
    users = pc.dictionary_encode(interactions.column("user_id").combine_chunks())
    names = users.dictionary.to_pylist()
    by_length = sorted(range(len(names)), key=lambda k: (len(names[k]), names[k]))
    rank = np.empty(len(names), dtype=np.int64)
    rank[by_length] = np.arange(len(names))
    user_rank = rank[np.asarray(users.indices.to_numpy(zero_copy_only=False))]
    order = np.lexsort((stamps, user_rank))  # by user, then time; stable: ties keep the file's order
    ratings = None
    if "rating" in interactions.column_names:
        ratings = np.asarray(interactions.column("rating").to_numpy(), dtype=np.float64)[order]
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_rank, minlength=len(names)), out=offsets[1:])
    return Timelines(
        user_ids=np.array([names[k] for k in by_length], dtype=object), offsets=offsets,
        items=np.asarray(position.to_numpy(zero_copy_only=False), dtype=np.int32)[order],
        timestamps=stamps[order], ratings=ratings, rows=order.astype(np.int64),
        item_ids=np.asarray(item_ids, dtype=object))


class TimelineRows(Sequence):
    """Rows of a view as columns: `at` holds each row's timeline row. An int index gives the row as a Python
    object (`row`); a slice, a mask or an array of positions gives the sub-view (in that order)."""

    def __init__(self, timelines: Timelines, at: np.ndarray):
        self.timelines, self.at = timelines, np.asarray(at, dtype=np.int64)

    def row(self, at: int):
        raise NotImplementedError

    def subset(self, at: np.ndarray) -> "TimelineRows":
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.row(int(self.at[key]))
        return self.subset(self.at[key])

    def settings(self) -> tuple:
        """What besides the rows makes a row's object (a history length, a threshold): equal views share it."""
        return ()

    def __eq__(self, other) -> bool:
        """The same rows of the same view; or, against anything else, the same row objects in the same order."""
        if type(other) is type(self) and other.timelines is self.timelines and other.settings() == self.settings():
            return np.array_equal(other.at, self.at)
        return isinstance(other, (TimelineRows, list, tuple)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"

    @property
    def users(self) -> np.ndarray:
        """Each row's user as an index into `timelines.user_ids`."""
        return self.timelines.user_of(self.at)

    @property
    def items(self) -> np.ndarray:
        """Each row's item (a window's or record's target) as an item position."""
        return self.timelines.items[self.at].astype(np.int64)

    @property
    def timestamps(self) -> np.ndarray:
        return self.timelines.timestamps[self.at]
