"""Click-through-rate samples (CoReLLa Sec. 4.1): one row per rating, label = liked, features of user, item and
the user's recent history, in Arrow tables; vocabularies built on the training split only.

A CTR table has the columns of `CTR_COLUMNS` (a user's own Parquet/CSV table needs the same ones):
  user_id, item_id, age, gender, occupation, zip, year   categorical fields (strings)
  genres                                               the item's genres (list of strings, multi-hot)
  title                                                the item's title, as the LLM reads it
  history_items, history_titles, history_ratings       the user's most recent rated items before this sample,
                                                       oldest first (ids pooled by the CRM, titles for the LLM)
  label (0/1), timestamp (int)
Samples built from a dataset are columns (`CtrColumns`): row numbers into the users' timelines
(`raylib.data.timelines`) with user fields kept per user and item fields per item, so a split of millions of
ratings costs a few integers a sample; the strings above are made only for the rows read as text, and the CRM's
field indices are written to Parquet chunk by chunk (`write_encoded`). A table a user brings is `CtrTable`, with
the same methods. MovieLens samples are built in global time order and split by timestamp at `data.time_split`
(`split_by_time`).

Vocabularies (`CtrVocab`): per field, the training split's values map to 2, 3, ...; any value the training
split never had (a new user, item, zip, ...) maps to 1, the out-of-vocabulary bucket (never a crash); 0 is
padding of the multi-valued fields. A vocabulary's hash ties a CRM, its routing config and the data together.
Encoded, a sample holds indices only (`fields`, `genres`, `history`, `history_rating_codes`: each history rating's
index in the `rating` vocabulary); `history_ratings` always means the ratings themselves, as a request sends them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylib import RaylibError
from raylib.data.timelines import TimelineRows, Timelines, build_timelines, list_offsets, ranges, unique_items

SINGLE_FIELDS = ("user_id", "item_id", "age", "gender", "occupation", "zip", "year")
LIST_FIELDS = ("genres", "history_items", "history_titles", "history_ratings")
CTR_COLUMNS = SINGLE_FIELDS + ("genres", "title", "history_items", "history_titles", "history_ratings", "label",
                               "timestamp")
PAD, OOV = 0, 1
# MovieLens-1M's age groups (its users.dat codes); ML-100K's ages in years fall into the same buckets.
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def age_bucket(age: str) -> str:
    try:
        years = int(float(age))
    except (ValueError, OverflowError):  # not a number, or inf / nan: no age group
        return ""
    return str(max(b for b in AGE_BUCKETS if b <= max(years, 1)))


@dataclasses.dataclass(frozen=True)
class FeatureRules:
    """How a user's raw fields become the CRM's features: the ONE function for training tables and for requests
    (`raylib.serving` applies it to every `/predict` sample). MovieLens tables bucket the age (`AGE_BUCKETS`) and
    keep the zip code's first `zip_prefix` characters (its region); a user's own CTR tables are taken as given."""
    age_buckets: bool = False
    zip_prefix: int | None = None

    @classmethod
    def for_data(cls, cfg) -> "FeatureRules":
        """The rules `load_ctr_data` applies for this `CtrDataConfig`."""
        return cls(age_buckets=True, zip_prefix=cfg.zip_prefix) if cfg.source == "movielens" else cls()

    def age(self, raw: str) -> str:
        return age_bucket(raw) if self.age_buckets else raw

    def zip(self, raw: str) -> str:
        return raw[:self.zip_prefix] if self.zip_prefix else raw

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """A raw row (a request sample) with the features as training made them."""
        return {**row, "age": self.age(str(row.get("age", ""))), "zip": self.zip(str(row.get("zip", "")))}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def release_year(title: str) -> str:
    match = _YEAR.search(title)
    return match.group(1) if match else ""


class CtrColumns(TimelineRows):
    """CTR samples of a dataset as columns: the timeline row of each sample (`at`, in global time order, ties in
    file order; `raylib.data.timelines`), its history the `history_len` rows before it of the same user. User
    fields are kept per user, item fields per item, so a sample costs a few integers; its strings (ids, titles,
    history) are made only for the rows `table` or `records(..., with_text=True)` is asked for."""

    def __init__(self, timelines: Timelines, at: np.ndarray, labels: np.ndarray, user_fields: dict[str, np.ndarray],
                 item_fields: dict[str, np.ndarray], genres: list[list[str]], history_len: int):
        super().__init__(timelines, at)
        self.history_len, self.flat_labels = history_len, labels  # labels per timeline row
        self.user_fields, self.item_fields, self.genres = user_fields, item_fields, genres
        self.codes_by_vocab: dict[str, dict] = {}  # shared by every subset: `codes`

    def subset(self, at: np.ndarray) -> "CtrColumns":
        subset = CtrColumns(self.timelines, at, self.flat_labels, self.user_fields, self.item_fields, self.genres,
                            self.history_len)
        subset.codes_by_vocab = self.codes_by_vocab
        return subset

    def row(self, at: int) -> dict[str, Any]:
        return self.subset(np.array([at])).table().to_pylist()[0]

    def settings(self) -> tuple:
        return (id(self.flat_labels), self.history_len)

    def take(self, rows) -> "CtrColumns":
        return self[rows if isinstance(rows, slice) else np.asarray(rows)]

    def slice(self, start: int, stop: int | None = None) -> "CtrColumns":
        return self[start:stop]

    @property
    def num_rows(self) -> int:
        return len(self.at)

    @property
    def labels(self) -> np.ndarray:
        return self.flat_labels[self.at].astype(np.int64)

    def user_ids(self) -> np.ndarray:
        return self.timelines.user_ids[self.users]

    def item_ids(self) -> np.ndarray:
        return self.timelines.item_ids[self.items]

    def history_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(every history's timeline rows, concatenated; each history's length)."""
        return ranges(self.timelines.history_starts(self.at, self.history_len), self.at)

    def table(self) -> pa.Table:
        """These samples as the string CTR table (`CTR_COLUMNS`): for the rows a job reads as text."""
        t, users, items = self.timelines, self.users, self.items
        rows, lengths = self.history_rows()
        titles = self.item_fields["title"]
        return typed_ctr_table({
            "user_id": self.user_ids().tolist(), "item_id": self.item_ids().tolist(),
            **{f: self.user_fields[f][users].tolist() for f in ("age", "gender", "occupation", "zip")},
            "year": self.item_fields["year"][items].tolist(), "genres": [self.genres[i] for i in items],
            "title": titles[items].tolist(),
            "history_items": _lists(t.item_ids[t.items[rows]], lengths),
            "history_titles": _lists(titles[t.items[rows]], lengths),
            "history_ratings": _lists(t.ratings[rows], lengths),
            "label": self.labels.tolist(), "timestamp": self.timestamps.tolist()})

    def codes(self, vocab: "CtrVocab") -> dict[str, Any]:
        """The vocabulary's index of every user's and item's fields and of every timeline row's rating, made once
        per vocabulary (per user and per item, not per sample) and shared by every subset of these samples."""
        key = vocab.fingerprint()
        if key not in self.codes_by_vocab:
            f, t = vocab.fields, self.timelines
            per = lambda field, values: np.array([f[field].get(v, OOV) for v in values], dtype=np.int32)  # noqa: E731
            codes = {"user_id": per("user_id", t.user_ids), "item_id": per("item_id", t.item_ids),
                     "year": per("year", self.item_fields["year"])}
            codes.update({field: per(field, self.user_fields[field]) for field in ("age", "gender", "occupation",
                                                                                   "zip")})
            genre_lengths = np.array([len(g) for g in self.genres], dtype=np.int64)
            codes["genres"] = (per("genres", [g for gs in self.genres for g in gs]),
                               np.concatenate([[0], np.cumsum(genre_lengths)]))
            distinct, which = np.unique(t.ratings, return_inverse=True)
            codes["rating"] = per("rating", [_rating_key(r) for r in distinct])[which.ravel()]
            self.codes_by_vocab.clear()  # in place: every subset shares this dict (one vocabulary kept)
            self.codes_by_vocab[key] = codes
        return self.codes_by_vocab[key]

    def vocab_values(self) -> dict[str, list[str]]:
        """Per vocabulary field, the distinct values these samples show (`CtrVocab.build`)."""
        users, items = np.unique(self.users), np.unique(self.items)
        values = {"user_id": self.timelines.user_ids[users].tolist(),
                  "item_id": self.timelines.item_ids[items].tolist()}
        values.update({f: self.user_fields[f][users].tolist() for f in ("age", "gender", "occupation", "zip")})
        values["year"] = self.item_fields["year"][items].tolist()
        values["genres"] = [g for i in items for g in self.genres[i]]
        n = len(self.timelines) + 1  # rows in some sample's history: +1 where a history starts, -1 where it ends
        starts = self.timelines.history_starts(self.at, self.history_len)
        in_history = np.cumsum(np.bincount(starts, minlength=n) - np.bincount(self.at, minlength=n))[:-1] > 0
        values["rating"] = [_rating_key(r) for r in np.unique(self.timelines.ratings[in_history])]
        return values

    def encoded(self, vocab: "CtrVocab") -> pa.Table:
        """Field indices as the CRM reads them (the columns of `CtrVocab.records`), made with NumPy."""
        codes = self.codes(vocab)
        users, items = self.users, self.items
        fields = np.stack([codes["user_id"][users], codes["item_id"][items], codes["age"][users],
                           codes["gender"][users], codes["occupation"][users], codes["zip"][users],
                           codes["year"][items]], axis=1).astype(np.int32)
        genre_values, genre_offsets = codes["genres"]
        index, lengths = ranges(genre_offsets[items], genre_offsets[items + 1])
        rows, history_lengths = self.history_rows()
        history_offsets = pa.array(list_offsets(history_lengths))
        return pa.table({
            "fields": pa.FixedSizeListArray.from_arrays(pa.array(fields.ravel()), len(SINGLE_FIELDS)),
            "genres": pa.ListArray.from_arrays(pa.array(list_offsets(lengths)), pa.array(genre_values[index])),
            "history": pa.ListArray.from_arrays(history_offsets,
                                                pa.array(codes["item_id"][self.timelines.items[rows]])),
            "history_rating_codes": pa.ListArray.from_arrays(history_offsets, pa.array(codes["rating"][rows])),
            "label": pa.array(self.labels)})

    def texts(self) -> dict[str, list]:
        """What the LLM reads of each sample: its title, its history's titles and ratings."""
        t, (rows, lengths) = self.timelines, self.history_rows()
        titles = self.item_fields["title"]
        return {"title": titles[self.items].tolist(), "history_titles": _lists(titles[t.items[rows]], lengths),
                "history_ratings": _lists(t.ratings[rows], lengths)}


