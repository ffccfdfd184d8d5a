"""Tables a user brings (CSV, TSV, Parquet) read into Arrow, checked for the columns a view needs: the one reader
behind next-item interactions and titles (`raylib.data.sequences`) and CTR tables (`raylib.data.ctr`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from raylib import RaylibError


def read_table(path: str | Path, required: tuple[str, ...] = (),
               string_columns: tuple[str, ...] = ("user_id", "item_id", "title")) -> pa.Table:
    """A CSV (or TSV) or Parquet table a user brings, with at least the `required` columns; `string_columns` of a
    CSV are read as strings (ids stay ids: "007" is not 7). Any problem is one line naming the file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    if not path.is_file():
        raise RaylibError(f"Data file {path} does not exist.")
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        elif path.suffix.lower() in (".csv", ".tsv"):
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            types = {c: pa.string() for c in string_columns}
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                   convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            raise RaylibError(f"Data file {path}: use .csv, .tsv or .parquet.")
    except (pa.ArrowInvalid, OSError) as err:
        raise RaylibError(f"Data file {path} could not be read: {str(err).splitlines()[0]}") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise RaylibError(f"Data file {path} lacks column(s) {missing}; it has {table.column_names}.")
    for column in ("user_id", "item_id"):
        if column in table.column_names:
            col = table.column(column)
            table = table.set_column(table.column_names.index(column), column, col.cast(pa.string()))
            if col.null_count:
                raise RaylibError(f"Data file {path}: column {column} has {col.null_count} empty value(s).")
    if "timestamp" in required:
        stamps = table.column("timestamp")
        if stamps.null_count or not pa.types.is_integer(stamps.type) and not pa.types.is_floating(stamps.type):
            raise RaylibError(f"Data file {path}: every timestamp must be a number.")
        table = table.set_column(table.column_names.index("timestamp"), "timestamp", stamps.cast(pa.int64()))
    return table


def write_batches(path: str | Path, batches) -> Path:
    """Record batches (or tables) to one Parquet file, written as they come (a view of many rows never sits in
    memory whole), to a temporary name first and renamed: a killed write leaves no file that looks finished."""
    import os

    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = None
    try:
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise RaylibError(f"{path}: no rows to write.")
    os.replace(tmp, path)
    return path
