"""Data at scale: `raylib bench scale-data`, writes reports/data_scale.json + data_scale.png.

Synthetic RecBole datasets in MovieLens-25M's shape (`raylib.bench.synthetic`; 0.1 M to 25 M interactions) go
through each method's own data steps up to its first optimizer step:
  tallrec   the records of the one time split, the few-shot sample and its prompts checked, then LoRA training
  bigrec    every next-item window, the sampled windows' title records, then LoRA SFT
  genrec    the same with GenRec's paraphrased templates
  corella   every CTR sample, the vocabulary, the LLM's samples with text, the whole training split encoded to
            Parquet, then DCNv2 (stage 1) on all of it
  cocktail  the dataset as the target domain: records, the three pools, the samples, warm / cold test records,
            then the base spirit's LoRA
  sasrec    every training window to Parquet, then SASRec on all of them (BIGRec's CF baseline)
Each (method, size) runs in its own process (`probe`), so its peak memory is its own: the driver's peak (the
process's high-water mark when the first step is taken), the training worker's (its own at that step), the
seconds of each data step, and the seconds from the start to the first optimizer step. The log-log slope of
time and memory against interactions, from 1 M to the largest size, says how cost grows; the rows a training
worker reads per second (`training_rows_per_s`) come from the same runs. Then:
  grounding   BIGRec's grounding against random catalogues of 10 K, 100 K and 1 M items (each in a fresh
              process): ms per query for the target's rank (plain and re-weighted) and a top-10, and the memory
              it took beyond the catalogue's own embeddings
  inference   TALLRec scoring through the Ray Data actor pool with 1 and 2 actors: rows per second
A rerun keeps every part already measured with the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib import RaylibError
from raylib.assets import PROJECT_DIR
from raylib.bench.common import read_report, report_path, write_report
from raylib.config import STRICT, ModelConfig, to_dict

METHODS = ("tallrec", "bigrec", "genrec", "corella", "cocktail", "sasrec")
GIB = 1024 ** 3


@dataclass(config=STRICT)
class BenchScaleDataConfig:
    sizes: list[int] = dataclasses.field(default_factory=lambda: [100_000, 1_000_000, 10_000_000, 25_000_000])
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    # grounding: catalogue sizes, queries per size (the 500 test windows BIGRec's benchmark and the leaderboard
    # rank), the embedding width (SmolLM2-135M's hidden size)
    grounding_items: list[int] = dataclasses.field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    grounding_queries: int = Field(500, ge=1)
    hidden_size: int = Field(576, ge=1)
    # batch inference: TALLRec records of the embedded MovieLens-100K scored by the embedded model, 1 and 2 actors
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    inference_records: int = Field(256, ge=8)
    seed: int = 0
    probe_timeout_s: int = Field(3600, ge=60)
    output_dir: str = "runs/bench_scale_data"  # the synthetic datasets and each probe's run folder
    report: str = "reports/data_scale.json"


# ---------------------------------------------------------------- one method's data steps (in the probe process)
def _recipe(cls, recipe: str, dataset: str | None, work: Path, **changes) -> Any:
    """A shipped CPU recipe on `dataset` (None: the recipe says where its data is), written under `work`."""
    from raylib.config import from_dict, load_config

    values = to_dict(load_config(cls, PROJECT_DIR / "jobs" / "configs" / recipe, []))
    if dataset is not None:
        values["data"]["dataset"] = dataset
    values["output_dir"] = str(work)
    for key, value in changes.items():
        values[key] = value
    return from_dict(cls, values)


class Steps:
    """Seconds of each named data step, in order."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable, *args):
        start = time.perf_counter()
        value = fn(*args)
        self.seconds[name] = time.perf_counter() - start
        return value


def tallrec_inputs(dataset: str, work: Path, steps: Steps):
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.methods.tallrec.pipeline import check_inputs, load_tallrec_data
    from raylib.methods.tallrec.task import TallrecTask

    job = _recipe(TallrecJobConfig, "tallrec_cpu.yaml", dataset, work)
    data = steps("records", load_tallrec_data, job.data)
    steps("check_prompts", check_inputs, job, data)
    return TallrecTask, job, data.train, data.valid


