"""Driver side of training: build the TorchTrainer for a task, run it, publish the task's best state.

The data reaches the workers through Ray Data (`raylib.train.data`): staged as Parquet under
`<output_dir>/data/`, one strided shard per worker. Re-running with the same output dir resumes: Ray Train V2
restores the run's folder under the storage path (`<output_dir>/ray/train`, or a folder named after the
output_dir under a shared `train.storage_path`: `raylib.train.storage.run_name`) from its latest checkpoint,
and the worker picks it up with `ray.train.get_checkpoint()`.
A run fingerprint (`<output_dir>/run.json`) makes sure it is the same run (`claim_output_dir`); once published,
`finished.json` lets a rerun with the same settings return the result without starting Ray Train again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from raylib import RaylibError, tracking
from raylib.config import TrainJob, to_dict
from raylib.train.checkpoint import (TrainerState, claim_output_dir, current_fingerprint, data_digest,
                                     run_fingerprint)
from raylib.train.storage import run_name, storage_path
from raylib.runtime import verbose
from raylib.stages import folder_in_use, read_json, write_json

FINISHED_FILE = "finished.json"  # written after publishing: this run is done (`finished_result`)


@dataclasses.dataclass
class TrainResult:
    published_dir: Path  # what the task published: a PEFT adapter folder, or a whole model's (SASRec, DCNv2)
    state: TrainerState
    metrics: dict[str, Any]
    wall_time_s: float

    @property
    def step_times(self) -> list[float]:
        return list(self.state.step_times)


def _threads_per_worker(job: TrainJob) -> int:
    if job.train.cpus_per_worker > 0:
        return job.train.cpus_per_worker
    return max(1, (os.cpu_count() or 1) // max(1, job.train.num_workers))


Data = list | str | Path  # records (dicts or dataclasses), or a Parquet file or folder of them


def prepare_output_dir(task_cls, job: TrainJob, train_data: Data, valid_data: Data) -> bool:
    """Check (before any work) that `job.output_dir` is free or holds this same run; True if it will resume."""
    return _claim(task_cls, job, run_fingerprint(task_cls, job, data_digest(train_data, valid_data)))


def _claim(task_cls, job: TrainJob, fingerprint: dict[str, Any]) -> bool:
    output = Path(job.output_dir).expanduser().resolve()
    return claim_output_dir(output, fingerprint, job.train.fresh_start, storage_path(job), run_name(job),
                            start_weights=getattr(task_cls, "start_weights", ()))


def _run_length(job: TrainJob) -> dict[str, int]:
    return {"epochs": job.train.epochs, "patience": job.train.patience, "max_steps": job.train.max_steps}


def finished_result(task_cls, job: TrainJob, train_data: Data, valid_data: Data) -> TrainResult | None:
    """The published result of this same run, finished with the same run length, or None: a pipeline's stage
    that is done is not started again (no Ray Train run at all)."""
    return _finished(job, run_fingerprint(task_cls, job, data_digest(train_data, valid_data)))


def _finished(job: TrainJob, fingerprint: dict[str, Any]) -> TrainResult | None:
    path = Path(job.output_dir).expanduser().resolve() / FINISHED_FILE
    saved = None if job.train.fresh_start else read_json(path)
    if not isinstance(saved, dict) or "state" not in saved:  # none, or cut short: train (or resume) again
        return None
    if current_fingerprint(saved.get("fingerprint") or {}) != json.loads(json.dumps(fingerprint, default=str)) or \
            saved.get("run_length") != _run_length(job) or not Path(saved.get("published", "")).exists():
        return None
    return TrainResult(Path(saved["published"]), TrainerState(**saved["state"]), saved.get("metrics", {}), 0.0)


def train(task_cls, job: TrainJob, train_data: Data, valid_data: Data,
          after_step: Callable[..., None] | None = None) -> TrainResult:
    """Train `task_cls` on Ray Train workers (DeepSpeed ZeRO inside) and publish its best state. The data are
    lists of records or Parquet files/folders of them; either way the workers read them through Ray Data.
    `after_step(global_step, rank, rows=, read_s=)` runs on every worker after each optimizer step, told the
    worker's training rows and the seconds it took to read them (a hook: the scale benchmark's fault drill kills a
    worker there, the data-scale benchmark stops at the first step)."""
    import raylib.train.data as train_data_io

    if isinstance(train_data, list) and not train_data:
        raise RaylibError("No training records: check the training data and its sample size.")
    train_data_io.check_source(train_data, "training")
    train_data_io.check_source(valid_data, "validation")
    if getattr(task_cls, "plans_llm_memory", True):  # small whole models (SASRec, DCNv2) say False
        from raylib.plan import check_job_fits

        check_job_fits(job)  # a GPU config that cannot fit stops here, with the cheapest change that fits
    with folder_in_use(job.output_dir):  # a second launch into this folder stops here with one line
        return _train(task_cls, job, train_data, valid_data, after_step)


def _train(task_cls, job: TrainJob, train_data: Data, valid_data: Data, after_step) -> TrainResult:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raylib.placement import process_group_backend
    from raylib.runtime import ensure_ray
    import raylib.train.data as train_data_io
    from raylib.train.storage import check_shared
    from raylib.train.worker import train_loop_per_worker

    fingerprint = run_fingerprint(task_cls, job, data_digest(train_data, valid_data))  # hashes the data once
    done = _finished(job, fingerprint)
    if done is not None:
        print(f"[train] {job.output_dir}: finished earlier with these settings; using {done.published_dir}", flush=True)
        return done
    output = Path(job.output_dir).expanduser().resolve()
    _claim(task_cls, job, fingerprint)
    (output / FINISHED_FILE).unlink(missing_ok=True)
    run = _tracked(task_cls, job, output, fingerprint)
    ensure_ray(job.ray_address)
    storage = storage_path(job)
    check_shared(storage)  # several nodes and a node-local folder: stop now, not at the first checkpoint
    staged_train = train_data_io.stage(train_data, output / train_data_io.DATA_DIR, "train")
    staged_valid = train_data_io.stage(valid_data, output / train_data_io.DATA_DIR, "valid")
    if staged_train.rows < job.train.num_workers:
        raise RaylibError(f"{staged_train.rows} training record(s) for {job.train.num_workers} workers: every "
                          "worker needs at least one.")
    datasets, dataset_config = train_data_io.datasets(staged_train, staged_valid, job.train.num_workers)
    # Ray sets each worker's OMP_NUM_THREADS to the CPUs it asks for: on CPU, ask for the threads it should use.
    cpus = _threads_per_worker(job) if not job.train.use_gpu else max(1, job.train.cpus_per_worker)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"task": task_cls, "job": to_dict(job), "train_rows": staged_train.rows,
                           "threads_per_worker": _threads_per_worker(job),
                           "after_step": after_step, "tracking": dataclasses.asdict(run) if run else None},
        datasets=datasets,
        dataset_config=dataset_config,
        # NCCL where GPU workers see CUDA, gloo otherwise (CPU workers; logical GPUs on a CPU machine)
        torch_config=TorchConfig(backend=process_group_backend(job.train.use_gpu, job.ray_address)),
        scaling_config=ray.train.ScalingConfig(num_workers=job.train.num_workers, use_gpu=job.train.use_gpu,
                                               resources_per_worker={"CPU": cpus}),
        run_config=ray.train.RunConfig(
            name=run_name(job),
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.train.max_failures),
            # Ray Train's own INFO lines (resources, checkpoint paths, report dumps) stay in Ray's logs.
            logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
        ),
    )
    start = time.time()
    result = trainer.fit()
    if result.error is not None:
        if run:
            tracking.close(run, "FAILED")
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("Training reported no checkpoint.")
    with result.checkpoint.as_directory() as folder:
        state = TrainerState.load(Path(folder))
        published = task_cls.publish(Path(folder), output, {
            "best_epoch": state.best_epoch, "best_metric": state.best_metric, "metric": task_cls.metric,
            "epochs_run": state.epoch, "optimizer_steps": state.global_step})
    outcome = TrainResult(published, state, dict(result.metrics or {}), time.time() - start)
    write_json(output / FINISHED_FILE, {"fingerprint": fingerprint, "run_length": _run_length(job),
                                        "published": str(published), "state": dataclasses.asdict(state),
                                        "metrics": outcome.metrics})
    if run:
        tracking.log_metrics(run, {"best_metric": state.best_metric, "best_epoch": state.best_epoch,
                                   "optimizer_steps": state.global_step, "wall_time_s": outcome.wall_time_s})
        tracking.log_artifacts(run, published)
        tracking.close(run)
    return outcome


def _tracked(task_cls, job: TrainJob, output: Path, fingerprint: dict[str, Any]) -> tracking.Run | None:
    """This stage's MLflow run (`raylib.tracking`): its fingerprinted settings and run length as params."""
    if job.train.fresh_start:
        (output / tracking.STAGE_RUN_FILE).unlink(missing_ok=True)
    params = {**{k: v for k, v in fingerprint.items() if k != "records"}, "records_sha1": fingerprint["records"],
              "run_length": _run_length(job)}
    return tracking.stage_run(job.tracking, output, f"{task_cls.task_id} training", params)