def _lists(values: np.ndarray, lengths: np.ndarray) -> list[list]:
    """`values` cut into consecutive Python lists of these lengths."""
    ends = np.cumsum(lengths)
    return [values[end - n:end].tolist() for end, n in zip(ends, lengths)]


class CtrTable:
    """CTR samples a user brings (or a request holds) as the string CTR table: the same interface as
    `CtrColumns`, each method over the table's own columns."""

    def __init__(self, table: pa.Table):
        self.data = table

    def take(self, rows) -> "CtrTable":
        rows = np.arange(self.num_rows)[rows] if isinstance(rows, slice) else np.asarray(rows)
        return CtrTable(self.data.take(pa.array(rows, pa.int64())))

    def slice(self, start: int, stop: int | None = None) -> "CtrTable":
        return self.take(slice(start, stop))

    @property
    def num_rows(self) -> int:
        return self.data.num_rows

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.data.column("label").to_numpy(), dtype=np.int64)

    @property
    def timestamps(self) -> np.ndarray:
        return np.asarray(self.data.column("timestamp").to_numpy(), dtype=np.int64)

    def user_ids(self) -> np.ndarray:
        return np.array(self.data.column("user_id").to_pylist(), dtype=object)

    def item_ids(self) -> np.ndarray:
        return np.array(self.data.column("item_id").to_pylist(), dtype=object)

    def table(self) -> pa.Table:
        return self.data

    def vocab_values(self) -> dict[str, list[str]]:
        values = {f: self.data.column(f).to_pylist() for f in SINGLE_FIELDS}
        values["genres"] = [g for gs in self.data.column("genres").to_pylist() for g in gs]
        values["rating"] = [_rating_key(r) for rs in self.data.column("history_ratings").to_pylist() for r in rs]
        return values

    def encoded(self, vocab: "CtrVocab") -> pa.Table:
        """Field indices as the CRM reads them, by Arrow lookups over the table's columns (no Python per row)."""
        t = self.data
        fields = np.stack([vocab.lookup(f, t.column(f)) for f in SINGLE_FIELDS], axis=1).astype(np.int32)
        ratings = t.column("history_ratings").combine_chunks()
        distinct, which = np.unique(np.asarray(ratings.flatten().to_numpy(zero_copy_only=False)),
                                    return_inverse=True)
        rating_codes = vocab.lookup("rating", pa.array([_rating_key(r) for r in distinct], pa.string()))

        def listed(column: str, values: np.ndarray) -> pa.ListArray:
            lists = t.column(column).combine_chunks()
            return pa.ListArray.from_arrays(lists.offsets, pa.array(values, pa.int32()))

        return pa.table({
            "fields": pa.FixedSizeListArray.from_arrays(pa.array(fields.ravel()), len(SINGLE_FIELDS)),
            "genres": listed("genres", vocab.lookup("genres", t.column("genres").combine_chunks().flatten())),
            "history": listed("history_items", vocab.lookup("item_id",
                                                            t.column("history_items").combine_chunks().flatten())),
            "history_rating_codes": listed("history_ratings", rating_codes[which.ravel()]),
            "label": t.column("label").cast(pa.int64())})

    def texts(self) -> dict[str, list]:
        return {"title": self.data.column("title").to_pylist(),
                "history_titles": self.data.column("history_titles").to_pylist(),
                "history_ratings": self.data.column("history_ratings").to_pylist()}


