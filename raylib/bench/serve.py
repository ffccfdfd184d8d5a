"""Load benchmark of the CoReLLa service (`raylib.serving`) on this machine, over real HTTP.

The load generator is asyncio + aiohttp (Ray Serve's own HTTP client dependency): `concurrency` connections,
each sending its next request as soon as the last one is answered (a closed loop), one sample per request.
The service is deployed declaratively (`raylib.serving.deploy`), so the phases switch configurations through
the router's `user_config` without restarting a replica:

  offline      the routed scorer in-process (`raylib.methods.corella.artifacts.RoutedScorer`) on the CoReLLa test subset
  quality      every test sample once through the router: its AUC must equal the offline routed AUC
  sweep        router throughput at a few concurrencies, to find the one that saturates it
  router       `duration_s` at that concurrency; one LLM replica is killed half-way (`kill_at_s`)
  llm_only     threshold 0 (the LLM answers everything), the same deployments: the same load, and the AUC of
               every test sample answered by the LLM
  burst        all-LLM load for `burst_s`, then idle: the LLM deployment's running replicas over time

Each phase's result is cached in `output_dir/phases/` under the artifacts' hashes and the phase settings, so
a rerun resumes. Writes `report` (JSON) and a PNG beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, to_dict, key_dict
from raylib.methods.corella.config import CtrDataConfig
from raylib.bench.common import report_path, write_report

APP = "corella"


@dataclass(config=STRICT)
class BenchServeConfig:
    artifacts: str = "runs/bench_corella/aligned/artifacts"  # a jobs.corella / bench_corella output
    data: CtrDataConfig = Field(default_factory=CtrDataConfig)  # the same data config as the CoReLLa run
    sweep: list[int] = Field(default_factory=lambda: [2, 8, 16, 32])
    sweep_s: float = Field(20.0, gt=0)
    duration_s: float = Field(120.0, gt=0)  # the router and LLM-only runs
    kill_at_s: float = Field(60.0, ge=0)    # when the router run kills an LLM replica (0 = never)
    burst_concurrency: int = Field(16, ge=1)
    burst_s: float = Field(45.0, gt=0)
    llm_timeout_s: float = Field(10.0, gt=0)
    # The quality passes check answers, not speed: few connections and a long LLM timeout, so no answer is a
    # degraded one (under saturating load some are, by design; the load runs count them).
    quality_concurrency: int = Field(4, ge=1)
    quality_timeout_s: float = Field(300.0, gt=0)
    llm_max_replicas: int = Field(2, ge=1)
    port: int = Field(8123, ge=1)
    output_dir: str = "runs/bench_serve"
    report: str = "reports/serve.json"


# ------------------------------------------------------------------ the load generator
async def _post(session, url: str, sample: dict[str, Any]) -> tuple[int, dict | None, float]:
    start = time.perf_counter()
    try:
        async with session.post(url + "/predict", json={"samples": [sample]}) as response:
            body = await response.json() if response.status == 200 else None
            return response.status, body, time.perf_counter() - start
    except Exception:  # noqa: BLE001 - a dropped connection or a timeout is a failed request
        return 0, None, time.perf_counter() - start


def _session(concurrency: int, headers: dict[str, str] | None = None):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=120))


async def one_pass(url: str, samples: list[dict[str, Any]], concurrency: int,
                   headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every sample once, `concurrency` requests in flight; the predictions in the samples' order (a failed
    request is {"failed": status}). `headers`: e.g. the bearer token."""
    from tqdm.auto import tqdm

    out: list[dict[str, Any]] = [{}] * len(samples)
    todo = iter(range(len(samples)))
    bar = tqdm(total=len(samples), desc="requests", leave=False)
    async with _session(concurrency, headers) as session:
        async def client() -> None:
            for i in todo:
                status, body, _ = await _post(session, url, samples[i])
                out[i] = body["predictions"][0] if status == 200 else {"failed": status}
                bar.update()

        await asyncio.gather(*[client() for _ in range(concurrency)])
    bar.close()
    return out


