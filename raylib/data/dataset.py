"""One dataset for every method (`data.dataset`): interactions, items and optional users as Arrow tables, read
from RecBole atomic files or from plain CSV / TSV / Parquet tables, and the ONE time split every view shares.

A dataset is a folder (or the name of an embedded one, `ml-100k`) holding either
  RecBole atomic files   `<name>.inter`, `<name>.item`, `<name>.user` (tab-separated, `field:type` headers; the
                         format of RecBole's public datasets and of the embedded MovieLens-100K), or
  tables                 `interactions`, `items` and optional `users`, each `.csv`, `.tsv` or `.parquet`.
Every source yields the same columns:
  interactions  user_id, item_id (strings), timestamp (int64), and rating (float64) and/or label (int64) if given
  items         item_id, and title, genres (list<string>) and any other field if given
  users         user_id and its fields (strings); no rows when there is no user file
What a method needs and a dataset lacks stops the job with one line naming the column (`Dataset.require`).
Each method builds its view (preference records, next-item windows, CTR samples) from these tables and cuts time
at `time_cutoffs`, so all methods train, validate and test on the same periods.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylib import RaylibError

EMBEDDED = {"ml-100k": "the recbole wheel's MovieLens-100K"}
# RecBole field names that hold an item's title or its genres, in order of preference.
TITLE_FIELDS = ("title", "movie_title", "item_name", "name", "book_title")
GENRE_FIELDS = ("genres", "class", "categories", "genre")
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")


@dataclasses.dataclass
class Dataset:
    name: str
    interactions: pa.Table
    items: pa.Table
    users: pa.Table
    source: str  # the folder it was read from
    files: list[Path]

    def require(self, table: str, columns: tuple[str, ...], needed_by: str) -> None:
        """Stop before any work when `needed_by` needs columns of `table` ("interactions", "items", "users")
        that this dataset lacks."""
        have = getattr(self, table).column_names
        missing = [c for c in columns if c not in have]
        if missing:
            raise RaylibError(f"Dataset {self.source}: {needed_by} needs column(s) {missing} in its {table}, "
                              f"which has {have}.")


def dataset_files(spec: str | Path) -> tuple[Path, list[Path]]:
    """The folder a dataset spec names and the files read there, without parsing them."""
    if str(spec) in EMBEDDED:
        from raylib.assets import embedded_movielens_dir

        folder = embedded_movielens_dir()
    else:
        folder = Path(spec).expanduser()
    if not folder.is_dir():
        known = ", ".join(EMBEDDED)
        raise RaylibError(f"Dataset {spec}: no such folder (or embedded dataset: {known}).")
    atomic = sorted(folder.glob("*.inter"))
    if atomic:
        stem = atomic[0].stem
        return folder, [p for p in (folder / f"{stem}.{ext}" for ext in ("inter", "item", "user")) if p.is_file()]
    files = [_table_file(folder, name) for name in ("interactions", "items", "users")]
    if files[0] is None or files[1] is None:
        raise RaylibError(f"Dataset {folder}: expected RecBole atomic files (<name>.inter, <name>.item) or tables "
                          f"interactions and items ({'/'.join(TABLE_SUFFIXES)}).")
    return folder, [f for f in files if f is not None]


def dataset_fingerprint(spec: str | Path) -> str:
    """sha1 of a dataset's files (names and bytes), without parsing them: keys caches of views built from it."""
    return files_fingerprint(dataset_files(spec)[1])


