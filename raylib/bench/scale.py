"""Scale and reliability benchmark: `raylib bench scale`, writes reports/scale.json + scale.png.

Sections (each saved as soon as it is measured; a rerun keeps the ones already in the report):
  plan            the GPU recipes through the memory planner (measured_gb null: `raylib gpu-check` measures on a GPU)
  train_overhead  one training step under Ray Train + DeepSpeed ZeRO-2 over a bare PEFT + AdamW loop on the same
                  micro-batches, and where the difference goes: the same bare loop inside a Ray Train worker
                  (Ray's processes sharing the cores) and DeepSpeed's engine there (our trainer's share)
  workers         the same TALLRec job on 1 and 2 Ray Train workers, two seeds each: throughput and test AUC;
                  within noise when the difference of the means is at most twice the seed-to-seed spread
  fault           the 1-worker job again, its worker SIGKILLed mid-epoch (checkpoints every few steps): where
                  it resumed, the steps lost, and its final loss against the unbroken run
  driver_fault    the job as a command, its whole process group SIGKILLed after a checkpoint, then rerun
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, LoraSettings, ModelConfig, TrainConfig, key_form, to_dict
from raylib.methods.tallrec.config import DataConfig, EvalConfig
from raylib.assets import PROJECT_DIR
from raylib.bench.common import read_report, report_path, write_report

RECIPES = ("jobs/configs/tallrec-llama7b-rtx3090.yaml", "jobs/configs/tallrec-llama13b-4xrtx3090.yaml")


@dataclass(config=STRICT)
class BenchScaleConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    # TALLRec on the embedded MovieLens as jobs/configs/tallrec_cpu.yaml runs it (lr 1e-3, global batch 4, loss
    # on the answer token), 3 epochs. 2 workers take the same optimizer steps: micro-batch 2 on each.
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        learning_rate=1e-3, batch_size=4, micro_batch_size=4, epochs=3, patience=0, loss_on="answer_token",
        eval_batch_size=16, seed=42))
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(
        train_samples=64, valid_samples=32, test_samples=200, max_length=512))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    recipes: list[str] = dataclasses.field(default_factory=lambda: list(RECIPES))
    overhead_records: int = Field(64, ge=8)
    kill_at_step: int = Field(23, ge=1)  # in the middle of epoch 2 (16 steps per epoch here)
    checkpoint_every_steps: int = Field(4, ge=1)
    noise_seed: int = 43  # a second 1-worker run, this seed: how far two runs differing only in seed land apart
    driver_drill: bool = True
    bootstrap: int = Field(2000, ge=100)
    work_dir: str = "runs/bench_scale"
    report: str = "reports/scale.json"


# ---------------------------------------------------------------- report file
def _path(config: BenchScaleConfig) -> Path:
    return report_path(config.report)


def _load(config: BenchScaleConfig) -> dict[str, Any]:
    saved = read_report(_path(config))
    # Measurements of another setting are not kept.
    return saved if saved.get("config") == json.loads(json.dumps(_shown(config))) else {}


def _shown(config: BenchScaleConfig) -> dict[str, Any]:
    """The settings a report saves and a resumed run compares (as cache keys hold them: `key_form`)."""
    return {k: v for k, v in key_form(config).items() if k not in ("report", "work_dir")}


def _save(config: BenchScaleConfig, report: dict[str, Any]) -> None:
    keys = ("plan", "workers", "fault", "train_overhead")  # the keys first
    ordered = {k: report[k] for k in keys if k in report} | {k: v for k, v in report.items() if k not in keys}
    write_report(ordered, _path(config))


# ---------------------------------------------------------------- sections
def plan_recipes(config: BenchScaleConfig) -> dict[str, Any]:
    from raylib.config import load_config
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.plan import check_job_fits, count_parameters, model_config, report, setup_for_job

    out = {}
    for recipe in config.recipes:
        job = load_config(TallrecJobConfig, PROJECT_DIR / recipe)
        plan = report(count_parameters(model_config(job.model.name), job.lora), setup_for_job(job, job.train.gpu),
                      job.model.name)
        if plan["fits"]:
            check_job_fits(job)  # what the training job itself runs first
        out[Path(recipe).stem] = {"fits": plan["fits"], "estimated_gb": round(plan["gib"]["total"], 3),
                                  "measured_gb": None, "gpu": job.train.gpu, "gpus": job.train.num_workers,
                                  "usable_gb": round(plan["capacity_gib"], 3),
                                  "parts_gib": {k: round(v, 3) for k, v in plan["gib"].items()}}
    return out


def _job(config: BenchScaleConfig, name: str, **train: Any):
    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig

    return from_dict(TallrecJobConfig, {
        "model": to_dict(config.model), "lora": to_dict(config.lora), "data": to_dict(config.data),
        "eval": to_dict(config.eval), "train": {**to_dict(config.train), **train},
        "output_dir": str(Path(config.work_dir).resolve() / name), "skip_zero_shot": True})


def _data(config: BenchScaleConfig):
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    return load_tallrec_data(config.data)


def bare_loop_in_ray_worker(config: BenchScaleConfig, job, records: list, engine: bool) -> list[float]:
    """The bare loop (or, with `engine`, the same batches through a DeepSpeed ZeRO-2 engine) inside a Ray Train
    worker: the step time the trainer would have if all it added were the Ray process around it."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    name = f"bare-{'engine' if engine else 'peft'}"
    out = Path(config.work_dir).resolve() / f"{name}.json"

    def loop(cfg):
        import torch

        from raylib.assets import load_deepspeed_cpu_ops
        from raylib.bench.tallrec import bare_step_times

        load_deepspeed_cpu_ops()
        torch.set_num_threads(os.cpu_count() or 1)
        times = bare_step_times(None, job, records, cfg["steps"], engine=cfg["engine"])
        Path(cfg["out"]).write_text(json.dumps(times))

    result = TorchTrainer(loop, train_loop_config={"steps": len(records) // job.train.micro_batch_size,
                                                   "engine": engine, "out": str(out)},
                          torch_config=TorchConfig(backend="gloo"),
                          scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={
                              "CPU": os.cpu_count() or 1}),
                          run_config=ray.train.RunConfig(storage_path=str(Path(config.work_dir).resolve() / "ray"),
                                                         name=name)).fit()
    if result.error is not None:
        raise result.error
    return json.loads(out.read_text())


