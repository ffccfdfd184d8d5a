"""RecCocktail's entropy-guided merge (Hou et al. 2025, Sec. 3.3) as a task of the shared trainer.

The module is the base model with BOTH LoRA adapters frozen and one logit pair per LoRA module
(`raylib.methods.cocktail.merging.MixedLora`); the only trainable tensor is those logits. The loss is the Shannon entropy of the
Yes/No answer distribution on UNLABELLED target-domain prompts (test-time adaptation: the records' answers are
never read); the best epoch is the one with the lowest entropy on held-out unlabelled prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from raylib.methods.cocktail.config import MergeJob
from raylib.data.records import TallrecRecord
from raylib.encoding import Encoded, answer_token_ids, collate_left_padded, encode_for_scoring
from raylib.train.whole_model import WholeModelCheckpoints
from raylib.train.task import WorkerContext, sharded_map


class EntropyMergeTask(WholeModelCheckpoints):
    task_id: ClassVar[str] = "entropy_merge"  # in run fingerprints: a stable name, whatever module holds the class
    config_cls: ClassVar[type] = MergeJob
    metric: ClassVar[str] = "entropy"
    higher_is_better: ClassVar[bool] = False
    name: ClassVar[str] = "merge"

    def __init__(self, ctx: WorkerContext) -> None:
        from raylib.model import load_tokenizer

        self.ctx, self.job = ctx, ctx.job
        self.tokenizer = load_tokenizer(self.job.model)
        self.yes_no = answer_token_ids(self.tokenizer)
        self.names: list[str] = []

    def build(self) -> torch.nn.Module:
        from raylib.methods.cocktail.merging import MixedLora, load_two
        from raylib.model import load_model

        model = load_model(self.job.model, self.ctx.device, self.ctx.dtype)
        mixed = MixedLora(load_two(model, self.job.base_adapter, self.job.ingredient_adapter), self.job.merge.init)
        self.names = mixed.names
        return mixed

    def encode(self, records: list[dict[str, Any]], split: str) -> list[Encoded]:
        """Prompts only, the label zeroed: nothing downstream can read an answer."""
        out = []
        for i, raw in enumerate(records):
            e = encode_for_scoring(self.tokenizer, TallrecRecord(**raw), self.job.data.max_length,
                                   f"{split} prompt {i}")
            out.append(Encoded(e.input_ids, e.labels, 0))
        return out

    def collate(self, items: list[Encoded]) -> dict[str, torch.Tensor]:
        return collate_left_padded(items, self.tokenizer.pad_token_id)

    def _entropy(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from raylib.methods.cocktail.merging import answer_entropy

        tensors = {k: v.to(self.ctx.device) for k, v in batch.items()}
        logits = module(**tensors, use_cache=False, logits_to_keep=1).logits
        return answer_entropy(logits, self.yes_no)

    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._entropy(module, batch)

    @torch.no_grad()
    def validate(self, module, items: list[Encoded]) -> dict[str, float]:
        def entropies(batch: list[Encoded]) -> list[float]:
            return [float(self._entropy(module, self.collate(batch)))] * len(batch)

        module.eval()
        values = sharded_map(items, entropies, self.job.train.eval_batch_size, self.ctx, lambda e: len(e.input_ids))
        module.train()
        return {"entropy": sum(values) / len(values)}

    # ---- checkpoints: the logits alone (the adapters are files that never change)
    def shape(self) -> dict[str, Any]:
        return {"modules": self.names, "adapters": [self.job.base_adapter, self.job.ingredient_adapter]}

    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        return {"logits": module.logits.detach().float().cpu().clone()}

    def restore(self, module, folder: Path) -> None:
        from safetensors.torch import load_file

        with torch.no_grad():
            module.logits.copy_(load_file(str(folder / f"{self.name}.safetensors"))["logits"])

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        from raylib.train.checkpoint import adapter_sha1

        return {"max_length": job.data.max_length,
                "adapters": [adapter_sha1(job.base_adapter), adapter_sha1(job.ingredient_adapter)],
                "init": job.merge.init}


def read_published(folder: Path) -> tuple[list[str], torch.Tensor]:
    """(module names, [modules, 2] weights) of a published merge."""
    from safetensors.torch import load_file

    names = json.loads((folder / "config.json").read_text())["modules"]
    return names, torch.softmax(load_file(str(folder / "model.safetensors"))["logits"], dim=-1)
