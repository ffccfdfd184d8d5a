"""CoReLLa stages 2 and 3 (Xi et al. 2024, Sec. 3.3) as a task of the shared trainer.

Stage "joint" (`CorellaJointTask`): ONE module holds the LoRA-tuned LLM, the warmed-up DCNv2 and the alignment
projections, so one DeepSpeed engine all-reduces and steps all of them. Loss (Eq. 5-7):
    L = a * L_llm + b * L_crm + c * sum_pairs || g_llm(h_llm) - g_crm(h_crm) ||_2^p
with L_llm the cross-entropy of the answer token (" yes"/" no") over the vocabulary, L_crm the CRM's binary
cross-entropy, h_llm the last prompt token's hidden state after a chosen LLM layer, h_crm a chosen cross
layer's output, and g linear projections into a shared space. The CRM (and projections) get their own learning
rate (`align.crm_learning_rate`, `param_groups`).
Stage "llm" (`CorellaLlmTask`, which the joint task extends): the LLM alone (L_llm), from the joint stage's
adapter.

Both pick the best epoch by the LLM's validation AUC, P(yes) = softmax over the yes/no first-token logits.
A checkpoint folder holds `latest/` and `best/`, each laid out as the published stage folder: `adapter/` (PEFT),
and for the joint stage `crm/` (model.safetensors, config.json, stage 1's vocab.json) and
`projections.safetensors`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from raylib import RaylibError
from raylib.config import to_dict
from raylib.methods.corella.config import CorellaStageJob
from raylib.methods.corella.crm import CONFIG_FILE, CRM_INPUTS, MODEL_FILE, VOCAB_FILE, DCNv2, DCNv2Config, crm_batch
from raylib.encoding import Encoded, collate_left_padded
from raylib.methods.corella.artifacts import prompt_ids, yes_no_ids
from raylib.metrics import binary_report
from raylib.train.checkpoint import (
    ADAPTER_DIR, load_adapter_into, publish_folder, write_adapter,
)
from raylib.train.task import WorkerContext, sharded_map

PROJECTIONS = "projections.safetensors"


def alignment_loss(llm_states: list[torch.Tensor], crm_states: list[torch.Tensor], p: float,
                   normalize: bool = True) -> torch.Tensor:
    """Eq. 6: sum over pairs of the batch mean of ||g_llm(h) - g_crm(h')||_2^p (states already projected;
    `normalize`: each projected vector scaled to unit length first)."""
    total = llm_states[0].new_zeros((), dtype=torch.float32)
    for a, b in zip(llm_states, crm_states):
        a, b = a.float(), b.float()
        if normalize:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        total = total + (a - b).norm(p=2, dim=-1).pow(p).mean()
    return total


class CorellaModel(nn.Module):
    """The LLM (PEFT), and in the joint stage the CRM and one projection pair per aligned (LLM, cross) layer."""

    def __init__(self, llm, crm: DCNv2 | None = None, pairs: list[list[int]] = (), projection_dim: int = 64):
        super().__init__()
        self.llm, self.crm, self.pairs = llm, crm, [list(p) for p in pairs]
        if crm is not None:
            hidden, layers = llm.config.hidden_size, llm.config.num_hidden_layers
            for llm_layer, cross_layer in self.pairs:
                if not -(layers + 1) <= llm_layer <= layers:
                    raise RaylibError(f"align.pairs: LLM layer {llm_layer} is outside 0..{layers} (or -1..-{layers + 1}).")
                if not -len(crm.cross) <= cross_layer < len(crm.cross):
                    raise RaylibError(f"align.pairs: cross layer {cross_layer} is outside 0..{len(crm.cross) - 1}.")
            self.llm_projections = nn.ModuleList(nn.Linear(hidden, projection_dim) for _ in self.pairs)
            self.crm_projections = nn.ModuleList(nn.Linear(crm.cross_width, projection_dim) for _ in self.pairs)

    def forward(self, input_ids, attention_mask, position_ids, fields=None, genres=None, history=None,
                history_rating_codes=None):
        joint = self.crm is not None and fields is not None
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False, logits_to_keep=1, output_hidden_states=joint)
        result = {"logits": out.logits[:, -1, :]}
        if joint:
            crm_logit, crossed = self.crm(fields, genres, history, history_rating_codes, return_cross=True)
            result["crm_logit"] = crm_logit
            # left padding: the last column is every prompt's last token
            result["llm_states"] = [g(out.hidden_states[l][:, -1, :].to(g.weight.dtype)) for g, (l, _) in
                                    zip(self.llm_projections, self.pairs)]
            result["crm_states"] = [g(crossed[c].to(g.weight.dtype)) for g, (_, c) in
                                    zip(self.crm_projections, self.pairs)]
        return result


class CorellaLlmTask:
    """Stage "llm" (3): the LLM alone, L_llm, starting from the joint stage's adapter. The joint stage
    (`CorellaJointTask`) is this task with the CRM, the projections and their losses added."""
    task_id: ClassVar[str] = "corella"  # in run fingerprints: a stable name, whatever module holds the class
    config_cls: ClassVar[type] = CorellaStageJob
    metric: ClassVar[str] = "auc"
    higher_is_better: ClassVar[bool] = True
    # a stage starts from the previous stage's CRM and adapter: retraining those restarts this stage
    start_weights: ClassVar[tuple[str, ...]] = ("init_crm", "init_adapter")
    stage: ClassVar[str] = "llm"

    def __init__(self, ctx: WorkerContext) -> None:
        from raylib.model import load_tokenizer

        if ctx.job.stage != self.stage:
            raise RaylibError(f"{type(self).__name__} trains the {self.stage} stage, not {ctx.job.stage!r}.")
        self.ctx, self.job = ctx, ctx.job
        self.tokenizer = load_tokenizer(self.job.model)
        self.yes_no = yes_no_ids(self.tokenizer)

    # ------------------------------------------------------------ model
    def build(self) -> torch.nn.Module:
        return CorellaModel(self._llm(fp32_adapters=False))

    def _llm(self, fp32_adapters: bool):
        from raylib.model import add_lora, load_model

        llm = load_model(self.job.model, self.ctx.device, self.ctx.dtype)
        if self.job.train.gradient_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            llm.enable_input_require_grads()
        llm = add_lora(llm, self.job.lora, fp32_adapters=fp32_adapters)
        if self.job.init_adapter:  # stage 3 starts from stage 2's adapter
            load_adapter_into(llm, Path(self.job.init_adapter))
        return llm

    # ------------------------------------------------------------ data
    def encode(self, records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return [self._item(r, f"{split} record {i}") for i, r in enumerate(records)]

    def _item(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        return {"ids": prompt_ids(self.tokenizer, record, self.job.data.max_length, where),
                "label": int(record["label"])}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate_left_padded([Encoded(i["ids"], [], i["label"]) for i in items], self.tokenizer.pad_token_id)
        batch["label"] = torch.tensor([i["label"] for i in items], dtype=torch.float32)
        return batch

    # ------------------------------------------------------------ objective
    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective(module(**{k: v for k, v in batch.items() if k != "label"}), batch["label"])

    def objective(self, out: dict[str, Any], label: torch.Tensor) -> torch.Tensor:
        """L_llm: the cross-entropy of the answer token (" yes" / " no") over the vocabulary."""
        answer = torch.where(label > 0.5, self.yes_no[0], self.yes_no[1]).long()
        return F.cross_entropy(out["logits"].float(), answer)

    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        labels, llm, _ = self.scores(module, items)
        return binary_report(labels, llm)

    @torch.no_grad()
    def scores(self, module, items: list[dict[str, Any]]) -> tuple[list[int], list[float], list[float]]:
        """(labels, the LLM's P(yes) from the yes/no first-token logits, the CRM's P(like) or again the LLM's)."""
        yes, no = self.yes_no

        def probs(batch: list[dict[str, Any]]) -> list[tuple[float, float]]:
            tensors = {k: v.to(self.ctx.device) for k, v in self.collate(batch).items() if k != "label"}
            out = module(**tensors)
            p_llm = torch.stack([out["logits"][:, yes], out["logits"][:, no]], -1).float().softmax(-1)[:, 0]
            p_crm = torch.sigmoid(out["crm_logit"].float()) if "crm_logit" in out else p_llm
            return list(zip(p_llm.cpu().tolist(), p_crm.cpu().tolist()))

        module.eval()
        values = sharded_map(items, probs, self.job.train.eval_batch_size, self.ctx, lambda i: len(i["ids"]))
        module.train()
        return [i["label"] for i in items], [v[0] for v in values], [v[1] for v in values]

    # ------------------------------------------------------------ checkpoints
    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        from raylib.train.checkpoint import adapter_state

        return {f"adapter.{k}": v for k, v in adapter_state(module.llm).items()}

    def _write_state(self, module, state: dict[str, torch.Tensor], folder: Path) -> None:
        write_adapter(module.llm, _part(state, "adapter"), folder / ADAPTER_DIR)

    def write(self, module, latest, best, folder: Path) -> None:
        self._write_state(module, latest, folder / "latest")
        self._write_state(module, best, folder / "best")

    @staticmethod
    def _read_state(folder: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        state = {f"adapter.{k}": v for k, v in load_file(str(folder / ADAPTER_DIR / "adapter_model.safetensors")).items()}
        if (folder / "crm").is_dir():
            state.update({f"crm.{k}": v for k, v in load_file(str(folder / "crm" / MODEL_FILE)).items()})
            for k, v in load_file(str(folder / PROJECTIONS)).items():
                side, rest = k.split(".", 1)
                state[f"{side}_projections.{rest}"] = v
        return state

    def restore(self, module, folder: Path) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(module.llm, _part(self._read_state(folder / "latest"), "adapter"))

    def read_best(self, folder: Path) -> dict[str, torch.Tensor]:
        return self._read_state(folder / "best")

    @classmethod
    def publish(cls, folder: Path, output_dir: Path, summary: dict[str, Any]) -> Path:
        """`output_dir/published/`: the best epoch's adapter/ (+ crm/, projections.safetensors when joint)."""
        return publish_folder(folder / "best", output_dir / "published", extra=summary)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        from raylib.stages import file_sha1

        def file_hash(folder: str | None, name: str) -> str | None:
            return file_sha1(Path(folder) / name) if folder else None

        return {"stage": job.stage, "align": to_dict(job.align), "crm_shape": job.crm_shape,
                "max_length": job.data.max_length, "init_crm": file_hash(job.init_crm, MODEL_FILE),
                "init_adapter": file_hash(job.init_adapter, "adapter_model.safetensors")}


SIDE_PARTS = ("crm", "llm_projections", "crm_projections")  # the joint stage's parts besides the LLM


class CorellaJointTask(CorellaLlmTask):
    """Stage "joint" (2): ONE module holds the LoRA-tuned LLM, the warmed-up DCNv2 and the alignment projections
    (one DeepSpeed engine all-reduces and steps all of them); L = a L_llm + b L_crm + c L_align (Eq. 5-7)."""
    stage: ClassVar[str] = "joint"

    def build(self) -> torch.nn.Module:
        from safetensors.torch import load_file

        # Every trainable part in fp32 (the CRM routes by its entropy, which bf16 weights move; the LoRA adapters
        # too, so DeepSpeed runs one fp32 optimizer); the frozen LLM stays in the device's dtype.
        llm = self._llm(fp32_adapters=True)
        crm = DCNv2(DCNv2Config.from_dict(self.job.crm_shape))
        if self.job.init_crm:  # stage 2 starts from the warmed-up CRM
            crm.load_state_dict(load_file(str(Path(self.job.init_crm) / MODEL_FILE)))
        module = CorellaModel(llm, crm, self.job.align.pairs, self.job.align.projection_dim)
        for name in SIDE_PARTS:
            getattr(module, name).to(self.ctx.device, torch.float32)
        return module

    def param_groups(self, module) -> list[dict[str, Any]]:
        side = [p for name in SIDE_PARTS for p in getattr(module, name).parameters()]
        ids = {id(p) for p in side}
        lora = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": lora}, {"params": side, "lr": self.job.align.crm_learning_rate}]

    def _item(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        return {**super()._item(record, where), **{k: record[k] for k in CRM_INPUTS}}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch, crm = super().collate(items), crm_batch(items)
        batch.update({k: crm[k] for k in CRM_INPUTS})
        return batch

    def objective(self, out: dict[str, Any], label: torch.Tensor) -> torch.Tensor:
        a = self.job.align
        crm_loss = F.binary_cross_entropy_with_logits(out["crm_logit"].float(), label)
        align = alignment_loss(out["llm_states"], out["crm_states"], a.p, a.normalize)
        return a.llm_weight * super().objective(out, label) + a.crm_weight * crm_loss + a.align_weight * align

    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        labels, llm, crm = self.scores(module, items)
        return {**binary_report(labels, llm), "crm_auc": binary_report(labels, crm)["auc"]}

    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        state = super().trainable_state(module)
        for name in SIDE_PARTS:
            part = getattr(module, name).state_dict()
            state.update({f"{name}.{k}": v.detach().cpu().clone() for k, v in part.items()})
        return state

    def _write_state(self, module, state: dict[str, torch.Tensor], folder: Path) -> None:
        from safetensors.torch import save_file

        super()._write_state(module, state, folder)
        crm = folder / "crm"
        crm.mkdir(parents=True, exist_ok=True)
        save_file(_part(state, "crm"), str(crm / MODEL_FILE))
        vocab_hash = self._copy_stage_one_vocabulary(crm)
        config = {**self.job.crm_shape, **({"vocab_hash": vocab_hash} if vocab_hash else {})}
        (crm / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        projections = {f"llm.{k}": v for k, v in _part(state, "llm_projections").items()}
        projections.update({f"crm.{k}": v for k, v in _part(state, "crm_projections").items()})
        save_file(projections, str(folder / PROJECTIONS))

    def _copy_stage_one_vocabulary(self, crm: Path) -> str | None:
        """Stage 1's vocabulary copied into `crm`, and its hash: the joint stage's CRM keeps stage 1's vocabulary,
        so its folder is whole as the trainer publishes it. None: no stage-1 CRM with a vocabulary to start from."""
        start = Path(self.job.init_crm) if self.job.init_crm else None
        if start is None or not (start / VOCAB_FILE).is_file():
            return None
        shutil.copyfile(start / VOCAB_FILE, crm / VOCAB_FILE)
        return json.loads((start / CONFIG_FILE).read_text()).get("vocab_hash")

    def restore(self, module, folder: Path) -> None:
        super().restore(module, folder)
        state = self._read_state(folder / "latest")
        for name in SIDE_PARTS:
            getattr(module, name).load_state_dict(_part(state, name))


STAGE_TASKS = {"joint": CorellaJointTask, "llm": CorellaLlmTask}


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state` under "<prefix>.", without it."""
    return {k[len(prefix) + 1:]: v.contiguous() for k, v in state.items() if k.startswith(prefix + ".")}
