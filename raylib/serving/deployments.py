"""Ray Serve for CoReLLa: the CRM and the LLM as separately autoscaled deployments behind a FastAPI router.

  CrmDeployment   DCNv2 + its vocabulary (fp32, CPU): P(like) for every request
  LlmDeployment   base model + LoRA adapter merged once at start-up; requests batched with `@serve.batch`; on a
                  GPU when the app gives it `llm_gpus` (fractions share one), in the dtype rule's dtype
  Generator       BIGRec `/recommend` (one base model, adapters by id); `generator_gpus` likewise
  Router          FastAPI ingress: applies training's feature rules to every sample (`FeatureRules`: age bucket,
                  zip prefix; history ratings outside training's range are a 422), scores every sample with the
                  CRM, sends the uncertain ones (CRM entropy above the threshold) to the LLM, and answers with
                  who answered. If the LLM errors or exceeds its timeout, the CRM's answer is returned marked
                  `degraded`; a broken CRM is a 503.

Artifacts come from `jobs.corella` (`<output_dir>/artifacts`: crm/, adapter/, routing.json), checked against
each other by their hashes. The threshold is routing.json's tuned one; the router's `user_config` may override
it (`/healthz` then says so) and sets the LLM timeout: `serve deploy` with a new value changes them without a
restart. The bearer token is read by the router replica itself (RAYLIB_SERVE_TOKEN or RAYLIB_SERVE_TOKEN_FILE
in its environment), never placed in Serve's config. Metrics go through Ray's metrics API (`ray.serve.metrics`),
exported with Ray's own Prometheus metrics.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time, and under a
class-based Serve ingress string annotations turned the request body into a query parameter.
"""


import asyncio
import hmac
import os
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from ray import serve

from raylib.methods.corella.routing import MAX_ENTROPY  # at this threshold the CRM answers everything
from raylib.serving.schemas import (PredictRequest, Prediction, PredictResponse, RecommendRequest,
                                    RecommendResponse)
from raylib.serving.scorers import CrmScorer, LlmScorer, RequestRules

TOKEN_ENV = "RAYLIB_SERVE_TOKEN"
TOKEN_FILE_ENV = "RAYLIB_SERVE_TOKEN_FILE"
ROUTING_SOURCE = "routing.json"


def routing_plan(crm_probs: list[float], threshold: float) -> list[bool]:
    from raylib.methods.corella.routing import to_llm

    return to_llm(crm_probs, threshold).tolist()


def check_token(header: str | None, token: str | None) -> bool:
    """True when no token is configured, or the `Authorization: Bearer <token>` header carries it."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())


def artifact_paths(folder: str | Path) -> dict[str, Any]:
    """The artifacts' paths and routing config, checked against each other (`raylib.methods.corella.pipeline.check_artifacts`)."""
    from raylib.methods.corella.pipeline import check_artifacts

    folder = Path(folder).expanduser()
    return {"crm_dir": str(folder / "crm"), "adapter_dir": str(folder / "adapter"),
            "routing": check_artifacts(folder)}


