"""Ray Serve for CoReLLa: the CRM and the LLM as separately autoscaled deployments behind a FastAPI router.

  CrmDeployment   DCNv2 + its vocabulary (fp32, CPU): P(like) for every request
  LlmDeployment   base model + LoRA adapter merged once at start-up; requests batched with `@serve.batch`; on a
                  GPU when the app gives it `llm_gpus` (fractions share one), in the dtype rule's dtype
  Generator       BIGRec `/recommend` (one base model, adapters by id); `generator_gpus` likewise
  Router          FastAPI ingress: applies training's feature rules to every sample (`FeatureRules`: age bucket,
                  zip prefix; history ratings outside training's range are a 422), scores every sample with the
                  CRM, sends the uncertain ones (CRM entropy above the threshold) to the LLM, and answers with
                  who answered. If the LLM errors, exceeds its timeout or its breaker is open (`guards.Breaker`),
                  the CRM's answer is returned marked `degraded`; a broken CRM is a 503, a CRM or Generator past
                  its deadline a 504.

Artifacts come from `jobs.corella` (`<output_dir>/artifacts`: crm/, adapter/, routing.json), checked against
each other by their hashes. The threshold is routing.json's tuned one; the router's `user_config` may override
it (`/healthz` then says so) and sets the deadlines (`schemas.RouterSettings`, checked whole before any of it
applies): `serve deploy` with a new value changes them without a restart. The bearer token is read by the router
replica itself when it starts (RAYLIB_SERVE_TOKEN or RAYLIB_SERVE_TOKEN_FILE in its environment; one that is set
but unreadable or empty fails the start), never placed in Serve's config, and checked with the body's size before
the body is read (`guards.gate`). Metrics go through Ray's metrics API (`ray.serve.metrics`), exported with Ray's
own Prometheus metrics.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time, and under a
class-based Serve ingress string annotations turned the request body into a query parameter.
"""


import asyncio
import math
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response
from ray import serve

from raylib.methods.corella.routing import MAX_ENTROPY  # at this threshold the CRM answers everything
from raylib.serving.guards import Breaker, current_token, gate, resolve_token, safe_json
from raylib.serving.schemas import (PredictRequest, Prediction, PredictResponse, RecommendRequest,
                                    RecommendResponse, RouterSettings)
from raylib.serving.scorers import CrmScorer, LlmScorer, RequestRules

ROUTING_SOURCE = "routing.json"


def routing_plan(crm_probs: list[float], threshold: float) -> list[bool]:
    from raylib.methods.corella.routing import to_llm

    return to_llm(crm_probs, threshold).tolist()


def artifact_paths(folder: str | Path) -> dict[str, Any]:
    """The artifacts' paths and routing config, checked against each other (`corella.artifacts.check_artifacts`), in
    the version published now: resolved once, so every replica loads that version, whatever is published later."""
    from raylib.methods.corella.artifacts import check_artifacts
    from raylib.train.checkpoint import published_version

    version = published_version(folder)
    return {"crm_dir": str(version / "crm"), "adapter_dir": str(version / "adapter"),
            "routing": check_artifacts(version)}


def verified(folder: str, file: str, sha1: str | None) -> str:
    """`folder`, once its `file` is the one routing.json was tuned with: a replica started later (autoscaling, a
    restart) serves the weights the router's threshold belongs to, or fails saying what changed."""
    from raylib import RaylibError
    from raylib.stages import file_sha1

    path = Path(folder) / file
    if sha1 is not None and file_sha1(path) != sha1:
        raise RaylibError(f"{path} is not the file routing.json was tuned with (sha1 {sha1[:12]}): the artifacts "
                          "were changed under the app; deploy it again")
    return folder


def now_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# ------------------------------------------------------------------ deployments

# The schema and docs are routes of the router below, behind the token like every endpoint but /healthz.
api = FastAPI(title="raylib CoReLLa service", docs_url=None, redoc_url=None, openapi_url=None,
              description="Will this user like this item? The CRM answers when it is sure, the LLM otherwise.")
def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(safe_json(content), status_code=status, media_type="application/json", headers=headers)


