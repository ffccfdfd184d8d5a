"""TALLRec rec-tuning (Bao et al., RecSys 2023, Sec. 3.2) as a task of the shared trainer.

The SFT task with TALLRec's records: the Alpaca prompt (history cut to fit, whole items, oldest first), the
answer "Yes."/"No.", and the best epoch chosen by validation AUC of P(Yes) (Sec. 4.2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from raylib.methods.tallrec.config import TallrecJobConfig
from raylib.data.records import TallrecRecord
from raylib.encoding import Encoded, answer_token_ids, collate_left_padded, encode_for_scoring, encode_for_training
from raylib.metrics import binary_report
from raylib.train.sft import SftTask
from raylib.train.task import WorkerContext, sharded_map


class TallrecTask(SftTask):
    task_id: ClassVar[str] = "tallrec"  # in run fingerprints: a stable name, whatever module holds the class
    config_cls: ClassVar[type] = TallrecJobConfig
    metric: ClassVar[str] = "auc"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.yes_no = answer_token_ids(self.tokenizer)

    @property
    def max_length(self) -> int:
        return self.job.data.max_length

    def encode(self, records: list[dict[str, Any]], split: str) -> list[Encoded]:
        """Training records: prompt + answer + EOS; validation records: the prompt alone (scored, not trained)."""
        out = []
        for i, raw in enumerate(records):
            record, where = TallrecRecord(**raw), f"{split} record {i}"
            if split == "train":
                out.append(encode_for_training(self.tokenizer, record, self.max_length, self.job.train.loss_on, where))
            else:
                out.append(encode_for_scoring(self.tokenizer, record, self.max_length, where))
        return out

    @torch.no_grad()
    def validate(self, module, items: list[Encoded]) -> dict[str, float]:
        """AUC / LogLoss / accuracy of P(Yes) = softmax over the Yes/No first-token logits."""
        def p_yes(batch: list[Encoded]) -> list[float]:
            tensors = collate_left_padded(batch, self.tokenizer.pad_token_id)
            logits = module(**{k: v.to(self.ctx.device) for k, v in tensors.items()}, use_cache=False,
                            logits_to_keep=1).logits[:, -1, :]
            pair = torch.stack([logits[:, self.yes_no[0]], logits[:, self.yes_no[1]]], dim=-1).float()
            return pair.softmax(-1)[:, 0].cpu().tolist()

        module.eval()
        probs = sharded_map(items, p_yes, self.job.train.eval_batch_size, self.ctx, lambda e: len(e.input_ids))
        module.train()
        return binary_report([e.label for e in items], probs)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        return {"max_length": job.data.max_length}
