"""TALLRec records (TALLRec Sec. 4.1): `{"instruction", "input", "output"}` with output "Yes." or "No.".

Built from interactions with a per-user chronological sliding window (the 10 items rated just before the
target form the history; rating > 3 = like), or read from the JSON / JSONL / Parquet files a user brings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylib import RaylibError
from raylib.prompts import TALLREC_ANSWERS, tallrec_input, tallrec_instruction

REQUIRED_FIELDS = ("instruction", "input", "output")
# Part of every records cache key: bump it whenever building records changes (loaders, builder, prompt text),
# so caches written by an older build are never served again.
RECORDS_BUILDER_VERSION = 2


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


def build_tallrec_records(interactions: pa.Table, items: pa.Table, history_len: int = 10,
                          like_threshold: float = 3.0, domain: str = "movie",
                          period: tuple[int, int] | None = None) -> list[TallrecRecord]:
    """One record per (user, position >= history_len): the previous `history_len` rated items, split by
    like/dislike, and the question about the item at that position. Users are sorted by id, interactions
    by timestamp (ties keep file order, as a stable sort does). `period` = [start, end): only targets rated
    then (a split of the one time split; the history may reach back before it)."""
    if history_len < 1:
        raise RaylibError(f"history_len must be at least 1, got {history_len}.")
    titles = dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()))
    order = pc.sort_indices(interactions, sort_keys=[("timestamp", "ascending")])  # stable
    table = interactions.take(order)
    per_user: dict[str, list[tuple[str, float]]] = {}
    in_period: dict[str, list[bool]] = {}
    start, end = period or (-2**63, 2**63 - 1)
    for user, item, rating, stamp in zip(*(table.column(c).to_pylist()
                                           for c in ("user_id", "item_id", "rating", "timestamp"))):
        if item not in titles:
            raise RaylibError(f"Interaction of user {user} names item {item!r}, which is not in the item file.")
        per_user.setdefault(user, []).append((item, rating))
        in_period.setdefault(user, []).append(start <= stamp < end)
    instruction = tallrec_instruction(domain)
    records = []
    for user in sorted(per_user, key=lambda u: (len(u), u)):
        seq = per_user[user]
        for pos in range(history_len, len(seq)):
            if not in_period[user][pos]:
                continue
            history = seq[pos - history_len:pos]
            target, rating = seq[pos]
            liked = [titles[i] for i, r in history if r > like_threshold]
            disliked = [titles[i] for i, r in history if r <= like_threshold]
            records.append(TallrecRecord(
                instruction=instruction,
                input=tallrec_input(liked, disliked, titles[target], domain),
                output=TALLREC_ANSWERS[0] if rating > like_threshold else TALLREC_ANSWERS[1],
                user_id=user, item_id=target,
            ))
    if not records:
        raise RaylibError(f"No user has more than history_len={history_len} interactions: no record to build.")
    return records


def records_cache_key(files: list[Path], history_len: int, like_threshold: float,
                      version: int = RECORDS_BUILDER_VERSION) -> str:
    """Key of the records built from `files`: their names and bytes (sha1; ~10 ms for ML-100K), the builder
    version and the builder settings."""
    digest = hashlib.sha1(json.dumps([version, history_len, like_threshold]).encode())
    for path in files:
        digest.update(f"\0{Path(path).name}\0".encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


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


def sample_records(records: list[TallrecRecord], n: int, seed: int) -> list[TallrecRecord]:
    """A seeded random sample of n records (TALLRec's few-shot training sets: 16 / 64 / 256); n<=0: all."""
    if n <= 0 or n >= len(records):
        return list(records)
    index = np.random.default_rng(seed).permutation(len(records))[:n]
    return [records[i] for i in sorted(index)]


def stratified_sample(records: list[TallrecRecord], n: int, seed: int) -> list[TallrecRecord]:
    """Like `sample_records`, but keeping the label proportions with at least one record of each label (when
    both exist and n >= 2), so AUC is defined on a small validation sample; n<=0: all."""
    if n <= 0 or n >= len(records):
        return list(records)
    by_label = [[i for i, r in enumerate(records) if r.label == label] for label in (1, 0)]
    if not by_label[0] or not by_label[1]:
        return sample_records(records, n, seed)
    n_pos = max(1, min(n - 1, round(n * len(by_label[0]) / len(records))))
    rng = np.random.default_rng(seed)
    index = [group[i] for group, k in zip(by_label, (n_pos, n - n_pos)) for i in rng.permutation(len(group))[:k]]
    return [records[i] for i in sorted(index)]


def split_by_user(records: list[TallrecRecord], valid_fraction: float, test_fraction: float,
                  seed: int) -> tuple[list[TallrecRecord], list[TallrecRecord], list[TallrecRecord]]:
    """Split records into train / valid / test by user, so no user's windows leak across splits."""
    users = sorted({r.user_id for r in records})
    order = np.random.default_rng(seed).permutation(len(users))
    n_test = int(round(len(users) * test_fraction))
    n_valid = int(round(len(users) * valid_fraction))
    test_users = {users[i] for i in order[:n_test]}
    valid_users = {users[i] for i in order[n_test:n_test + n_valid]}
    train = [r for r in records if r.user_id not in test_users | valid_users]
    valid = [r for r in records if r.user_id in valid_users]
    test = [r for r in records if r.user_id in test_users]
    return train, valid, test