def train_overhead(config: BenchScaleConfig) -> dict[str, Any]:
    import shutil

    from raylib.bench.tallrec import bare_step_times, steady_mean
    from raylib.data.records import sample_records
    from raylib.methods.tallrec.pipeline import train_tallrec

    records = sample_records(_data(config).train, config.overhead_records, 0)
    job = _job(config, "overhead", epochs=1, batch_size=4, micro_batch_size=4, loss_on="response")
    steps = len(records) // 4
    shutil.rmtree(job.output_dir, ignore_errors=True)  # else a rerun resumes a finished run and trains nothing
    print("[bench] overhead: bare PEFT loop in this process (before Ray starts)", flush=True)
    bare_before = bare_step_times(None, job, records, steps)
    print("[bench] overhead: Ray Train + DeepSpeed ZeRO-2 (the trainer)", flush=True)
    trainer = train_tallrec(job, records, []).step_times
    print("[bench] overhead: bare loop and DeepSpeed engine inside a Ray Train worker", flush=True)
    bare_in_ray = bare_loop_in_ray_worker(config, job, records, engine=False)
    engine_in_ray = bare_loop_in_ray_worker(config, job, records, engine=True)
    bare_after = bare_step_times(None, job, records, steps)
    bare = (steady_mean(bare_before) + steady_mean(bare_after)) / 2
    return {"train_overhead": steady_mean(trainer) / bare, "train_overhead_detail": {
        "step_s": {"bare_peft_before": steady_mean(bare_before), "bare_peft_after_ray_started": steady_mean(bare_after),
                   "trainer": steady_mean(trainer), "bare_peft_in_ray_worker": steady_mean(bare_in_ray),
                   "deepspeed_engine_in_ray_worker": steady_mean(engine_in_ray)},
        "ray_process_share": steady_mean(bare_in_ray) / bare,
        "deepspeed_engine_share": steady_mean(engine_in_ray) / steady_mean(bare_in_ray),
        "trainer_loop_share": steady_mean(trainer) / steady_mean(engine_in_ray),
        "micro_steps": steps, "records": len(records)}}


