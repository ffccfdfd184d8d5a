"""Where CPU scoring runs: `raylib bench placement`, writes reports/placement.json + placement.png.

The same TALLRec scoring (`raylib.methods.tallrec.pipeline.score_records`: load the model, score the test records) three ways on
a local Ray, in interleaved rounds (the fastest round of each kept, so a load change on a shared machine cannot
favour one):
  driver          in the job's own process (what CPU jobs did before `raylib.placement`)
  task_all_cores  a Ray task holding every core, with as many math threads (what `raylib.placement` does now)
  task_one_cpu    a Ray task holding 1 CPU, hence 1 thread (the earlier measurement, ~1.8x slower)
Wall seconds include the model load and, for tasks, the worker's start; `score_s` is the scoring alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, ModelConfig
from raylib.methods.tallrec.config import DataConfig, EvalConfig
from raylib.bench.common import report_path, write_report

WAYS = ("driver", "task_all_cores", "task_one_cpu")


@dataclass(config=STRICT)
class BenchPlacementConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(test_samples=200))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    rounds: int = Field(2, ge=1)
    report: str = "reports/placement.json"


def _one(way: str, config: BenchPlacementConfig, records) -> dict[str, float]:
    from raylib import placement
    from raylib.methods.tallrec.pipeline import score_records

    args = (config.model, records, None, config.data.max_length, config.eval)
    start = time.perf_counter()
    if way == "driver":
        scored = score_records(*args)
    else:
        cpus = (os.cpu_count() or 1) if way == "task_all_cores" else 1
        scored = placement.run(score_records, *args, placement=placement.Placement(cpus=cpus))
    return {"wall_s": time.perf_counter() - start, "score_s": scored["seconds"], "auc": scored["auc"]}


def run_bench(config: BenchPlacementConfig) -> dict[str, Any]:
    import torch

    from raylib.methods.tallrec.pipeline import load_tallrec_data

    records = load_tallrec_data(config.data).test
    torch.set_num_threads(os.cpu_count() or 1)  # the driver's own threads, as a job's process has them
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for round_ in range(config.rounds):
        order = WAYS if round_ % 2 == 0 else WAYS[::-1]
        for way in order:
            runs[way].append(_one(way, config, records))
            print(f"[bench_placement] round {round_ + 1}: {way} {runs[way][-1]['wall_s']:.1f} s", flush=True)
    best = {way: min(r, key=lambda x: x["wall_s"]) for way, r in runs.items()}
    report = {"records": len(records), "cores": os.cpu_count(), "rounds": config.rounds,
              "best": best, "runs": runs,
              "task_all_cores_vs_driver": best["task_all_cores"]["wall_s"] / best["driver"]["wall_s"],
              "task_one_cpu_vs_driver": best["task_one_cpu"]["wall_s"] / best["driver"]["wall_s"],
              "same_auc": len({round(r["auc"], 9) for rs in runs.values() for r in rs}) == 1}
    write_report(report, report_path(config.report), plot)
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    best = report["best"]
    walls = [best[w]["wall_s"] for w in WAYS]
    scores = [best[w]["score_s"] for w in WAYS]
    ax.barh(WAYS, walls, color="#9ecae1", label="wall (load + start + score)")
    ax.barh(WAYS, scores, color="#3182bd", label="scoring alone")
    ax.set_xlabel("seconds (fastest round)")
    ax.set_title(f"TALLRec scoring of {report['records']} records, {report['cores']} cores", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
