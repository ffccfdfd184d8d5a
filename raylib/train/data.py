"""Training data through Ray Data: records are staged once as Parquet, and each worker reads only its own shard.

Records used to travel inside `train_loop_config`, pickled to every worker: nothing past what one driver holds.
Now the driver stages them as Parquet under `<output_dir>/data/` (a list of records, or a Parquet file/folder a
user brings, streamed batch by batch), each row numbered in a `_row` column, and hands Ray Train the datasets
(`datasets=`). Shards are strided by row number (`_row % world == rank`), so they are disjoint, cover every row,
differ in size by at most one and are the same on every run: a resumed run sees the same rows, and one worker
sees exactly the rows (and, through `EpochSampler`, the batches) it saw when the records were passed inline.
Validation rows are not split: every worker reads them all and `sharded_map` divides the work. A worker keeps
its rows as Arrow and the task encodes them a batch at a time (`ShardRows`): what a worker holds grows with the
bytes of its shard, not with a Python object per row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raylib import RaylibError

ROW = "_row"  # the row number column added when staging
DATA_DIR = "data"
BATCH_ROWS = 8192


@dataclasses.dataclass(frozen=True)
class StagedSplit:
    path: Path  # a Parquet file with the `_row` column
    rows: int


def as_dict(record: Any) -> dict[str, Any]:
    """A record as a plain dict (dataclass records are converted)."""
    return dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)


def check_source(source: list | str | Path, name: str) -> None:
    """A path must name an existing Parquet file or folder (records in a list are checked when staged)."""
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise RaylibError(f"{name} data: {source} does not exist (a Parquet file or a folder of them).")


def _batches(source: list | str | Path) -> Iterable[pa.RecordBatch]:
    if isinstance(source, (str, Path)):
        try:
            dataset = pq.ParquetDataset(str(source))  # a file or a folder of files, in path order
            for fragment in dataset.fragments:
                yield from fragment.to_batches(batch_size=BATCH_ROWS)
        except (pa.ArrowInvalid, OSError) as e:
            raise RaylibError(f"{source} cannot be read as Parquet ({e}).") from e
        return
    # Records are in memory already: one table, so that every column's type is inferred from all rows (a
    # column that is empty or None in the first rows would otherwise be typed from those alone).
    try:
        table = pa.Table.from_pylist([as_dict(r) for r in source])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise RaylibError(f"Records cannot be stored as Parquet ({e}): every record needs the same fields, "
                          "each with one type.") from e
    yield from table.to_batches(max_chunksize=BATCH_ROWS)


def stage(source: list | str | Path, folder: Path, name: str) -> StagedSplit:
    """Write `source` (records, or a Parquet file/folder, streamed batch by batch) to `<folder>/<name>.parquet`
    with a `_row` column, written to a temporary file first and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.parquet"
    tmp = target.with_suffix(".parquet.tmp")
    rows, writer, schema = 0, None, None
    try:
        for batch in _batches(source):
            if ROW in batch.schema.names:
                batch = batch.drop_columns([ROW])
            if schema is None:
                schema = batch.schema
            elif not batch.schema.equals(schema):
                try:
                    batch = batch.cast(schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError) as e:
                    raise RaylibError(f"{name}: rows from {rows} on do not match the first rows' fields/types "
                                      f"({e}).") from e
            numbered = batch.append_column(ROW, pa.array(range(rows, rows + batch.num_rows), pa.int64()))
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), numbered.schema)
            writer.write_batch(numbered)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no rows: still a valid (empty) file, so a missing validation set reads as empty
        pq.write_table(pa.table({ROW: pa.array([], pa.int64())}), str(tmp))
    tmp.replace(target)
    return StagedSplit(target, rows)