CtrSamples = CtrColumns | CtrTable
CHUNK_SAMPLES = 1 << 20  # samples per Parquet row group when a split is written encoded


def write_encoded(samples: CtrSamples, vocab: "CtrVocab", path: Path) -> Path:
    """The samples' field indices (`encoded`) to one Parquet file, a chunk of samples at a time (what the CRM
    trains on: a large split never sits in memory as one table, let alone as Python objects)."""
    from raylib.data.tables import write_batches
    from raylib.data.timelines import chunks

    return write_batches(path, (samples.slice(a, b).encoded(vocab) for a, b in chunks(samples.num_rows,
                                                                                       CHUNK_SAMPLES)))


def ctr_samples_of(ml, like_threshold: float = 4.0, history_len: int = 10, zip_prefix: int = 2) -> CtrColumns:
    """Every rating becomes a sample in global time order (ties keep file order); its history is the user's
    `history_len` most recent ratings before it. Age and zip follow `FeatureRules`. `ml` is any dataset
    (`raylib.data.dataset.Dataset` too): a `label` column is the label where there is one, else rating >=
    `like_threshold`; absent genres, titles or user fields are empty (the CRM still trains)."""
    from raylib.data.sequences import readable_title

    rules = FeatureRules(age_buckets=True, zip_prefix=zip_prefix)
    inter, items = ml.interactions, ml.items
    item_ids, last_row = unique_items(items.column("item_id"))
    raw_titles = items.column("title").to_pylist() if "title" in items.column_names else [""] * items.num_rows
    titles = np.array([readable_title(raw_titles[row]) for row in last_row], dtype=object)
    genres = (items.column("genres").to_pylist() if "genres" in items.column_names else [[]] * items.num_rows)
    rating = inter.column("rating" if "rating" in inter.column_names else "label").cast(pa.float64())

    def unknown(row: int) -> str:
        return (f"{ml.source}: rating {row + 1} names item {inter.column('item_id')[row].as_py()!r}, which is not "
                "in the item file.")

    timelines = build_timelines(pa.table({"user_id": inter.column("user_id"), "item_id": inter.column("item_id"),
                                          "timestamp": inter.column("timestamp"), "rating": rating}),
                                item_ids, unknown)
    if "label" in inter.column_names:
        labels = np.asarray(inter.column("label").to_numpy(), dtype=np.int64)[timelines.rows]
    else:
        labels = (timelines.ratings >= like_threshold).astype(np.int64)
    at = np.lexsort((timelines.rows, timelines.timestamps))  # global time order, ties in file order
    return CtrColumns(timelines, at, labels, _user_fields(ml.users, timelines.user_ids, rules),
                      {"title": titles, "year": np.array([release_year(t) for t in titles], dtype=object)},
                      [list(genres[row]) for row in last_row], history_len if history_len > 0 else 0)


