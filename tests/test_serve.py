"""Ray Serve: Router + CRM + LLM + Generator deployed on the test session's Ray (fractional CPUs; the LLM and the
Generator on half a logical GPU each, a free port) and driven over real HTTP: routing by the tuned threshold,
live reconfiguration, degraded answers when the LLM fails, the bearer token read from a file by the router,
422s for bad bodies and for values training never saw, the protected OpenAPI schema."""

from __future__ import annotations

import json
import math
import threading
import socket
import urllib.error
import urllib.request

import pytest

from raylib.bench.reliability import untrained_artifacts, untrained_recommender
from raylib.methods.corella.routing import MAX_ENTROPY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, path, body=None, token=None, method=None):
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    request = urllib.request.Request(url + path, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def deploy(service) -> None:
    """`serve deploy` of the service's config through the dashboard's REST API (as the CLI does), then wait."""
    from raylib.serving import deploy as deploy_config

    deploy_config(service["config"], service["dashboard"], timeout_s=180)


@pytest.fixture(scope="module")
def service(ray_session, tiny_model_dir, tmp_path_factory):
    from conftest import Loads
    from ray import serve

    from raylib.serving import TOKEN_FILE_ENV, dashboard_url

    loads = Loads()
    folder = tmp_path_factory.mktemp("artifacts")
    token_file = folder.parent / "token"
    token_file.write_text("s3cret\n")
    samples = untrained_artifacts(folder, tiny_model_dir)
    recommender, catalogue = untrained_recommender(tmp_path_factory.mktemp("bigrec"), tiny_model_dir)
    port = free_port()
    dashboard = dashboard_url()
    config = {"http_options": {"host": "127.0.0.1", "port": port}, "applications": [{
        "name": "corella", "route_prefix": "/", "import_path": "serve.app:build",
        "args": {"artifacts": str(folder), "recommender": str(recommender), "llm_gpus": 0.5,
                 "generator_gpus": 0.5},
        "runtime_env": {"env_vars": {TOKEN_FILE_ENV: str(token_file)}},  # a path: the secret is not in the config
        "deployments": [
            {"name": "Router", "user_config": {"llm_timeout_s": 60.0}},  # the threshold: routing.json's
            {"name": "LLM", "autoscaling_config": {"min_replicas": 1, "max_replicas": 2,
                                                   "target_ongoing_requests": 4}},
            {"name": "CRM", "autoscaling_config": {"min_replicas": 1, "max_replicas": 2}}]}]}
    service = {"url": f"http://127.0.0.1:{port}", "samples": samples, "folder": folder, "config": config,
               "dashboard": dashboard, "recommender": recommender, "catalogue": catalogue, "loads": loads}
    deploy(service)
    yield service
    # clean shutdown: no replica left, the port closed
    from raylib.serving import replica_actors

    serve.shutdown()
    assert not any(replica_actors(d, dashboard) for d in ("Router", "CRM", "LLM", "Generator"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def reconfigure(service, **user_config) -> None:
    """Redeploy the same config with another router user_config (a None value drops the key): Serve
    reconfigures the running router."""
    router = service["config"]["applications"][0]["deployments"][0]
    merged = {**router["user_config"], **user_config}
    router["user_config"] = {k: v for k, v in merged.items() if v is not None}
    deploy(service)


def test_the_llm_and_generator_replicas_hold_gpus_and_the_threshold_is_the_tuned_one(service):
    """Their replicas loaded the model holding a GPU id (the CRM and the router none); the router routes by
    routing.json's threshold when the config carries none, and the secret is nowhere in Serve's config."""
    from ray import serve

    records = service["loads"].records()
    llm_loads = [r for r in records if r["what"].startswith("llm:")]
    assert len(llm_loads) >= 2 and all(r["gpu_ids"] for r in llm_loads)  # the LLM and the Generator
    assert all(not r["gpu_ids"] for r in records if r["what"] == "crm")
    health = call(service["url"], "/healthz")[1]
    assert health["threshold"] == 0.5 and health["threshold_source"] == "routing.json"
    details = serve.status().applications["corella"]
    assert "s3cret" not in json.dumps(service["config"]) and "s3cret" not in str(details)


def test_requests_need_the_token_and_bodies_are_checked(service):
    url, sample = service["url"], service["samples"][0]
    assert call(url, "/healthz")[0] == 200  # the only open endpoint
    assert call(url, "/predict", {"samples": [sample]})[0] == 401
    assert call(url, "/predict", {"samples": [sample]}, token="wrong")[0] == 401
    status, body = call(url, "/predict", {"samples": [{**sample, "history_ratings": [1.0]}]}, token="s3cret")
    assert status == 422 and "history_items, history_titles and history_ratings" in json.dumps(body)
    status, body = call(url, "/predict", {"samples": []}, token="s3cret")
    assert status == 422 and "samples" in json.dumps(body)
    status, body = call(url, "/predict", b"{not json", token="s3cret")
    assert status == 422
    for path in ("/openapi.json", "/docs"):  # the schema and the docs are behind the token too
        assert call(url, path)[0] == 401
    request = urllib.request.Request(url + "/openapi.json", headers={"Authorization": "Bearer s3cret"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert "/predict" in json.loads(response.read())["paths"]


def test_no_client_mistake_is_a_500_and_the_gate_answers_before_the_body(service):
    """The token and the size are checked before a body is read; NaN literals and lone surrogates are a 422
    naming the field, with a body that is valid JSON; an age of 1e999 is no age group, not an overflow."""
    from raylib.serving.guards import MAX_BODY_BYTES

    url, sample = service["url"], service["samples"][0]
    assert call(url, "/healthz")[1]["auth"] is True
    assert call(url, "/predict", b"{not json")[0] == 401  # refused before the body is parsed
    assert call(url, "/predict", b" " * (MAX_BODY_BYTES + 1), token="s3cret")[0] == 413
    nan_ratings = json.dumps({"samples": [{**sample, "history_items": ["1"], "history_titles": ["A (1999)"],
                                           "history_ratings": [float("nan")]}]})  # a NaN literal, as JS may send
    assert "NaN" in nan_ratings
    status, body = call(url, "/predict", nan_ratings.encode(), token="s3cret")
    assert status == 422 and "history_ratings" in json.dumps(body)
    status, body = call(url, "/predict", {"samples": [{**sample, "genres": ["\ud800"]}]}, token="s3cret")
    assert status == 422 and "genres: a lone surrogate" in json.dumps(body)
    status, body = call(url, "/recommend", {"history": ["\udc00"]}, token="s3cret")
    assert status == 422
    status, body = call(url, "/predict", {"samples": [{**sample, "age": "1e999"}]}, token="s3cret")
    assert status == 200 and len(body["predictions"]) == 1


def test_schemathesis_finds_no_server_error_on_any_route(service):
    """Property-based requests from the app's own OpenAPI schema (valid bodies and schema-breaking ones) on every
    route: no 5xx, and every 4xx body is JSON. A short pass; `raylib bench reliability` sends tens of thousands."""
    from raylib.bench.reliability import fuzz

    found = fuzz(service["url"], "s3cret", examples_per_route=12)
    assert {"GET /healthz", "POST /predict", "POST /recommend"} <= set(found["routes"])
    assert found["requests"] >= 6 * len(found["routes"]), found
    assert found["server_errors"] == 0 and found["bad_json"] == 0, found["examples"]
    assert any(200 <= int(s) < 300 for s in found["statuses"]) and "422" in found["statuses"]


def test_a_stalled_crm_or_generator_is_a_504_not_a_held_request(service):
    """Every downstream call has a deadline (the router's user_config): past it the client gets a 504 at once."""
    url, samples = service["url"], service["samples"]
    try:
        reconfigure(service, crm_timeout_s=1e-6, generator_timeout_s=1e-6)  # nothing answers that fast
        status, body = call(url, "/predict", {"samples": samples[:2]}, token="s3cret")
        assert status == 504 and "the CRM did not answer" in body["detail"]
        status, body = call(url, "/recommend", {"history": service["catalogue"].item_ids[:3]}, token="s3cret")
        assert status == 504 and "the generator did not answer" in body["detail"]
    finally:
        reconfigure(service, crm_timeout_s=None, generator_timeout_s=None)
    assert call(url, "/predict", {"samples": samples[:2]}, token="s3cret")[0] == 200


def test_one_sample_the_llm_cannot_take_costs_only_its_own_answer(service, tiny_model_dir):
    """In a `@serve.batch` of several clients' samples, one whose prompt cannot fit is None (its client gets
    the CRM's answer, degraded); the others get the scores they would get alone."""
    from raylib.serving import LlmScorer

    scorer = LlmScorer(str(tiny_model_dir), str(service["folder"] / "adapter"))
    first, second = service["samples"][:2]
    bare = [len(scorer.prompt({**s, "history_titles": [], "history_ratings": [], "history_items": []}, "s"))
            for s in (first, second)]
    scorer.max_length = max(bare) + 8
    too_long = {**first, "title": "word " * 59}
    answers = scorer.each([first, too_long, second])
    assert answers[1] is None
    assert answers[0] == pytest.approx(scorer([first])[0], abs=1e-5)
    assert answers[2] == pytest.approx(scorer([second])[0], abs=1e-5)


def test_requests_get_the_features_training_made(service):
    """Age in years and a full zip code become the age bucket and zip prefix the CRM trained on (the same
    answer as the bucketed sample); a history rating training never saw (99 on a 1-5 scale) is a 422."""
    from raylib.data.ctr import age_bucket

    url, samples = service["url"], service["samples"]
    sample = next(s for s in samples if s["history_ratings"])
    bucketed = call(url, "/predict", {"samples": [sample]}, token="s3cret")[1]["predictions"][0]
    raw_age = str(int(sample["age"]) + 2)  # years, in the sample's bucket
    assert age_bucket(raw_age) == sample["age"]
    raw = {**sample, "age": raw_age, "zip": sample["zip"] + "455"}
    as_sent = call(url, "/predict", {"samples": [raw]}, token="s3cret")[1]["predictions"][0]
    assert as_sent["crm_probability"] == pytest.approx(bucketed["crm_probability"], abs=1e-9)
    bad = {**sample, "history_ratings": [99.0] + sample["history_ratings"][1:]}
    status, body = call(url, "/predict", {"samples": [sample, bad]}, token="s3cret")
    assert status == 422 and "samples[1].history_ratings: 99" in body["detail"]


def test_the_crm_answers_the_confident_and_the_llm_the_rest(service):
    url, samples = service["url"], service["samples"]
    status, body = call(url, "/predict", {"samples": samples}, token="s3cret")
    assert status == 200, body
    threshold = body["threshold"]
    for p in body["predictions"]:
        assert p["routed_to"] == ("llm" if p["entropy"] > threshold else "crm")
        assert 0.0 <= p["probability"] <= 1.0 and not p["degraded"]
        if p["routed_to"] == "crm":
            assert p["probability"] == p["crm_probability"]


def test_reconfiguring_the_threshold_changes_routing_without_a_restart(service):
    url, samples = service["url"], service["samples"]
    started = call(url, "/healthz")[1]["started_at"]
    try:
        reconfigure(service, threshold=0.0)  # every sample above it: all to the LLM
        body = call(url, "/predict", {"samples": samples[:6]}, token="s3cret")[1]
        assert {p["routed_to"] for p in body["predictions"]} == {"llm"} and body["threshold"] == 0.0
        reconfigure(service, threshold=MAX_ENTROPY)  # none above it: all to the CRM
        body = call(url, "/predict", {"samples": samples[:6]}, token="s3cret")[1]
        assert {p["routed_to"] for p in body["predictions"]} == {"crm"}
        assert call(url, "/healthz")[1]["started_at"] == started  # the same router replica, reconfigured
        assert call(url, "/healthz")[1]["threshold_source"] == "user_config"
    finally:
        reconfigure(service, threshold=None)  # back to routing.json's


def test_a_slow_llm_degrades_to_the_crm_without_failing(service):
    url, samples = service["url"], service["samples"]
    try:
        reconfigure(service, threshold=0.0, llm_timeout_s=0.001)  # the LLM cannot answer in time
        status, body = call(url, "/predict", {"samples": samples[:4]}, token="s3cret")
        assert status == 200
        assert all(p["degraded"] and p["routed_to"] == "crm" and p["probability"] == p["crm_probability"]
                   for p in body["predictions"])
    finally:
        reconfigure(service, threshold=None, llm_timeout_s=60.0)


@pytest.mark.slow
def test_a_killed_llm_replica_degrades_answers_and_fails_none(service):
    """Kill the LLM's replica while requests go to it: every request still gets a 200, the samples the LLM
    could not answer are the CRM's (degraded); Serve then starts a new replica."""
    import ray

    from raylib.serving import replica_actors

    url, samples = service["url"], service["samples"]
    try:
        reconfigure(service, threshold=0.0, llm_timeout_s=5.0)
        replicas = replica_actors("LLM", service["dashboard"])
        assert replicas, "no LLM replica found"
        ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
        for start in range(0, 12, 2):
            status, body = call(url, "/predict", {"samples": samples[start:start + 2]}, token="s3cret")
            assert status == 200, body
            assert all(p["routed_to"] == "llm" or p["degraded"] for p in body["predictions"])
    finally:
        reconfigure(service, threshold=None, llm_timeout_s=60.0)


def test_served_answers_equal_the_library_under_concurrent_load(service, tiny_model_dir):
    """The benchmark's load generator against the app: every answer equals `raylib.methods.corella.artifacts.RoutedScorer`'s on
    the same samples, and a short closed loop fails no request."""
    import asyncio

    import numpy as np

    from raylib.bench.serve import closed_loop, one_pass
    from raylib.config import ModelConfig
    from raylib.methods.corella.config import CorellaJobConfig
    from raylib.methods.corella.artifacts import RoutedScorer
    from raylib.data.ctr import CTR_COLUMNS, typed_ctr_table
    from raylib.serving import sample_row

    url, samples, folder = service["url"], service["samples"], service["folder"]
    token = {"Authorization": "Bearer s3cret"}
    served = asyncio.run(one_pass(url, samples, 4, headers=token))
    scorer = RoutedScorer(folder / "crm", folder / "adapter", CorellaJobConfig(model=ModelConfig(
        name=str(tiny_model_dir), dtype="fp32")), threshold=0.5)
    rows = [sample_row(s) for s in samples]
    records = scorer.vocab.records(typed_ctr_table({c: [r[c] for r in rows] for c in CTR_COLUMNS}), with_text=True)
    expected, to_llm = scorer.routed(records)
    assert [p["routed_to"] == "llm" for p in served] == to_llm.tolist()
    np.testing.assert_allclose([p["probability"] for p in served], expected, atol=1e-5)
    load = asyncio.run(closed_loop(url, samples, 3, 2.0, headers=token))
    assert load["requests"] > 0 and load["failed_requests"] == 0


def test_recommend_serves_bigrec_adapters_by_id(service):
    """/recommend: the adapter named in the request generates (Serve multiplexing over one base model), the text
    is grounded over the whole catalogue; the answer is the one the library gives in-process."""
    from raylib.methods.nextitem.recommender import Recommender

    url, catalogue = service["url"], service["catalogue"]
    history = catalogue.item_ids[:5]
    assert call(url, "/recommend", {"history": history})[0] == 401
    status, bigrec = call(url, "/recommend", {"history": history, "k": 5}, token="s3cret")
    assert status == 200, bigrec
    assert bigrec["adapter"] == "bigrec" and len(bigrec["items"]) == 5
    assert all(catalogue.title(i["item_id"]) == i["title"] for i in bigrec["items"])
    status, other = call(url, "/recommend", {"history": history, "k": 5, "adapter": "other"}, token="s3cret")
    assert status == 200 and other["adapter"] == "other"
    local = Recommender(service["recommender"])
    for answer in (bigrec, other):
        expected = local.recommend(answer["adapter"], history, 5)
        assert answer["generated"] == expected["generated"]
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in expected["items"]]
    # The history's own items are left out by default; asked for, they may come back.
    status, body = call(url, "/recommend", {"history": history, "k": 20}, token="s3cret")
    excluded = [i["item_id"] for i in body["items"]]
    assert status == 200 and not set(history) & set(excluded)
    status, body = call(url, "/recommend", {"history": history, "k": 100, "exclude_history": False}, token="s3cret")
    assert status == 200 and [i["item_id"] for i in body["items"] if i["item_id"] not in history][:20] == excluded
    # Constrained decoding: the generated text is a catalogue title even from the random model.
    status, body = call(url, "/recommend", {"history": history, "k": 3, "constrained": True}, token="s3cret")
    assert status == 200 and body["generated"] in set(catalogue.titles), body
    status, body = call(url, "/recommend", {"history": history, "adapter": "missing"}, token="s3cret")
    assert status == 404 and "no adapter 'missing'" in body["detail"]
    status, body = call(url, "/recommend", {"history": ["no-such-item"]}, token="s3cret")
    assert status == 422 and "no-such-item" in body["detail"]
    for bad in ({"history": []}, {"history": history, "k": 0}, {"history": history, "adapter": "../etc"}):
        status, body = call(url, "/recommend", bad, token="s3cret")
        assert status == 422, bad


def test_adapters_join_and_leave_one_base_model(service):
    from raylib.methods.nextitem.recommender import Recommender, UnknownAdapter

    recommender = Recommender(service["recommender"])
    first = recommender.recommend("bigrec", service["catalogue"].item_ids[:3], 3)
    recommender.load_adapter("other")
    assert recommender.loaded == {"bigrec", "other"}
    everything = recommender.recommend("other", service["catalogue"].item_ids[:3], 199)
    assert len(everything["items"]) == 197  # k past what is left: every other item, every score finite
    assert all(math.isfinite(i["score"]) for i in everything["items"])
    recommender.unload_adapter("bigrec")  # what Serve's LRU eviction does through LoadedAdapter.__del__
    assert recommender.loaded == {"other"} and "bigrec" not in recommender.model.peft_config
    assert recommender.recommend("bigrec", service["catalogue"].item_ids[:3], 3) == first  # loaded again
    with pytest.raises(UnknownAdapter, match="no adapter 'nope'|No adapter 'nope'"):
        recommender.load_adapter("nope")
    # Serve evicts from a pool thread while a request generates: the recommender's lock keeps them apart.
    errors, stop = [], threading.Event()

    def churn():
        while not stop.is_set():
            try:
                recommender.load_adapter("other")
                recommender.unload_adapter("other")
            except Exception as err:  # noqa: BLE001 - any failure here is the race the lock prevents
                errors.append(err)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for _ in range(3):
            assert recommender.recommend("bigrec", service["catalogue"].item_ids[:3], 3) == first
    finally:
        stop.set()
        churner.join()
    assert not errors


@pytest.mark.parametrize("gpus, name", [("0", "config.yaml"), ("1", "config-gpu.yaml")])
def test_the_deploy_configs_are_what_serve_build_writes(service, monkeypatch, tmp_path, gpus, name):
    """serve/config.yaml (CPUs) and serve/config-gpu.yaml (RAYLIB_SERVE_GPUS=1) are `serve build serve.app:app`'s
    output (plus comments, the app's name and a local host): rebuilt here, every deployment's autoscaling and
    resources must match, Serve's schema accepts them, and neither carries a routing threshold."""
    from pathlib import Path

    import yaml
    from click.testing import CliRunner
    from ray.serve.schema import ServeDeploySchema
    from ray.serve.scripts import cli

    monkeypatch.setenv("RAYLIB_CORELLA_ARTIFACTS", str(service["folder"]))
    monkeypatch.setenv("RAYLIB_BIGREC_RECOMMENDER", str(service["recommender"]))
    monkeypatch.setenv("RAYLIB_SERVE_GPUS", gpus)
    result = CliRunner().invoke(cli, ["build", "serve.app:app", "-o", str(tmp_path / "built.yaml")])
    assert result.exit_code == 0, result.output
    built = ServeDeploySchema(**yaml.safe_load((tmp_path / "built.yaml").read_text())).applications[0]
    committed = ServeDeploySchema(**yaml.safe_load((Path(__file__).parents[1] / "serve" / name).read_text()))
    app = committed.applications[0]
    assert app.import_path == built.import_path == "serve.app:app" and committed.http_options.host == "127.0.0.1"
    assert committed.http_options.request_timeout_s  # the proxy bounds every request too
    options = lambda a: {d.name: (d.autoscaling_config, d.ray_actor_options, d.max_ongoing_requests,  # noqa: E731
                                  d.max_queued_requests,
                                  sorted(d.user_config) if isinstance(d.user_config, dict) else None)
                         for d in a.deployments}
    assert options(app) == options(built) and set(options(app)) == {"Router", "CRM", "LLM", "Generator"}
    assert {"RAYLIB_CORELLA_ARTIFACTS", "RAYLIB_BIGREC_RECOMMENDER"} <= set(app.runtime_env["env_vars"])
    router = next(d for d in app.deployments if d.name == "Router")
    assert "threshold" not in router.user_config and router.autoscaling_config
    gpu_of = {d.name: getattr(d.ray_actor_options, "num_gpus", None) or 0 for d in app.deployments}
    assert gpu_of == {"Router": 0, "CRM": 0, "LLM": float(gpus), "Generator": float(gpus)}


def test_missing_artifacts_say_how_to_make_them(tmp_path):
    from raylib import RaylibError
    from raylib.serving import artifact_paths

    with pytest.raises(RaylibError, match=r"No CoReLLa artifacts in .*raylib train corella"):
        artifact_paths(tmp_path)
