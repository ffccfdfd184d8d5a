"""TALLRec records (TALLRec Sec. 4.1): `{"instruction", "input", "output"}` with output "Yes." or "No.".

Built from interactions with a per-user chronological sliding window (the 10 items rated just before the
target form the history; rating > 3 = like), or read from the JSON / JSONL / Parquet files a user brings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raylib import RaylibError
from raylib.data.timelines import TimelineRows, Timelines, build_timelines, ranges, unique_items
from raylib.prompts import TALLREC_ANSWERS, tallrec_input, tallrec_instruction

REQUIRED_FIELDS = ("instruction", "input", "output")


@dataclasses.dataclass(frozen=True)
class TallrecRecord:
    instruction: str
    input: str
    output: str
    user_id: str = ""
    item_id: str = ""

    @property
    def label(self) -> int:
        return 1 if self.output == TALLREC_ANSWERS[0] else 0


class RecordRows(TimelineRows):
    """TALLRec records as columns: the timeline row of each record's target (`at`, into `raylib.data.timelines`);
    its history is the `history_len` rows before it. A record's text is made when it is read (an int index or
    iteration gives a `TallrecRecord`); a slice, mask or array of positions gives `RecordRows` again. Labels,
    users and items are arrays, so samples and splits are drawn without making any text."""

    def __init__(self, timelines: Timelines, at: np.ndarray, titles: np.ndarray, history_len: int,
                 like_threshold: float, domain: str):
        super().__init__(timelines, at)
        self.titles, self.history_len, self.like_threshold, self.domain = titles, history_len, like_threshold, domain

    def subset(self, at: np.ndarray) -> "RecordRows":
        return RecordRows(self.timelines, at, self.titles, self.history_len, self.like_threshold, self.domain)

    def settings(self) -> tuple:
        return (id(self.titles), self.history_len, self.like_threshold, self.domain)

    def row(self, at: int) -> TallrecRecord:
        t, start = self.timelines, at - self.history_len
        history, ratings = self.titles[t.items[start:at]], t.ratings[start:at]
        liked = [str(title) for title, r in zip(history, ratings) if r > self.like_threshold]
        disliked = [str(title) for title, r in zip(history, ratings) if r <= self.like_threshold]
        return TallrecRecord(
            instruction=tallrec_instruction(self.domain),
            input=tallrec_input(liked, disliked, str(self.titles[t.items[at]]), self.domain),
            output=TALLREC_ANSWERS[0] if t.ratings[at] > self.like_threshold else TALLREC_ANSWERS[1],
            user_id=str(t.user_ids[t.user_of([at])[0]]), item_id=str(t.item_ids[t.items[at]]))

    @property
    def labels(self) -> np.ndarray:
        return (self.timelines.ratings[self.at] > self.like_threshold).astype(np.int64)

    def seen_items(self) -> np.ndarray:
        """Positions of every item these records show (targets and histories), distinct."""
        index, _ = ranges(self.at - self.history_len, self.at + 1)
        return np.unique(self.timelines.items[index])


def build_tallrec_records(interactions: pa.Table, items: pa.Table, history_len: int = 10,
                          like_threshold: float = 3.0, domain: str = "movie",
                          period: tuple[int, int] | None = None) -> RecordRows:
    """One record per (user, position >= history_len): the previous `history_len` rated items, split by
    like/dislike, and the question about the item at that position. Users are sorted by (id length, id),
    interactions by timestamp (ties keep file order, as a stable sort does). `period` = [start, end): only
    targets rated then (a split of the one time split; the history may reach back before it)."""
    if history_len < 1:
        raise RaylibError(f"history_len must be at least 1, got {history_len}.")
    item_ids, last_row = unique_items(items.column("item_id"))
    titles = np.array(items.column("title").to_pylist(), dtype=object)[last_row]
    users, inter_items = interactions.column("user_id"), interactions.column("item_id")

    def unknown(row: int) -> str:
        return (f"Interaction of user {users[row].as_py()} names item {inter_items[row].as_py()!r}, which is not in "
                "the item file.")

    timelines = build_timelines(interactions.select(["user_id", "item_id", "timestamp", "rating"]), item_ids, unknown)
    keep = timelines.positions() >= history_len
    if period is not None:
        keep &= (timelines.timestamps >= period[0]) & (timelines.timestamps < period[1])
    if not keep.any():
        raise RaylibError(f"No user has more than history_len={history_len} interactions: no record to build.")
    return RecordRows(timelines, np.flatnonzero(keep), titles, history_len, like_threshold, domain)


Records = list[TallrecRecord] | RecordRows  # records as objects (a user's files, samples) or as columns

def _validate(raw: object, where: str) -> TallrecRecord:
    if not isinstance(raw, dict):
        raise RaylibError(f"{where}: a record must be a JSON object, got {type(raw).__name__}.")
    for field in REQUIRED_FIELDS:
        if field not in raw:
            raise RaylibError(f"{where}: the record has no {field!r} field (needs {', '.join(REQUIRED_FIELDS)}).")
        if not isinstance(raw[field], str):
            raise RaylibError(f"{where}: field {field!r} must be a string.")
    output = raw["output"].strip()
    if output not in TALLREC_ANSWERS:
        raise RaylibError(f"{where}: output is {raw['output']!r}; it must be {TALLREC_ANSWERS[0]!r} or "
                          f"{TALLREC_ANSWERS[1]!r}.")
    if not raw["input"].strip():
        raise RaylibError(f"{where}: the input is empty (no history and no question).")
    return TallrecRecord(raw["instruction"], raw["input"], output,
                         str(raw.get("user_id", "")), str(raw.get("item_id", "")))


def read_records(path: str | Path) -> list[TallrecRecord]:
    """Read and validate TALLRec records from .json (a list), .jsonl (one object a line) or .parquet."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RaylibError(f"Record file {path} does not exist.")
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as err:
            raise RaylibError(f"{path} is not a readable Parquet file: {err}") from None
        rows = table.to_pylist()
        wheres = [f"{path} row {i}" for i in range(len(rows))]
    else:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise RaylibError(f"Record file {path} is empty.")
        if path.suffix == ".jsonl":
            rows, wheres = [], []
            for no, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise RaylibError(f"{path}:{no}: malformed JSON ({err.msg}, column {err.colno}).") from None
                wheres.append(f"{path}:{no}")
        else:
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as err:
                raise RaylibError(f"{path}:{err.lineno}: malformed JSON ({err.msg}, column {err.colno}).") from None
            if not isinstance(rows, list):
                raise RaylibError(f"{path}: expected a JSON list of records (or use .jsonl, one per line).")
            wheres = [f"{path} record {i}" for i in range(len(rows))]
    if not rows:
        raise RaylibError(f"Record file {path} holds no records.")
    return [_validate(row, where) for row, where in zip(rows, wheres)]


