"""Next-title generation (BIGRec step 1, Sec. 3.1; GenRec Sec. 3.2) as a task of the shared trainer.

The SFT task with next-item records: the prompt is rendered on the worker from the history titles (cut to fit,
oldest items first), the response is the next title + EOS (quoted for BIGRec, bare for GenRec, as their data files
write it), and the best epoch is the one with the lowest validation loss. GenRec records carry the number of the
paraphrased instruction drawn for them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from raylib.methods.nextitem.config import BigrecJobConfig, GenrecJobConfig
from raylib.encoding import Encoded, encode_pair, fit_history
from raylib.prompts import bigrec_prompt, genrec_prompt, title_answer
from raylib.train.sft import SftTask

BIGREC_TEMPLATE = -1  # a record's "template" for BIGRec's single prompt


def render_prompt(record: dict[str, Any], domain: str):
    """The prompt renderer for a record: history titles -> prompt text."""
    template = int(record.get("template", BIGREC_TEMPLATE))
    if template == BIGREC_TEMPLATE:
        return lambda history: bigrec_prompt(history, domain)
    return lambda history: genrec_prompt(history, template, domain)


def fitted_prompt(tokenizer, record: dict[str, Any], budget: int, domain: str, where: str) -> str:
    return fit_history(tokenizer, render_prompt(record, domain), list(record["history"]), budget, where)


class BigrecTask(SftTask):
    task_id: ClassVar[str] = "bigrec"  # in run fingerprints: a stable name, whatever module holds the class
    config_cls: ClassVar[type] = BigrecJobConfig

    @property
    def max_length(self) -> int:
        return self.job.data.max_length

    def encode(self, records: list[dict[str, Any]], split: str) -> list[Encoded]:
        """Records {"history": [titles], "target": title, "template": int} -> prompt + quoted title + EOS."""
        items = []
        for i, record in enumerate(records):
            answer = self.answer(record["target"])
            answer_len = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1
            prompt = fitted_prompt(self.tokenizer, record, self.max_length - answer_len, self.job.data.domain,
                                   f"{split} record {i}")
            items.append(encode_pair(self.tokenizer, prompt, answer, self.job.train.loss_on))
        return items

    @staticmethod
    def answer(title: str) -> str:
        return title_answer(title)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        return {"max_length": job.data.max_length, "domain": job.data.domain}


class GenrecTask(BigrecTask):
    task_id: ClassVar[str] = "genrec"  # in run fingerprints: a stable name, whatever module holds the class
    config_cls: ClassVar[type] = GenrecJobConfig

    @staticmethod
    def answer(title: str) -> str:
        return title  # GenRec's data files: the bare title

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        # "genrec-code": the layout of GenRec's code (instruction / input / response, bare titles); runs made with
        # the earlier one-line templates do not resume into it.
        return {**super().fingerprint(job), "prompt": "genrec-code"}
