"""Batch geometry: micro-batch, gradient accumulation and an epoch that always ends on an optimizer step.

DeepSpeed counts micro-batches across epochs: when an epoch's micro-batches are not a multiple of the
accumulation steps, the leftover ones are carried into the next epoch and the scheduled step count is wrong
(with batch 128, micro 32 and 200 records: 200 steps scheduled, 350 run). Here every epoch is padded, by
repeating samples of the same shuffled order, to whole optimizer steps, so the schedule is exact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

from raylib.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    micro_batch: int  # per worker
    accumulation: int
    world: int
    steps_per_epoch: int
    samples: int  # training samples (before padding)

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world

    @property
    def samples_per_rank(self) -> int:
        return self.steps_per_epoch * self.accumulation * self.micro_batch

    @property
    def repeated_per_epoch(self) -> int:
        return self.samples_per_rank * self.world - self.samples

    def notes(self, requested: int) -> list[str]:
        out = []
        if self.global_batch != requested:
            why = "capped at the number of training samples" if self.samples < requested else \
                "rounded to micro-batch x accumulation x workers"
            out.append(f"global batch {requested} -> {self.global_batch} ({why})")
        if self.repeated_per_epoch:
            out.append(f"each epoch repeats {self.repeated_per_epoch} sample(s) so that it ends on an optimizer step")
        return out


def batch_plan(train: TrainConfig, n_train: int, world: int) -> BatchPlan:
    """The global batch is capped at the number of training samples, as TALLRec's few-shot runs (16 samples
    with batch 128) take one step per epoch."""
    global_batch = max(1, min(train.batch_size, n_train))
    micro = max(1, min(train.micro_batch_size, -(-global_batch // world)))
    accumulation = max(1, global_batch // (micro * world))
    steps = max(1, math.ceil(n_train / (micro * accumulation * world)))
    return BatchPlan(micro, accumulation, world, steps, n_train)


class EpochSampler(Sampler[int]):
    """This rank's indices into its own shard for one epoch: a seeded shuffle (seed + epoch, as
    DistributedSampler), repeated cyclically up to `plan.samples_per_rank` so that every rank takes the same
    number of optimizer steps. Call `set_epoch` before each epoch. (With one worker the shard is every record,
    in record order: the batches are those of a plain seeded shuffle.)"""

    def __init__(self, plan: BatchPlan, shard_size: int, seed: int) -> None:
        if shard_size < 1:
            raise ValueError("a worker got no training records: fewer records than workers")
        self.plan, self.shard_size, self.seed, self.epoch, self.skip = plan, shard_size, seed, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """`skip`: samples of this epoch already trained (resuming from a mid-epoch checkpoint)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.shard_size, generator=g)
        total = self.plan.samples_per_rank
        order = order.repeat(math.ceil(total / len(order)))[self.skip:total]
        # handed out a block at a time: a shard of millions of rows is never a list of millions of ints
        return (int(i) for block in order.split(1 << 16) for i in block.tolist())

    def __len__(self) -> int:
        return self.plan.samples_per_rank - self.skip
