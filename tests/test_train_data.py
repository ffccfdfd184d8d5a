"""Training data through Ray Data, and checkpoints that never look complete when they are not.

Records are staged as Parquet and every Ray Train worker reads only its own strided shard: the shards are
disjoint and cover every record, one worker gets exactly the batches the trainer used when records travelled in
`train_loop_config`, and a checkpoint cut short by a crash is recognisable as such."""

import math
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raylib import RaylibError
from raylib.config import TrainConfig
from raylib.train.batching import EpochSampler, batch_plan
from raylib.train.data import check_source, datasets, read_rows, stage

RECORDS = [{"history": [f"movie {i}", f"movie {i + 1}"], "target": f"movie {i + 2}", "label": i % 2}
           for i in range(23)]


def worker_shards(tmp_path, records, world):
    train = stage(records, tmp_path / "data", "train")
    valid = stage(records[:5], tmp_path / "data", "valid")
    named, config = datasets(train, valid, world)
    # What Ray Train does with them: `configure` gives every worker its iterators; the worker reads them (as
    # Arrow: rows become Python dicts only a batch at a time, `ShardRows`).
    shards = []
    for its in config.configure(named, world, None, None):
        rows, table = read_rows(its["train"])
        shards.append(((rows.tolist(), table.to_pylist()), read_rows(its["valid"])[1].to_pylist()))
    return shards


def test_workers_get_disjoint_shards_that_cover_every_record(ray_session, tmp_path):
    shards = worker_shards(tmp_path, RECORDS, world=3)
    rows = [set(r) for (r, _), _ in shards]
    assert rows[0] | rows[1] | rows[2] == set(range(len(RECORDS)))
    assert all(not (a & b) for i, a in enumerate(rows) for b in rows[i + 1:])
    assert sorted(len(r) for r in rows) == [7, 8, 8]
    for (row_ids, records), valid in shards:
        assert records == [RECORDS[i] for i in row_ids]  # the records come back as they went in
        assert valid == RECORDS[:5]  # validation is not split: sharded_map divides that work


def test_one_worker_gets_the_batches_it_got_before_ray_data(ray_session, tmp_path):
    """Before, every worker got all records inline and strided one global seeded shuffle; with one worker the
    Ray Data shard is every record, in order, and `EpochSampler` gives the same batches."""
    plan = batch_plan(TrainConfig(batch_size=8, micro_batch_size=4), len(RECORDS), world=1)
    [((_, records), _)] = worker_shards(tmp_path, RECORDS, world=1)
    for epoch in range(3):
        g = torch.Generator()
        g.manual_seed(42 + epoch)
        before = torch.randperm(len(RECORDS), generator=g).tolist()
        before = (before * math.ceil(plan.samples_per_rank / len(before)))[:plan.samples_per_rank]
        sampler = EpochSampler(plan, len(records), seed=42)
        sampler.set_epoch(epoch)
        assert [records[i] for i in sampler] == [RECORDS[i] for i in before]


def test_a_worker_encodes_its_rows_a_batch_at_a_time(ray_session, tmp_path):
    """The task's `encode` sees the rows of the batch the loader asks for, never the whole shard."""
    from torch.utils.data import DataLoader

    from raylib.train.data import ShardRows

    seen = []

    def encode(records):
        seen.append(len(records))
        return [r["label"] for r in records]

    [((_, _), _)] = worker_shards(tmp_path, RECORDS, world=1)
    rows = ShardRows(pa.Table.from_pylist(RECORDS), encode)
    batches = list(DataLoader(rows, batch_size=4, sampler=range(len(RECORDS)), collate_fn=list))
    assert [b for batch in batches for b in batch] == [r["label"] for r in RECORDS]
    assert max(seen) == 4 and len(seen) == len(batches)
    assert list(rows) == [r["label"] for r in RECORDS] and rows.take([3, 1]) == [RECORDS[3]["label"], RECORDS[1]["label"]]


def test_a_parquet_file_a_user_brings_is_staged_and_bad_records_are_named(ray_session, tmp_path):
    source = tmp_path / "mine.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), source)
    staged = stage(source, tmp_path / "staged", "train")
    assert staged.rows == len(RECORDS) and pq.read_table(staged.path).column("_row").to_pylist() == list(range(23))
    assert pq.read_table(staged.path).drop_columns(["_row"]).to_pylist() == RECORDS

    with pytest.raises(RaylibError, match="Records cannot be stored as Parquet"):
        stage([{"label": 1}, {"label": "yes"}], tmp_path / "bad", "train")
    (tmp_path / "notes.parquet").write_text("not Parquet")
    with pytest.raises(RaylibError, match="notes.parquet cannot be read as Parquet"):
        stage(tmp_path / "notes.parquet", tmp_path / "bad", "train")
    with pytest.raises(RaylibError, match="training data: .*missing.parquet does not exist"):
        check_source(tmp_path / "missing.parquet", "training")


def test_a_crash_mid_save_leaves_no_checkpoint_that_looks_complete(tmp_path, monkeypatch):
    """A real DeepSpeed engine writes its optimizer state; the task's files then fail (a crash mid-save)."""
    from raylib.assets import load_deepspeed_cpu_ops
    from raylib.train.checkpoint import checkpoint_problem, write_checkpoint

    load_deepspeed_cpu_ops()  # as the workers do: the CPU comm op compiled once, with the ninja that built it
    import deepspeed

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29533"}.items():
        monkeypatch.setenv(key, value)
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    model = torch.nn.Linear(4, 2)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config={
        "train_batch_size": 1, "zero_optimization": {"stage": 2}})
    engine.backward(engine(torch.ones(1, 4)).sum())
    engine.step()

    def crash(folder):
        (folder / "trainer_state.json").write_text("{")  # half written
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "checkpoint", engine, 0, 1, crash)
    assert not (tmp_path / "checkpoint").exists()  # only checkpoint.partial, which is not a checkpoint
    assert checkpoint_problem(tmp_path / "checkpoint.partial") == "no manifest_rank0.json"

    folder = write_checkpoint(tmp_path / "checkpoint", engine, 0, 1, lambda f: (f / "trainer_state.json").write_text("{}"))
    assert checkpoint_problem(folder) is None and not (tmp_path / "checkpoint.partial").exists()

    # A copy cut short (Ray uploading it to storage when the node died) is caught too.
    cut = shutil.copytree(folder, tmp_path / "cut")
    optimizer_file = max((p for p in cut.rglob("*.pt")), key=lambda p: p.stat().st_size)
    optimizer_file.write_bytes(optimizer_file.read_bytes()[:10])
    assert checkpoint_problem(cut).endswith(f"has 10 of its {(folder / optimizer_file.relative_to(cut)).stat().st_size} bytes")
    partial = shutil.copytree(folder, tmp_path / "partial")
    (partial / "trainer_state.json").unlink()
    assert checkpoint_problem(partial) == "trainer_state.json is missing"
    torch.distributed.destroy_process_group()