def paired_bootstrap_std(labels, a, b, rounds: int, seed: int = 0) -> float:
    """Std of AUC(a) - AUC(b) over bootstrap resamples of the test records (the same resample for both)."""
    from raylib.metrics import auc

    labels, a, b = np.asarray(labels), np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() == labels[idx].max():
            continue
        diffs.append(auc(labels[idx], a[idx]) - auc(labels[idx], b[idx]))
    return float(np.std(diffs))


def run_workers(config: BenchScaleConfig, workers: int, seed: int | None = None) -> dict[str, Any]:
    from raylib.methods.tallrec.pipeline import score_records
    from raylib.methods.tallrec.pipeline import train_tallrec

    data = _data(config)
    name, extra = f"workers{workers}", {"num_workers": workers}
    if seed is not None:
        name, extra = f"{name}-seed{seed}", {**extra, "seed": seed}
    job = _job(config, name, **extra)
    print(f"[bench] TALLRec on {workers} worker(s), seed {job.train.seed}", flush=True)
    result = train_tallrec(job, data.train, data.valid)
    scored = score_records(job.model, data.test, str(result.published_dir), job.data.max_length, job.eval)
    history = result.state.history
    return {"tokens_per_s": statistics.mean(h["train_tokens_per_s"] for h in history), "auc": scored["auc"],
            "logloss": scored["logloss"], "val_auc": [h.get("val_auc") for h in history],
            "best_epoch": result.state.best_epoch, "seed": job.train.seed,
            "train_loss": [h["train_loss"] for h in history], "optimizer_steps": result.state.global_step,
            "train_wall_s": result.wall_time_s, "probabilities": scored["probabilities"],
            "labels": [r.label for r in data.test]}


def auc_within_noise(runs: dict[str, Any], other: str, rounds: int) -> dict[str, Any]:
    """1 vs 2 workers, each run with two seeds. Training noise: the pooled within-group std of the test AUC
    over seeds (with two seeds per group it is also the standard error of the difference of the means);
    test-set noise: the paired bootstrap spread of one pair's AUC difference. Within noise: the difference of
    the means is at most twice the training noise."""
    one, two = [runs["1"]["auc"], runs[f"1-{other}"]["auc"]], [runs["2"]["auc"], runs[f"2-{other}"]["auc"]]
    pooled = float(np.sqrt((np.var(one, ddof=1) + np.var(two, ddof=1)) / 2))
    diff = float(np.mean(two) - np.mean(one))
    return {"mean_1_worker": float(np.mean(one)), "mean_2_workers": float(np.mean(two)), "diff": diff,
            "seed_std": pooled, "within_noise": abs(diff) <= 2 * pooled,
            "paired_bootstrap_std": paired_bootstrap_std(runs["1"]["labels"], runs["2"]["probabilities"],
                                                         runs["1"]["probabilities"], rounds)}


