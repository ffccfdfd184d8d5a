"""Reliability and security under attack: `raylib bench reliability` writes reports/reliability.{json,md}.

  schemathesis  the running service (untrained CRM and LoRA weights over the configured model: robustness, not
                quality) under Schemathesis: property-based requests on every route of its own `/openapi.json`,
                valid bodies and schema-breaking ones, first with the CRM answering everything (fast: the bulk
                of the requests), then routed by the tuned threshold (the LLM too). Counted: requests, 5xx, 4xx
                bodies that are not JSON.
  faults        each fault injected for real, and what happened: a publish killed mid-copy, state files cut
                short, a stale JIT lock, `fresh_start` on a shared storage root, a second job into a folder in
                use, a hung CRM and generator, a killed LLM replica, an empty token file.
  bad_inputs    `raylib` commands given bad input: their exit code and the one line they print.

Each phase is kept in `output_dir/phases/<name>.json` when done, so a rerun resumes. `tests/test_serve.py` runs
a short Schemathesis pass (`fuzz`) against its own app.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.assets import PROJECT_DIR
from raylib.bench.common import report_path, write_report
from raylib.config import STRICT, ModelConfig

TOKEN = "bench-secret"


@dataclass(config=STRICT)
class BenchReliabilityConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # Schemathesis examples per route and mode (valid, schema-breaking): CRM-only, then routed through the LLM.
    crm_only_examples: int = Field(1000, ge=1)
    crm_only_rounds: int = Field(5, ge=1)  # each round another seed, kept when done (a rerun resumes)
    routed_examples: int = Field(100, ge=1)
    seed: int = Field(0, ge=0)
    port: int = Field(8124, ge=1)
    output_dir: str = "runs/bench_reliability"
    report: str = "reports/reliability.json"


EXAMPLES_KEPT = 5  # failing requests kept in the report, to replay


def fuzz(url: str, token: str | None, examples_per_route: int, seed: int = 0) -> dict[str, Any]:
    """`examples_per_route` generated requests per route and mode (valid, schema-breaking) against `url`:
    {"requests", "server_errors", "bad_json", "routes", "statuses", "examples"}."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=headers, timeout=60)
    found: dict[str, Any] = {"requests": 0, "server_errors": 0, "bad_json": 0, "routes": [], "statuses": {},
                             "examples": []}

    def answer(case) -> None:
        try:
            response = case.call(base_url=url, headers=headers, timeout=300)
        except requests.RequestException as err:  # no answer at all (reset, timeout): the service's failure
            response = requests.Response()
            response.status_code, response._content = 599, repr(err).encode()
        status = response.status_code
        found["requests"] += 1
        found["statuses"][str(status)] = found["statuses"].get(str(status), 0) + 1
        bad = status >= 500
        found["server_errors"] += bad
        if 400 <= status < 500:
            try:
                json.loads(response.content)
            except ValueError:
                bad = True
                found["bad_json"] += 1
        if bad and len(found["examples"]) < EXAMPLES_KEPT:
            found["examples"].append({"route": f"{case.method} {case.path}", "status": status,
                                      "body": repr(case.body)[:500], "answer": response.text[:300]})

    for result in schema.get_all_operations():
        operation = result.ok()
        found["routes"].append(f"{operation.method.upper()} {operation.path}")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = given(operation.as_strategy(generation_mode=mode))(answer)
            run = settings(max_examples=examples_per_route, deadline=None, database=None, phases=[Phase.generate],
                           suppress_health_check=list(HealthCheck))(run)
            try:
                hypothesis_seed(seed)(run)()
            except Unsatisfiable:  # a route without inputs has no schema-breaking request (GET /healthz)
                pass
    return found


