"""The models behind the Serve deployments (`raylib.serving`), importable without Ray or FastAPI: the CRM and the
LLM scorers, and the feature rules requests go through. `jobs.gpu_check` runs the LLM scorer on a GPU box that
has neither."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def sample_row(sample: dict[str, Any]) -> dict[str, Any]:
    """A request sample as a CTR table row (no label: 0)."""
    return {**sample, "label": 0, "timestamp": 0}


# ------------------------------------------------------------------ the models behind the deployments
class CrmScorer:
    """DCNv2 + vocabulary from a published folder; P(like) for request samples (features as training made them:
    the router applies `FeatureRules` first)."""

    def __init__(self, crm_dir: str, expect_vocab: str | None = None):
        from raylib.methods.corella.crm import load_crm

        self.model, self.vocab = load_crm(crm_dir, expect_vocab=expect_vocab)

    def __call__(self, samples: list[dict[str, Any]]) -> list[float]:
        from raylib.methods.corella.crm import crm_probabilities
        from raylib.data.ctr import CTR_COLUMNS, typed_ctr_table

        rows = [sample_row(s) for s in samples]
        table = typed_ctr_table({c: [r[c] for r in rows] for c in CTR_COLUMNS})
        return crm_probabilities(self.model, self.vocab.records(table)).tolist()


class RequestRules:
    """Training's feature rules and rating range, applied to `/predict` samples at the edge: what the CRM and
    the LLM then see is what they were trained on; what training never saw as valid is refused."""

    def __init__(self, features: dict[str, Any], rating_range: tuple[float, float] | None):
        from raylib.data.ctr import FeatureRules

        self.features = FeatureRules(**features)
        self.rating_range = tuple(rating_range) if rating_range else None

    @classmethod
    def of_vocab(cls, vocab_file: str | Path) -> "RequestRules":
        from raylib.data.ctr import CtrVocab

        vocab = CtrVocab.load(Path(vocab_file))
        return cls(vocab.features.as_dict(), vocab.rating_range)

    def apply(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The samples with training's features; a ValueError naming the sample and value it cannot take."""
        if self.rating_range:
            low, high = self.rating_range
            for i, s in enumerate(samples):
                bad = [r for r in s["history_ratings"] if not low <= r <= high]
                if bad:
                    raise ValueError(f"samples[{i}].history_ratings: {bad[0]:g} is outside the ratings training "
                                     f"saw ({low:g} to {high:g})")
        return [self.features.apply(s) for s in samples]


class LlmScorer:
    """Base model + adapter merged once (no LoRA cost per request); P(yes) for request samples."""

    def __init__(self, model_name: str, adapter_dir: str | None, max_length: int = 512, dtype: str = "auto",
                 trust_remote_code: bool = False):
        from raylib.config import ModelConfig
        from raylib.model import load_tokenizer, load_with_adapter
        from raylib.placement import choose_dtype, device
        from raylib.methods.corella.artifacts import yes_no_ids

        config = ModelConfig(name=model_name, dtype=dtype, trust_remote_code=trust_remote_code)
        here = device()  # the replica's GPU when it was given one (num_gpus), else its CPU
        self.tokenizer = load_tokenizer(config)
        self.model = load_with_adapter(config, adapter_dir, here, choose_dtype(dtype, here)).eval()
        self.max_length = max_length
        self.yes_no = yes_no_ids(self.tokenizer)

    def __call__(self, samples: list[dict[str, Any]]) -> list[float]:
        return self.scores([self.prompt(s, f"sample {i}") for i, s in enumerate(samples)]).tolist()

    def prompt(self, sample: dict[str, Any], where: str) -> list[int]:
        from raylib.methods.corella.artifacts import prompt_ids

        return prompt_ids(self.tokenizer, sample, self.max_length, where)

    def scores(self, prompts: list[list[int]]):
        from raylib.encoding import Encoded
        from raylib.evaluate import answer_probabilities

        return answer_probabilities(self.model, self.tokenizer, [Encoded(p, [], 0) for p in prompts], self.yes_no,
                                    batch_size=len(prompts), progress=False, prefix_cache=False)

    def each(self, samples: list[dict[str, Any]]) -> list[float | None]:
        """P(yes) per sample, None for a sample whose prompt cannot be made (one that cannot fit `max_length`)
        or whose answer is not a number: one client's sample never costs the others in its batch theirs."""
        from raylib import RaylibError

        prompts: dict[int, list[int]] = {}
        for i, sample in enumerate(samples):
            try:
                prompts[i] = self.prompt(sample, f"sample {i}")
            except (RaylibError, ValueError):  # the sample's problem, not the service's
                pass
        answers: list[float | None] = [None] * len(samples)
        if prompts:
            for i, p in zip(prompts, self.scores(list(prompts.values())).tolist()):
                answers[i] = p if math.isfinite(p) else None
        return answers