def _user_fields(users: pa.Table, user_ids: np.ndarray, rules: FeatureRules) -> dict[str, np.ndarray]:
    """age, gender, occupation, zip of each timeline user, as the rules make them ("" where unknown)."""
    row_of = {u: row for row, u in enumerate(users.column("user_id").to_pylist())} if users.num_rows else {}
    raw = {c: users.column(c).to_pylist() if c in users.column_names else None
           for c in ("age", "gender", "occupation", "zip_code")}
    rows = [row_of.get(u) for u in user_ids]
    value = lambda c, row: raw[c][row] if row is not None and raw[c] else ""  # noqa: E731
    return {"age": np.array([rules.age(value("age", r)) for r in rows], dtype=object),
            "gender": np.array([value("gender", r) for r in rows], dtype=object),
            "occupation": np.array([value("occupation", r) for r in rows], dtype=object),
            "zip": np.array([rules.zip(value("zip_code", r)) for r in rows], dtype=object)}


def ctr_table_of(ml, like_threshold: float = 4.0, history_len: int = 10, zip_prefix: int = 2) -> pa.Table:
    """Every sample of `ctr_samples_of` as the string CTR table (small datasets; large ones stay columns)."""
    return ctr_samples_of(ml, like_threshold, history_len, zip_prefix).table()


