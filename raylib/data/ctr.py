"""Click-through-rate samples (CoReLLa Sec. 4.1): one row per rating, label = liked, features of user, item and
the user's recent history, in Arrow tables; vocabularies built on the training split only.

A CTR table has the columns of `CTR_COLUMNS` (a user's own Parquet/CSV table needs the same ones):
  user_id, item_id, age, gender, occupation, zip, year   categorical fields (strings)
  genres                                               the item's genres (list of strings, multi-hot)
  title                                                the item's title, as the LLM reads it
  history_items, history_titles, history_ratings       the user's most recent rated items before this sample,
                                                       oldest first (ids pooled by the CRM, titles for the LLM)
  label (0/1), timestamp (int)
MovieLens tables are built in global time order and split 8:1:1 by timestamp (`split_by_time`).

Vocabularies (`CtrVocab`): per field, the training split's values map to 2, 3, ...; any value the training
split never had (a new user, item, zip, ...) maps to 1, the out-of-vocabulary bucket (never a crash); 0 is
padding of the multi-valued fields. A vocabulary's hash ties a CRM, its routing config and the data together.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raylib import RaylibError

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
    except ValueError:
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


def ctr_table_of(ml, like_threshold: float = 4.0, history_len: int = 10, zip_prefix: int = 2) -> pa.Table:
    """Every rating becomes a sample in global time order (ties keep file order); its history is the user's
    `history_len` most recent ratings before it. Age and zip follow `FeatureRules`. `ml` is any dataset
    (`raylib.data.dataset.Dataset` too): a `label` column is the label where there is one, else rating >=
    `like_threshold`; absent genres, titles or user fields are empty (the CRM still trains)."""
    rules = FeatureRules(age_buckets=True, zip_prefix=zip_prefix)
    from raylib.data.sequences import readable_title

    inter = ml.interactions
    order = np.argsort(np.asarray(inter.column("timestamp")), kind="stable")
    users = {u: row for row, u in enumerate(ml.users.column("user_id").to_pylist())} if ml.users.num_rows else {}
    user_cols = {c: ml.users.column(c).to_pylist() if c in ml.users.column_names else [] for c in
                 ("age", "gender", "occupation", "zip_code")}
    items = {i: row for row, i in enumerate(ml.items.column("item_id").to_pylist())}
    n_items = ml.items.num_rows
    titles = ([readable_title(t) for t in ml.items.column("title").to_pylist()]
              if "title" in ml.items.column_names else [""] * n_items)
    genres = ml.items.column("genres").to_pylist() if "genres" in ml.items.column_names else [[]] * n_items
    uid, iid, stamp = (inter.column(c).to_pylist() for c in ("user_id", "item_id", "timestamp"))
    rating = inter.column("rating" if "rating" in inter.column_names else "label").to_pylist()
    labels = (inter.column("label").to_pylist() if "label" in inter.column_names
              else [int(r >= like_threshold) for r in rating])
    recent: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=history_len))
    rows: dict[str, list] = {c: [] for c in CTR_COLUMNS}
    for k in order:
        u, i = uid[k], iid[k]
        if i not in items:
            raise RaylibError(f"{ml.source}: rating {k + 1} names item {i!r}, which is not in the item file.")
        urow, irow = users.get(u), items[i]
        user = {c: (user_cols[c][urow] if urow is not None and user_cols[c] else "") for c in user_cols}
        past = list(recent[u]) if history_len else []
        rows["user_id"].append(u)
        rows["item_id"].append(i)
        rows["age"].append(rules.age(user["age"]))
        rows["gender"].append(user["gender"])
        rows["occupation"].append(user["occupation"])
        rows["zip"].append(rules.zip(user["zip_code"]))
        rows["year"].append(release_year(titles[irow]))
        rows["genres"].append(genres[irow])
        rows["title"].append(titles[irow])
        rows["history_items"].append([p[0] for p in past])
        rows["history_titles"].append([titles[items[p[0]]] for p in past])
        rows["history_ratings"].append([p[1] for p in past])
        rows["label"].append(int(labels[k]))
        rows["timestamp"].append(stamp[k])
        if history_len:
            recent[u].append((i, float(rating[k])))
    return _typed(rows)


def _typed(rows: dict[str, list]) -> pa.Table:
    types = {c: pa.string() for c in SINGLE_FIELDS + ("title",)}
    types.update({"genres": pa.list_(pa.string()), "history_items": pa.list_(pa.string()),
                  "history_titles": pa.list_(pa.string()), "history_ratings": pa.list_(pa.float64()),
                  "label": pa.int64(), "timestamp": pa.int64()})
    return pa.table({c: pa.array(rows[c], types[c]) for c in CTR_COLUMNS})


def split_by_time(table: pa.Table, fractions=(0.8, 0.1, 0.1)) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Train / valid / test by global timestamp: the first 80% of samples in time, the next 10%, the last 10%."""
    order = np.argsort(np.asarray(table.column("timestamp")), kind="stable")
    n = len(order)
    cut1, cut2 = int(round(n * fractions[0])), int(round(n * (fractions[0] + fractions[1])))
    return tuple(table.take(pa.array(order[a:b])) for a, b in ((0, cut1), (cut1, cut2), (cut2, n)))


