"""SASRec (Kang & McAuley, ICDM 2018) as a task of the shared trainer: the whole small model trains (no LoRA),
full-softmax next-item loss over the catalogue, best epoch by validation NDCG@10, weights in safetensors.

Records are `{"history": [catalogue indices, oldest first], "target": index}` (`raylib.sasrec.window_records`).
A checkpoint folder holds `sasrec.safetensors` (latest), `best_sasrec.safetensors` and `sasrec_config.json`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from raylib.config import SasrecJobConfig, to_dict
from raylib.metrics import ranking_report
from raylib.sasrec import SASRec, history_tensor
from raylib.tasks.whole_model import WholeModelCheckpoints
from raylib.train.checkpoint import RUN_LENGTH_FIELDS
from raylib.train.task import WorkerContext, sharded_map


class SasrecTask(WholeModelCheckpoints):
    name: ClassVar[str] = "sasrec"  # checkpoint files and the published folder (`whole_model`)
    config_cls: ClassVar[type] = SasrecJobConfig
    plans_llm_memory: ClassVar[bool] = False  # no LLM: the GPU memory planner does not apply
    metric: ClassVar[str] = "ndcg@10"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx, self.job = ctx, ctx.job

    @staticmethod
    def hparams(job) -> dict[str, Any]:
        s = job.sasrec
        return {"num_items": job.num_items, "history_len": job.history_len, "hidden_size": s.hidden_size,
                "num_blocks": s.num_blocks, "num_heads": s.num_heads, "dropout": s.dropout}

    # ------------------------------------------------------------ model and data
    def build(self) -> torch.nn.Module:
        return SASRec(**self.hparams(self.job)).to(self.ctx.device, torch.float32)

    def encode(self, records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return records  # already lists of ints; collate pads them

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"history": history_tensor([i["history"] for i in items], self.job.history_len),
                "target": torch.tensor([i["target"] for i in items], dtype=torch.long)}

    # ------------------------------------------------------------ objective
    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the true next item against every catalogue item (see `raylib.sasrec`)."""
        return F.cross_entropy(module(batch["history"]), batch["target"])

    @torch.no_grad()
    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        """NDCG@10 / HR@10 over the full catalogue; rank = 1 + items scored strictly higher (ties share the best)."""
        def ranks(batch: list[dict[str, Any]]) -> list[int]:
            tensors = {k: v.to(self.ctx.device) for k, v in self.collate(batch).items()}
            scores = module(tensors["history"])
            own = scores.gather(1, tensors["target"].unsqueeze(1))
            return (1 + (scores > own).sum(1)).tolist()

        module.eval()
        values = sharded_map(items, ranks, self.job.train.eval_batch_size, self.ctx)
        module.train()
        report = ranking_report(values, (10,))
        return {"ndcg@10": report["ndcg@10"], "hr@10": report["hr@10"]}

    def shape(self) -> dict[str, Any]:
        return self.hparams(self.job)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        # Run-length settings (epochs, patience, workers) may change between a run and its resumption.
        settings = {k: v for k, v in to_dict(job.sasrec).items() if k not in RUN_LENGTH_FIELDS}
        return {"sasrec": settings, "num_items": job.num_items, "history_len": job.history_len}
