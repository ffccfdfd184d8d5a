"""Prompt -> response supervised fine-tuning with LoRA: the common case every LLM method builds on.

Records are `{"prompt": str, "response": str}`; the loss is on the response (+ EOS) by default; the best epoch
is the one with the lowest validation loss. The trainable state is the LoRA adapter, saved as a standard PEFT
folder. TALLRec (Yes./No. answers, AUC) and the generative methods (next title) are this task with their own
encoding and validation metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib import RaylibError
from raylib.config import STRICT, TrainJob
from raylib.encoding import Encoded, collate_for_training, encode_pair
from raylib.train.checkpoint import (
    ADAPTER_DIR, BEST_ADAPTER_DIR, adapter_state, load_adapter_into, publish_folder, write_adapter,
)
from raylib.train.loss import causal_lm_loss, per_row_loss
from raylib.train.task import WorkerContext, sharded_map


@dataclass(config=STRICT)
class SftJobConfig(TrainJob):
    output_dir: str = Field("runs/sft", min_length=1)
    max_length: int = Field(512, ge=8)


class SftTask:
    task_id: ClassVar[str] = "sft"  # in run fingerprints: a stable name, whatever module holds the class
    config_cls: ClassVar[type] = SftJobConfig
    metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False

    def __init__(self, ctx: WorkerContext) -> None:
        from raylib.model import load_tokenizer

        self.ctx = ctx
        self.job = ctx.job
        self.tokenizer = load_tokenizer(self.job.model)

    # ------------------------------------------------------------ model
    def build(self) -> torch.nn.Module:
        from raylib.model import add_lora, load_model

        model = load_model(self.job.model, self.ctx.device, self.ctx.dtype)
        if self.job.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return add_lora(model, self.job.lora)

    # ------------------------------------------------------------ data
    @property
    def max_length(self) -> int:
        return self.job.max_length

    def encode(self, records: list[dict[str, Any]], split: str) -> list[Encoded]:
        items = []
        for i, record in enumerate(records):
            item = encode_pair(self.tokenizer, record["prompt"], record["response"], self.job.train.loss_on)
            if len(item.input_ids) > self.max_length:
                raise RaylibError(f"{split} record {i}: prompt + response take {len(item.input_ids)} tokens, over "
                                  f"max_length={self.max_length}; shorten it or raise max_length.")
            items.append(item)
        return items

    def collate(self, items: list[Encoded]) -> dict[str, torch.Tensor]:
        return collate_for_training(items, self.tokenizer.pad_token_id)

    # ------------------------------------------------------------ objective
    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(module, batch, self.job.train.loss_on)

    @torch.no_grad()
    def validate(self, module, items: list[Encoded]) -> dict[str, float]:
        """Mean response loss per record (every rank scores its shard; see `sharded_map`)."""
        def losses(batch: list[Encoded]) -> list[float]:
            tensors = {k: v.to(self.ctx.device) for k, v in self.collate(batch).items()}
            return per_row_loss(module, tensors).tolist()

        module.eval()
        values = sharded_map(items, losses, self.job.train.eval_batch_size, self.ctx, lambda e: len(e.input_ids))
        module.train()
        return {"loss": sum(values) / len(values)}

    # ------------------------------------------------------------ checkpoints (standard PEFT adapters)
    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        return adapter_state(module)

    def write(self, module, latest, best, folder: Path) -> None:
        write_adapter(module, latest, folder / ADAPTER_DIR)
        # The latest checkpoint always carries the best adapter too, so keeping 2 checkpoints suffices.
        write_adapter(module, best, folder / BEST_ADAPTER_DIR)

    def restore(self, module, folder: Path) -> None:
        load_adapter_into(module, folder / ADAPTER_DIR)

    def read_best(self, folder: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(folder / BEST_ADAPTER_DIR / "adapter_model.safetensors"))

    @classmethod
    def publish(cls, folder: Path, output_dir: Path, summary: dict[str, Any]) -> Path:
        return publish_folder(folder / BEST_ADAPTER_DIR, output_dir / "adapter", extra=summary)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        return {"max_length": job.max_length}