def split_at(table: pa.Table, cutoffs: tuple[int, int]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Train / valid / test by the periods `raylib.data.dataset.time_cutoffs` starts (the one split)."""
    stamps = table.column("timestamp")
    import pyarrow.compute as pc

    return (table.filter(pc.less(stamps, cutoffs[0])),
            table.filter(pc.and_(pc.greater_equal(stamps, cutoffs[0]), pc.less(stamps, cutoffs[1]))),
            table.filter(pc.greater_equal(stamps, cutoffs[1])))


def sample_rows(table: pa.Table, n: int, seed: int) -> pa.Table:
    """A fixed seeded subset of `n` rows in their original order (all rows when n is 0 or too large)."""
    if n <= 0 or n >= table.num_rows:
        return table
    keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, n, replace=False))
    return table.take(pa.array(keep))


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
    labels = table.column("label").to_pylist()
    for row, label in enumerate(labels):
        if label not in (0, 1):
            raise RaylibError(f"{where} row {row}: label must be 0 or 1 (got {label!r}).")
    lists = zip(*(table.column(c).to_pylist() for c in ("history_items", "history_titles", "history_ratings")))
    for row, (ids, titles, ratings) in enumerate(lists):
        if not len(ids) == len(titles) == len(ratings):
            raise RaylibError(f"{where} row {row}: history_items, history_titles and history_ratings differ in "
                              f"length ({len(ids)}, {len(titles)}, {len(ratings)}).")
        if any(r is None or not math.isfinite(r) for r in ratings):
            raise RaylibError(f"{where} row {row}: history_ratings holds NaN or inf ({ratings}).")
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
    return _typed(rows)


def _rating_key(rating: float) -> str:
    return f"{rating:g}"


@dataclasses.dataclass
class CtrVocab:
    """Per-field value -> index maps (2, 3, ... for the training split's values; 1 = OOV, 0 = padding). Besides
    the columns' fields, "rating" indexes the history's rating values (the CRM pools item + rating embeddings).
    `features`: the rules that made the fields (saved beside them, outside the hash), for requests."""
    fields: dict[str, dict[str, int]]
    features: FeatureRules = dataclasses.field(default_factory=FeatureRules)

    @classmethod
    def build(cls, train: pa.Table, features: FeatureRules | None = None) -> "CtrVocab":
        fields = {}
        for field in SINGLE_FIELDS + ("genres",):
            values = train.column(field).to_pylist()
            if field == "genres":
                values = [g for gs in values for g in gs]
            fields[field] = {v: i + 2 for i, v in enumerate(sorted(set(values)))}
        ratings = {_rating_key(r) for rs in train.column("history_ratings").to_pylist() for r in rs}
        fields["rating"] = {v: i + 2 for i, v in enumerate(sorted(ratings))}
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
        return hashlib.sha1(json.dumps(self.fields, sort_keys=True).encode()).hexdigest()

    def records(self, table: pa.Table, with_text: bool = False) -> list[dict[str, Any]]:
        """Rows -> plain-dict samples: field indices (OOV = 1), label, and for the LLM the texts."""
        columns = {c: table.column(c).to_pylist() for c in CTR_COLUMNS}
        item = self.fields["item_id"]
        genre, rating = self.fields["genres"], self.fields["rating"]
        out = []
        for row in range(table.num_rows):
            record = {"fields": [self.fields[f].get(columns[f][row], OOV) for f in SINGLE_FIELDS],
                      "genres": [genre.get(g, OOV) for g in columns["genres"][row]],
                      "history": [item.get(i, OOV) for i in columns["history_items"][row]],
                      "history_ratings": [rating.get(_rating_key(r), OOV) for r in columns["history_ratings"][row]],
                      "label": int(columns["label"][row])}
            if with_text:
                record.update(title=columns["title"][row], history_titles=columns["history_titles"][row],
                              history_scores=columns["history_ratings"][row])
            out.append(record)
        return out

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
    train: pa.Table
    valid: pa.Table
    test: pa.Table
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
        table = ctr_table_of(dataset, cfg.like_threshold, cfg.history_len, cfg.zip_prefix)
        train, valid, test = split_at(table, time_cutoffs(dataset.interactions.column("timestamp").to_numpy(),
                                                          tuple(cfg.split_fractions)))
        source = dataset.source
    elif cfg.source == "movielens":
        from raylib.data.movielens import load_movielens

        ml = load_movielens(cfg.movielens_dir)
        table = ctr_table_of(ml, cfg.like_threshold, cfg.history_len, cfg.zip_prefix)
        train, valid, test = split_by_time(table, tuple(cfg.split_fractions))
        source = ml.source
    else:
        train, valid, test = (read_ctr_table(p) for p in (cfg.train_file, cfg.valid_file, cfg.test_file))
        source = str(cfg.train_file)
    for name, split in (("training", train), ("validation", valid), ("test", test)):
        if split.num_rows == 0:
            raise RaylibError(f"The {name} split holds no samples.")
        if len(set(split.column("label").to_pylist())) < 2:
            raise RaylibError(f"The {name} split has only one label: AUC needs likes and dislikes.")
    return CtrData(train, valid, test, source, FeatureRules.for_data(cfg))
