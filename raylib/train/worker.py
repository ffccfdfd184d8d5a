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
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


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

    return contextlib.nullcontext() if os.environ.get("RAYLIB_VERBOSE") else contextlib.redirect_stdout(io.StringIO())


def _progress(rank: int, total: int, desc: str):
    """A progress bar drawn by the driver (Ray's tqdm), rank 0 only."""
    if rank != 0:
        return None
    from ray.experimental.tqdm_ray import tqdm

    return tqdm(total=total, desc=desc, unit="step")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from raylib.config import from_dict

    task_cls = loop_config["task"]
    job = from_dict(task_cls.config_cls, loop_config["job"])
    train_cfg = job.train
    # A GPU worker that sees no CUDA (Ray started with logical GPUs on a CPU machine) trains on its CPU.
    use_cuda = train_cfg.use_gpu and torch.cuda.is_available()
    _setup_environment(use_cuda)

    import deepspeed  # noqa: E402  (after DS_ACCELERATOR is set)
    import ray.train
    from torch.utils.data import DataLoader

    from raylib.placement import choose_dtype
    from raylib.train.batching import EpochSampler, batch_plan
    from raylib.train.checkpoint import (
        TrainerState, checkpoint_problem, gathered_trainable, load_engine_state, write_checkpoint,
    )
    from raylib.train.data import read_rows
    from raylib.train.deepspeed_config import deepspeed_config
    from raylib.train.task import WorkerContext

    from raylib.runtime import quiet_libraries

    context = ray.train.get_context()
    quiet_libraries()  # after Ray Train configured this worker's loggers
    rank, world = context.get_world_rank(), context.get_world_size()
    if use_cuda:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    torch.manual_seed(train_cfg.seed)
    ctx = WorkerContext(job, rank, world, device, choose_dtype(job.model.dtype, device))
    task = task_cls(ctx)
    module = task.build()

    # This worker's rows only (strided by row number, see raylib.train.data); validation rows are all read.
    rows, train_records = read_rows(ray.train.get_dataset_shard("train"))
    _, valid_records = read_rows(ray.train.get_dataset_shard("valid"))
    train_set = task.encode(train_records, "train")
    valid_set = task.encode(valid_records, "valid")
    plan = batch_plan(train_cfg, loop_config["train_rows"], world)
    sampler = EpochSampler(plan, len(train_set), train_cfg.seed)
    # Its own generator: a DataLoader draws a seed from the global RNG at every `iter()`, which would shift the
    # dropout RNG of a run resumed mid-epoch against the unbroken run.
    loader = DataLoader(train_set, batch_size=plan.micro_batch, sampler=sampler, collate_fn=task.collate,
                        generator=torch.Generator().manual_seed(train_cfg.seed))
    total_steps = plan.steps_per_epoch * train_cfg.epochs
    if train_cfg.max_steps > 0:
        total_steps = min(total_steps, train_cfg.max_steps)

    state, best_state = TrainerState(world_size=world), None
    checkpoint = ray.train.get_checkpoint()  # set when Ray restarts failed workers or a run is re-launched
    restored = None
    if checkpoint is not None:
        restored = Path(checkpoint.to_directory())  # a local copy, read again after DeepSpeed starts
        problem = checkpoint_problem(restored)
        if problem:
            raise RuntimeError(f"The checkpoint to resume from is incomplete ({problem}).")
        state = TrainerState.load(restored)
        task.restore(module, restored)
        best_state = task.read_best(restored)

    # A task may give parts of its module their own learning rate (`param_groups`); else one group.
    groups = task.param_groups(module) if hasattr(task, "param_groups") else \
        [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(groups, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(train_cfg.warmup_steps, total_steps))
    with _quiet_stdout():  # DeepSpeed prints "... built successfully" on every start
        engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                               config=deepspeed_config(train_cfg, trainable_dtype(module), plan))
    if restored is not None:
        if state.world_size == world:
            load_engine_state(engine, restored, rank)  # AdamW moments, LR schedule, RNG: continue exactly
            how = "optimizer, schedule and RNG state restored"
        else:  # optimizer shards are tied to the number of workers
            for _ in range(state.global_step):
                scheduler.step()
            state.step_in_epoch, state.epoch_losses, state.epoch_tokens = 0, [], 0  # other shards: epoch anew
            how = f"weights only: it was written by {state.world_size} worker(s), this run has {world}"
        _log(rank, f"resuming in epoch {state.epoch + 1} at optimizer step {state.global_step} ({how})")
        state.resumes.append({"step": state.global_step, "epoch": state.epoch, "time": time.time()})
        state.world_size = world

    _log(rank, f"{loop_config['train_rows']} train ({len(rows)} on rank 0) / {len(valid_set)} valid records, "
               f"{world} worker(s), ZeRO-{train_cfg.zero_stage}, {ctx.dtype}, micro-batch {plan.micro_batch} x "
               f"accumulation {plan.accumulation}, {plan.steps_per_epoch} step(s)/epoch")
    for note in plan.notes(train_cfg.batch_size):
        _log(rank, note)

    def better(value: float) -> bool:
        if state.best_metric is None:
            return True
        return value > state.best_metric if task.higher_is_better else value < state.best_metric

    def should_stop() -> bool:  # from this run's config: a rerun may allow more epochs than the first run
        early = bool(valid_set) and train_cfg.patience > 0 and state.bad_epochs >= train_cfg.patience
        capped = train_cfg.max_steps > 0 and state.global_step >= train_cfg.max_steps
        return early or capped or state.epoch >= train_cfg.epochs

    stop = should_stop()
    if stop and checkpoint is not None:  # nothing left to train: hand the restored checkpoint back as the result
        state.finished = True
        ray.train.report({"epoch": state.epoch, "finished": True}, checkpoint=checkpoint if rank == 0 else None)

    def trainable_now() -> dict[str, torch.Tensor]:
        return gathered_trainable(engine.module, train_cfg.zero_stage, task.trainable_state)  # every rank

    def save_and_report(metrics: dict[str, Any], latest: dict[str, torch.Tensor]) -> None:
        """Every rank: write its part of a checkpoint (rank 0 adds the task's files and the state), report it."""
        with tempfile.TemporaryDirectory() as tmp:
            def rank_zero_files(folder: Path) -> None:
                # Before the first validation there is no best yet: the latest stands in (replaced at epoch end).
                task.write(engine.module, latest, latest if best_state is None else best_state, folder)
                state.save(folder)

            folder = write_checkpoint(Path(tmp) / "checkpoint", engine, rank, world, rank_zero_files)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))

    every = train_cfg.checkpoint_every_steps
    while not stop:
        epoch = state.epoch
        # A mid-epoch checkpoint resumes inside its epoch: same shuffle, the micro-batches it trained skipped.
        sampler.set_epoch(epoch, skip=state.step_in_epoch * plan.accumulation * plan.micro_batch)
        losses, tokens, start = list(state.epoch_losses), state.epoch_tokens, time.perf_counter()
        bar = _progress(rank, plan.steps_per_epoch, f"epoch {epoch + 1}/{train_cfg.epochs}")
        if bar is not None and state.step_in_epoch:
            bar.update(state.step_in_epoch)
        for batch in loader:
            step_start = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = task.loss(engine, batch)
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            state.step_times.append(time.perf_counter() - step_start)
            losses.append(loss.item())
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
            if boundary:
                state.global_step += 1
                state.step_in_epoch += 1
                rate = tokens * world / (time.perf_counter() - start)
                if bar is not None:
                    bar.set_description(f"epoch {epoch + 1}/{train_cfg.epochs} loss {loss.item():.4f} "
                                        f"{rate:.0f} tok/s")
                    bar.update(1)
                if os.environ.get("RAYLIB_VERBOSE") and state.global_step % train_cfg.log_every_steps == 0:
                    _log(rank, f"step {state.global_step}/{total_steps} loss {loss.item():.4f} "
                               f"lr {scheduler.get_last_lr()[0]:.2e} {rate:.0f} tok/s")
                drill = loop_config.get("drill")  # a fault drill (RAYLIB_DRILL_KILL_AT_STEP): a worker lost here
                if drill and state.global_step == drill["kill_at_step"] and not Path(drill["marker"]).exists():
                    Path(drill["marker"]).write_text(str(state.global_step))  # once: not again after the restart
                    _log(rank, f"fault drill: SIGKILL after optimizer step {state.global_step}")
                    os.kill(os.getpid(), signal.SIGKILL)
                if train_cfg.max_steps > 0 and state.global_step >= train_cfg.max_steps:
                    break
                if every and state.global_step % every == 0 and state.step_in_epoch < plan.steps_per_epoch:
                    state.epoch_losses, state.epoch_tokens = list(losses), tokens
                    save_and_report({"epoch": epoch, "step": state.global_step, "mid_epoch": True,
                                     "train_loss": sum(losses) / len(losses), "finished": False}, trainable_now())
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "step": state.global_step, "train_loss": sum(losses) / max(1, len(losses)),
                  "lr": scheduler.get_last_lr()[0], "train_tokens_per_s": tokens * world / max(seconds, 1e-9),
                  "finished_at": time.time()}
        if use_cuda:  # what the planner estimated, measured (rank 0's GPU)
            record["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 1024 ** 3
        if valid_set:
            record.update({f"val_{k}": v for k, v in task.validate(engine.module, valid_set).items()})
        metric = record.get(f"val_{task.metric}", record["train_loss"] if not task.higher_is_better
                            else -record["train_loss"])
        improved = better(metric)
        latest = trainable_now()
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = metric, epoch + 1, 0
            best_state = latest
        else:
            state.bad_epochs += 1
        state.epoch, state.step_in_epoch, state.epoch_losses, state.epoch_tokens = epoch + 1, 0, [], 0
        state.history.append(record)
        stop = should_stop()
        state.finished = stop
        shown = f", val {task.metric} {record[f'val_{task.metric}']:.4f}" if f"val_{task.metric}" in record else ""
        _log(rank, f"epoch {state.epoch}: train loss {record['train_loss']:.4f}{shown}"
                   + (" (best)" if improved else f" (best {state.best_metric:.4f} at epoch {state.best_epoch})"))
        save_and_report({**record, "best_metric": state.best_metric, "best_epoch": state.best_epoch,
                         "finished": state.finished}, latest)
