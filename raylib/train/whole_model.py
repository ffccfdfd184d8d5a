"""Checkpoints of a small model trained whole (no LoRA): its state dict in safetensors, its constructor's
arguments in JSON. SASRec and DCNv2 (CoReLLa stage 1) share this; a task sets the file names and `shape()`.

A checkpoint folder holds `<name>.safetensors` (latest), `best_<name>.safetensors` and `<name>_config.json`;
(and the task's `companions`); `publish` copies the best as `<output_dir>/<name>/model.safetensors` +
`config.json`, with the companions beside them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from raylib.train.checkpoint import publish_folder

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def whole_model_train(settings: Any, eval_batch_size: int, **more: Any) -> dict[str, Any]:
    """The `train` section of a small model trained whole (SASRec, DCNv2), from its own settings section: DeepSpeed
    ZeRO stage 0 in fp32 (plain data parallelism: nothing worth partitioning), its global batch also the
    micro-batch; `more`: the fields it takes from the method's job (seed, fresh_start, use_gpu, ...)."""
    return {"learning_rate": settings.learning_rate, "batch_size": settings.batch_size,
            "micro_batch_size": settings.batch_size, "epochs": settings.epochs, "patience": settings.patience,
            "weight_decay": settings.weight_decay, "zero_stage": 0, "num_workers": settings.num_workers,
            "eval_batch_size": eval_batch_size, **more}


class WholeModelCheckpoints:
    name: ClassVar[str]  # e.g. "sasrec": file names and the published folder
    # Files a task writes into its checkpoint folder beside the weights (`write`) and publishes as they are.
    companions: ClassVar[tuple[str, ...]] = ()
    plans_llm_memory: ClassVar[bool] = False  # no LLM: the GPU memory planner does not apply

    def __init__(self, ctx) -> None:  # a `raylib.train.task.WorkerContext`
        self.ctx, self.job = ctx, ctx.job

    def shape(self) -> dict[str, Any]:
        """The model constructor's arguments (written beside the weights)."""
        raise NotImplementedError

    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def write(self, module, latest, best, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(latest, str(folder / f"{self.name}.safetensors"))
        save_file(best, str(folder / f"best_{self.name}.safetensors"))
        (folder / f"{self.name}_config.json").write_text(json.dumps(self.shape(), indent=1))

    def restore(self, module, folder: Path) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(folder / f"{self.name}.safetensors")))

    def read_best(self, folder: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(folder / f"best_{self.name}.safetensors"))

    @classmethod
    def publish(cls, folder: Path, output_dir: Path, summary: dict[str, Any]) -> Path:
        with tempfile.TemporaryDirectory(dir=output_dir) as staging:
            (Path(staging) / MODEL_FILE).write_bytes((folder / f"best_{cls.name}.safetensors").read_bytes())
            (Path(staging) / CONFIG_FILE).write_text((folder / f"{cls.name}_config.json").read_text())
            for name in cls.companions:
                if (folder / name).is_file():
                    (Path(staging) / name).write_bytes((folder / name).read_bytes())
            return publish_folder(Path(staging), output_dir / cls.name, extra=summary)