def typed_ctr_table(rows: dict[str, list]) -> pa.Table:
    types = {c: pa.string() for c in SINGLE_FIELDS + ("title",)}
    types.update({"genres": pa.list_(pa.string()), "history_items": pa.list_(pa.string()),
                  "history_titles": pa.list_(pa.string()), "history_ratings": pa.list_(pa.float64()),
                  "label": pa.int64(), "timestamp": pa.int64()})
    return pa.table({c: pa.array(rows[c], types[c]) for c in CTR_COLUMNS})


def split_by_time(samples: CtrSamples, fractions: tuple[float, float, float]
                  ) -> tuple[CtrSamples, CtrSamples, CtrSamples]:
    """Train / valid / test by global timestamp: the first `fractions[0]` of samples in time, the next
    `fractions[1]`, the rest."""
    order = np.argsort(samples.timestamps, kind="stable")
    n = len(order)
    cut1, cut2 = int(round(n * fractions[0])), int(round(n * (fractions[0] + fractions[1])))
    return tuple(samples.take(order[a:b]) for a, b in ((0, cut1), (cut1, cut2), (cut2, n)))


def split_at(samples: CtrSamples, cutoffs: tuple[int, int]) -> tuple[CtrSamples, CtrSamples, CtrSamples]:
    """Train / valid / test by the periods `raylib.data.dataset.time_cutoffs` starts (the one split)."""
    stamps = samples.timestamps
    return (samples.take(np.flatnonzero(stamps < cutoffs[0])),
            samples.take(np.flatnonzero((stamps >= cutoffs[0]) & (stamps < cutoffs[1]))),
            samples.take(np.flatnonzero(stamps >= cutoffs[1])))


def sample_rows(samples, n: int, seed: int):
    """A fixed seeded subset of `n` rows in their original order (all rows when n is 0 or too large); samples or
    a string CTR table."""
    if n <= 0 or n >= samples.num_rows:
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(samples.num_rows, n, replace=False))
    return samples.take(pa.array(keep)) if isinstance(samples, pa.Table) else samples.take(keep)