# ------------------------------------------------------------------ a service to attack
def untrained_artifacts(folder: Path, model_dir: str) -> list[dict[str, Any]]:
    """What `jobs.corella` publishes, with untrained weights: crm/ (+ vocabulary), a PEFT adapter, routing.json;
    returns 24 request samples of the test period."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from raylib.config import LoraSettings
    from raylib.data.ctr import CtrVocab, load_ctr_data
    from raylib.methods.corella.config import CrmSettings, CtrDataConfig
    from raylib.methods.corella.crm import DCNv2, DCNv2Config, save_crm
    from raylib.methods.corella.routing import RoutingConfig
    from raylib.model import lora_config
    from raylib.stages import file_sha1

    data = load_ctr_data(CtrDataConfig())
    vocab = CtrVocab.build(data.train, data.features)
    torch.manual_seed(0)
    shape = DCNv2Config.of(CrmSettings(), vocab)
    save_crm(DCNv2(shape).state_dict(), shape.as_dict(), vocab, folder / "crm")
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora_config(LoraSettings())).save_pretrained(
        folder / "adapter")
    RoutingConfig(threshold=0.5, llm_budget=0.2, vocab_hash=vocab.fingerprint(),
                  crm_hash=file_sha1(folder / "crm" / "model.safetensors"),
                  adapter_hash=file_sha1(folder / "adapter" / "adapter_model.safetensors"),
                  model=str(model_dir)).save(folder / "routing.json")
    return data.test.slice(0, 24).table().drop(["label", "timestamp"]).to_pylist()


def untrained_recommender(folder: Path, model_dir: str):
    """What `jobs.bigrec` publishes for serving, with untrained weights: 200 MovieLens titles embedded by the
    base model, and two different adapters ("bigrec", "other") for the multiplexing."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raylib.data.movielens import load_movielens
    from raylib.data.sequences import Catalogue
    from raylib.methods.nextitem.grounding import embed_texts
    from raylib.methods.nextitem.recommender import RecommenderConfig, publish_recommender

    items = load_movielens().items.slice(0, 200).to_pydict()
    catalogue = Catalogue([str(i) for i in items["item_id"]], items["title"], np.arange(200, dtype=np.float64))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    embeddings = embed_texts(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, catalogue.titles,
                             progress=False)
    adapters = {}
    for seed, name in enumerate(("bigrec", "other")):
        torch.manual_seed(seed)
        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora).save_pretrained(folder / name)
        adapters[name] = folder / name
    config = RecommenderConfig(model=str(model_dir), domain="movie", max_length=256, num_beams=2,
                               max_new_tokens=6, pooling="last", gamma=0.5)
    return publish_recommender(folder / "recommender", config, catalogue, embeddings, adapters), catalogue


