"""Batch inference over every GPU of the cluster: rows -> Ray Data -> a pool of actors, each holding the model.

`map_rows(make, rows, folder, placement, actors)` runs `make()` once in each actor of a Ray Data actor pool
(`map_batches` with a callable class): it builds what scores (it loads the weights there, never in the
driver), then each batch of rows goes through it (a pyarrow table in, a dict of columns out, one value per
row). The actors ask for the job's placement (`raylib.placement`: `inference.gpus` GPUs each on GPU jobs,
`inference.cpus` CPUs); `inference.actors` says how many: a number, [min, max] for a pool Ray Data grows and
shrinks, or 0 for one per GPU of the cluster on GPU jobs (one on CPU jobs, holding every core), and never more
actors than parts to score: an actor's start (loading the model) pays off over a part's rows. With one actor
the parts go through the same scorer in one placed task instead (Ray Data's start-up costs seconds).

Resumable block by block: the rows are written once as Parquet parts of `part_rows` rows under
`folder/input/`, and each part's output is written to `folder/output/` as soon as all its rows are scored; a
rerun finds the folder again (it is named after the rows' bytes and what else the outputs depend on) and
scores only the parts whose output is missing. The driver holds the outputs of the parts in flight, never the
model.

Where vLLM is installed and a GPU is present, `ray.data.llm` (vLLM engines in the same kind of actor pool) is
the natural engine for generation at scale; it needs a GPU and is not used here (docs/scale.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raylib import RaylibError
from raylib.placement import Placement, get

ROW = "_row"
PART_ROWS = 1 << 14  # rows per resumable part (and per actor at least: see `map_rows`)
DONE = "input.json"  # written last when the input parts are complete


def actor_pool(placement: Placement, actors: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(min, max) actors: as configured, or 0 = one per GPU the cluster has at `placement.gpus` each on GPU
    jobs, one on CPU jobs."""
    if isinstance(actors, (list, tuple)):
        low, high = int(actors[0]), int(actors[1])
    elif actors:
        low = high = int(actors)
    elif placement.gpus > 0:
        import ray

        low = high = max(1, int(ray.cluster_resources().get("GPU", 0) // placement.gpus))
    else:
        low = high = 1
    if not 1 <= low <= high:
        raise RaylibError(f"inference.actors {actors!r}: give a number >= 1, or [min, max] with 1 <= min <= max.")
    return low, high


class _Scorer:
    """The callable class of the actor pool: `make()` once, then one call per batch of rows."""

    def __init__(self, make: Callable[[], Callable[[pa.Table], dict[str, Any]]], threads: int):
        import torch

        from raylib.runtime import quiet_libraries

        torch.set_num_threads(max(1, threads))
        quiet_libraries()
        self.score = make()

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.perf_counter()
        out = self.score(batch.drop_columns([ROW]))
        seconds = (time.perf_counter() - start) / max(1, batch.num_rows)
        return pa.table({ROW: batch.column(ROW), **{k: column_of(v) for k, v in out.items()},
                         "_seconds": pa.array(np.full(batch.num_rows, seconds))})


def _scorer_class(make, threads: int) -> type:
    """`_Scorer` with its arguments built in: Ray Data then keeps no constructor arguments in the object store
    (which an actor restarted after a failure could not find again)."""
    class Scorer(_Scorer):
        def __init__(self):
            super().__init__(make, threads)

    return Scorer


def _no_restarts() -> dict[str, Any]:
    """A failed part is scored again by a rerun, so the pool's actors are not restarted (Ray logs, at each
    actor's start, that a restarted one might not find its constructor arguments again). Only where this Ray
    still takes the argument (it is deprecated from 2.60)."""
    import inspect

    import ray.data

    if "ray_remote_args_fn" not in inspect.signature(ray.data.Dataset.map_batches).parameters:
        return {}
    return {"ray_remote_args_fn": lambda: {"max_restarts": 0}}


def _score_parts(make, paths: list[str], batch_rows: int, desc: str, threads: int):
    """In one placed task: `make()`'s scorer over each part, in the batches a pool's actor would take, with a
    progress bar (the driver draws it); each part's output is yielded as soon as it is scored."""
    from raylib.runtime import progress

    scorer = _Scorer(make, threads)
    for path in paths:
        rows = pq.read_table(path)
        yield pa.concat_tables([scorer(rows.slice(start, batch_rows))
                                for start in progress(range(0, rows.num_rows, batch_rows), desc)])


def _score_in_task(make, folder: Path, missing: list[int], placement: Placement, batch_rows: int,
                   desc: str) -> None:
    """The missing parts through one placed Ray task (a streaming generator: each part's output is written as
    it comes, so a rerun after a kill scores only what is left). A task, not an actor: Ray reuses a warm worker
    process for it, which saves the seconds of imports an actor's fresh process costs."""
    import ray

    options = placement.ray_options()
    task = ray.remote(_score_parts).options(**options, num_returns="streaming", max_retries=0)
    outputs = task.remote(make, [str(_part(folder, "input", k)) for k in missing], batch_rows, desc,
                          int(options["num_cpus"]))
    for k, ref in zip(missing, outputs):
        _atomic_write(get(ref), _part(folder, "output", k))


def column_of(values) -> pa.Array:
    """An output column: a 2-D array becomes a fixed-size list per row (embeddings), anything else as given."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
    return pa.array(values)


def _parts(rows: pa.Table | Iterable[pa.Table], part_rows: int) -> Iterator[pa.Table]:
    """The rows (a table, or tables made a chunk at a time) cut into parts of `part_rows` rows."""
    pending: list[pa.Table] = []
    for table in [rows] if isinstance(rows, pa.Table) else rows:
        pending.append(table)
        while sum(t.num_rows for t in pending) >= part_rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, part_rows)
            pending = [whole.slice(part_rows)]
    if sum(t.num_rows for t in pending) or not pending:
        yield pa.concat_tables(pending) if pending else pa.table({})


def stage(rows: pa.Table | Iterable[pa.Table], root: Path, key: dict[str, Any], part_rows: int) -> Path:
    """Write the rows as numbered Parquet parts; the folder they land in is named after `key` and the parts'
    bytes, so the same rows scored the same way find their earlier outputs, and nothing else does. A complete
    folder of that name is reused as it is."""
    root.mkdir(parents=True, exist_ok=True)
    incoming = root / f".incoming-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    (incoming / "input").mkdir(parents=True)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode())
    count = parts = 0
    for parts, part in enumerate(_parts(rows, part_rows), start=1):
        numbered = part.append_column(ROW, pa.array(np.arange(count, count + part.num_rows, dtype=np.int64)))
        path = _part(incoming, "input", parts - 1)
        pq.write_table(numbered, path)
        digest.update(path.read_bytes())
        count += part.num_rows
    folder = root / digest.hexdigest()[:16]
    if (folder / DONE).is_file():
        shutil.rmtree(incoming)
        return folder
    (incoming / DONE).write_text(json.dumps({"parts": parts, "rows": count, "part_rows": part_rows,
                                             "key": key}, default=str))
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete staging of ours, under the same name
    os.replace(incoming, folder)
    return folder


def _atomic_write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def map_rows(make: Callable[[], Callable[[pa.Table], dict[str, Any]]], rows: pa.Table | Iterable[pa.Table],
             root: Path, key: dict[str, Any], placement: Placement, actors: int | list[int] = 0,
             batch_rows: int = 256, part_rows: int | None = None, desc: str = "batch inference") -> pa.Table:
    """Every row through `make()`'s scorer in a Ray Data actor pool; the output columns (plus `_seconds`, each
    row's share of its batch's scoring time) in the rows' order. `rows`: a table, or tables made a chunk at a
    time (text for millions of rows never sits in memory whole). `key`: what else the outputs depend on (model,
    adapter, settings). See the module docstring."""
    from raylib.runtime import ensure_ray
    from raylib.train.data import quiet_ray_data

    ensure_ray(placement.address)
    quiet_ray_data()
    part_rows = part_rows or PART_ROWS
    folder = stage(rows, Path(root), key, part_rows)
    parts = json.loads((folder / DONE).read_text())["parts"]
    (folder / "output").mkdir(exist_ok=True)
    missing = [k for k in range(parts) if not _part(folder, "output", k).is_file()]
    low, high = actor_pool(placement, actors) if missing else (1, 1)
    # An actor's start (loading the model) pays off over a part's rows: no more actors than parts to score.
    high = min(high, max(1, len(missing)))
    low = min(low, high)
    if missing and high == 1:  # one scorer: a placed task, without Ray Data's start-up
        _score_in_task(make, folder, missing, placement, batch_rows, desc)
    elif missing:
        _score_in_pool(make, folder, missing, placement, (low, high), batch_rows, part_rows, desc)
    return pq.read_table(folder / "output").sort_by(ROW)


def _blocks(path: str, rows: int):
    """A part's rows in blocks of `rows` (a Ray task with one return value per block)."""
    table = pq.read_table(path)
    blocks = [table.slice(start, rows) for start in range(0, table.num_rows, rows)] or [table]
    return blocks if len(blocks) > 1 else blocks[0]


def _part(folder: Path, kind: str, k: int) -> Path:
    return folder / kind / f"part-{k:05d}.parquet"


def _score_in_pool(make, folder: Path, missing: list[int], placement: Placement, pool: tuple[int, int],
                   batch_rows: int, part_rows: int, desc: str) -> None:
    """The missing parts through a Ray Data pool of `pool` = (min, max) actors, a block per part."""
    import ray
    import ray.data

    cpus = placement.resolved_cpus()
    if placement.gpus <= 0 and pool[1] > 1:  # CPU actors share the node's cores
        cpus = max(1, cpus // pool[1])
    sizes = {k: pq.ParquetFile(_part(folder, "input", k)).metadata.num_rows for k in missing}
    read = ray.remote(num_cpus=0)(_blocks)  # blocks of a batch each, read where Ray puts the task: every actor
    refs = []                               # of the pool gets work, and no row passes through the driver
    for k in missing:
        count = max(1, -(-sizes[k] // batch_rows))
        made = read.options(num_returns=count).remote(str(_part(folder, "input", k)), batch_rows)
        refs += made if count > 1 else [made]
    dataset = ray.data.from_arrow_refs(refs)
    with warnings.catch_warnings():  # Ray warns of its own deprecation of the argument `_no_restarts` passes
        warnings.simplefilter("ignore", DeprecationWarning)
        scored = dataset.map_batches(_scorer_class(make, cpus), batch_size=batch_rows, batch_format="pyarrow",
                                     compute=ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1]),
                                     num_cpus=cpus, num_gpus=placement.gpus or None, **_no_restarts())
    _collect(scored, sizes, folder, part_rows, desc)


def _collect(scored, sizes: dict[int, int], folder: Path, part_rows: int, desc: str) -> None:
    """Write each part's output once all its rows have come back (the driver holds the parts in flight)."""
    from tqdm.auto import tqdm

    waiting: dict[int, list[pa.Table]] = {}
    bar = tqdm(total=sum(sizes.values()), desc=desc, leave=False, unit="row")
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        part_of = np.asarray(batch.column(ROW).to_numpy()) // part_rows
        for k in np.unique(part_of):
            waiting.setdefault(int(k), []).append(batch.filter(pa.array(part_of == k)))
            got = sum(t.num_rows for t in waiting[int(k)])
            if got == sizes[int(k)]:
                _atomic_write(pa.concat_tables(waiting.pop(int(k))).sort_by(ROW), _part(folder, "output", int(k)))
        bar.update(batch.num_rows)
    bar.close()
    if waiting:
        raise RuntimeError(f"batch inference in {folder}: parts {sorted(waiting)} came back incomplete")
