"""The seam between the one training loop and the methods: a task says what trains and how it is judged.

The loop (`raylib/train/worker.py`) owns devices, seeds, DeepSpeed, optimizer and schedule, batching, epochs,
the ZeRO-3 gather, best-epoch selection, checkpoints and resume. A task owns the modules, how records become
batches, the loss, the validation metric and what a checkpoint holds. Tasks live in `raylib/methods/<method>/task.py`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch


@dataclasses.dataclass
class WorkerContext:
    """What a task needs to know about the worker it runs on."""
    job: Any  # the job config (a `TrainJob` subclass)
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype


class Task(Protocol):
    task_id: ClassVar[str]  # the task's name in run fingerprints (stable: moving the class changes no run)
    config_cls: ClassVar[type]  # the job config class (TrainJob + the task's own sections)
    metric: ClassVar[str]  # key of validate()'s dict that picks the best epoch, e.g. "auc" or "loss"
    higher_is_better: ClassVar[bool]

    def __init__(self, ctx: WorkerContext) -> None: ...

    def build(self) -> torch.nn.Module:
        """Every trainable part in ONE module (DeepSpeed wraps it: parts outside would not be all-reduced)."""

    def encode(self, records: list[dict[str, Any]], split: str) -> list:
        """Records (plain dicts) -> items, one each; split is "train" or "valid". The loop calls it a batch at a
        time, on the rows it is about to use (a worker keeps its shard as Arrow, `raylib.train.data.ShardRows`)."""

    def collate(self, items: list) -> dict[str, torch.Tensor]: ...

    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def validate(self, module, items: list) -> dict[str, float]:
        """Runs on every rank with equal work (ZeRO-3 forwards are collective): use `sharded_map`."""

    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        """Full CPU tensors of what training changed; the loop gathers ZeRO-3 partitions around this call."""

    def write(self, module, latest: dict[str, torch.Tensor], best: dict[str, torch.Tensor], folder: Path) -> None:
        """Rank 0 only: write the latest and the best state into `folder` (files only, no collectives)."""

    def restore(self, module, folder: Path) -> None:
        """Load the latest state `write` wrote into the module, before DeepSpeed wraps it."""

    def read_best(self, folder: Path) -> dict[str, torch.Tensor]:
        """The best state `write` wrote, as `trainable_state` returns it."""

    @classmethod
    def publish(cls, folder: Path, output_dir: Path, summary: dict[str, Any]) -> Path:
        """Driver side, after training: copy the best state out of the checkpoint `folder`; returns its path."""

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        """Settings outside model/lora/train that change what is trained (e.g. the prompt length limit)."""

    # Optional: `param_groups(self, module) -> list[dict]` (torch optimizer groups, e.g. a CRM with its own
    # learning rate inside an LLM's module); without it every trainable parameter uses train.learning_rate.
    # Optional: `start_weights: ClassVar[tuple[str, ...]]` (default none): the fields of `fingerprint` naming the
    # weights a run starts from (a previous stage's). Where only these changed, the output_dir's checkpoints began
    # from other weights: the trainer discards them and starts afresh (one line), instead of refusing the folder.
    # Optional: `plans_llm_memory: ClassVar[bool]` (default True): GPU jobs are first checked by the memory
    # planner (`raylib.plan`, for `train.gpu`); tasks without an LLM set it False.


def sharded_map(items: Sequence, fn: Callable[[list], list], batch_size: int, ctx: WorkerContext,
                sort_key: Callable[[Any], int] | None = None) -> list:
    """`fn` over `items` in batches, each rank taking a strided shard, results gathered in the items' order.

    Every rank runs the same number of batches (shards are padded by repeating an item), because a forward pass
    under ZeRO-3 gathers parameters collectively and would hang if one rank stopped early."""
    import torch.distributed as dist

    n = len(items)
    per_rank = math.ceil(n / ctx.world)
    mine = [min(i, n - 1) for i in range(ctx.rank, per_rank * ctx.world, ctx.world)][:per_rank]
    if sort_key is not None:  # similar lengths together: less padding
        mine.sort(key=lambda i: sort_key(items[i]))
    # rows a worker keeps as Arrow (`raylib.train.data.ShardRows`) are encoded a batch at a time
    fetch = items.take if hasattr(items, "take") else (lambda index: [items[i] for i in index])
    values: list = []
    for start in range(0, per_rank, batch_size):
        values.extend(fn(fetch(mine[start:start + batch_size])))
    gathered: list[Any] = [(mine, values)]
    if ctx.world > 1:
        gathered = [None] * ctx.world
        dist.all_gather_object(gathered, (mine, values))
    out: list = [None] * n
    for index, vals in gathered:
        for i, v in zip(index, vals):
            out[i] = v
    return out
