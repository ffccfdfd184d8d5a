"""The per-worker training function Ray Train runs: plain PyTorch + DeepSpeed, one process per worker.

Each epoch: shuffle (seeded by epoch), micro-batches through the DeepSpeed engine, then validation AUC on
all workers (sharded, gathered), then one checkpoint report. TALLRec early-stops on validation AUC.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _setup_environment(use_gpu: bool) -> None:
    from raylib.assets import cache_root

    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported (ray#50406)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))


def _log(rank: int, message: str) -> None:
    if rank == 0:
        print(f"[train] {message}", flush=True)


def _lr_lambda(warmup: int, total: int):
    """Linear warm-up then linear decay to zero (HF Trainer's default schedule, used by TALLRec)."""
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


@torch.no_grad()
def sharded_yes_probabilities(module, encoded, yes_no: tuple[int, int], pad_id: int, batch_size: int,
                              rank: int, world: int, device) -> np.ndarray:
    """P(Yes) for all `encoded` prompts, each worker scoring a strided shard. Every worker runs the same
    number of forward passes (ZeRO-3 gathers parameters collectively), so shards are padded to equal size."""
    import torch.distributed as dist

    from raylib.encoding import collate_left_padded

    n = len(encoded)
    per_rank = math.ceil(n / world)
    mine = [min(i, n - 1) for i in range(rank, per_rank * world, world)][:per_rank]
    mine.sort(key=lambda i: len(encoded[i].input_ids))
    probs = []
    module.eval()
    for start in range(0, per_rank, batch_size):
        batch = collate_left_padded([encoded[i] for i in mine[start:start + batch_size]], pad_id)
        logits = module(**{k: v.to(device) for k, v in batch.items()}, use_cache=False,
                        logits_to_keep=1).logits[:, -1, :]
        pair = torch.stack([logits[:, yes_no[0]], logits[:, yes_no[1]]], dim=-1).float()
        probs.extend(pair.softmax(-1)[:, 0].cpu().tolist())
    module.train()
    gathered: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(gathered, (mine, probs))
    else:
        gathered = [(mine, probs)]
    out = np.empty(n)
    for index, values in gathered:
        out[index] = values
    return out


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from raylib.config import TallrecJobConfig, from_dict

    job = from_dict(TallrecJobConfig, loop_config["job"])
    _setup_environment(job.train.use_gpu)

    import deepspeed  # noqa: E402  (after DS_ACCELERATOR is set)
    import ray.train
    from torch.utils.data import DataLoader, DistributedSampler

    from raylib.data.records import TallrecRecord
    from raylib.encoding import answer_token_ids, collate_for_training, encode_for_scoring, encode_for_training
    from raylib.metrics import binary_report
    from raylib.model import add_lora, choose_dtype, load_model, load_tokenizer
    from raylib.train.checkpoint import (
        ADAPTER_DIR, BEST_ADAPTER_DIR, TrainerState, gathered_adapter_state, load_adapter_into, write_adapter,
    )
    from raylib.train.deepspeed_config import batch_geometry, deepspeed_config
    from raylib.train.loss import causal_lm_loss

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    train_cfg = job.train
    if train_cfg.use_gpu:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    torch.manual_seed(train_cfg.seed)

    tokenizer = load_tokenizer(job.model)
    dtype = choose_dtype(job.model.dtype, device)
    model = load_model(job.model, device, dtype)
    if train_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = add_lora(model, job.lora)

    state, best_adapter = TrainerState(), None
    checkpoint = ray.train.get_checkpoint()  # set when Ray restarts failed workers or a run is re-launched
    if checkpoint is not None:
        from safetensors.torch import load_file

        with checkpoint.as_directory() as folder:
            state = TrainerState.load(Path(folder))
            load_adapter_into(model, Path(folder) / ADAPTER_DIR)
            best_adapter = load_file(str(Path(folder) / BEST_ADAPTER_DIR / "adapter_model.safetensors"))
        _log(rank, f"resuming after epoch {state.epoch} (optimizer step {state.global_step})")

    train_records = [TallrecRecord(**r) for r in loop_config["train_records"]]
    valid_records = [TallrecRecord(**r) for r in loop_config["valid_records"]]
    max_len = job.data.max_length
    train_set = [encode_for_training(tokenizer, r, max_len, train_cfg.loss_on, f"train record {i}")
                 for i, r in enumerate(train_records)]
    valid_set = [encode_for_scoring(tokenizer, r, max_len, f"valid record {i}") for i, r in enumerate(valid_records)]
    yes_no = answer_token_ids(tokenizer)

    micro, accumulation = batch_geometry(train_cfg, len(train_set), world)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=train_cfg.seed)
    loader = DataLoader(train_set, batch_size=micro, sampler=sampler,
                        collate_fn=lambda b: collate_for_training(b, tokenizer.pad_token_id))
    steps_per_epoch = max(1, len(loader) // accumulation)
    total_steps = steps_per_epoch * train_cfg.epochs
    if train_cfg.max_steps > 0:
        total_steps = min(total_steps, train_cfg.max_steps)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(train_cfg.warmup_steps, total_steps))
    for _ in range(state.global_step):  # resume the schedule where it stopped
        scheduler.step()
    ds_config = deepspeed_config(train_cfg, dtype, micro, accumulation, world)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    _log(rank, f"{len(train_set)} train / {len(valid_set)} valid records, {world} worker(s), ZeRO-"
               f"{train_cfg.zero_stage}, {dtype}, micro-batch {micro} x accumulation {accumulation}, "
               f"{steps_per_epoch} step(s)/epoch")

    def should_stop() -> bool:  # from this run's config: a rerun may allow more epochs than the first run
        early = bool(valid_set) and train_cfg.patience > 0 and state.bad_epochs >= train_cfg.patience
        capped = train_cfg.max_steps > 0 and state.global_step >= train_cfg.max_steps
        return early or capped or state.epoch >= train_cfg.epochs

    stop = should_stop()
    if stop and checkpoint is not None:  # nothing left to train: hand the restored checkpoint back as the result
        state.finished = True
        ray.train.report({"epoch": state.epoch, "finished": True}, checkpoint=checkpoint if rank == 0 else None)
    epoch = state.epoch
    while not stop and epoch < train_cfg.epochs:
        sampler.set_epoch(epoch)
        epoch_loss, epoch_batches, epoch_tokens, epoch_start = 0.0, 0, 0, time.perf_counter()
        for batch in loader:
            step_start = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = causal_lm_loss(engine, batch, train_cfg.loss_on)
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            state.step_times.append(time.perf_counter() - step_start)
            epoch_loss += loss.item()
            epoch_batches += 1
            epoch_tokens += int(batch["attention_mask"].sum())
            if boundary:
                state.global_step += 1
                if state.global_step % max(1, train_cfg.log_every_steps) == 0:
                    rate = epoch_tokens * world / (time.perf_counter() - epoch_start)
                    _log(rank, f"epoch {epoch + 1}/{train_cfg.epochs} step {state.global_step}/{total_steps} "
                               f"loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.2e} {rate:.0f} tok/s")
                if train_cfg.max_steps > 0 and state.global_step >= train_cfg.max_steps:
                    stop = True
                    break
        epoch += 1
        train_seconds = time.perf_counter() - epoch_start
        record = {"epoch": epoch, "step": state.global_step, "train_loss": epoch_loss / max(1, epoch_batches),
                  "train_tokens_per_s": epoch_tokens * world / max(train_seconds, 1e-9), "finished_at": time.time()}
        if valid_set:
            probs = sharded_yes_probabilities(engine.module, valid_set, yes_no, tokenizer.pad_token_id,
                                              train_cfg.eval_batch_size, rank, world, device)
            record.update({f"val_{k}": v for k, v in binary_report([r.label for r in valid_records], probs).items()})
        metric = record.get("val_auc", -record["train_loss"])
        improved = state.best_metric is None or metric > state.best_metric
        adapter = gathered_adapter_state(engine.module, train_cfg.zero_stage)  # every rank gathers
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = metric, epoch, 0
            best_adapter = adapter
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        stop = stop or should_stop()
        state.finished = stop
        state.history.append(record)
        _log(rank, f"epoch {epoch} done: loss {record['train_loss']:.4f}"
                   + (f", val AUC {record['val_auc']:.4f}" if "val_auc" in record else "")
                   + (" (best)" if improved else f" (best {state.best_metric:.4f} at epoch {state.best_epoch})"))

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            report_checkpoint = None
            if rank == 0:
                write_adapter(engine.module, adapter, folder / ADAPTER_DIR)
                # The latest checkpoint always carries the best adapter too, so keeping 2 checkpoints suffices.
                write_adapter(engine.module, best_adapter, folder / BEST_ADAPTER_DIR)
                state.save(folder)
                report_checkpoint = ray.train.Checkpoint.from_directory(tmp)
            metrics = {**record, "best_metric": state.best_metric, "best_epoch": state.best_epoch,
                       "finished": state.finished}
            ray.train.report(metrics, checkpoint=report_checkpoint)
        if state.finished:
            break