def now_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def token_from_env() -> str | None:
    """The bearer token of this process: RAYLIB_SERVE_TOKEN, or the first line of the file RAYLIB_SERVE_TOKEN_FILE
    names (set where the replica runs: `ray start`'s environment, or a path in the app's runtime_env)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = os.environ.get(TOKEN_FILE_ENV)
    if path:
        lines = Path(path).expanduser().read_text().strip().splitlines()
        return lines[0].strip() if lines and lines[0].strip() else None
    return None




# ------------------------------------------------------------------ deployments

# The schema and docs are routes of the router below, behind the token like every endpoint but /healthz.
api = FastAPI(title="raylib CoReLLa service", docs_url=None, redoc_url=None, openapi_url=None,
              description="Will this user like this item? The CRM answers when it is sure, the LLM otherwise.")
_TOKEN: list[str | None] = []  # this replica's token, read once


def _bearer_token(authorization: str | None = Header(default=None)) -> None:
    """Every endpoint but /healthz: the token of the router's own process (`token_from_env`), if one is set.
    A dependency, so it is checked before the body is (no 422 leaks the schema to a caller without it)."""
    if not _TOKEN:
        _TOKEN.append(token_from_env())
    if not check_token(authorization, _TOKEN[0]):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


@serve.deployment(name="CRM", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8})
class CrmDeployment:
    def __init__(self, crm_dir: str, vocab_hash: str | None = None):
        self.scorer = CrmScorer(crm_dir, vocab_hash)

    def predict(self, samples: list[dict[str, Any]]) -> list[float]:
        return self.scorer(samples)


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4})
class LlmDeployment:
    def __init__(self, model_name: str, adapter_dir: str, max_length: int = 512, dtype: str = "auto",
                 max_batch_size: int = 16):
        self.scorer = LlmScorer(model_name, adapter_dir, max_length, dtype)
        self.score.set_max_batch_size(max_batch_size)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def score(self, samples: list[dict[str, Any]]) -> list[float]:
        """Requests arriving together run as one forward pass (Serve collects them, up to max_batch_size)."""
        return self.scorer(samples)


class LoadedAdapter:
    """What `@serve.multiplexed` keeps per adapter id; Serve calls `__del__` when it evicts one (LRU)."""

    def __init__(self, recommender, adapter_id: str):
        self.recommender, self.adapter_id, self.unloaded = recommender, adapter_id, False

    def __del__(self):
        if not self.unloaded:
            self.unloaded = True
            self.recommender.unload_adapter(self.adapter_id)


@serve.deployment(name="Generator", ray_actor_options={"num_cpus": 0.5},
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2})
class GeneratorDeployment:
    """BIGRec: one base model per replica; adapters by id through Serve's model multiplexing (requests carry
    `multiplexed_model_id`, Serve prefers a replica that has it loaded, and evicts the least recently used)."""

    def __init__(self, folder: str):
        from raylib.methods.nextitem.recommender import Recommender

        self.recommender = Recommender(folder)

    @serve.multiplexed(max_num_models_per_replica=4)
    async def adapter(self, adapter_id: str) -> LoadedAdapter:
        return LoadedAdapter(self.recommender, self.recommender.load_adapter(adapter_id))

    async def recommend(self, history: list[str], k: int, exclude_history: bool,
                        constrained: bool | None = None) -> dict[str, Any]:
        """The top-k, or {"status": 404 | 422, "detail": ...} for an unknown adapter or unknown items."""
        from raylib.methods.nextitem.recommender import UnknownItems, adapter_ids

        adapter_id = serve.get_multiplexed_model_id()
        if adapter_id not in adapter_ids(self.recommender.folder):
            return {"status": 404, "detail": f"no adapter {adapter_id!r}; this service has "
                                             f"{adapter_ids(self.recommender.folder)}"}
        loaded = await self.adapter(adapter_id)
        try:
            return self.recommender.recommend(loaded.adapter_id, history, k, exclude_history, constrained=constrained)
        except UnknownItems as err:
            return {"status": 422, "detail": str(err)}


@serve.deployment(name="Router", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 64})
@serve.ingress(api)
class Router:
    def __init__(self, crm, llm, generator=None, tuned_threshold: float = MAX_ENTROPY,
                 rules: dict[str, Any] | None = None):
        from ray.serve import metrics

        self.crm, self.llm, self.generator = crm, llm, generator
        self.tuned_threshold = tuned_threshold  # routing.json's, unless user_config overrides it
        self.threshold, self.threshold_source, self.llm_timeout_s = tuned_threshold, ROUTING_SOURCE, 10.0
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
        """`user_config`: {"llm_timeout_s": float, "threshold": float (optional)}; applied live, no restart.
        Without "threshold" the router uses routing.json's tuned one (so a config never carries a stale one)."""
        override = config.get("threshold")
        threshold = self.tuned_threshold if override is None else float(override)
        if not 0.0 <= threshold <= MAX_ENTROPY:
            raise ValueError(f"threshold {threshold} is outside [0, ln 2]")
        self.threshold = threshold
        self.threshold_source = ROUTING_SOURCE if override is None else "user_config"
        self.llm_timeout_s = float(config.get("llm_timeout_s", self.llm_timeout_s))

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "threshold": self.threshold, "threshold_source": self.threshold_source,
                "tuned_threshold": self.tuned_threshold, "llm_timeout_s": self.llm_timeout_s,
                "started_at": self.started_at, "recommend": self.generator is not None}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, _: None = Depends(_bearer_token)) -> dict[str, Any]:
        return api.openapi()

    @api.get("/docs", include_in_schema=False)
    async def docs(self, _: None = Depends(_bearer_token)):
        return get_swagger_ui_html(openapi_url="/openapi.json", title=api.title)

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, _: None = Depends(_bearer_token)):
        """BIGRec top-K from a history (when a recommender folder is deployed); `adapter` picks the tuned LoRA."""
        if self.generator is None:
            raise HTTPException(status_code=404, detail="no BIGRec recommender is deployed: publish one with "
                                "`python -m jobs.bigrec` and start the app with recommender=<output_dir>/recommender")
        start = time.perf_counter()
        try:
            out = await self.generator.options(multiplexed_model_id=body.adapter).recommend.remote(
                body.history, body.k, body.exclude_history, body.constrained)
        except Exception as err:  # noqa: BLE001 - a generator failure is the service's, said as a 503
            raise HTTPException(status_code=503,
                                detail=f"the generator is unavailable: {type(err).__name__}") from None
        if "status" in out:
            raise HTTPException(status_code=out["status"], detail=out["detail"])
        latency = now_ms(start)
        self.latency.observe(latency, tags={"route": "/recommend"})
        return RecommendResponse(**out, latency_ms=latency)

    @api.post("/predict", response_model=PredictResponse)
    async def predict(self, body: PredictRequest, _: None = Depends(_bearer_token)):
        start = time.perf_counter()
        try:
            samples = self.rules.apply([s.model_dump() for s in body.samples])
        except ValueError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        try:
            crm = await self.crm.predict.remote(samples)
        except Exception as err:  # noqa: BLE001 - any CRM failure is the service's, said as a 503
            raise HTTPException(status_code=503, detail=f"the CRM is unavailable: {type(err).__name__}") from None
        uncertain = [i for i, go in enumerate(routing_plan(crm, self.threshold)) if go]
        llm: dict[int, float] = {}
        degraded = False
        if uncertain:
            try:
                answers = await asyncio.wait_for(
                    asyncio.gather(*[self.llm.score.remote(samples[i]) for i in uncertain]), self.llm_timeout_s)
                llm = dict(zip(uncertain, answers))
            except Exception:  # noqa: BLE001 - an LLM error or timeout degrades to the CRM, never fails
                degraded = True
                self.fallbacks.inc(len(uncertain))
        from raylib.methods.corella.routing import entropy

        entropies = entropy(crm).tolist()
        predictions = []
        for i, p in enumerate(crm):
            if i in llm:
                predictions.append(Prediction(probability=llm[i], routed_to="llm", crm_probability=p,
                                              entropy=entropies[i]))
            else:
                predictions.append(Prediction(probability=p, routed_to="crm", crm_probability=p,
                                              entropy=entropies[i], degraded=degraded and i in uncertain))
        self.samples.inc(len(samples))
        if llm:  # Ray's counters refuse an increment of 0
            self.routed.inc(len(llm))
        latency = now_ms(start)
        self.latency.observe(latency, tags={"route": "/predict"})
        return PredictResponse(predictions=predictions, latency_ms=latency, threshold=self.threshold)