def check_ctr_table(table: pa.Table, where: str) -> pa.Table:
    """A clear error naming the column or the row for anything the models cannot take."""
    missing = [c for c in CTR_COLUMNS if c not in table.column_names]
    if missing:
        raise RaylibError(f"{where} lacks column(s) {missing}; a CTR table has {list(CTR_COLUMNS)}.")
    if table.num_rows == 0:
        raise RaylibError(f"{where} holds no samples.")
    table = table.select(list(CTR_COLUMNS))
    for column in CTR_COLUMNS:
        nulls = table.column(column).null_count
        if nulls:
            row = table.column(column).to_pylist().index(None)
            raise RaylibError(f"{where} row {row}: {column} is missing (null/NaN).")
    labels = table.column("label")
    wrong = np.flatnonzero(~np.asarray(pc.is_in(labels, value_set=pa.array([0, 1], labels.type)).to_numpy(
        zero_copy_only=False)))
    if len(wrong):
        raise RaylibError(f"{where} row {wrong[0]}: label must be 0 or 1 (got {labels[int(wrong[0])].as_py()!r}).")
    lengths = [np.asarray(pc.list_value_length(table.column(c)).to_numpy(zero_copy_only=False))
               for c in ("history_items", "history_titles", "history_ratings")]
    differ = np.flatnonzero((lengths[0] != lengths[1]) | (lengths[0] != lengths[2]))
    if len(differ):
        row = int(differ[0])
        raise RaylibError(f"{where} row {row}: history_items, history_titles and history_ratings differ in "
                          f"length ({lengths[0][row]}, {lengths[1][row]}, {lengths[2][row]}).")
    ratings = table.column("history_ratings").combine_chunks()
    values = ratings.flatten()
    bad = np.flatnonzero(~np.asarray(pc.is_finite(values).fill_null(False).to_numpy(zero_copy_only=False)))
    if len(bad):
        row = int(np.asarray(pc.list_parent_indices(ratings).to_numpy())[bad[0]])
        raise RaylibError(f"{where} row {row}: history_ratings holds NaN or inf ({ratings[row].as_py()}).")
    return table


def read_ctr_table(path: str | Path) -> pa.Table:
    """A user's CTR table (Parquet; or CSV with list columns written as JSON arrays)."""
    from raylib.data.tables import read_table

    path = Path(path).expanduser()
    table = read_table(path, string_columns=SINGLE_FIELDS + ("title",) + LIST_FIELDS)
    if path.suffix.lower() != ".parquet":
        table = _lists_from_json(table, path)
    return check_ctr_table(table, str(path))


def _lists_from_json(table: pa.Table, path: Path) -> pa.Table:
    rows = {c: table.column(c).to_pylist() for c in table.column_names}
    for column in LIST_FIELDS:
        if column not in rows:
            continue
        parsed = []
        for row, text in enumerate(rows[column]):
            try:
                value = json.loads(text) if text not in (None, "") else []
            except json.JSONDecodeError:
                raise RaylibError(f"{path} row {row}: {column} must be a JSON list (got {text!r}).") from None
            if not isinstance(value, list):
                raise RaylibError(f"{path} row {row}: {column} must be a JSON list (got {text!r}).")
            if column == "history_ratings":  # a missing rating becomes NaN, which the table check names
                parsed.append([float("nan") if v is None else float(v) for v in value])
            else:
                parsed.append([str(v) for v in value])
        rows[column] = parsed
    for column in SINGLE_FIELDS + ("title",):
        if column in rows:
            rows[column] = [v if v is not None else "" for v in rows[column]]
    missing = [c for c in CTR_COLUMNS if c not in rows]
    if missing:
        raise RaylibError(f"{path} lacks column(s) {missing}; a CTR table has {list(CTR_COLUMNS)}.")
    return typed_ctr_table(rows)


def _rating_key(rating: float) -> str:
    return f"{rating:g}"


