"""The one training loop: the function Ray Train runs on each worker, plain PyTorch + DeepSpeed.

Each worker reads its own shard of the training rows through Ray Data (`raylib.train.data`). Each epoch:
seeded shuffle of the shard, micro-batches through the DeepSpeed engine up to a whole number of optimizer steps
(a checkpoint every `checkpoint_every_steps` on the way, if set), then the task's validation on all workers,
then one checkpoint report (trainable state, optimizer and schedule, RNG, position in the epoch). The best
epoch is chosen by the task's metric; training stops early after `patience` validations without improvement.
What is trained, and how it is judged, comes from the task.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from raylib.runtime import verbose


def _setup_environment(use_cuda: bool) -> None:
    from raylib.assets import cache_root

    if not use_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported (ray#50406)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))


def _log(rank: int, message: str) -> None:
    if rank == 0:
        print(f"[train] {message}", flush=True)


def trainable_dtype(module: torch.nn.Module) -> torch.dtype:
    """DeepSpeed's precision follows what trains: bf16 / fp16 when every trainable parameter is, else fp32 (a
    task that keeps its trainable parts in fp32 over a bf16 base gets fp32 updates, not a cast to bf16)."""
    dtypes = {p.dtype for p in module.parameters() if p.requires_grad}
    return dtypes.pop() if len(dtypes) == 1 and dtypes <= {torch.bfloat16, torch.float16} else torch.float32


def _lr_lambda(warmup: int, total: int):
    """Linear warm-up then linear decay to zero (HF Trainer's default schedule, used by TALLRec)."""
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _quiet_stdout():
    import contextlib
    import io

    return contextlib.nullcontext() if verbose() else contextlib.redirect_stdout(io.StringIO())


def _progress(rank: int, total: int, desc: str):
    """A progress bar drawn by the driver (Ray's tqdm), rank 0 only."""
    if rank != 0:
        return None
    from ray.experimental.tqdm_ray import tqdm

    return tqdm(total=total, desc=desc, unit="step")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What Ray Train runs on each worker: the steps of `WorkerRun`, in order."""
    run = WorkerRun(loop_config)
    run.setup_device_and_task()
    run.read_data()
    run.restore_state()
    run.start_engine()
    run.train()


class WorkerRun:
    """One worker's training run, as a table of contents: device and task, data, restored state, the DeepSpeed
    engine, then epochs (steps, validation, a checkpoint report each) until the run is done."""

    def __init__(self, loop_config: dict[str, Any]):
        from raylib.config import from_dict

        self.loop_config = loop_config
        self.task_cls = loop_config["task"]
        self.job = from_dict(self.task_cls.config_cls, loop_config["job"])
        self.cfg = self.job.train
        self.after_step = loop_config.get("after_step")  # a hook (the scale benchmark's fault drill), or None
        self.track = lambda record, epoch: None  # rank 0 logs each epoch to the stage's MLflow run, if any
        # A GPU worker that sees no CUDA (Ray started with logical GPUs on a CPU machine) trains on its CPU.
        self.use_cuda = self.cfg.use_gpu and torch.cuda.is_available()
        _setup_environment(self.use_cuda)

    # ------------------------------------------------------------ setup
    def setup_device_and_task(self) -> None:
        import ray.train

        from raylib.placement import choose_dtype
        from raylib.runtime import quiet_libraries
        from raylib.train.task import WorkerContext

        context = ray.train.get_context()
        quiet_libraries()  # after Ray Train configured this worker's loggers
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        if self.rank == 0 and self.loop_config.get("tracking"):
            from raylib.tracking import worker_logger

            self.track = worker_logger(self.loop_config["tracking"])
        if self.use_cuda:
            self.device = ray.train.torch.get_device()
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, int(self.loop_config.get("threads_per_worker", 1))))
        torch.manual_seed(self.cfg.seed)
        self.ctx = WorkerContext(self.job, self.rank, self.world, self.device,
                                 choose_dtype(self.job.model.dtype, self.device))
        self.task = self.task_cls(self.ctx)
        self.module = self.task.build()

    def read_data(self) -> None:
        """This worker's rows only (strided by row number, see raylib.train.data); validation rows are all read."""
        import ray.train
        from torch.utils.data import DataLoader

        from raylib.train.batching import EpochSampler, batch_plan
        from raylib.train.data import ShardRows, read_rows

        start = time.perf_counter()
        self.rows, train_rows = read_rows(ray.train.get_dataset_shard("train"))
        _, valid_rows = read_rows(ray.train.get_dataset_shard("valid"))
        self.read_s = time.perf_counter() - start  # this worker's rows from the object store, as Arrow
        self.train_set = ShardRows(train_rows, lambda records: self.task.encode(records, "train"))
        self.valid_set = ShardRows(valid_rows, lambda records: self.task.encode(records, "valid"))
        self.plan = batch_plan(self.cfg, self.loop_config["train_rows"], self.world)
        self.sampler = EpochSampler(self.plan, len(self.train_set), self.cfg.seed)
        # Its own generator: a DataLoader draws a seed from the global RNG at every `iter()`, which would shift
        # the dropout RNG of a run resumed mid-epoch against the unbroken run.
        self.loader = DataLoader(self.train_set, batch_size=self.plan.micro_batch, sampler=self.sampler,
                                 collate_fn=self.task.collate,
                                 generator=torch.Generator().manual_seed(self.cfg.seed))
        self.total_steps = self.plan.steps_per_epoch * self.cfg.epochs
        if self.cfg.max_steps > 0:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)

    def restore_state(self) -> None:
        """The checkpoint Ray hands back (failed workers restarted, or a run launched again), if any: the trainer
        state and the task's latest and best states (the engine's own state follows in `start_engine`)."""
        import ray.train

        from raylib.train.checkpoint import TrainerState, checkpoint_problem

        self.state, self.best_state, self.restored = TrainerState(world_size=self.world), None, None
        self.checkpoint = ray.train.get_checkpoint()
        if self.checkpoint is None:
            return
        self.restored = Path(self.checkpoint.to_directory())  # a local copy, read again after DeepSpeed starts
        problem = checkpoint_problem(self.restored)
        if problem:  # cut short (a kill mid-copy): the previous complete one (Ray keeps two), if there is one
            from raylib.train.checkpoint import complete_checkpoint_before
            from raylib.train.storage import run_name, storage_path

            earlier = complete_checkpoint_before(storage_path(self.job), run_name(self.job), self.checkpoint.path)
            if earlier is None:
                raise RuntimeError(f"The checkpoint to resume from is incomplete ({problem}) and no earlier one "
                                   "is complete.")
            _log(self.rank, f"the latest checkpoint is incomplete ({problem}): resuming from {earlier.name}")
            self.restored = earlier
        self.state = TrainerState.load(self.restored)
        self.task.restore(self.module, self.restored)
        self.best_state = self.task.read_best(self.restored)

    def start_engine(self) -> None:
        """AdamW (a task may give parts their own learning rate) and the schedule in a DeepSpeed engine; a resumed
        run gets its optimizer moments, schedule and RNG back (when the number of workers is the same)."""
        import deepspeed  # noqa: E402  (after DS_ACCELERATOR is set)

        from raylib.assets import load_deepspeed_cpu_ops
        from raylib.train.checkpoint import load_engine_state
        from raylib.train.deepspeed_config import deepspeed_config

        task, module, cfg, state = self.task, self.module, self.cfg, self.state
        groups = task.param_groups(module) if hasattr(task, "param_groups") else \
            [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, self.total_steps))
        with _quiet_stdout():  # DeepSpeed prints "... built successfully" on every start
            if not self.use_cuda:  # its CPU comm op, loaded here where a stale JIT lock cannot hang us
                load_deepspeed_cpu_ops()
            self.engine, _, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizer, lr_scheduler=self.scheduler,
                config=deepspeed_config(cfg, trainable_dtype(module), self.plan))
        if self.restored is not None:
            if state.world_size == self.world:
                load_engine_state(self.engine, self.restored, self.rank)  # AdamW moments, schedule, RNG: exact
                how = "optimizer, schedule and RNG state restored"
            else:  # optimizer shards are tied to the number of workers
                for _ in range(state.global_step):
                    self.scheduler.step()
                state.step_in_epoch, state.epoch_losses, state.epoch_tokens = 0, [], 0  # other shards: epoch anew
                how = f"weights only: it was written by {state.world_size} worker(s), this run has {self.world}"
            _log(self.rank, f"resuming in epoch {state.epoch + 1} at optimizer step {state.global_step} ({how})")
            state.resumes.append({"step": state.global_step, "epoch": state.epoch, "time": time.time()})
            state.world_size = self.world
        plan = self.plan
        _log(self.rank, f"{self.loop_config['train_rows']} train ({len(self.rows)} on rank 0) / {len(self.valid_set)} "
                        f"valid records, {self.world} worker(s), ZeRO-{cfg.zero_stage}, {self.ctx.dtype}, micro-batch "
                        f"{plan.micro_batch} x accumulation {plan.accumulation}, {plan.steps_per_epoch} step(s)/epoch")
        for note in plan.notes(cfg.batch_size):
            _log(self.rank, note)

    # ------------------------------------------------------------ epochs
    def train(self) -> None:
        import ray.train

        stop = self.should_stop()
        if stop and self.checkpoint is not None:  # nothing left to train: the restored checkpoint is the result
            self.state.finished = True
            ray.train.report({"epoch": self.state.epoch, "finished": True},
                             checkpoint=self.checkpoint if self.rank == 0 else None)
        while not stop:
            stop = self.run_epoch()

    def should_stop(self) -> bool:
        """From this run's config: a rerun may allow more epochs than the first run."""
        cfg, state = self.cfg, self.state
        early = bool(self.valid_set) and cfg.patience > 0 and state.bad_epochs >= cfg.patience
        capped = cfg.max_steps > 0 and state.global_step >= cfg.max_steps
        return early or capped or state.epoch >= cfg.epochs

    def run_epoch(self) -> bool:
        """Optimizer steps to the epoch's end (a mid-epoch checkpoint every `checkpoint_every_steps`), then the
        validation and the epoch's checkpoint report. True when the run is done."""
        state, epoch = self.state, self.state.epoch
        # A mid-epoch checkpoint resumes inside its epoch: same shuffle, the micro-batches it trained skipped.
        self.sampler.set_epoch(epoch, skip=state.step_in_epoch * self.plan.accumulation * self.plan.micro_batch)
        self.losses, self.tokens, start = list(state.epoch_losses), state.epoch_tokens, time.perf_counter()
        bar = _progress(self.rank, self.plan.steps_per_epoch, f"epoch {epoch + 1}/{self.cfg.epochs}")
        if bar is not None and state.step_in_epoch:
            bar.update(state.step_in_epoch)
        for batch in self.loader:
            if self.train_step(batch, bar, start):
                break
        if bar is not None:
            bar.close()
        return self.end_epoch(epoch, time.perf_counter() - start)

    def train_step(self, batch: dict[str, torch.Tensor], bar, start: float) -> bool:
        """One micro-batch forward and backward (an optimizer step at each accumulation boundary). True when the
        epoch must end early (`max_steps` reached)."""
        state, cfg, engine = self.state, self.cfg, self.engine
        step_start = time.perf_counter()
        batch = {k: v.to(self.device) for k, v in batch.items()}
        loss = self.task.loss(engine, batch)
        engine.backward(loss)
        boundary = engine.is_gradient_accumulation_boundary()
        engine.step()
        state.step_times.append(time.perf_counter() - step_start)
        self.losses.append(loss.item())
        self.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
        if not boundary:
            return False
        state.global_step += 1
        state.step_in_epoch += 1
        rate = self.tokens * self.world / (time.perf_counter() - start)
        speed = f" {rate:.0f} tok/s" if self.tokens else ""  # models that read no tokens (DCNv2, SASRec) show none
        if bar is not None:
            bar.set_description(f"epoch {state.epoch + 1}/{cfg.epochs} loss {loss.item():.4f}{speed}")
            bar.update(1)
        if verbose() and state.global_step % cfg.log_every_steps == 0:
            _log(self.rank, f"step {state.global_step}/{self.total_steps} loss {loss.item():.4f} "
                            f"lr {self.scheduler.get_last_lr()[0]:.2e}{speed}")
        if self.after_step is not None:
            self.after_step(state.global_step, self.rank, rows=len(self.rows), read_s=self.read_s)
        if cfg.max_steps > 0 and state.global_step >= cfg.max_steps:
            return True
        every = cfg.checkpoint_every_steps
        if every and state.global_step % every == 0 and state.step_in_epoch < self.plan.steps_per_epoch:
            state.epoch_losses, state.epoch_tokens = list(self.losses), self.tokens
            self.save_and_report({"epoch": state.epoch, "step": state.global_step, "mid_epoch": True,
                                  "train_loss": sum(self.losses) / len(self.losses), "finished": False},
                                 self.trainable_now())
        return False

    def end_epoch(self, epoch: int, seconds: float) -> bool:
        """The epoch's record and validation, the best epoch so far, the checkpoint report. True when done."""
        state, task = self.state, self.task
        record = {"epoch": epoch + 1, "step": state.global_step,
                  "train_loss": sum(self.losses) / max(1, len(self.losses)), "lr": self.scheduler.get_last_lr()[0],
                  "train_tokens_per_s": self.tokens * self.world / max(seconds, 1e-9), "finished_at": time.time()}
        if self.use_cuda:  # what the planner estimated, measured (rank 0's GPU)
            record["peak_gpu_gib"] = torch.cuda.max_memory_allocated(self.device) / 1024 ** 3
        if self.valid_set:
            record.update({f"val_{k}": v for k, v in task.validate(self.engine.module, self.valid_set).items()})
        metric = record.get(f"val_{task.metric}", record["train_loss"] if not task.higher_is_better
                            else -record["train_loss"])
        improved = self.better(metric)
        latest = self.trainable_now()
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = metric, epoch + 1, 0
            self.best_state = latest
        else:
            state.bad_epochs += 1
        state.epoch, state.step_in_epoch, state.epoch_losses, state.epoch_tokens = epoch + 1, 0, [], 0
        state.history.append(record)
        if self.rank == 0:
            self.track(record, epoch + 1)
        stop = self.should_stop()
        state.finished = stop
        shown = f", val {task.metric} {record[f'val_{task.metric}']:.4f}" if f"val_{task.metric}" in record else ""
        _log(self.rank, f"epoch {state.epoch}: train loss {record['train_loss']:.4f}{shown}"
                        + (" (best)" if improved else f" (best {state.best_metric:.4f} at epoch {state.best_epoch})"))
        self.save_and_report({**record, "best_metric": state.best_metric, "best_epoch": state.best_epoch,
                              "finished": state.finished}, latest)
        return stop

    def better(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None:
            return True
        return value > best if self.task.higher_is_better else value < best

    # ------------------------------------------------------------ checkpoints
    def trainable_now(self) -> dict[str, torch.Tensor]:
        """Every rank (ZeRO-3 gathers the partitions): the task's trainable state, whole, on the CPU."""
        from raylib.train.checkpoint import gathered_trainable

        return gathered_trainable(self.engine.module, self.cfg.zero_stage, self.task.trainable_state)

    def save_and_report(self, metrics: dict[str, Any], latest: dict[str, torch.Tensor]) -> None:
        """Every rank: write its part of a checkpoint (rank 0 adds the task's files and the state), report it."""
        import ray.train

        from raylib.train.checkpoint import write_checkpoint

        def rank_zero_files(folder: Path) -> None:
            # Before the first validation there is no best yet: the latest stands in (replaced at epoch end).
            self.task.write(self.engine.module, latest, latest if self.best_state is None else self.best_state,
                            folder)
            self.state.save(folder)

        with tempfile.TemporaryDirectory() as tmp:
            folder = write_checkpoint(Path(tmp) / "checkpoint", self.engine, self.rank, self.world, rank_zero_files)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