def records_to_table(records: list[TallrecRecord]) -> pa.Table:
    return pa.Table.from_pylist([dataclasses.asdict(r) for r in records])


def records_from_table(table: pa.Table) -> list[TallrecRecord]:
    return [_validate(row, f"table row {i}") for i, row in enumerate(table.to_pylist())]


def write_records(records: list[TallrecRecord], path: str | Path) -> Path:
    """Write records as Parquet (.parquet) or JSON (.json, the TALLRec layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(records_to_table(records), path)
    else:
        path.write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=1))
    return path


def sample_records(records: Records, n: int, seed: int) -> Records:
    """A seeded random sample of n records (TALLRec's few-shot training sets: 16 / 64 / 256); n<=0: all.
    Records as columns (`RecordRows`) are sampled as columns, without making their text."""
    if n <= 0 or n >= len(records):
        return records[:] if isinstance(records, RecordRows) else list(records)
    return pick(records, np.sort(np.random.default_rng(seed).permutation(len(records))[:n]))


def pick(records: Records, index) -> Records:
    """The records at these positions, in this order (as columns where they are columns)."""
    if isinstance(records, RecordRows):
        return records[np.asarray(index, dtype=np.int64)]
    return [records[i] for i in index]


def labels_of(records: Records) -> np.ndarray:
    """Each record's label (1 = "Yes."), as an array."""
    return records.labels if isinstance(records, RecordRows) else np.array([r.label for r in records], dtype=np.int64)


def stratified_sample(records: Records, n: int, seed: int) -> Records:
    """Like `sample_records`, but keeping the label proportions with at least one record of each label (when
    both exist and n >= 2), so AUC is defined on a small validation sample; n<=0: all."""
    if n <= 0 or n >= len(records):
        return records[:] if isinstance(records, RecordRows) else list(records)
    labels = labels_of(records)
    by_label = [np.flatnonzero(labels == label) for label in (1, 0)]
    if not len(by_label[0]) or not len(by_label[1]):
        return sample_records(records, n, seed)
    n_pos = max(1, min(n - 1, round(n * len(by_label[0]) / len(records))))
    rng = np.random.default_rng(seed)
    index = [group[i] for group, k in zip(by_label, (n_pos, n - n_pos)) for i in rng.permutation(len(group))[:k]]
    return pick(records, sorted(index))


def user_groups(records: Records, counts: list[int], seed: int) -> np.ndarray:
    """Each record's group when the distinct users (sorted by id) are shuffled with `seed` and dealt out: the
    first `counts[0]` users to group 0, the next `counts[1]` to group 1, ..., every other user to group
    len(counts). Records as columns are grouped as columns."""
    if isinstance(records, RecordRows):
        present = np.unique(records.users)  # timeline users that have records
        names = records.timelines.user_ids[present]
        by_id = present[sorted(range(len(present)), key=names.__getitem__)]
        of_record = records.users
    else:
        by_id = np.array(sorted({r.user_id for r in records}), dtype=object)
        position = {user: k for k, user in enumerate(by_id)}
        of_record = np.array([position[r.user_id] for r in records], dtype=np.int64)
        by_id = np.arange(len(by_id))
    order = np.random.default_rng(seed).permutation(len(by_id))
    group_of_user = np.full(int(by_id.max()) + 1 if len(by_id) else 0, len(counts), dtype=np.int64)
    start = 0
    for group, count in enumerate(counts):
        group_of_user[by_id[order[start:start + count]]] = group
        start += count
    return group_of_user[of_record]


def split_by_user(records: Records, valid_fraction: float, test_fraction: float,
                  seed: int) -> tuple[Records, Records, Records]:
    """Split records into train / valid / test by user, so no user's windows leak across splits."""
    users = len(np.unique(records.users)) if isinstance(records, RecordRows) else len({r.user_id for r in records})
    n_test, n_valid = int(round(users * test_fraction)), int(round(users * valid_fraction))
    group = user_groups(records, [n_test, n_valid], seed)
    return tuple(pick(records, np.flatnonzero(group == g)) for g in (2, 1, 0))
