"""Data: raw interaction files -> Arrow tables -> users' timelines (columns) -> each method's view (TALLRec
records, next-item windows, CTR samples), text made only for the rows a job reads."""

from raylib.data.movielens import MovieLens, load_movielens, movielens_files
from raylib.data.records import (
    RecordRows,
    TallrecRecord,
    build_tallrec_records,
    read_records,
    records_from_table,
    records_to_table,
    sample_records,
    split_by_user,
    stratified_sample,
    write_records,
)

__all__ = [
    "MovieLens", "load_movielens", "movielens_files", "RecordRows", "TallrecRecord", "build_tallrec_records",
    "read_records", "records_from_table", "records_to_table", "sample_records", "split_by_user",
    "stratified_sample", "write_records",
]
