"""Data: raw interaction files -> Arrow tables -> TALLRec records -> few-shot samples."""

from raylib.data.movielens import MovieLens, load_movielens
from raylib.data.records import (
    TallrecRecord,
    build_tallrec_records,
    read_records,
    records_from_table,
    records_to_table,
    sample_records,
    split_by_user,
    write_records,
)

__all__ = [
    "MovieLens", "load_movielens", "TallrecRecord", "build_tallrec_records", "read_records",
    "records_from_table", "records_to_table", "sample_records", "split_by_user", "write_records",
]