def datasets(train: StagedSplit, valid: StagedSplit, world: int) -> tuple[dict[str, Any], Any]:
    """Ray Datasets for `TorchTrainer(datasets=..., dataset_config=...)`: one per worker's train shard, and the
    validation rows. Each is read by a Ray task (no CPU reserved: the workers may hold every CPU) straight into
    the object store, so the driver never holds the rows, and no Ray Data pipeline has to start per run
    (a `read_parquet` + filter costs seconds of executor start-up per dataset on a laptop)."""
    import ray
    import ray.data
    from ray.train import DataConfig

    quiet_ray_data()  # the driver's DataContext travels to the workers with the datasets
    read = ray.remote(num_cpus=0)(read_shard)
    shards = [ray.data.from_arrow_refs([read.remote(str(train.path), rank, world)]) for rank in range(world)]
    valid_ds = ray.data.from_arrow_refs([read.remote(str(valid.path), 0, 1)])

    class StridedShards(DataConfig):
        """Worker `rank` iterates shard `rank`; validation is not split (see the module's docstring)."""

        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            if world_size != len(shards):
                raise RuntimeError(f"train shards were made for {len(shards)} workers, not {world_size}")
            return [{name: (shards[rank] if name == "train" else valid_ds).iterator() for name in datasets}
                    for rank in range(world_size)]

    return {"train": shards[0], "valid": valid_ds}, StridedShards(datasets_to_split=["train"])


def read_shard(path: str, rank: int, world: int) -> pa.Table:
    """Rows of a staged file with `_row % world == rank`, read batch by batch (memory: this shard only)."""
    import pyarrow.compute as pc

    file = pq.ParquetFile(path)
    parts = []
    for batch in file.iter_batches(batch_size=BATCH_ROWS):
        row = batch.column(ROW)  # row % world, as Arrow has no modulo kernel: integer division truncates
        keep = pc.equal(pc.subtract(row, pc.multiply(pc.divide(row, world), world)), rank)
        parts.append(pa.Table.from_batches([batch.filter(keep)]))
    return pa.concat_tables(parts) if parts else file.schema_arrow.empty_table()


def quiet_ray_data() -> None:
    """Ray Data's progress bars off in this process: reading a worker's few-row shard otherwise prints "Running
    Dataset ... / execution finished" lines from every worker into the job's terminal."""
    from raylib.runtime import verbose

    if verbose():
        return
    import logging

    from ray.data import DataContext

    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled. ..."
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # "Dataset ... execution finished in ..." 
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False


def read_rows(iterator) -> tuple[np.ndarray, pa.Table]:
    """A worker's rows in row order, as Arrow: (row numbers, the records' columns without `_row`). Ray Data's
    batches are concatenated as Arrow, never turned into Python objects here (`ShardRows` does that a batch at a
    time)."""
    quiet_ray_data()
    batches = [b for b in iterator.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    if not batches:
        return np.empty(0, dtype=np.int64), pa.table({})
    table = pa.concat_tables(batches)
    rows = np.asarray(table[ROW].to_numpy(), dtype=np.int64)
    if (np.diff(rows) < 0).any():  # a shard is read in row order: sorting (a copy of the shard) is rarely needed
        table = table.sort_by(ROW)
        rows = np.asarray(table[ROW].to_numpy(), dtype=np.int64)
    return rows, table.drop_columns([ROW])


class ShardRows:
    """A worker's rows, kept as an Arrow table and encoded by the task when read: a micro-batch (or a validation
    batch) at a time, so a shard of millions of rows never becomes millions of Python objects. A torch
    `DataLoader` fetches a batch's indices at once through `__getitems__`."""

    def __init__(self, table: pa.Table, encode: Callable[[list[dict[str, Any]]], list]):
        self.table, self.encode = table, encode

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.take([index])[0]

    def __iter__(self):
        for start in range(0, len(self), BATCH_ROWS):
            yield from self.take(np.arange(start, min(len(self), start + BATCH_ROWS)))

    def __getitems__(self, indices: list[int]) -> list:
        return self.take(indices)

    def take(self, indices) -> list:
        """The encoded items of these rows, in this order."""
        return self.encode(self.table.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist())
