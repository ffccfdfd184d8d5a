"""The raylib HTTP service (CoReLLa `/predict`, BIGRec `/recommend`); all logic is in `raylib/serving.py`.

    serve run serve.app:app                                             # local: artifacts from the env / defaults
    serve run serve.app:build artifacts=runs/corella-cpu/artifacts recommender=runs/bigrec-cpu/recommender
    serve deploy serve/config.yaml                                      # a running Ray cluster

`app` is the application with its folders from the environment (RAYLIB_CORELLA_ARTIFACTS, default
runs/corella-cpu/artifacts; RAYLIB_BIGREC_RECOMMENDER, default runs/bigrec-cpu/recommender when it exists): it is
what `serve build serve.app:app` turns into `serve/config.yaml`. `build` is the same as a Serve application
builder whose arguments come from `serve run key=value` or from `args:` in a config file. Each deployment's
autoscaling and resources come from the config's `deployments:` section, and the router's `user_config`
(threshold, llm_timeout_s) can be changed there and redeployed without a restart.
"""

import os
from pathlib import Path

from raylib.serving import build_app

DEFAULT_ARTIFACTS = "runs/corella-cpu/artifacts"
DEFAULT_RECOMMENDER = "runs/bigrec-cpu/recommender"


def build(args: dict):
    """Router(CRM, LLM[, Generator]) from `args`: artifacts (CoReLLa folder), recommender (BIGRec folder,
    optional), model (base model; default: the one it was tuned on), threshold (default: the tuned one),
    llm_timeout_s, max_length, dtype."""
    return build_app(args.get("artifacts", DEFAULT_ARTIFACTS), model_name=args.get("model"),
                     max_length=int(args.get("max_length", 512)), dtype=args.get("dtype", "auto"),
                     threshold=float(args["threshold"]) if "threshold" in args else None,
                     llm_timeout_s=float(args.get("llm_timeout_s", 10.0)), recommender=args.get("recommender"))


def __getattr__(name: str):
    """`serve.app:app`, built when asked for (importing this module needs no artifacts)."""
    if name != "app":
        raise AttributeError(name)
    recommender = os.environ.get("RAYLIB_BIGREC_RECOMMENDER") or (
        DEFAULT_RECOMMENDER if Path(DEFAULT_RECOMMENDER).is_dir() else None)
    args = {"artifacts": os.environ.get("RAYLIB_CORELLA_ARTIFACTS", DEFAULT_ARTIFACTS)}
    return build({**args, **({"recommender": recommender} if recommender else {})})
