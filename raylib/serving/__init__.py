"""Ray Serve for raylib: CoReLLa's CRM and LLM as separately autoscaled deployments behind a FastAPI router
(`POST /predict`), BIGRec's adapters over one base model (`POST /recommend`).

  schemas      request / response models and their limits
  scorers      the models behind the deployments, and the feature rules requests go through (no Ray, no FastAPI)
  guards       the bearer token, the request gate (token and size before the body), the LLM's breaker
  deployments  the deployments, the router and its endpoints
  app          the typed app builder (`AppArgs`, `build_app`)
  ops          deploying a config, finding replicas
"""

from raylib.serving.app import AppArgs, build_app
from raylib.serving.deployments import artifact_paths, routing_plan
from raylib.serving.guards import TOKEN_ENV, TOKEN_FILE_ENV, check_exposure, check_token, token_from_env
from raylib.serving.ops import dashboard_url, deploy, replica_actors, running_replicas
from raylib.serving.scorers import CrmScorer, LlmScorer, RequestRules, sample_row

__all__ = ["AppArgs", "build_app", "TOKEN_ENV", "TOKEN_FILE_ENV", "artifact_paths", "check_token",
           "check_exposure", "routing_plan", "token_from_env", "dashboard_url", "deploy", "replica_actors",
           "running_replicas", "CrmScorer", "LlmScorer", "RequestRules", "sample_row"]