def service_config(artifacts: Path, recommender: Path, token_file: Path, port: int,
                   router: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Serve deploy config of the app on this machine, the token read from `token_file` by the router."""
    from raylib.serving import TOKEN_FILE_ENV

    return {"http_options": {"host": "127.0.0.1", "port": port}, "applications": [{
        "name": "raylib", "route_prefix": "/", "import_path": "serve.app:build",
        "args": {"artifacts": str(artifacts), "recommender": str(recommender)},
        "runtime_env": {"env_vars": {TOKEN_FILE_ENV: str(token_file)}},
        "deployments": [{"name": "Router", "user_config": {"llm_timeout_s": 60.0, **(router or {})}}]}]}


# ------------------------------------------------------------------ the phases
def _phase(folder: Path, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A phase's result, kept once done: a rerun resumes after the last finished phase."""
    from raylib.stages import read_json, write_json

    path = folder / "phases" / f"{name}.json"
    kept = read_json(path)
    if kept is not None:
        return kept
    print(f"[bench reliability] {name} ...", flush=True)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


def _call(url: str, path: str, body: Any = None, token: str | None = TOKEN,
          timeout_s: float = 300.0) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:  # the proxy's own answers (no app yet) are text, not JSON
        text = err.read().decode(errors="replace")
        try:
            return err.code, json.loads(text or "{}")
        except ValueError:
            return err.code, {"detail": text[:200]}


def service_faults(url: str, deploy: Callable[[dict[str, Any]], None], samples: list[dict[str, Any]],
                   history: list[str], dashboard: str) -> dict[str, dict[str, Any]]:
    """Faults injected into the running service: deadlines a CRM and a generator cannot meet, a killed LLM
    replica under load."""
    import ray

    from raylib.serving import replica_actors

    faults = {}
    deploy({"crm_timeout_s": 1e-6, "generator_timeout_s": 1e-6})
    predict, recommend = _call(url, "/predict", {"samples": samples[:2]}), _call(url, "/recommend",
                                                                                {"history": history})
    faults["hung_crm"] = {"injected": "a CRM that cannot answer within crm_timeout_s",
                          "outcome": f"/predict answered {predict[0]}: {predict[1].get('detail')}",
                          "lost": predict[0] != 504}
    faults["hung_generator"] = {"injected": "a generator that cannot answer within generator_timeout_s",
                                "outcome": f"/recommend answered {recommend[0]}: {recommend[1].get('detail')}",
                                "lost": recommend[0] != 504}
    deploy({"threshold": 0.0, "llm_timeout_s": 5.0})
    ray.kill(ray.get_actor(replica_actors("LLM", dashboard)[0], namespace="serve"), no_restart=True)
    answers = [_call(url, "/predict", {"samples": samples[i:i + 2]}) for i in range(0, 12, 2)]
    degraded = sum(p["degraded"] for status, body in answers if status == 200 for p in body["predictions"])
    faults["killed_llm_replica"] = {
        "injected": "the LLM's only replica killed while every sample is routed to it",
        "outcome": f"{sum(s == 200 for s, _ in answers)}/{len(answers)} requests answered 200, {degraded} samples "
                   "by the CRM marked degraded; Serve started a new replica",
        "lost": any(s != 200 for s, _ in answers)}
    deploy({})
    return faults


def empty_token_fault(config: dict[str, Any], empty_file: Path, url: str, dashboard: str,
                      timeout_s: float = 180.0) -> dict[str, Any]:
    """The app deployed again with its token file emptied: the router must refuse to start (it used to serve
    every endpoint open), and no request without the token may be answered."""
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from raylib.serving import TOKEN_FILE_ENV

    empty_file.write_text("\n")
    broken = json.loads(json.dumps(config))
    broken["applications"][0]["runtime_env"]["env_vars"][TOKEN_FILE_ENV] = str(empty_file)
    ServeSubmissionClient(dashboard).deploy_applications(broken)
    deadline, status, message = time.time() + timeout_s, "", ""
    time.sleep(5)
    while time.time() < deadline:  # Serve retries a replica that fails to start: its first failure is the answer
        app = serve.status().applications.get("raylib")
        router = app.deployments.get("Router") if app else None
        status = str(getattr(router.status, "value", router.status)) if router else "missing"
        message = router.message if router else ""
        if status in ("HEALTHY", "UNHEALTHY", "DEPLOY_FAILED") or "token file" in message:
            break
        time.sleep(2)
    try:  # 200 only from a router serving without its token
        open_answer = _call(url, "/openapi.json", token=None, timeout_s=15)[0]
    except OSError as err:  # nothing answered: closed, which is the point
        open_answer = type(err).__name__
    said = next((line.split("RaylibError: ", 1)[1] for line in message.splitlines() if "RaylibError: " in line),
                message[-200:])
    return {"injected": "RAYLIB_SERVE_TOKEN_FILE naming an empty file, the app deployed again",
            "outcome": f"the router is {status} ({said}); a request without the token got {open_answer}",
            "lost": open_answer == 200 or status == "HEALTHY"}


def file_faults(work: Path) -> dict[str, dict[str, Any]]:
    """Faults on the files a job keeps: each injected in `work` (this benchmark's own folder)."""
    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.stages import cached_stage, folder_in_use, keep
    from raylib.train.checkpoint import claim_output_dir, publish_folder, published_version
    from raylib.train.storage import run_name, storage_path

    faults = {}
    source, target = work / "source", work / "published"
    source.mkdir(parents=True, exist_ok=True)
    (source / "routing.json").write_text("v1")
    publish_folder(source, target)
    serving = published_version(target)
    (target.with_name(f".{target.name}.versions") / ".staging-killed").mkdir(exist_ok=True)  # a kill mid-copy
    (source / "routing.json").write_text("v2")
    publish_folder(source, target)
    faults["publish_killed_mid_copy"] = {
        "injected": "a publish killed mid-copy (its half-copied version left), then published again",
        "outcome": f"the link always named a whole version; now {(target / 'routing.json').read_text()}, the "
                   f"version an app resolved before still reads {(serving / 'routing.json').read_text()}",
        "lost": (serving / "routing.json").read_text() != "v1"}

    state = work / "stage.json"
    keep(state, {"k": 1}, {"value": 1})
    state.write_text(state.read_text()[:7])
    again = cached_stage(state, {"k": 1}, lambda: "computed again")
    faults["state_file_cut_short"] = {"injected": "a stage cache cut short (a kill or a full disk mid-write)",
                                      "outcome": f"read as a miss: the stage {again!r}", "lost": False}

    shared = work / "shared"
    other = shared / "someone-else" / "weights.bin"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text("not ours")
    job = from_dict(TallrecJobConfig, {"output_dir": str(work / "job"), "train": {"storage_path": str(shared)}})
    claim_output_dir(Path(job.output_dir), {"run": 1}, False, storage_path(job), run_name(job))
    claim_output_dir(Path(job.output_dir), {"run": 2}, True, storage_path(job), run_name(job))
    faults["fresh_start_on_a_shared_root"] = {
        "injected": "train.fresh_start=true with train.storage_path a root other runs share",
        "outcome": "the run's own folder was reset; another run's file beside it "
                   + ("survived" if other.is_file() else "was DELETED"), "lost": not other.is_file()}

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom raylib.stages import folder_in_use\n"
                               "with folder_in_use(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
                               str(work / "busy")], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        try:
            with folder_in_use(work / "busy"):
                said = "NOT REFUSED"
        except Exception as err:  # noqa: BLE001 - what a second job is told is the outcome
            said = str(err).splitlines()[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    faults["second_job_into_a_folder_in_use"] = {"injected": "a second job started into a running job's output_dir",
                                                 "outcome": said, "lost": said == "NOT REFUSED"}
    return faults


def process_faults(work: Path) -> dict[str, dict[str, Any]]:
    """A fault that stopped every later process: a stale JIT lock left by a killed loader."""
    from raylib.assets import cache_root

    lock = Path(os.environ.get("TORCH_EXTENSIONS_DIR", cache_root() / "torch_extensions")) / "deepspeed_shm_comm"
    lock.mkdir(parents=True, exist_ok=True)
    (lock / "lock").touch()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from raylib.assets import load_deepspeed_cpu_ops as f; f()"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    faults = {"stale_jit_lock": {
        "injected": "the JIT lock file a killed loader leaves",
        "outcome": f"the next load returned {done.returncode} in {time.perf_counter() - start:.1f} s "
                   "(it used to wait forever)", "lost": done.returncode != 0}}
    return faults