def _nextitem_inputs(method: str, dataset: str, work: Path, steps: Steps):
    from raylib.methods.nextitem.config import BigrecJobConfig, GenrecJobConfig
    from raylib.methods.nextitem.pipeline import llm_records, load_sequence_data
    from raylib.methods.nextitem.task import BigrecTask, GenrecTask

    cls, task = (BigrecJobConfig, BigrecTask) if method == "bigrec" else (GenrecJobConfig, GenrecTask)
    job = _recipe(cls, f"{method}_cpu.yaml", dataset, work)
    data = steps("windows", load_sequence_data, job.data)
    train, valid = steps("title_records", llm_records, job, data, method, getattr(job, "num_templates", 1))
    return task, job, train, valid


def bigrec_inputs(dataset: str, work: Path, steps: Steps):
    return _nextitem_inputs("bigrec", dataset, work, steps)


def genrec_inputs(dataset: str, work: Path, steps: Steps):
    return _nextitem_inputs("genrec", dataset, work, steps)


def sasrec_inputs(dataset: str, work: Path, steps: Steps):
    from raylib.methods.nextitem.config import BigrecJobConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data
    from raylib.methods.nextitem.sasrec import SasrecTask, sasrec_stage

    job = _recipe(BigrecJobConfig, "bigrec_cpu.yaml", dataset, work)
    data = steps("windows", load_sequence_data, job.data)
    stage, train, valid = steps("windows_to_parquet", sasrec_stage, job.sasrec, data.train, data.valid_held,
                                data.catalogue, work / "sasrec", job.data.history_len)
    return SasrecTask, stage, train, valid


def corella_inputs(dataset: str, work: Path, steps: Steps):
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.corella.config import CorellaJobConfig
    from raylib.methods.corella.crm import CrmTask
    from raylib.methods.corella.pipeline import crm_stage, prepare_views

    job = _recipe(CorellaJobConfig, "corella_cpu.yaml", dataset, work)
    data = steps("ctr_samples", load_ctr_data, job.data)
    views = steps("vocabulary_and_samples", prepare_views, job, data)
    stage, train, valid = steps("encoded_to_parquet", crm_stage, job, views)
    return CrmTask, stage, train, valid


def cocktail_inputs(dataset: str, work: Path, steps: Steps):
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.cocktail.pipeline import cocktail_inputs as inputs_of, load_domains
    from raylib.methods.tallrec.task import TallrecTask

    domain = {"name": "target", "source": "dataset", "dataset": dataset}
    job = _recipe(CocktailJobConfig, "cocktail_cpu.yaml", None, work, domains=[domain], target="target")
    domains = steps("domain_records", load_domains, job)
    made = steps("pools_and_samples", inputs_of, job, domains)
    return TallrecTask, made.base_job, made.base_train, made.base_valid


INPUTS = {"tallrec": tallrec_inputs, "bigrec": bigrec_inputs, "genrec": genrec_inputs, "corella": corella_inputs,
          "cocktail": cocktail_inputs, "sasrec": sasrec_inputs}


def peak_gib() -> float:
    """This process's peak resident memory (VmHWM): per process image, unlike `ru_maxrss`, which a process
    started by fork + exec inherits from its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


class FirstStepReached(Exception):
    """Raised by `StopAtFirstStep` in the training worker: the probe has what it measures."""


@dataclasses.dataclass(frozen=True)
class StopAtFirstStep:
    """A training hook (`raylib.train.train(after_step=...)`): after the first optimizer step, rank 0 writes the
    time, its process's peak memory, its rows and the seconds it took to read them, and the run stops."""
    path: str

    def __call__(self, global_step: int, rank: int, rows: int = 0, read_s: float = 0.0) -> None:
        if rank == 0:
            Path(self.path).write_text(json.dumps({
                "time": time.time(), "worker_peak_gib": peak_gib(),
                "worker_rows": rows, "worker_read_s": read_s}))
        raise FirstStepReached(f"first optimizer step taken ({global_step})")