@dataclasses.dataclass(frozen=True)
class KillOnce:
    """A training hook (`raylib.train.train(after_step=...)`): rank 0's worker SIGKILLs itself after optimizer
    step `step`, once per run (the `marker` file remembers it), so that Ray Train's restart can be observed."""
    step: int
    marker: str

    def __call__(self, global_step: int, rank: int, **_) -> None:
        if rank == 0 and global_step == self.step and not Path(self.marker).exists():
            Path(self.marker).write_text(str(global_step))
            print(f"[train] fault drill: SIGKILL after optimizer step {global_step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def worker_fault(config: BenchScaleConfig, unbroken: dict[str, Any]) -> dict[str, Any]:
    from raylib.methods.tallrec.pipeline import train_tallrec

    data = _data(config)
    import shutil

    job = _job(config, "fault", max_failures=1, checkpoint_every_steps=config.checkpoint_every_steps)
    shutil.rmtree(job.output_dir, ignore_errors=True)  # a drill from scratch: no finished run, no marker
    print(f"[bench] fault drill: the worker is SIGKILLed after optimizer step {config.kill_at_step}", flush=True)
    start = time.time()
    result = train_tallrec(job, data.train, data.valid,
                           after_step=KillOnce(config.kill_at_step, str(Path(job.output_dir) / "drill-killed")))
    state = result.state
    if not (Path(job.output_dir) / "drill-killed").is_file():
        raise RuntimeError("The fault drill's worker was never killed: did the run end before the kill step?")
    # No resume recorded: the restarted worker found no registered checkpoint and began again at step 0.
    resumed = state.resumes[0]["step"] if state.resumes else 0
    return {"killed_at_step": config.kill_at_step, "resumed_from_step": resumed, "final_step": state.global_step,
            "lost_steps": config.kill_at_step - resumed,
            "final_loss_diff": abs(state.history[-1]["train_loss"] - unbroken["train_loss"][-1]),
            "train_loss": [h["train_loss"] for h in state.history], "unbroken_train_loss": unbroken["train_loss"],
            "checkpoint_every_steps": config.checkpoint_every_steps, "wall_s": time.time() - start}


def driver_fault(config: BenchScaleConfig, unbroken: dict[str, Any]) -> dict[str, Any]:
    """`python -m jobs.tallrec ...` in its own session; SIGKILL the session (driver, its Ray, the worker) after
    its second checkpoint; run the same command again."""
    import shutil

    job = _job(config, "driver_fault", checkpoint_every_steps=config.checkpoint_every_steps)
    shutil.rmtree(job.output_dir, ignore_errors=True)
    Path(job.output_dir).mkdir(parents=True)
    job_file = Path(job.output_dir) / "job.yaml"
    values = to_dict(job)
    values["data"]["test_samples"] = 8  # the drill is about training (0 would score every test record)
    job_file.write_text(json.dumps(values, indent=1, default=str))  # JSON is YAML
    command = [sys.executable, "-m", "jobs.tallrec", "--config", str(job_file)]
    states = Path(job.output_dir) / "ray" / "train"

    def checkpointed_steps() -> list[int]:
        steps = []
        for state in states.glob("checkpoint_*/trainer_state.json"):
            if (state.parent / "manifest_rank0.json").is_file():
                steps.append(json.loads(state.read_text())["global_step"])
        return sorted(steps)

    print("[bench] driver fault drill: the job's whole process group is SIGKILLed after its 2nd checkpoint",
          flush=True)
    first = subprocess.Popen(command, cwd=PROJECT_DIR, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 1800
    while time.time() < deadline and len(checkpointed_steps()) < 2 and first.poll() is None:
        time.sleep(1)
    killed_after = checkpointed_steps()[-1] if checkpointed_steps() else 0
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    kill_session_leftovers(first.pid)
    time.sleep(3)
    print("[bench] driver fault drill: the same command again", flush=True)
    second = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=3600)
    if second.returncode != 0:
        raise RuntimeError(f"the rerun failed:\n{second.stderr[-3000:]}")
    finished = json.loads((Path(job.output_dir) / "finished.json").read_text())["state"]
    return {"checkpoint_step_when_killed": killed_after,
            "resumed_from_step": finished["resumes"][0]["step"] if finished["resumes"] else 0,
            "final_step": finished["global_step"],
            "final_loss_diff": abs(finished["history"][-1]["train_loss"] - unbroken["train_loss"][-1])}


def kill_session_leftovers(sid: int) -> None:
    """Ray processes the killed job started in its session (raylet, GCS, workers), if any outlived it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


# ---------------------------------------------------------------- the whole benchmark
def run_bench(config: BenchScaleConfig) -> dict[str, Any]:
    from raylib.bench.tallrec import machine

    report = _load(config) or {"config": _shown(config)}
    report.setdefault("machine", machine(config))  # its model and dtype: the same fields as the TALLRec bench
    report["gpu_measurement"] = ("measured_gb is null: this benchmark plans on CPU; `raylib gpu-check` measures a "
                                 "GPU's peak (reports/gpu.json)")
    report["plan"] = plan_recipes(config)
    _save(config, report)
    if "train_overhead" not in report:
        report.update(train_overhead(config))
        _save(config, report)
    runs = report.setdefault("workers", {})
    other = f"seed{config.noise_seed}"
    for key, workers, seed in (("1", 1, None), ("2", 2, None), (f"1-{other}", 1, config.noise_seed),
                               (f"2-{other}", 2, config.noise_seed)):
        if key not in runs:
            runs[key] = run_workers(config, workers, seed)
            _save(config, report)
    report["workers_auc"] = auc_within_noise(runs, other, config.bootstrap)
    report["workers_speedup"] = runs["2"]["tokens_per_s"] / runs["1"]["tokens_per_s"]
    _save(config, report)
    if "fault" not in report:
        report["fault"] = worker_fault(config, runs["1"])
        _save(config, report)
    if config.driver_drill and "driver_fault" not in report:
        report["driver_fault"] = driver_fault(config, runs["1"])
        _save(config, report)
    plot(report, _path(config).with_suffix(".png"))
    return report


def headline_json(report: dict[str, Any]) -> str:
    """The plan and the issue's figures (per-epoch losses left out)."""
    shown = {k: report[k] for k in ("train_overhead", "workers_auc", "workers_speedup", "fault", "driver_fault")
             if k in report}
    shown["fault"] = {k: v for k, v in shown.get("fault", {}).items() if "loss" not in k or k.endswith("diff")}
    return json.dumps({"plan": report["plan"], **shown}, indent=1, default=str)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = list(report["plan"])
    axes[0].bar(names, [report["plan"][n]["estimated_gb"] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        usable = report["plan"][n].get("usable_gb")
        if usable:
            axes[0].hlines(usable, i - 0.4, i + 0.4, color="tab:red", ls="--", lw=1)
        axes[0].text(i, report["plan"][n]["estimated_gb"], "fits" if report["plan"][n]["fits"] else "no",
                     ha="center", va="bottom")
    axes[0].set_ylabel("estimated GiB per GPU")
    axes[0].set_title("memory planner (dashed: usable per GPU)")
    axes[0].tick_params(axis="x", labelsize=7)
    w = report["workers"]
    keys = sorted(w)
    axes[1].bar([f"{k[0]} worker{'s' if k[0] != '1' else ''}\nseed {w[k]['seed']}" for k in keys],
                [w[k]["tokens_per_s"] for k in keys], color=["tab:green" if k[0] == "1" else "tab:olive" for k in keys])
    for i, k in enumerate(keys):
        axes[1].text(i, w[k]["tokens_per_s"], f"AUC {w[k]['auc']:.3f}", ha="center", va="bottom")
    axes[1].set_ylabel("training tokens/s (2 CPU cores in all)")
    axes[1].set_title("scale-out: same job, 1 vs 2 Ray Train workers")
    f = report.get("fault")
    if f:
        axes[2].plot(range(1, len(f["unbroken_train_loss"]) + 1), f["unbroken_train_loss"], "o-", label="unbroken")
        axes[2].plot(range(1, len(f["train_loss"]) + 1), f["train_loss"], "x--",
                     label=f"killed at step {f['killed_at_step']}, resumed from {f['resumed_from_step']}")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("train loss")
        axes[2].legend(fontsize=8)
        axes[2].set_title("fault drill: worker SIGKILLed mid-epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