def files_fingerprint(paths: list[Path]) -> str:
    """sha1 (16 hex digits) of files' names and bytes, read a block at a time."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _table_file(folder: Path, name: str) -> Path | None:
    return next((folder / f"{name}{s}" for s in TABLE_SUFFIXES if (folder / f"{name}{s}").is_file()), None)


def load_dataset(spec: str | Path) -> Dataset:
    """Read a dataset folder (RecBole atomic files or tables) or an embedded dataset by name."""
    folder, files = dataset_files(spec)
    if files[0].suffix == ".inter":
        inter, items, users = (read_atomic(f) for f in _by_role(files, (".inter", ".item", ".user")))
        items = _recbole_items(items, files[1] if len(files) > 1 else folder)
    else:
        from raylib.data.tables import read_table

        inter, items, users = (read_table(f) if f else None for f in _by_role(files, ("interactions", "items", "users")))
        _check_items(items, files[1])
        items = _split_genres(items)
        if users is not None:  # a user's fields are categories: "007" stays "007"
            users = pa.table({c: users.column(c).cast(pa.string()) for c in users.column_names})
    name = files[0].stem if files[0].suffix == ".inter" else folder.name
    return Dataset(name, _interactions(inter, files[0]), items, users if users is not None else
                   pa.table({"user_id": pa.array([], pa.string())}), str(folder), files)


def _by_role(files: list[Path], roles: tuple[str, ...]) -> list[Path | None]:
    return [next((f for f in files if f.suffix == r or f.stem == r), None) for r in roles]


def read_atomic(path: Path | None) -> pa.Table | None:
    """A RecBole atomic file: tab-separated, a `field:type` header; `float` fields become float64, every other
    type stays a string (token_seq / float_seq fields as their space-separated text). Read by Arrow's CSV
    reader (MovieLens-25M's 25 M lines in seconds); a file it cannot take is read again line by line, which
    names the line at fault."""
    if path is None:
        return None
    import pyarrow.csv as pacsv

    with open(path, encoding="utf-8", errors="replace") as f:  # the line reader names an encoding problem
        first = f.readline().rstrip("\r\n")
    header = [h.split(":") for h in first.split("\t")] if first.strip() else []
    if not header:
        return _read_atomic_lines(path)
    names = [name for name, *_ in header]
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=[f"c{i}" for i in range(len(names))], skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(column_types={f"c{i}": pa.string() for i in range(len(names))},
                                                 strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return _read_atomic_lines(path)
    out = {}
    for k, (name, *kind) in enumerate(header):
        column = table.column(k)
        if kind and kind[0] == "float":
            blank = pc.equal(pc.utf8_trim_whitespace(column), "")
            try:
                out[name] = pc.if_else(blank, pa.scalar(None, pa.float64()),
                                       pc.cast(pc.if_else(blank, "0", column), pa.float64()))
            except pa.ArrowInvalid:
                return _read_atomic_lines(path)
        else:
            out[name] = column
    return pa.table(out)


def _read_atomic_lines(path: Path) -> pa.Table:
    """`read_atomic`, line by line in Python: slower, and every problem names its line."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise RaylibError(f"Dataset file {path} is not UTF-8 (byte {err.start}): RecBole atomic files are UTF-8; "
                          "convert it (e.g. iconv -f latin1 -t utf-8).") from None
    if not lines:
        raise RaylibError(f"Dataset file {path} is empty.")
    header = [h.split(":") for h in lines[0].split("\t")]
    columns: list[list[str]] = [[] for _ in header]
    for no, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise RaylibError(f"{path}:{no}: expected {len(header)} tab-separated fields, got {len(fields)}.")
        for column, value in zip(columns, fields):
            column.append(value)
    out = {}
    for (name, *kind), values in zip(header, columns):
        if kind and kind[0] == "float":
            try:
                out[name] = pa.array([float(v) if v.strip() else None for v in values], pa.float64())
            except ValueError:
                raise RaylibError(f"{path}: field {name} (float) holds a value that is not a number.") from None
        else:
            out[name] = pa.array(values, pa.string())
    return pa.table(out)


def _interactions(table: pa.Table, path: Path) -> pa.Table:
    """user_id, item_id, timestamp and the optional rating / label, typed; one line naming what is wrong."""
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in table.column_names]
    if missing:
        raise RaylibError(f"Dataset file {path}: interactions need column(s) {missing}; it has {table.column_names}.")
    if table.num_rows == 0:
        raise RaylibError(f"Dataset file {path} holds no interactions.")
    out = {"user_id": table.column("user_id").cast(pa.string()), "item_id": table.column("item_id").cast(pa.string())}
    for name, kind in (("timestamp", pa.int64()), ("rating", pa.float64()), ("label", pa.int64())):
        if name not in table.column_names:
            continue
        column = table.column(name)
        if column.null_count:
            raise RaylibError(f"Dataset file {path}: column {name} has {column.null_count} empty value(s).")
        try:
            values = column.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RaylibError(f"Dataset file {path}: column {name} must hold numbers.") from None
        _check_values(values, name, path)
        out[name] = values.cast(kind, safe=False) if name != "rating" else values
    return pa.table(out)