def probe(method: str, dataset: str, work: str, result: str) -> None:
    """In its own process: `method`'s data steps on `dataset`, then training up to the first optimizer step."""
    from raylib.runtime import ensure_ray
    from raylib.train.driver import train

    start = time.time()
    steps = Steps()
    work_dir = Path(work)
    task, job, train_data, valid_data = INPUTS[method](dataset, work_dir, steps)
    prep = {"prep_s": time.time() - start, "steps_s": steps.seconds,
            "driver_prep_peak_gib": peak_gib(),
            "start": start}
    Path(result).write_text(json.dumps(prep))
    ensure_ray(None)
    first = work_dir / "first_step.json"
    try:
        train(task, job, train_data, valid_data, after_step=StopAtFirstStep(str(first)))
    except Exception:  # noqa: BLE001  (the stop itself arrives as Ray Train's error)
        if not first.is_file():
            raise
    step = json.loads(first.read_text())
    Path(result).write_text(json.dumps({**prep, "first_step_s": step["time"] - start,
                                        "worker_peak_gib": step["worker_peak_gib"],
                                        "worker_rows": step["worker_rows"], "worker_read_s": step["worker_read_s"],
                                        "driver_peak_gib": peak_gib()}))


# ---------------------------------------------------------------- the benchmark (the parent process)
def _load(config: BenchScaleDataConfig) -> dict[str, Any]:
    saved = read_report(report_path(config.report))
    return saved if saved.get("seed") == config.seed else {}


def _save(config: BenchScaleDataConfig, report: dict[str, Any]) -> None:
    write_report(report, report_path(config.report))