async def closed_loop(url: str, samples: list[dict[str, Any]], concurrency: int, duration_s: float,
                      events: list[tuple[float, Callable[[], Any]]] = (),
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
    """`concurrency` clients for `duration_s`; `events`: (second, function) run once each, in a thread."""
    log: list[tuple[float, float, int, str]] = []  # (start s, latency s, status, who answered)
    start = time.perf_counter()
    async with _session(concurrency, headers) as session:
        async def client(k: int) -> None:
            i = k
            while time.perf_counter() - start < duration_s:
                sent = time.perf_counter() - start
                status, body, seconds = await _post(session, url, samples[i % len(samples)])
                p = body["predictions"][0] if body else {}
                who = "llm" if p.get("routed_to") == "llm" else "degraded" if p.get("degraded") else "crm"
                log.append((sent, seconds, status, who))
                i += concurrency

        async def at(second: float, fn: Callable[[], Any]) -> None:
            await asyncio.sleep(second)
            await asyncio.to_thread(fn)

        await asyncio.gather(*[at(s, fn) for s, fn in events], *[client(k) for k in range(concurrency)])
    return load_summary(log, time.perf_counter() - start, concurrency)


def load_summary(log: list[tuple[float, float, int, str]], elapsed: float, concurrency: int) -> dict[str, Any]:
    ms = np.array([r[1] for r in log]) * 1000.0
    answered = [r[3] for r in log if r[2] == 200]
    return {"concurrency": concurrency, "requests": len(log), "seconds": elapsed, "qps": len(log) / elapsed,
            "failed_requests": sum(r[2] != 200 for r in log),
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "llm_share": float(np.mean([a == "llm" for a in answered])) if answered else 0.0,
            "degraded": sum(a == "degraded" for a in answered),
            "timeline": [[round(t, 3), round(s * 1000, 1), status, who] for t, s, status, who in log]}


# ------------------------------------------------------------------ the service
def fixed_test_subset(config: BenchServeConfig, vocab_hash: str) -> tuple[list[dict[str, Any]], np.ndarray,
                                                                          list[dict[str, Any]]]:
    """The CoReLLa benchmark's fixed test subset (`raylib.methods.corella.pipeline`'s seed): request samples, labels, and the
    records the offline scorer takes (encoded with the artifacts' vocabulary, `vocab_hash`)."""
    from raylib.methods.corella.crm import load_crm
    from raylib.data.ctr import load_ctr_data, sample_rows

    data = load_ctr_data(config.data)
    table = sample_rows(data.test, config.data.test_samples, config.data.seed + 3).table()
    _, vocab = load_crm(Path(config.artifacts) / "crm", expect_vocab=vocab_hash)
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    return table.drop(["label", "timestamp"]).to_pylist(), labels, vocab.records(table, with_text=True)


def service_config(config: BenchServeConfig, threshold: float, llm_timeout_s: float | None = None) -> dict[str, Any]:
    """What `serve deploy` gets: the app from `serve.app:build`, the LLM quick to scale out and back (so the
    burst shows both inside a few minutes), the router's threshold as user_config."""
    return {"http_options": {"host": "127.0.0.1", "port": config.port}, "applications": [{
        "name": APP, "route_prefix": "/", "import_path": "serve.app:build",
        "args": {"artifacts": str(Path(config.artifacts).resolve()), "max_length": config.data.max_length},
        "logging_config": {"log_level": "WARNING", "enable_access_log": False},
        "deployments": [
            {"name": "Router", "user_config": {"threshold": threshold,
                                               "llm_timeout_s": llm_timeout_s or config.llm_timeout_s}},
            {"name": "CRM", "autoscaling_config": {"min_replicas": 1, "max_replicas": 2,
                                                   "target_ongoing_requests": 8}},
            {"name": "LLM", "autoscaling_config": {
                "min_replicas": 1, "max_replicas": config.llm_max_replicas, "target_ongoing_requests": 4,
                "upscale_delay_s": 5, "downscale_delay_s": 15}}]}]}


def kill_one_llm_replica(dashboard: str) -> None:
    import ray

    from raylib.serving import replica_actors

    names = replica_actors("LLM", dashboard)
    if names:
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        print(f"[bench_serve] killed {names[0]}", flush=True)


def watch_replicas(stop_after_s: float, every_s: float = 1.0) -> list[tuple[float, int]]:
    """(second, running LLM replicas), polled from Serve's status in a thread."""
    from raylib.serving import running_replicas

    out, start = [], time.perf_counter()
    while time.perf_counter() - start < stop_after_s:
        out.append((round(time.perf_counter() - start, 1), running_replicas(APP, "LLM")))
        time.sleep(every_s)
    return out


# ------------------------------------------------------------------ the benchmark
def run_bench(config: BenchServeConfig) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from raylib.methods.corella.artifacts import check_artifacts
    from raylib.stages import cached_stage
    from raylib.serving import dashboard_url, deploy, running_replicas

    start = time.time()
    routing = check_artifacts(config.artifacts)
    samples, labels, records = fixed_test_subset(config, routing.vocab_hash)
    folder = Path(config.output_dir).expanduser().resolve() / "phases"
    key = {"crm": routing.crm_hash, "adapter": routing.adapter_hash, "threshold": routing.threshold,
           "data": key_dict(config.data)}
    url = f"http://127.0.0.1:{config.port}"
    report: dict[str, Any] = {"test_samples": len(samples), "threshold": routing.threshold}
    path = report_path(config.report)

    def save() -> None:
        report["wall_time_s"] = time.time() - start
        save_report(report, config, path)

    def offline() -> dict[str, Any]:
        from raylib.config import ModelConfig
        from raylib.methods.corella.config import CorellaJobConfig
        from raylib.methods.corella.artifacts import load_artifacts

        job = CorellaJobConfig(model=ModelConfig(name=routing.model), data=config.data)
        probs, mask = load_artifacts(config.artifacts, job).routed(records)
        return {"probabilities": probs.tolist(), "llm_share": float(mask.mean()), "to_llm": mask.tolist()}

    print("[bench_serve] offline routed scores ...", flush=True)
    reference = cached_stage(folder / "offline.json", {**key, "with": "to_llm"}, offline)
    report["offline_auc"] = float(roc_auc_score(labels, reference["probabilities"]))
    save()

    dashboard = dashboard_url()
    deploy(service_config(config, routing.threshold), dashboard)
    quality_key = {**key, "concurrency": config.quality_concurrency, "timeout": config.quality_timeout_s}

    def quality(threshold: float) -> list[dict[str, Any]]:
        deploy(service_config(config, threshold, config.quality_timeout_s), dashboard)
        return asyncio.run(one_pass(url, samples, config.quality_concurrency))

    print("[bench_serve] quality pass: the test subset through the router ...", flush=True)
    served = cached_stage(folder / "quality_router.json", quality_key, lambda: quality(routing.threshold))
    failed = [p for p in served if "failed" in p]
    report["quality_failed"] = len(failed)
    report["quality_degraded"] = sum(bool(p.get("degraded")) for p in served)
    probs = np.array([p.get("probability", np.nan) for p in served])
    report["served_auc"] = float(roc_auc_score(labels, probs)) if not failed else None
    report["served_max_abs_diff"] = float(np.nanmax(np.abs(probs - np.array(reference["probabilities"]))))
    report["served_auc_equals_offline"] = bool(
        report["served_auc"] is not None and abs(report["served_auc"] - report["offline_auc"]) <= 1e-6)
    report["served_llm_share"] = float(np.mean([p.get("routed_to") == "llm" for p in served]))
    # what the serving path decides must be the library's decision exactly; the LLM's numbers differ by float
    # noise from batch composition (requests batched as they arrive) and the offline prefix cache
    to_llm = np.array([p.get("routed_to") == "llm" for p in served])
    report["routing_identical"] = bool((to_llm == np.array(reference["to_llm"])).all())
    gap = np.abs(probs - np.array(reference["probabilities"]))
    report["crm_answers_max_abs_diff"] = float(gap[~to_llm].max()) if (~to_llm).any() else 0.0
    report["llm_answers_max_abs_diff"] = float(gap[to_llm].max()) if to_llm.any() else 0.0
    save()

    def sweep() -> list[dict[str, Any]]:
        deploy(service_config(config, routing.threshold), dashboard)
        out = []
        for c in config.sweep:
            result = asyncio.run(closed_loop(url, samples, c, config.sweep_s))
            print(f"[bench_serve] router at concurrency {c}: {result['qps']:.1f} req/s", flush=True)
            out.append({k: v for k, v in result.items() if k != "timeline"})
        return out

    report["sweep"] = cached_stage(folder / "sweep.json", {**key, "sweep": config.sweep, "s": config.sweep_s}, sweep)
    # the smallest concurrency within 10% of the best throughput saturates the router
    best = max(r["qps"] for r in report["sweep"])
    report["concurrency"] = concurrency = min(r["concurrency"] for r in report["sweep"] if r["qps"] >= 0.9 * best)
    save()
    run_key = {**key, "concurrency": concurrency, "duration_s": config.duration_s, "kill_at_s": config.kill_at_s}

    def router_run() -> dict[str, Any]:
        deploy(service_config(config, routing.threshold), dashboard)
        kill = [(config.kill_at_s, lambda: kill_one_llm_replica(dashboard))] if config.kill_at_s else []
        result = asyncio.run(closed_loop(url, samples, concurrency, config.duration_s, kill))
        return {**result, "killed_llm_replica_at_s": config.kill_at_s or None}

    print(f"[bench_serve] router: {config.duration_s:.0f} s at concurrency {concurrency} ...", flush=True)
    report["router"] = cached_stage(folder / "router.json", run_key, router_run)
    save()

    def llm_only_run() -> dict[str, Any]:
        deploy(service_config(config, 0.0), dashboard)
        return asyncio.run(closed_loop(url, samples, concurrency, config.duration_s))

    print(f"[bench_serve] LLM only: {config.duration_s:.0f} s at concurrency {concurrency} ...", flush=True)
    report["llm_only"] = cached_stage(folder / "llm_only.json", run_key, llm_only_run)
    save()

    print("[bench_serve] quality pass, LLM only ...", flush=True)
    llm_served = cached_stage(folder / "quality_llm_only.json", quality_key, lambda: quality(0.0))
    llm_failed = [p for p in llm_served if "failed" in p or p.get("degraded")]
    report["llm_only_auc"] = float(roc_auc_score(labels, [p["probability"] for p in llm_served])) \
        if not llm_failed else None
    save()

    def burst() -> dict[str, Any]:
        deploy(service_config(config, 0.0), dashboard)
        deadline = time.time() + 120  # settle back to one replica first
        while running_replicas(APP, "LLM") > 1 and time.time() < deadline:
            time.sleep(1)
        watch_s = config.burst_s + 90

        async def both():
            replicas = asyncio.create_task(asyncio.to_thread(watch_replicas, watch_s))
            load = await closed_loop(url, samples, config.burst_concurrency, config.burst_s)
            return load, await replicas

        load, replicas = asyncio.run(both())
        return {"concurrency": config.burst_concurrency, "burst_s": config.burst_s, "replicas": replicas,
                "max_replicas": max(r for _, r in replicas), "qps": load["qps"],
                "failed_requests": load["failed_requests"], "degraded": load["degraded"],
                "final_replicas": replicas[-1][1]}

    print(f"[bench_serve] burst: {config.burst_s:.0f} s of all-LLM load, then idle ...", flush=True)
    report["burst"] = cached_stage(folder / "burst.json", {**key, "c": config.burst_concurrency,
                                                          "s": config.burst_s}, burst)
    deploy(service_config(config, routing.threshold), dashboard)  # leave it as trained
    save()
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's report keys."""
    router, llm_only = report.get("router", {}), report.get("llm_only", {})
    failed = router.get("failed_requests", 0) + report.get("quality_failed", 0)
    return {"concurrency": report.get("concurrency"), "router_qps": router.get("qps"),
            "llm_only_qps": llm_only.get("qps"), "router_p99_ms": router.get("p99_ms"),
            "llm_only_p99_ms": llm_only.get("p99_ms"), "failed_requests": failed,
            "llm_share": router.get("llm_share"), "served_auc": report.get("served_auc"),
            "offline_auc": report.get("offline_auc"), "llm_only_auc": report.get("llm_only_auc")}


def headline_json(report: dict[str, Any]) -> str:
    return json.dumps(headline(report), indent=1, default=str)


def save_report(report: dict[str, Any], config: BenchServeConfig, path: Path) -> None:
    out = {**headline(report), "details": report, "config": to_dict(config)}
    write_report(out, path, (lambda _, png: plot(report, png)) if "router" in report else None)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if "burst" in report else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    ax = axes[0]
    sweep = report["sweep"]
    ax.plot([r["concurrency"] for r in sweep], [r["qps"] for r in sweep], marker="o", label="router")
    if "llm_only" in report:
        ax.plot([report["concurrency"]], [report["llm_only"]["qps"]], "s", color="tab:orange", label="LLM only")
    ax.set(xlabel="concurrent connections", ylabel="requests / s", xscale="log", title="throughput", ylim=(0, None))
    ax.set_xticks([r["concurrency"] for r in sweep], [str(r["concurrency"]) for r in sweep])
    ax.minorticks_off()
    ax.legend()
    ax = axes[1]
    timeline = np.array([r[:2] for r in report["router"]["timeline"]])
    colors = {"crm": "tab:blue", "llm": "tab:orange", "degraded": "tab:red"}
    for who, color in colors.items():
        rows = timeline[[r[3] == who for r in report["router"]["timeline"]]]
        if len(rows):
            ax.scatter(rows[:, 0], rows[:, 1], s=3, color=color, label=who)
    if report["router"].get("killed_llm_replica_at_s"):
        ax.axvline(report["router"]["killed_llm_replica_at_s"], color="k", linestyle="--", label="LLM replica killed")
    ax.set(xlabel="seconds", ylabel="latency (ms)", yscale="log",
           title=f"router at {report['concurrency']} connections")
    ax.legend(markerscale=4, fontsize=8)
    if panels == 3:
        ax = axes[2]
        replicas = np.array(report["burst"]["replicas"])
        ax.step(replicas[:, 0], replicas[:, 1], where="post")
        ax.axvspan(0, report["burst"]["burst_s"], alpha=0.15, label="all-LLM burst")
        ax.set(xlabel="seconds", ylabel="running LLM replicas", title="autoscaling", ylim=(0, replicas[:, 1].max() + 1))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
