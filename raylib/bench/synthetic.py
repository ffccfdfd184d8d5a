"""Synthetic RecBole datasets in MovieLens-25M's shape, for the scale benchmark and the tests of large-data code.

At 25 M interactions MovieLens-25M has 162,541 users and 62,423 items; a dataset of n interactions keeps those
ratios (at least 50 of each). Items are drawn with a Zipf-like popularity (rank r weighted (r + 10)^-0.9),
users with a log-normal activity; ratings are half stars 0.5-5 as ML-25M's; timestamps are whole seconds over a
span of about 10 per interaction, so some interactions tie (the views keep file order for ties). Titles follow
MovieLens' form ("Name, The (Year)" for some), every item has 1-3 genres, every user an age, gender, occupation
and zip code. The files are the RecBole atomic files `<name>.inter/.item/.user` that `data.dataset` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ML25M_INTERACTIONS, ML25M_USERS, ML25M_ITEMS = 25_000_095, 162_541, 62_423
GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
OCCUPATIONS = ("student", "engineer", "artist", "doctor", "writer", "programmer", "retired", "other")
WORDS = ("Night", "River", "Star", "Return", "Shadow", "Summer", "King", "Love", "Road", "City", "Dream", "Fire")
CHUNK = 1 << 22  # interactions generated and written per step


def shape(interactions: int) -> tuple[int, int]:
    """(users, items) of a MovieLens-25M-shaped dataset of this many interactions."""
    scale = interactions / ML25M_INTERACTIONS
    return max(50, round(ML25M_USERS * scale)), max(50, round(ML25M_ITEMS * scale))


def write_synthetic(folder: str | Path, interactions: int, seed: int = 0, name: str = "synthetic") -> Path:
    """Write `<folder>/<name>.inter/.item/.user` (skipped when all three are there); returns the folder."""
    folder = Path(folder)
    files = [folder / f"{name}.{ext}" for ext in ("inter", "item", "user")]
    if all(f.is_file() for f in files):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    users, items = shape(interactions)
    rng = np.random.default_rng(seed)
    _write(_items(items, rng), files[1])
    _write(_users(users, rng), files[2])
    activity = rng.lognormal(0.0, 1.0, users)
    user_p = activity / activity.sum()
    item_p = (np.arange(items) + 10.0) ** -0.9
    item_p /= item_p.sum()
    item_order = rng.permutation(items)  # popularity is not the id order
    tmp = files[0].with_suffix(".inter.tmp")
    header = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
    with open(tmp, "wb") as sink, pacsv.CSVWriter(sink, _header(sink, header), write_options=_options()) as writer:
        for start in range(0, interactions, CHUNK):
            n = min(CHUNK, interactions - start)
            batch = pa.table({
                "user_id:token": pa.array((rng.choice(users, n, p=user_p) + 1).astype(str)),
                "item_id:token": pa.array((item_order[rng.choice(items, n, p=item_p)] + 1).astype(str)),
                "rating:float": pa.array((rng.integers(1, 11, n) / 2).astype(str)),
                "timestamp:float": pa.array((789_000_000 + rng.integers(0, 10 * interactions, n)).astype(str))})
            writer.write_table(batch)
    tmp.replace(files[0])
    return folder


def _items(items: int, rng) -> pa.Table:
    years = rng.integers(1920, 2020, items)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), (items, 2))]
    the = rng.random(items) < 0.1
    titles = [f"{a} {b} {i + 1}" + (", The" if t else "") for i, (a, b), t in zip(range(items), words, the)]
    genres = [" ".join(sorted(set(np.array(GENRES)[rng.integers(0, len(GENRES), rng.integers(1, 4))])))
              for _ in range(items)]
    return pa.table({"item_id:token": pa.array(np.arange(1, items + 1).astype(str)),
                     "movie_title:token_seq": titles, "release_year:token": pa.array(years.astype(str)),
                     "class:token_seq": genres})


def _users(users: int, rng) -> pa.Table:
    return pa.table({"user_id:token": pa.array(np.arange(1, users + 1).astype(str)),
                     "age:token": pa.array(rng.integers(7, 74, users).astype(str)),
                     "gender:token": pa.array(np.where(rng.random(users) < 0.7, "M", "F")),
                     "occupation:token": pa.array(np.array(OCCUPATIONS)[rng.integers(0, len(OCCUPATIONS), users)]),
                     "zip_code:token": pa.array(rng.integers(10_000, 99_999, users).astype(str))})


def _header(sink, names) -> pa.Schema:
    """Write RecBole's `field:type` header line as it is (Arrow's writer would quote it); the columns' schema."""
    sink.write(("\t".join(names) + "\n").encode())
    return pa.schema([(n, pa.string()) for n in names])


def _options():
    return pacsv.WriteOptions(delimiter="\t", quoting_style="none", include_header=False)


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as sink:
        _header(sink, table.column_names)
        pacsv.write_csv(table, sink, _options())
    tmp.replace(path)
