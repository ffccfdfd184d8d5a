"""The raylib HTTP service (CoReLLa `/predict`, BIGRec `/recommend`); all logic is in `raylib/serving/`.

    serve run serve.app:app                                             # local: artifacts from the env / defaults
    serve run serve.app:build artifacts=runs/corella-cpu/artifacts recommender=runs/bigrec-cpu/recommender
    serve run serve.app:build artifacts=... llm_gpus=1 generator_gpus=0.5   # the LLM and Generator on GPUs
    serve deploy serve/config.yaml                                      # a running Ray cluster, CPUs
    serve deploy serve/config-gpu.yaml                                  # ... the LLM and Generator on GPUs

`build` is a typed Serve application builder (`raylib.serving.AppArgs`: artifacts, recommender, model,
max_length, dtype, threshold, llm_timeout_s, llm_gpus, generator_gpus), its arguments from `serve run key=value`
or from `args:` in a config file. `app` is the application with its arguments from the environment
(RAYLIB_CORELLA_ARTIFACTS, default runs/corella-cpu/artifacts; RAYLIB_BIGREC_RECOMMENDER, default
runs/bigrec-cpu/recommender when it exists; RAYLIB_SERVE_GPUS, GPUs per LLM and Generator replica, default 0):
`serve build serve.app:app` turns it into `serve/config.yaml`, and with RAYLIB_SERVE_GPUS=1 into
`serve/config-gpu.yaml`. Each deployment's autoscaling and resources come from the config's `deployments:`.
"""

import os
from pathlib import Path

from raylib.serving import AppArgs, build_app

DEFAULT_ARTIFACTS = "runs/corella-cpu/artifacts"
DEFAULT_RECOMMENDER = "runs/bigrec-cpu/recommender"
GPUS_ENV = "RAYLIB_SERVE_GPUS"


def build(args: AppArgs):
    """Router(CRM, LLM[, Generator]) from the typed arguments (Serve validates them into `AppArgs`)."""
    return build_app(args)


def args_from_env() -> AppArgs:
    recommender = os.environ.get("RAYLIB_BIGREC_RECOMMENDER") or (
        DEFAULT_RECOMMENDER if Path(DEFAULT_RECOMMENDER).is_dir() else None)
    gpus = float(os.environ.get(GPUS_ENV, "0") or 0)
    return AppArgs(artifacts=os.environ.get("RAYLIB_CORELLA_ARTIFACTS", DEFAULT_ARTIFACTS), recommender=recommender,
                   llm_gpus=gpus, generator_gpus=gpus)


def __getattr__(name: str):
    """`serve.app:app`, built when asked for (importing this module needs no artifacts)."""
    if name != "app":
        raise AttributeError(name)
    return build_app(args_from_env())
