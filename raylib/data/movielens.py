"""MovieLens loaders returning Arrow tables.

Reads three layouts by path: RecBole atomic files (`ml-100k.inter/.item/.user`, as in the recbole wheel),
GroupLens raw ML-100K (`u.data`, `u.item`, `u.user`) and raw ML-1M (`ratings.dat`, `movies.dat`, `users.dat`).
Every layout yields the same columns:
  interactions: user_id, item_id (strings), rating (float64), timestamp (int64), in file order
  items:        item_id, title ("Title (Year)", as TALLRec prints it), genres (list<string>)
  users:        user_id, age, gender, occupation, zip_code (strings; ML-1M codes are kept as given)
RecBole atomic files are read as UTF-8 (as RecBole writes them), the GroupLens raw files as latin-1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa

from raylib import RaylibError

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


@dataclasses.dataclass
class MovieLens:
    interactions: pa.Table
    items: pa.Table
    users: pa.Table
    source: str


def _read_lines(path: Path, encoding: str = "latin-1") -> list[str]:
    if not path.is_file():
        raise RaylibError(f"MovieLens file {path} is missing.")
    return [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]


def _split(path: Path, line_no: int, line: str, sep: str, min_fields: int) -> list[str]:
    fields = line.split(sep)
    if len(fields) < min_fields:
        raise RaylibError(f"{path}:{line_no}: expected at least {min_fields} {sep!r}-separated fields, "
                          f"got {len(fields)}: {line[:80]!r}")
    return fields


def _interactions(path: Path, sep: str, skip_header: bool, encoding: str = "latin-1") -> pa.Table:
    users, items, ratings, stamps = [], [], [], []
    lines = _read_lines(path, encoding)
    for no, line in enumerate(lines[1:] if skip_header else lines, start=2 if skip_header else 1):
        u, i, r, t = _split(path, no, line, sep, 4)[:4]
        try:
            ratings.append(float(r))
            stamps.append(int(float(t)))
        except ValueError:
            raise RaylibError(f"{path}:{no}: rating {r!r} / timestamp {t!r} is not a number.") from None
        users.append(u.strip())
        items.append(i.strip())
    if not users:
        raise RaylibError(f"MovieLens file {path} holds no interactions.")
    return pa.table({"user_id": users, "item_id": items, "rating": pa.array(ratings, pa.float64()),
                     "timestamp": pa.array(stamps, pa.int64())})


def _load_recbole(folder: Path, name: str) -> MovieLens:
    """RecBole atomic files, through the one atomic-file reader of `raylib.data.dataset`."""
    from raylib.data.dataset import load_dataset

    data = load_dataset(folder)
    for column in ("rating", "timestamp"):
        data.require("interactions", (column,), "MovieLens")
    inter = data.interactions.select(["user_id", "item_id", "rating", "timestamp"])
    items = data.items.select(["item_id", "title", "genres"])
    user_rows = {k: (data.users.column(k) if k in data.users.column_names else pa.array([""] * data.users.num_rows))
                 for k in ("user_id", "age", "gender", "occupation", "zip_code")}
    return MovieLens(inter, items, pa.table(user_rows), str(folder))


def _load_raw_100k(folder: Path) -> MovieLens:
    interactions = _interactions(folder / "u.data", "\t", skip_header=False)
    ids, titles, genres = [], [], []
    for no, line in enumerate(_read_lines(folder / "u.item"), start=1):
        fields = _split(folder / "u.item", no, line, "|", 5 + len(ML100K_GENRES))
        ids.append(fields[0])
        titles.append(fields[1].strip())
        flags = fields[5:5 + len(ML100K_GENRES)]
        genres.append([g for g, f in zip(ML100K_GENRES, flags) if f == "1"])
    user_rows: dict[str, list[str]] = {k: [] for k in ("user_id", "age", "gender", "occupation", "zip_code")}
    if (folder / "u.user").is_file():
        for no, line in enumerate(_read_lines(folder / "u.user"), start=1):
            for key, value in zip(user_rows, _split(folder / "u.user", no, line, "|", 5)):
                user_rows[key].append(value)
    items = pa.table({"item_id": ids, "title": titles, "genres": pa.array(genres, pa.list_(pa.string()))})
    return MovieLens(interactions, items, pa.table(user_rows), str(folder))


def _load_raw_1m(folder: Path) -> MovieLens:
    interactions = _interactions(folder / "ratings.dat", "::", skip_header=False)
    ids, titles, genres = [], [], []
    for no, line in enumerate(_read_lines(folder / "movies.dat"), start=1):
        fields = _split(folder / "movies.dat", no, line, "::", 3)
        ids.append(fields[0])
        titles.append(fields[1].strip())
        genres.append(fields[2].split("|"))
    user_rows: dict[str, list[str]] = {k: [] for k in ("user_id", "gender", "age", "occupation", "zip_code")}
    if (folder / "users.dat").is_file():
        for no, line in enumerate(_read_lines(folder / "users.dat"), start=1):
            for key, value in zip(user_rows, _split(folder / "users.dat", no, line, "::", 5)):
                user_rows[key].append(value)
    items = pa.table({"item_id": ids, "title": titles, "genres": pa.array(genres, pa.list_(pa.string()))})
    return MovieLens(interactions, items, pa.table(user_rows), str(folder))


def movielens_files(folder: str | Path | None = None) -> tuple[Path, list[Path]]:
    """The folder `load_movielens(folder)` reads and the files it reads there (those present, in a fixed order),
    without parsing them: a cache key hashes these files' bytes."""
    if folder is None:
        from raylib.assets import embedded_movielens_dir

        folder = embedded_movielens_dir()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise RaylibError(f"MovieLens folder {folder} does not exist.")
    atomic = sorted(folder.glob("*.inter"))
    if atomic:
        names = [f"{atomic[0].stem}.{ext}" for ext in ("inter", "item", "user")]
    elif (folder / "u.data").is_file():
        names = ["u.data", "u.item", "u.user"]
    elif (folder / "ratings.dat").is_file():
        names = ["ratings.dat", "movies.dat", "users.dat"]
    else:
        raise RaylibError(f"{folder} holds no MovieLens files: expected RecBole atomic files (*.inter, *.item), "
                          "ML-100K's u.data/u.item or ML-1M's ratings.dat/movies.dat.")
    return folder, [folder / name for name in names if (folder / name).is_file()]


def load_movielens(folder: str | Path | None = None) -> MovieLens:
    """Load MovieLens from `folder` (any supported layout), or the embedded ML-100K when None."""
    folder, files = movielens_files(folder)
    if files[0].suffix == ".inter":
        return _load_recbole(folder, files[0].stem)
    if files[0].name == "u.data":
        return _load_raw_100k(folder)
    return _load_raw_1m(folder)