def _check_values(values: pa.ChunkedArray, name: str, path: Path) -> None:
    """No value is silently turned into another: timestamps finite whole numbers within int64, ratings finite,
    labels 0 or 1. The first bad row is named."""
    numbers = np.asarray(values.to_numpy(), dtype=np.float64)
    if name == "timestamp":
        bad = ~np.isfinite(numbers) | (np.abs(numbers) >= 2.0 ** 63) | (numbers != np.floor(numbers))
        rule = "a whole number of seconds"
    elif name == "label":
        bad, rule = ~np.isin(numbers, (0.0, 1.0)), "0 or 1"
    else:
        bad, rule = ~np.isfinite(numbers), "a finite number"
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RaylibError(f"Dataset file {path}: {name} of interaction {row + 1} is {float(numbers[row])!r}; it "
                          f"must be {rule}.")


def _recbole_items(items: pa.Table | None, where: Path) -> pa.Table:
    """item_id, title (MovieLens' `movie_title` + `release_year` as "Title (Year)"), genres (a token_seq) and the
    item file's other fields as given."""
    if items is None:
        return pa.table({"item_id": pa.array([], pa.string())})
    _check_items(items, where)
    columns = {"item_id": items.column("item_id")}
    title_field = next((f for f in TITLE_FIELDS if f in items.column_names), None)
    if title_field:
        titles = [t.strip() for t in items.column(title_field).to_pylist()]
        if "release_year" in items.column_names:
            titles = [_with_year(t, y.strip()) for t, y in zip(titles, items.column("release_year").to_pylist())]
        columns["title"] = pa.array(titles, pa.string())
    genre_field = next((f for f in GENRE_FIELDS if f in items.column_names), None)
    if genre_field:
        columns["genres"] = pa.array([g.split() for g in items.column(genre_field).to_pylist()],
                                     pa.list_(pa.string()))
    for name in items.column_names:
        if name not in columns and name not in (title_field, genre_field):
            columns[name] = items.column(name)
    return pa.table(columns)


def _check_items(items: pa.Table, where: Path) -> None:
    """An item table names every item once, in an `item_id` column."""
    if "item_id" not in items.column_names:
        raise RaylibError(f"Dataset file {where}: the items need an item_id column; it has {items.column_names}.")
    ids = items.column("item_id").cast(pa.string())
    counts = pc.value_counts(ids)
    twice = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(twice):
        raise RaylibError(f"Dataset file {where}: item {twice[0].as_py()!r} is listed more than once; list every "
                          "item once.")


def _with_year(title: str, year: str) -> str:
    if title == "unkonwn":  # RecBole's ML-100K typo (item 267, title and year); GroupLens' u.item: "unknown"
        return "unknown"
    return f"{title} ({year})" if year else title


def _split_genres(items: pa.Table) -> pa.Table:
    """A CSV's genres column as a list: `|`-separated (MovieLens' own files write them so)."""
    if "genres" not in items.column_names or not pa.types.is_string(items.column("genres").type):
        return items
    lists = [[g for g in (v or "").split("|") if g] for v in items.column("genres").to_pylist()]
    return items.set_column(items.column_names.index("genres"), "genres", pa.array(lists, pa.list_(pa.string())))


def time_cutoffs(timestamps, fractions) -> tuple[int, int]:
    """THE time split: the timestamps at which the validation and the test periods start, the quantiles of all
    interaction times at `fractions` (a data section's `time_split`; an interaction at or after a cutoff belongs
    to the later period)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise RaylibError(f"time fractions {fractions} must be non-negative and sum to 1.")
    stamps = np.sort(np.asarray(timestamps))
    n = len(stamps)
    valid_at = int(stamps[min(n - 1, int(round(fractions[0] * n)))])
    test_at = int(stamps[min(n - 1, int(round((fractions[0] + fractions[1]) * n)))])
    return valid_at, test_at
