"""The app builder: Router(CRM, LLM[, Generator]) from published artifacts, with typed arguments (Ray Serve's
typed application builder: `serve run serve.app:build key=value`, or `args:` in a deploy config)."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raylib.config import Dtype
from raylib.methods.corella.routing import MAX_ENTROPY
from raylib.serving.deployments import (CrmDeployment, GeneratorDeployment, LlmDeployment, Router,
                                        artifact_paths)
from raylib.serving.scorers import RequestRules


class AppArgs(BaseModel):
    """The app's typed arguments (`serve run serve.app:build key=value`, or `args:` in a deploy config)."""
    model_config = ConfigDict(extra="forbid")
    artifacts: str = Field("runs/corella-cpu/artifacts", description="jobs.corella's <output_dir>/artifacts")
    recommender: str | None = Field(None, description="jobs.bigrec's <output_dir>/recommender, for /recommend")
    model: str | None = Field(None, description="the base model (default: the one the artifacts were tuned on)")
    max_length: int = Field(512, ge=32)
    dtype: Dtype = Field("auto", description="LLM / generator dtype, by the dtype rule (bf16 on GPUs, fp32 on CPUs)")
    threshold: float | None = Field(None, ge=0.0, le=MAX_ENTROPY,
                                    description="override routing.json's tuned threshold (user_config)")
    llm_timeout_s: float = Field(10.0, gt=0.0, allow_inf_nan=False, description="past this the CRM answers")
    crm_timeout_s: float = Field(10.0, gt=0.0, allow_inf_nan=False, description="past this /predict is a 504")
    generator_timeout_s: float = Field(60.0, gt=0.0, allow_inf_nan=False,
                                       description="past this /recommend is a 504")
    llm_gpus: float = Field(0.0, ge=0.0, description="GPUs per LLM replica (0.5: two replicas share one)")
    generator_gpus: float = Field(0.0, ge=0.0, description="GPUs per Generator replica")


def _with_gpus(options: dict | None, gpus: float) -> dict:
    """A deployment's `.options(...)` with `gpus` GPUs per replica (none: as the decorator declares)."""
    options = dict(options or {})
    if gpus > 0:
        actor = dict(options.get("ray_actor_options") or {"num_cpus": 0.5})
        options["ray_actor_options"] = {**actor, "num_gpus": gpus}
    return options


def build_app(args: AppArgs, crm: dict | None = None, llm: dict | None = None, router: dict | None = None,
              generator: dict | None = None):
    """Router(CRM, LLM[, Generator]) from a CoReLLa artifacts folder and, for `/recommend`, a BIGRec
    `recommender` folder; `crm` / `llm` / `router` / `generator`: each deployment's own `.options(...)`
    (autoscaling_config, ray_actor_options, max_ongoing_requests). Nothing here loads weights: the
    deployments' replicas do, where Ray places them."""
    paths = artifact_paths(args.artifacts)
    routing = paths["routing"]
    # Each replica checks the hashes of what it loads against routing.json's (`verified`).
    crm_app = CrmDeployment.options(**(crm or {})).bind(paths["crm_dir"], routing.vocab_hash, routing.crm_hash)
    llm_app = LlmDeployment.options(**_with_gpus(llm, args.llm_gpus)).bind(
        args.model or routing.model, paths["adapter_dir"], args.max_length, args.dtype,
        adapter_hash=routing.adapter_hash)
    # user_config: changing it updates the router in place, no restart. The threshold is in it only when the
    # caller overrides routing.json's tuned one.
    user_config: dict[str, Any] = {"llm_timeout_s": args.llm_timeout_s, "crm_timeout_s": args.crm_timeout_s,
                                   "generator_timeout_s": args.generator_timeout_s}
    if args.threshold is not None:
        user_config["threshold"] = args.threshold
    router_options = {"user_config": user_config, **(router or {})}
    generator_app = None
    if args.recommender:
        from raylib.methods.nextitem.recommender import check_recommender

        from raylib.train.checkpoint import published_version

        recommender = published_version(args.recommender)  # this version for every replica, as the artifacts
        check_recommender(recommender)
        generator_app = GeneratorDeployment.options(**_with_gpus(generator, args.generator_gpus)).bind(
            str(recommender))
    rules = RequestRules.of_vocab(Path(paths["crm_dir"]) / "vocab.json")
    return Router.options(**router_options).bind(
        crm_app, llm_app, generator_app, routing.threshold,
        {"features": rules.features.as_dict(), "rating_range": rules.rating_range})