BAD_INPUTS = {
    "negative_seed": ["train", "corella", "data.seed=-1"],
    "nan_split": ["train", "corella", "data.time_split=nan,0.1,0.1"],
    "unknown_field": ["train", "tallrec", "train.epochz=1"],
    "missing_dataset": ["train", "bigrec", "data.dataset=/no/such/folder"],
    "serve_open_public_host": ["serve", "--host", "0.0.0.0"],
    "serve_nan_timeout": ["serve", "--llm-timeout-s", "nan"],
}


def bad_inputs(work: Path) -> dict[str, dict[str, Any]]:
    """Each bad input given to `raylib`: its exit code and the one line it prints (stderr's last line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYLIB_SERVE_TOKEN")}
    out = {}
    for name, argv in BAD_INPUTS.items():
        argv = [*argv, f"output_dir={work / name}"] if argv[0] == "train" else [*argv, "--artifacts", str(work)]
        done = subprocess.run([sys.executable, "-m", "jobs.cli", *argv], capture_output=True, text=True,
                              timeout=600, env=env, cwd=PROJECT_DIR)
        lines = done.stderr.strip().splitlines()
        out[name] = {"exit_code": done.returncode, "line": lines[-1] if lines else "",
                     "lines": len(lines), "command": "raylib " + " ".join(argv)}
    return out


def run_bench(config: BenchReliabilityConfig) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from raylib.methods.corella.routing import MAX_ENTROPY  # at this threshold the CRM answers everything
    from raylib.model import resolve_model_path
    from raylib.runtime import ensure_ray
    from raylib.serving import dashboard_url, deploy

    work = Path(config.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {"config": dataclasses.asdict(config)}
    ensure_ray()
    model_dir = resolve_model_path(config.model.name)
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    if not (work / "service" / "artifacts" / "routing.json").is_file():
        (work / "service").mkdir(exist_ok=True)
        (work / "service" / "samples.json").write_text(json.dumps(
            untrained_artifacts(work / "service" / "artifacts", model_dir)))
        untrained_recommender(work / "service", model_dir)
    samples = json.loads((work / "service" / "samples.json").read_text())
    url, dashboard = f"http://127.0.0.1:{config.port}", dashboard_url()

    def deployed(router: dict[str, Any]) -> None:
        deploy(service_config(work / "service" / "artifacts", work / "service" / "recommender", token_file,
                              config.port, router), dashboard, timeout_s=600)

    def fuzz_phase(examples: int, router: dict[str, Any], seed: int) -> dict[str, Any]:
        deployed(router)
        return fuzz(url, TOKEN, examples, seed)

    passes = {f"crm_only_{i}": _phase(work, f"schemathesis_crm_only_{i}", lambda i=i: fuzz_phase(
        config.crm_only_examples, {"threshold": MAX_ENTROPY}, config.seed + i)) for i in range(config.crm_only_rounds)}
    passes["routed"] = _phase(work, "schemathesis_routed", lambda: fuzz_phase(config.routed_examples, {}, config.seed))
    report["schemathesis"] = {key: sum(p[key] for p in passes.values())
                              for key in ("requests", "server_errors", "bad_json")}
    report["schemathesis"].update(routes=sorted({r for p in passes.values() for r in p["routes"]}), passes=passes)
    history = [str(i) for i in pq.read_table(work / "service" / "recommender" / "catalogue.parquet",
                                             columns=["item_id"]).column(0).to_pylist()[:3]]
    faults = _phase(work, "service_faults", lambda: (deployed({}), service_faults(
        url, deployed, samples, history, dashboard))[1])
    faults["empty_token_file"] = _phase(work, "empty_token_file", lambda: empty_token_fault(
        service_config(work / "service" / "artifacts", work / "service" / "recommender", token_file, config.port),
        work / "empty-token", url, dashboard))
    faults.update(_phase(work, "file_faults", lambda: file_faults(work / "drills")))
    faults.update(_phase(work, "process_faults", lambda: process_faults(work / "drills")))
    report["faults"] = faults
    report["bad_inputs"] = _phase(work, "bad_inputs", lambda: bad_inputs(work / "bad"))
    report["wall_time_s"] = time.time() - started
    save_report(report, report_path(config.report))
    return report


def markdown(report: dict[str, Any]) -> str:
    fuzzed = report["schemathesis"]
    lines = ["# Reliability and security: what was tried and what happened", "",
             "Made by `raylib bench reliability` (raylib/bench/reliability.py); the guarantees are in "
             "docs/reliability.md.", "",
             f"**Schemathesis**: {fuzzed['requests']} requests on {', '.join(fuzzed['routes'])}: "
             f"{fuzzed['server_errors']} server errors (5xx), {fuzzed['bad_json']} 4xx answers that were not JSON.",
             "", "| fault | injected | outcome | lost |", "|---|---|---|---|"]
    lines += [f"| {name} | {f['injected']} | {f['outcome']} | {'yes' if f['lost'] else 'no'} |"
              for name, f in report["faults"].items()]
    lines += ["", "| bad input | command | exit code | lines on stderr | the line |", "|---|---|---|---|---|"]
    lines += [f"| {name} | `{b['command']}` | {b['exit_code']} | {b['lines']} | {b['line']} |"
              for name, b in report["bad_inputs"].items()]
    return "\n".join(lines) + "\n"


def save_report(report: dict[str, Any], path: Path) -> None:
    """The report, its paths inside the project written relative to it (a reader's checkout is elsewhere)."""
    report = json.loads(json.dumps(report).replace(str(PROJECT_DIR) + "/", ""))
    write_report(report, path, markdown=markdown)
