"""Driver side of training: build the TorchTrainer, run it, publish the best adapter as a PEFT folder.

Re-running with the same output dir resumes: Ray Train V2 restores the run named "train" under
`<output_dir>/ray` from its latest checkpoint, and the worker picks it up with `ray.train.get_checkpoint()`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from raylib import RaylibError
from raylib.config import TallrecJobConfig, to_dict
from raylib.data.records import TallrecRecord
from raylib.train.checkpoint import BEST_ADAPTER_DIR, TrainerState, publish_adapter

RUN_NAME = "train"


@dataclasses.dataclass
class TrainResult:
    adapter_dir: Path
    state: TrainerState
    metrics: dict[str, Any]
    wall_time_s: float

    @property
    def step_times(self) -> list[float]:
        return list(self.state.step_times)


def _threads_per_worker(job: TallrecJobConfig) -> int:
    if job.train.cpus_per_worker > 0:
        return job.train.cpus_per_worker
    return max(1, (os.cpu_count() or 1) // max(1, job.train.num_workers))


def train_lora(job: TallrecJobConfig, train_records: list[TallrecRecord],
               valid_records: list[TallrecRecord]) -> TrainResult:
    """Run LoRA tuning on Ray Train workers (DeepSpeed ZeRO inside) and publish `<output_dir>/adapter`."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raylib.train.worker import train_loop_per_worker

    if not train_records:
        raise RaylibError("No training records: check data.train_file / data.train_samples.")
    output = Path(job.output_dir).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    final_adapter = output / "adapter"
    # Ray sets each worker's OMP_NUM_THREADS to the CPUs it asks for: on CPU, ask for the threads it should use.
    cpus = _threads_per_worker(job) if not job.train.use_gpu else max(1, job.train.cpus_per_worker)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": to_dict(job),
            "train_records": [dataclasses.asdict(r) for r in train_records],
            "valid_records": [dataclasses.asdict(r) for r in valid_records],
            "threads_per_worker": _threads_per_worker(job),
        },
        torch_config=TorchConfig(backend="nccl" if job.train.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=job.train.num_workers, use_gpu=job.train.use_gpu,
                                               resources_per_worker={"CPU": cpus}),
        run_config=ray.train.RunConfig(
            name=RUN_NAME,
            storage_path=str(output / "ray"),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.train.max_failures),
        ),
    )
    start = time.time()
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("Training reported no checkpoint.")
    with result.checkpoint.as_directory() as folder:
        state = TrainerState.load(Path(folder))
        publish_adapter(Path(folder) / BEST_ADAPTER_DIR, final_adapter,
                        extra={"best_epoch": state.best_epoch, "best_metric": state.best_metric,
                               "epochs_run": state.epoch, "optimizer_steps": state.global_step})
    return TrainResult(final_adapter, state, dict(result.metrics or {}), time.time() - start)
