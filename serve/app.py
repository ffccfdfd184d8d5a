"""The CoReLLa HTTP service; all logic is in `raylib/serving.py`.

    serve run serve.app:build artifacts=runs/corella-cpu/artifacts     # local, artifacts from jobs.corella
    serve deploy serve/config.yaml                                      # a running Ray cluster

`build` is a Serve application builder: its arguments come from `serve run key=value` or from `args:` in the
config file; each deployment's autoscaling and resources come from the config's `deployments:` section, and
the router's `user_config` (threshold, llm_timeout_s) can be changed there and redeployed without a restart.
"""

from raylib.serving import build_app

DEFAULT_ARTIFACTS = "runs/corella-cpu/artifacts"


def build(args: dict):
    """Router(CRM, LLM) from `args`: artifacts (folder), model (base model; default: the one it was tuned on),
    threshold (default: the tuned one), llm_timeout_s, max_length, dtype."""
    return build_app(args.get("artifacts", DEFAULT_ARTIFACTS), model_name=args.get("model"),
                     max_length=int(args.get("max_length", 512)), dtype=args.get("dtype", "auto"),
                     threshold=float(args["threshold"]) if "threshold" in args else None,
                     llm_timeout_s=float(args.get("llm_timeout_s", 10.0)))