def run_probe(config: BenchScaleDataConfig, method: str, size: int, dataset: Path) -> dict[str, Any]:
    """`probe` in a fresh process (its own Ray), its output in `<work>/probe.log`; its whole session is ended
    afterwards, so nothing of one probe outlives it."""
    import shutil

    import ray

    from raylib.bench.scale import kill_session_leftovers

    work = Path(config.output_dir).expanduser().resolve() / "runs" / f"{method}-{size}"
    shutil.rmtree(work, ignore_errors=True)  # this benchmark's own scratch folder
    work.mkdir(parents=True)
    result = work / "result.json"
    command = [sys.executable, "-m", "raylib.bench.data_scale", method, str(dataset), str(work), str(result)]
    env = dict(os.environ)
    if ray.is_initialized():  # the probe joins this benchmark's Ray: one Ray on the machine, started once
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    with open(work / "probe.log", "w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, start_new_session=True, stdout=log, stderr=log,
                                   env=env)
        try:
            process.wait(timeout=config.probe_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        finally:
            kill_session_leftovers(process.pid)
    measured = json.loads(result.read_text()) if result.is_file() else {}
    if "first_step_s" not in measured:
        tail = (work / "probe.log").read_text()[-2000:]
        return {**measured, "error": f"exit {process.returncode}: {tail}"}
    shutil.rmtree(work / "views", ignore_errors=True)
    return measured


def datasets(config: BenchScaleDataConfig) -> dict[int, Path]:
    from raylib.bench.synthetic import write_synthetic

    root = Path(config.output_dir).expanduser().resolve() / "datasets"
    out = {}
    for size in sorted(config.sizes):
        print(f"[bench] synthetic dataset of {size:,} interactions ...", flush=True)
        out[size] = write_synthetic(root / f"ml25m-shape-{size}", size, config.seed)
    return out


def slopes(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """log-log slope of prep time and driver memory against interactions, from 1 M to the largest size."""
    import numpy as np

    out = {}
    for method, by_size in report["methods"].items():
        points = sorted((int(s), m) for s, m in by_size.items() if "first_step_s" in m and int(s) >= 1_000_000)
        if len(points) < 2:
            continue
        x = np.log([s for s, _ in points])
        fit = lambda key: float(np.polyfit(x, np.log([max(m[key], 1e-9) for _, m in points]), 1)[0])  # noqa: E731
        out[method] = {"time": fit("prep_s"), "memory": fit("driver_peak_gib")}
    return out


def run_bench(config: BenchScaleDataConfig) -> dict[str, Any]:
    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown:
        raise RaylibError(f"methods {unknown}: the benchmark knows {list(METHODS)}.")
    report = _load(config) or {"seed": config.seed, "methods": {}}
    report["sizes"] = sorted(config.sizes)
    report["machine"] = {"cores": os.cpu_count(), "memory_gib": os.sysconf("SC_PHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE") / GIB}
    for size, dataset in datasets(config).items():
        for method in config.methods:
            done = report["methods"].get(method, {}).get(str(size), {})
            if "first_step_s" in done:
                continue
            print(f"[bench] {method} at {size:,} interactions ...", flush=True)
            measured = run_probe(config, method, size, dataset)
            report["methods"].setdefault(method, {})[str(size)] = measured
            shown = ("error: " + measured["error"][-300:]) if "error" in measured else (
                f"prep {measured['prep_s']:.1f} s, first step {measured['first_step_s']:.1f} s, driver "
                f"{measured['driver_peak_gib']:.2f} GiB, worker {measured['worker_peak_gib']:.2f} GiB")
            print(f"[bench]   {shown}", flush=True)
            report["slope"] = slopes(report)
            _save(config, report)
    report["training_rows_per_s"] = {m: {size: r["worker_rows"] / r["worker_read_s"] for size, r in by_size.items()
                                         if r.get("worker_read_s")} for m, by_size in report["methods"].items()}
    if report.get("grounding_config") != [config.grounding_items, config.grounding_queries, config.hidden_size]:
        report["grounding"] = grounding(config)
        report["grounding_config"] = [config.grounding_items, config.grounding_queries, config.hidden_size]
    report["grounding_ms_per_query"] = {k: v["rank_ms_per_query"] for k, v in report["grounding"].items()}
    _save(config, report)
    if report.get("inference_config") != [to_dict(config.model), config.inference_records]:
        report["inference"] = inference(config)
        report["inference_config"] = [to_dict(config.model), config.inference_records]
    report["inference_rows_per_s"] = {k: v["rows_per_s"] for k, v in report["inference"].items()}
    _save(config, report)
    plot(report, report_path(config.report).with_suffix(".png"))
    return report


# ---------------------------------------------------------------- grounding and batch inference
GROUNDING_SCRIPT = """
import json, sys, time
import numpy as np, torch
from raylib.methods.nextitem.grounding import grounded_ranks, nearest_items
items_n, queries_n, hidden, seed = map(int, sys.argv[1:5])
rng = np.random.default_rng(seed)
items = torch.from_numpy(rng.standard_normal((items_n, hidden), dtype=np.float32))
targets = rng.integers(0, items_n, queries_n)
queries = items[targets] + 0.3 * torch.from_numpy(rng.standard_normal((queries_n, hidden), dtype=np.float32))
popularity = rng.random(items_n)
grounded_ranks(queries[:8], items[:65536], np.zeros(8, dtype=np.int64))  # threads and kernels started once
from raylib.bench.data_scale import peak_gib
base = peak_gib()
out = {}
for name, run in (("rank", lambda: grounded_ranks(queries, items, targets)),
                  ("rank_reweighted", lambda: grounded_ranks(queries, items, targets, signal=popularity, gamma=1.0)),
                  ("top10", lambda: nearest_items(queries, items, 10))):
    start = time.perf_counter()
    run()
    out[name + "_ms_per_query"] = 1000 * (time.perf_counter() - start) / queries_n
out["peak_mib_over_catalogue"] = (peak_gib() - base) * 1024
out["catalogue_mib"] = items.numel() * 4 / 2 ** 20
print(json.dumps(out))
"""


def grounding(config: BenchScaleDataConfig) -> dict[str, dict[str, float]]:
    """BIGRec's grounding over random catalogues of `grounding_items` titles (ranks of the targets, plain and
    re-weighted, and a top-10), each size in a fresh process: ms per query and the memory it took beyond the
    catalogue's own embeddings (bounded by a chunk of items, `grounding.CHUNK_ITEMS`)."""
    out = {}
    for items in config.grounding_items:
        done = subprocess.run([sys.executable, "-c", GROUNDING_SCRIPT, str(items), str(config.grounding_queries),
                               str(config.hidden_size), str(config.seed)], capture_output=True, text=True,
                              cwd=PROJECT_DIR, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"grounding at {items} items failed:\n{done.stderr[-2000:]}")
        out[str(items)] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"[bench] grounding at {items:,} items: {out[str(items)]['rank_ms_per_query']:.2f} ms per query",
              flush=True)
    return out


def inference(config: BenchScaleDataConfig) -> dict[str, dict[str, float]]:
    """TALLRec scoring (`score_on_ray`: a Ray Data actor pool) of the same records with 1 and 2 actors on this
    machine's cores (each actor 1 thread when there are two): rows per second, scoring alone and wall."""
    import shutil

    from raylib.config import from_dict
    from raylib.methods.tallrec.config import DataConfig, TallrecJobConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data, score_on_ray

    records = load_tallrec_data(DataConfig(test_samples=config.inference_records)).test
    out = {}
    for actors in (1, 2):
        work = Path(config.output_dir).expanduser().resolve() / "inference" / str(actors)
        shutil.rmtree(work, ignore_errors=True)  # this benchmark's own scratch folder: measure a cold pool
        job = from_dict(TallrecJobConfig, {"model": to_dict(config.model), "output_dir": str(work),
                                           "inference": {"actors": actors}})
        start = time.perf_counter()
        scored = score_on_ray(job, records, None)
        wall = time.perf_counter() - start
        out[str(actors)] = {"rows": len(records), "wall_s": wall, "rows_per_s": len(records) / wall,
                            "scoring_cpu_s": scored["seconds"], "auc": scored["auc"]}
        print(f"[bench] TALLRec scoring with {actors} actor(s): {len(records) / wall:.1f} rows/s", flush=True)
    return out


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables: per method and size, and the grounding and inference figures."""
    sizes = [str(s) for s in report["sizes"]]
    lines = ["| method | " + " | ".join(f"{int(s):,}" for s in sizes) + " | slope time / memory |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for method, by_size in report["methods"].items():
        cells = []
        for size in sizes:
            m = by_size.get(size, {})
            cells.append("error" if "error" in m else "" if not m else
                         f"{m['prep_s']:.1f} s / {m['first_step_s']:.0f} s, {m['driver_peak_gib']:.2f} / "
                         f"{m['worker_peak_gib']:.2f} GiB")
        slope = report.get("slope", {}).get(method)
        shown = f"{slope['time']:.2f} / {slope['memory']:.2f}" if slope else ""
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {shown} |")
    if report.get("grounding"):
        lines += ["", "| catalogue items | rank (ms/query) | re-weighted rank | top-10 | memory beyond the "
                      "catalogue (MiB) |", "|---|---|---|---|---|"]
        for items, g in sorted(report["grounding"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {int(items):,} | {g['rank_ms_per_query']:.2f} | {g['rank_reweighted_ms_per_query']:.2f}"
                         f" | {g['top10_ms_per_query']:.2f} | {g['peak_mib_over_catalogue']:.0f} |")
    if report.get("inference"):
        lines += ["", "| actors | rows | wall (s) | rows/s |", "|---|---|---|---|"]
        for actors, r in sorted(report["inference"].items()):
            lines.append(f"| {actors} | {r['rows']} | {r['wall_s']:.1f} | {r['rows_per_s']:.1f} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for method, by_size in report["methods"].items():
        points = sorted((int(s), m) for s, m in by_size.items() if "first_step_s" in m)
        if not points:
            continue
        sizes = [s for s, _ in points]
        for ax, key in zip(axes, ("prep_s", "driver_peak_gib", "worker_peak_gib")):
            ax.plot(sizes, [m[key] for _, m in points], marker="o", label=method)
    titles = ("data preparation (s)", "driver peak memory (GiB)", "training worker peak memory (GiB)")
    for ax, title in zip(axes[:3], titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(8, color="red", linestyle="--", linewidth=1, label="target: 8 GiB")
    axes[0].axhline(600, color="red", linestyle="--", linewidth=1, label="target: 10 min")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    grounded = sorted((int(k), v) for k, v in report.get("grounding", {}).items())
    if grounded:
        ax = axes[3]
        for key, label in (("rank_ms_per_query", "rank of the target"),
                           ("rank_reweighted_ms_per_query", "re-weighted rank"), ("top10_ms_per_query", "top-10")):
            ax.plot([n for n, _ in grounded], [v[key] for _, v in grounded], marker="o", label=label)
        ax.axhline(10, color="red", linestyle="--", linewidth=1, label="target: 10 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items")
        ax.set_title("grounding, ms per query (chunked)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Each method's data steps up to its first optimizer step (synthetic, MovieLens-25M's shape)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # the probe: python -m raylib.bench.data_scale <method> <dataset> <work> <result>
    probe(*sys.argv[1:5])