@dataclasses.dataclass
class CtrVocab:
    """Per-field value -> index maps (2, 3, ... for the training split's values; 1 = OOV, 0 = padding). Besides
    the columns' fields, "rating" indexes the history's rating values (the CRM pools item + rating embeddings).
    `features`: the rules that made the fields (saved beside them, outside the hash), for requests."""
    fields: dict[str, dict[str, int]]
    features: FeatureRules = dataclasses.field(default_factory=FeatureRules)
    _hash: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, train: "CtrSamples | pa.Table", features: FeatureRules | None = None) -> "CtrVocab":
        """From the training split's samples (or a string CTR table)."""
        values = (CtrTable(train) if isinstance(train, pa.Table) else train).vocab_values()
        fields = {field: {v: i + 2 for i, v in enumerate(sorted(set(values[field])))}
                  for field in SINGLE_FIELDS + ("genres", "rating")}
        return cls(fields, features or FeatureRules())

    @property
    def rating_range(self) -> tuple[float, float] | None:
        """The smallest and largest history rating training saw (None: no history ratings)."""
        values = [float(v) for v in self.fields.get("rating", {})]
        return (min(values), max(values)) if values else None

    @property
    def sizes(self) -> dict[str, int]:
        """Embedding rows per field (with the padding and OOV rows); history items share the item table."""
        return {field: len(values) + 2 for field, values in self.fields.items()}

    def fingerprint(self) -> str:
        """sha1 of the fields, hashed once: a vocabulary is never changed after it is built or loaded, and a large
        one takes seconds to hash."""
        if self._hash is None:
            self._hash = hashlib.sha1(json.dumps(self.fields, sort_keys=True).encode()).hexdigest()
        return self._hash

    def records(self, table: "CtrSamples | pa.Table", with_text: bool = False) -> list[dict[str, Any]]:
        """Rows -> plain-dict samples: field indices (OOV = 1), label, and for the LLM the texts. For the rows a
        job reads one by one (samples, requests); a whole split goes to the CRM as `write_encoded` Parquet."""
        samples = CtrTable(table) if isinstance(table, pa.Table) else table
        out = samples.encoded(self).to_pylist()
        if with_text:
            texts = samples.texts()
            for k, record in enumerate(out):
                record.update({name: values[k] for name, values in texts.items()})
        return out

    def lookup(self, field: str, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Each value's index in `field`'s vocabulary (OOV for a value training never had), by one Arrow lookup."""
        index = self.fields[field]
        keys, codes = pa.array(list(index), pa.string()), np.fromiter(index.values(), np.int32, len(index))
        position = pc.index_in(values.cast(pa.string()), value_set=keys)
        found = np.asarray(position.fill_null(-1).to_numpy(zero_copy_only=False)).astype(np.int64)
        return np.where(found >= 0, codes[np.maximum(found, 0)] if len(codes) else OOV, OOV).astype(np.int32)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"fields": self.fields, "hash": self.fingerprint(),
                                    "features": self.features.as_dict()}))

    @classmethod
    def load(cls, path: Path) -> "CtrVocab":
        saved = json.loads(Path(path).read_text())
        vocab = cls(saved["fields"], FeatureRules(**saved.get("features", {})))
        if saved.get("hash") != vocab.fingerprint():
            raise RaylibError(f"Vocabulary {path} does not match its own hash: the file was changed or is damaged.")
        return vocab


@dataclasses.dataclass
class CtrData:
    train: CtrSamples
    valid: CtrSamples
    test: CtrSamples
    source: str
    features: FeatureRules = dataclasses.field(default_factory=FeatureRules)


def load_ctr_data(cfg) -> CtrData:
    """The three splits from a dataset (`data.dataset`, cut at the one time split every method shares), from
    MovieLens (built and time-split here) or from the user's three tables."""
    if cfg.dataset:
        from raylib.data.dataset import load_dataset, time_cutoffs

        dataset = load_dataset(cfg.dataset)
        if "rating" not in dataset.interactions.column_names:
            dataset.require("interactions", ("label",), "CoReLLa (a like label, or a rating to threshold)")
        samples = ctr_samples_of(dataset, cfg.like_threshold, cfg.history_len, cfg.zip_prefix)
        train, valid, test = split_at(samples, time_cutoffs(dataset.interactions.column("timestamp").to_numpy(),
                                                          tuple(cfg.time_split)))
        source = dataset.source
    elif cfg.source == "movielens":
        from raylib.data.movielens import load_movielens

        ml = load_movielens(cfg.movielens_dir)
        samples = ctr_samples_of(ml, cfg.like_threshold, cfg.history_len, cfg.zip_prefix)
        train, valid, test = split_by_time(samples, tuple(cfg.time_split))
        source = ml.source
    else:
        train, valid, test = (CtrTable(read_ctr_table(p)) for p in (cfg.train_file, cfg.valid_file, cfg.test_file))
        source = str(cfg.train_file)
    for name, split in (("training", train), ("validation", valid), ("test", test)):
        if split.num_rows == 0:
            raise RaylibError(f"The {name} split holds no samples.")
        if len(np.unique(split.labels)) < 2:
            raise RaylibError(f"The {name} split has only one label: AUC needs likes and dislikes.")
    return CtrData(train, valid, test, source, FeatureRules.for_data(cfg))
