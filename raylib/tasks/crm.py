"""CoReLLa stage 1, the CRM warm-up: DCNv2 alone on the whole training split, binary cross-entropy, best epoch
by validation AUC. Records are `CtrVocab.records` dicts (field indices and label).

A checkpoint folder holds `crm.safetensors` (latest), `best_crm.safetensors` and `crm_config.json`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from raylib.config import CrmJobConfig, to_dict
from raylib.crm import DCNv2, crm_batch
from raylib.metrics import binary_report
from raylib.tasks.whole_model import WholeModelCheckpoints
from raylib.train.checkpoint import RUN_LENGTH_FIELDS
from raylib.train.task import WorkerContext, sharded_map


class CrmTask(WholeModelCheckpoints):
    name: ClassVar[str] = "crm"  # checkpoint files and the published folder (`whole_model`)
    config_cls: ClassVar[type] = CrmJobConfig
    plans_llm_memory: ClassVar[bool] = False  # no LLM: the GPU memory planner does not apply
    metric: ClassVar[str] = "auc"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx, self.job = ctx, ctx.job

    def build(self) -> torch.nn.Module:
        return DCNv2(**self.job.crm_shape).to(self.ctx.device, torch.float32)

    def encode(self, records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return records  # already field indices; collate pads them

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return crm_batch(items)

    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logit = module(batch["fields"], batch["genres"], batch["history"], batch["history_ratings"])
        return F.binary_cross_entropy_with_logits(logit.float(), batch["label"])

    @torch.no_grad()
    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        def probs(batch: list[dict[str, Any]]) -> list[float]:
            t = {k: v.to(self.ctx.device) for k, v in crm_batch(batch).items()}
            return torch.sigmoid(module(t["fields"], t["genres"], t["history"], t["history_ratings"]).float()).cpu().tolist()

        module.eval()
        values = sharded_map(items, probs, self.job.train.eval_batch_size, self.ctx)
        module.train()
        return binary_report([i["label"] for i in items], values)

    def shape(self) -> dict[str, Any]:
        return self.job.crm_shape

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        settings = {k: v for k, v in to_dict(job.crm).items() if k not in RUN_LENGTH_FIELDS}
        return {"crm": settings, "crm_shape": job.crm_shape}
