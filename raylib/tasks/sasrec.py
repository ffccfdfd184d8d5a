"""SASRec as a task of the shared trainer: full-softmax next-item loss over the catalogue, best epoch by
validation NDCG@10, weights in safetensors (no LoRA: the whole small model trains)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from raylib.config import SasrecJobConfig, to_dict
from raylib.metrics import ranking_report
from raylib.sasrec import CONFIG_FILE, MODEL_FILE, build_sasrec, history_tensor
from raylib.train.task import WorkerContext, sharded_map

LATEST, BEST = "sasrec.safetensors", "best_sasrec.safetensors"


class SasrecTask:
    config_cls: ClassVar[type] = SasrecJobConfig
    metric: ClassVar[str] = "ndcg@10"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx, self.job = ctx, ctx.job

    def model_config(self) -> dict[str, Any]:
        s = self.job.sasrec
        return {"num_items": self.job.num_items, "max_len": self.job.history_len, "hidden_size": s.hidden_size,
                "num_blocks": s.num_blocks, "num_heads": s.num_heads, "dropout": s.dropout}

    def build(self) -> torch.nn.Module:
        return build_sasrec(self.model_config()).to(self.ctx.device)

    def encode(self, records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return records

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"history": history_tensor([i["history"] for i in items], self.job.history_len),
                "target": torch.tensor([i["target"] for i in items], dtype=torch.long)}

    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(module(batch["history"]).float(), batch["target"])

    @torch.no_grad()
    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        def ranks(batch: list[dict[str, Any]]) -> list[int]:
            tensors = self.collate(batch)
            scores = module(tensors["history"].to(self.ctx.device)).float()
            own = scores.gather(1, tensors["target"].to(self.ctx.device).unsqueeze(1))
            return ((scores > own).sum(1) + 1).tolist()  # ties share the best rank

        module.eval()
        values = sharded_map(items, ranks, self.job.train.eval_batch_size, self.ctx)
        module.train()
        report = ranking_report(values, (10,))
        return {"ndcg@10": report["ndcg@10"], "hr@10": report["hr@10"]}

    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}

    def write(self, module, latest, best, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(latest, str(folder / LATEST))
        save_file(best, str(folder / BEST))
        (folder / CONFIG_FILE).write_text(json.dumps({"model": self.model_config()}))

    def restore(self, module, folder: Path) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(folder / LATEST)))

    def read_best(self, folder: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(folder / BEST))

    @classmethod
    def publish(cls, folder: Path, output_dir: Path, summary: dict[str, Any]) -> Path:
        target = output_dir / "sasrec"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / BEST, target / MODEL_FILE)
        config = json.loads((folder / CONFIG_FILE).read_text())
        (target / CONFIG_FILE).write_text(json.dumps({**config, "training": summary}, indent=1))
        return target

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        return {"sasrec": to_dict(job.sasrec), "num_items": job.num_items, "history_len": job.history_len}
