"""Data: raw interaction files -> Arrow tables -> TALLRec records -> few-shot samples."""

from raylib.data.movielens import MovieLens, load_movielens, movielens_files
from raylib.data.records import (
    RECORDS_BUILDER_VERSION,
    TallrecRecord,
    build_tallrec_records,
    read_records,
    records_cache_key,
    records_from_table,
    records_to_table,
    sample_records,
    split_by_user,
    stratified_sample,
    write_records,
)

__all__ = [
    "MovieLens", "load_movielens", "movielens_files", "RECORDS_BUILDER_VERSION", "TallrecRecord",
    "build_tallrec_records", "read_records", "records_cache_key", "records_from_table", "records_to_table",
    "sample_records", "split_by_user", "stratified_sample", "write_records",
]