@api.middleware("http")
async def _gate(request: Request, call_next):
    """The token and the body's size, before the body is read (no 422 leaks the schema to a caller without
    the token; no body past `guards.MAX_BODY_BYTES` is buffered)."""
    refused = gate(request.url.path, request.method, {k.lower(): v for k, v in request.headers.items()},
                   current_token())
    if refused:
        status, detail = refused
        return _json(status, {"detail": detail}, {"WWW-Authenticate": "Bearer"} if status == 401 else None)
    return await call_next(request)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> Response:
    """A 422 naming the field; the client's own values echoed in a form JSON can carry (NaN, lone surrogates)."""
    return _json(422, {"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                                  for e in err.errors()]})


async def bounded(call, timeout_s: float, what: str):
    """A downstream call with a deadline: past it a 504, a failure a 503 (the caller's request was fine)."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except asyncio.TimeoutError:
        raise HTTPException(status_code=504, detail=f"the {what} did not answer within {timeout_s:g} s") from None
    except Exception as err:  # noqa: BLE001 - any downstream failure is the service's, said as a 503
        raise HTTPException(status_code=503, detail=f"the {what} is unavailable: {type(err).__name__}") from None


# max_queued_requests: past it a caller is refused at once (a 503) instead of waiting behind a stalled replica.
@serve.deployment(name="CRM", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32,
                  max_queued_requests=256,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8})
class CrmDeployment:
    def __init__(self, crm_dir: str, vocab_hash: str | None = None, crm_hash: str | None = None):
        self.scorer = CrmScorer(verified(crm_dir, "model.safetensors", crm_hash), vocab_hash)

    def predict(self, samples: list[dict[str, Any]]) -> list[float]:
        return self.scorer(samples)


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32,
                  max_queued_requests=128,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4})
class LlmDeployment:
    def __init__(self, model_name: str, adapter_dir: str, max_length: int = 512, dtype: str = "auto",
                 max_batch_size: int = 16, adapter_hash: str | None = None):
        self.scorer = LlmScorer(model_name, verified(adapter_dir, "adapter_model.safetensors", adapter_hash),
                                max_length, dtype)
        self.score.set_max_batch_size(max_batch_size)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def score(self, samples: list[dict[str, Any]]) -> list[float | None]:
        """Requests arriving together run as one forward pass (Serve collects them, up to max_batch_size); a
        sample the scorer cannot take is None (its client gets the CRM's answer), the others are unaffected."""
        return self.scorer.each(samples)


class LoadedAdapter:
    """What `@serve.multiplexed` keeps per adapter id; Serve calls `__del__` when it evicts one (LRU)."""

    def __init__(self, recommender, adapter_id: str):
        self.recommender, self.adapter_id, self.unloaded = recommender, adapter_id, False

    def __del__(self):
        if not self.unloaded:
            self.unloaded = True
            self.recommender.unload_adapter(self.adapter_id)


@serve.deployment(name="Generator", ray_actor_options={"num_cpus": 0.5}, max_queued_requests=16,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2})
class GeneratorDeployment:
    """BIGRec: one base model per replica; adapters by id through Serve's model multiplexing (requests carry
    `multiplexed_model_id`, Serve prefers a replica that has it loaded, and evicts the least recently used)."""

    def __init__(self, folder: str):
        from raylib.methods.nextitem.recommender import Recommender

        self.recommender = Recommender(folder)

    @serve.multiplexed(max_num_models_per_replica=4)
    async def adapter(self, adapter_id: str) -> LoadedAdapter:
        loaded = await asyncio.to_thread(self.recommender.load_adapter, adapter_id)  # off the event loop
        return LoadedAdapter(self.recommender, loaded)

    async def recommend(self, history: list[str], k: int, exclude_history: bool,
                        constrained: bool | None = None) -> dict[str, Any]:
        """The top-k, or {"status": 404 | 422, "detail": ...} for an unknown adapter or unknown items."""
        from raylib.methods.nextitem.recommender import UnknownItems, adapter_ids

        adapter_id = serve.get_multiplexed_model_id()
        if adapter_id not in adapter_ids(self.recommender.folder):
            return {"status": 404, "detail": f"no adapter {adapter_id!r}; this service has "
                                             f"{adapter_ids(self.recommender.folder)}"}
        loaded = await self.adapter(adapter_id)
        try:  # beam search in a thread: the replica's event loop keeps answering (the recommender holds a lock)
            return await asyncio.to_thread(self.recommender.recommend, loaded.adapter_id, history, k,
                                           exclude_history, constrained=constrained)
        except UnknownItems as err:
            return {"status": 422, "detail": str(err)}


@serve.deployment(name="Router", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256,
                  max_queued_requests=1024,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 64})
@serve.ingress(api)
class Router:
    def __init__(self, crm, llm, generator=None, tuned_threshold: float = MAX_ENTROPY,
                 rules: dict[str, Any] | None = None):
        from ray.serve import metrics

        resolve_token()  # a token source set but unreadable or empty fails the start: never an open service
        self.crm, self.llm, self.generator = crm, llm, generator
        self.tuned_threshold = tuned_threshold  # routing.json's, unless user_config overrides it
        self.settings = RouterSettings()
        self.threshold, self.threshold_source = tuned_threshold, ROUTING_SOURCE
        self.breaker = Breaker(self.settings.breaker_failures, self.settings.breaker_cooldown_s)
        self.rules = RequestRules(**(rules or {"features": {}, "rating_range": None}))
        self.started_at = time.time()
        self.samples = metrics.Counter("raylib_serve_samples", description="samples answered")
        self.routed = metrics.Counter("raylib_serve_llm_samples", description="samples the LLM answered")
        self.fallbacks = metrics.Counter("raylib_serve_fallbacks",
                                         description="samples the LLM should have answered, answered by the CRM")
        self.latency = metrics.Histogram("raylib_serve_latency_ms", description="request latency per route",
                                         boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
                                         tag_keys=("route",))

    def reconfigure(self, config: dict[str, Any]) -> None:
        """`user_config` (`RouterSettings`), applied live, no restart, all of it or none: a bad value leaves the
        router as it was. Without "threshold" the router uses routing.json's tuned one (so a config never
        carries a stale one)."""
        from pydantic import ValidationError

        try:
            settings = RouterSettings(**config)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"Router user_config {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        self.settings = settings
        self.threshold = self.tuned_threshold if settings.threshold is None else settings.threshold
        self.threshold_source = ROUTING_SOURCE if settings.threshold is None else "user_config"
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown_s)  # a new config: closed

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "threshold": self.threshold, "threshold_source": self.threshold_source,
                "tuned_threshold": self.tuned_threshold, **self.settings.model_dump(exclude={"threshold"}),
                "auth": current_token() is not None, "llm_breaker_open": self.breaker.open,
                "started_at": self.started_at, "recommend": self.generator is not None}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self) -> dict[str, Any]:
        return api.openapi()

    @api.get("/docs", include_in_schema=False)
    async def docs(self):
        return get_swagger_ui_html(openapi_url="/openapi.json", title=api.title)

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest):
        """BIGRec top-K from a history (when a recommender folder is deployed); `adapter` picks the tuned LoRA."""
        if self.generator is None:
            raise HTTPException(status_code=404, detail="no BIGRec recommender is deployed: publish one with "
                                "`raylib train bigrec` and start the app with recommender=<output_dir>/recommender")
        start = time.perf_counter()
        out = await bounded(self.generator.options(multiplexed_model_id=body.adapter).recommend.remote(
            body.history, body.k, body.exclude_history, body.constrained), self.settings.generator_timeout_s,
            "generator")
        if "status" in out:
            raise HTTPException(status_code=out["status"], detail=out["detail"])
        latency = now_ms(start)
        self.latency.observe(latency, tags={"route": "/recommend"})
        return RecommendResponse(**out, latency_ms=latency)

    @api.post("/predict", response_model=PredictResponse)
    async def predict(self, body: PredictRequest):
        start = time.perf_counter()
        try:
            samples = self.rules.apply([s.model_dump() for s in body.samples])
        except ValueError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        crm = await bounded(self.crm.predict.remote(samples), self.settings.crm_timeout_s, "CRM")
        if not all(math.isfinite(p) for p in crm):
            raise HTTPException(status_code=503, detail="the CRM answered a probability that is not a number")
        uncertain = [i for i, go in enumerate(routing_plan(crm, self.threshold)) if go]
        llm = await self.llm_answers(samples, uncertain)
        if len(llm) < len(uncertain):
            self.fallbacks.inc(len(uncertain) - len(llm))
        from raylib.methods.corella.routing import entropy

        entropies = entropy(crm).tolist()
        predictions = []
        for i, p in enumerate(crm):
            if i in llm:
                predictions.append(Prediction(probability=llm[i], routed_to="llm", crm_probability=p,
                                              entropy=entropies[i]))
            else:
                predictions.append(Prediction(probability=p, routed_to="crm", crm_probability=p,
                                              entropy=entropies[i], degraded=i in uncertain))
        self.samples.inc(len(samples))
        if llm:  # Ray's counters refuse an increment of 0
            self.routed.inc(len(llm))
        latency = now_ms(start)
        self.latency.observe(latency, tags={"route": "/predict"})
        return PredictResponse(predictions=predictions, latency_ms=latency, threshold=self.threshold)

    async def llm_answers(self, samples: list[dict[str, Any]], uncertain: list[int]) -> dict[int, float]:
        """The LLM's P(like) for the uncertain samples it could answer in time; none while its breaker is open
        (a failing LLM is skipped at once instead of costing every request its timeout)."""
        if not uncertain or self.breaker.open:
            return {}
        try:
            answers = await asyncio.wait_for(asyncio.gather(*[self.llm.score.remote(samples[i]) for i in uncertain]),
                                             self.settings.llm_timeout_s)
        except Exception:  # noqa: BLE001 - an LLM error or timeout degrades to the CRM, never fails
            self.breaker.record(False)
            return {}
        self.breaker.record(True)
        return {i: a for i, a in zip(uncertain, answers) if a is not None and math.isfinite(a)}
