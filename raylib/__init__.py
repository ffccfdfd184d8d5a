"""raylib: LLM-based recommendation (TALLRec, BIGRec, GenRec, RecCocktail, CoReLLa) on Ray.

Shared infrastructure at the top (config, assets, runtime, placement, model, prompts, encoding, evaluate,
generation, metrics, tune, plan, stages), `data/` (raw files -> Arrow tables -> each method's view), `train/`
(THE loop: Ray Train + DeepSpeed ZeRO, the Task protocol, checkpoints), one folder per method under `methods/`
(its config, tasks, models and pipeline), `serving/` (Ray Serve) and `bench/` (benchmarks, clients of the rest).
docs/architecture.md has the table of who does what.
"""

__version__ = "0.1.0"


class RaylibError(Exception):
    """A problem with the user's input (file, field, value): the message says what to fix."""
