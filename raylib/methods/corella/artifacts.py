"""CoReLLa's artifact contract: what a finished job publishes in `<output_dir>/artifacts/` and how anything that
serves or measures it reads it back. The pipeline publishes through here; serving, the benchmarks and the
leaderboard load through here, and none of them imports the training pipeline or task.

  crm/           DCNv2: model.safetensors, config.json, vocab.json (`raylib.methods.corella.crm`)
  adapter/       the LLM's PEFT adapter
  routing.json   the entropy threshold and the hashes of the vocabulary, CRM and adapter it was tuned with

The LLM's input is part of the contract too: `prompt_ids` (the record's prompt as the stages trained on it) and
`yes_no_ids` (the answer tokens P(like) is read from). `RoutedScorer` holds both models and THE routing rule
(the CRM answers every record, the LLM the ones whose CRM entropy is above the threshold; `routing.combine`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from raylib import RaylibError
from raylib.data.ctr import CtrVocab
from raylib.encoding import answer_token_ids, fit_history, token_ids
from raylib.methods.corella.config import CorellaJobConfig
from raylib.methods.corella.routing import ROUTING_FILE, RoutingConfig, combine, to_llm
from raylib.prompts import CORELLA_ANSWERS, corella_history, corella_prompt
from raylib.stages import file_sha1

CRM_DIR, ADAPTER_DIR = "crm", "adapter"
# The job's run layout under its output_dir: one Ray Train run folder per stage, then the published artifacts.
STAGE_DIRS = {"crm": "stage1-crm", "joint": "stage2-joint", "llm": "stage3-llm"}
ARTIFACTS_DIR = "artifacts"


# ------------------------------------------------------------------ the LLM's input
def prompt_ids(tokenizer, record: dict[str, Any], max_length: int, where: str = "record") -> list[int]:
    """The record's CoReLLa prompt as token ids, at most `max_length` (oldest history items dropped first)."""
    history = corella_history(record["history_titles"], record["history_ratings"])
    text = fit_history(tokenizer, lambda items: corella_prompt(items, record["title"]), history, max_length, where)
    return token_ids(tokenizer, text)


def yes_no_ids(tokenizer) -> tuple[int, int]:
    return answer_token_ids(tokenizer, CORELLA_ANSWERS, prompt=corella_prompt([], "X"))



# ------------------------------------------------------------------ scoring
class RoutedScorer:
    """CRM + (merged) LoRA LLM + threshold: P(like) for CTR records (`CtrVocab.records(..., with_text=True)`).

    The CRM is fp32 on the CPU (its entropy decides the routing); the LLM is on this process's device in the
    dtype rule's dtype. The pipeline builds it in a Ray actor (`raylib.placement.start`); `load_artifacts`
    builds it where it is called."""

    def __init__(self, crm_dir: Path, adapter_dir: Path | None, job: CorellaJobConfig, threshold: float = 0.0):
        from raylib.methods.corella.crm import load_crm
        from raylib.model import load_tokenizer, load_with_adapter
        from raylib.placement import choose_dtype, device

        self.crm, self.vocab = load_crm(crm_dir)
        self.job, self.threshold = job, threshold
        self.device = device()
        self.tokenizer = load_tokenizer(job.model)
        self.llm = load_with_adapter(job.model, adapter_dir, self.device,
                                     choose_dtype(job.model.dtype, self.device)).eval()
        self.yes_no = yes_no_ids(self.tokenizer)

    def crm_probs(self, records: list[dict[str, Any]]) -> np.ndarray:
        from raylib.methods.corella.crm import crm_probabilities

        return crm_probabilities(self.crm, records)

    def llm_probs(self, records: list[dict[str, Any]], progress: bool = False) -> np.ndarray:
        from raylib.encoding import Encoded
        from raylib.evaluate import answer_probabilities

        if not records:
            return np.empty(0)
        encoded = [Encoded(prompt_ids(self.tokenizer, r, self.job.data.max_length, f"record {i}"), [], r["label"])
                   for i, r in enumerate(records)]
        return answer_probabilities(self.llm, self.tokenizer, encoded, self.yes_no, self.job.routing.batch_size,
                                    progress=progress)

    def routed(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, mask of the records the LLM answered): the LLM runs on the uncertain ones only."""
        crm = self.crm_probs(records)
        mask = to_llm(crm, self.threshold)
        llm = np.zeros_like(crm)
        llm[mask] = self.llm_probs([r for r, m in zip(records, mask) if m])
        return combine(crm, llm, mask), mask

    def both_scores(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Both models on every record, each timed here, beside the models (JSON-ready, for the report)."""
        crm, crm_s = _timed(self.crm_probs, records)
        llm, llm_s = _timed(self.llm_probs, records, True)
        return {"crm": crm.tolist(), "llm": llm.tolist(), "crm_seconds": crm_s, "llm_seconds": llm_s}

    def routed_timed(self, records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
        """The routed system as it serves, at `threshold`: CRM on every record, LLM on the uncertain ones."""
        self.threshold = threshold
        (probs, mask), seconds = _timed(self.routed, records)
        return {"probs": probs.tolist(), "mask": mask.tolist(), "seconds": seconds}


def _timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start



# ------------------------------------------------------------------ publish, check, load
def publish_artifacts(job: CorellaJobConfig, crm_dir: Path, adapter_dir: Path, vocab: CtrVocab, threshold: float,
                      valid: dict[str, float], target: Path, reason: str = "") -> Path:
    """`crm/`, `adapter/` and `routing.json` together, as the serving layer loads them."""
    from raylib.train.checkpoint import publish_folder

    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(crm_dir, staging / "crm")
    shutil.copytree(adapter_dir, staging / "adapter")
    RoutingConfig(threshold=threshold, llm_budget=job.routing.llm_budget, vocab_hash=vocab.fingerprint(),
                  crm_hash=file_sha1(crm_dir / "model.safetensors"),
                  adapter_hash=file_sha1(adapter_dir / "adapter_model.safetensors"), model=job.model.name,
                  valid=valid, reason=reason).save(staging / ROUTING_FILE)
    published = publish_folder(staging, target)
    shutil.rmtree(staging, ignore_errors=True)
    return published


def check_artifacts(folder: str | Path) -> RoutingConfig:
    """The routing config of `publish_artifacts`' folder, after checking that its CRM, vocabulary and adapter are
    the ones the threshold was tuned with (else a RaylibError naming which); a clear error when there are none."""
    from raylib.methods.corella.crm import read_crm_config

    folder = Path(folder).expanduser()
    if not (folder / ROUTING_FILE).is_file():
        raise RaylibError(f"No CoReLLa artifacts in {folder}: train them first, e.g. "
                          "`raylib train corella --config jobs/configs/corella_cpu.yaml` "
                          "(they are written to <output_dir>/artifacts), then pass that folder.")
    routing = RoutingConfig.load(folder / ROUTING_FILE)
    _, vocab = read_crm_config(folder / "crm", expect_vocab=routing.vocab_hash)
    routing.check(vocab.fingerprint(), file_sha1(folder / "crm" / "model.safetensors"),
                  file_sha1(folder / "adapter" / "adapter_model.safetensors"))
    return routing


def load_artifacts(folder: str | Path, job: CorellaJobConfig) -> RoutedScorer:
    """The routed scorer from `publish_artifacts`' folder (checked by `check_artifacts`), in this process."""
    routing = check_artifacts(folder)
    folder = Path(folder).expanduser()
    return RoutedScorer(folder / "crm", folder / "adapter", job, routing.threshold)
