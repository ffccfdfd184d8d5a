"""Records -> token ids. Over-long prompts lose history tokens (oldest first), never the question or answer."""

from __future__ import annotations

import dataclasses

import torch

from raylib import RaylibError
from raylib.data.records import TallrecRecord
from raylib.prompts import ALPACA_TEMPLATE, TALLREC_ANSWERS, alpaca_prompt, split_question

IGNORE_INDEX = -100  # label value torch's cross-entropy skips
TRUNCATION_MARK = "... "


@dataclasses.dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    label: int  # 1 = "Yes." (like), 0 = "No."


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def fit_prompt(tokenizer, record: TallrecRecord, budget: int, where: str = "record") -> str:
    """The record's prompt, with history cut from its oldest side until it takes at most `budget` tokens."""
    prompt = alpaca_prompt(record.instruction, record.input)
    n = len(_ids(tokenizer, prompt))
    if n <= budget:
        return prompt
    history, question = split_question(record.input)
    hist_ids = tokenizer(history, add_special_tokens=False)["input_ids"]
    keep = max(0, len(hist_ids) - (n - budget) - 2)
    while True:
        tail = tokenizer.decode(hist_ids[len(hist_ids) - keep:]) if keep > 0 else ""
        prompt = alpaca_prompt(record.instruction, (TRUNCATION_MARK + tail if tail else "") + question)
        if len(_ids(tokenizer, prompt)) <= budget:
            return prompt
        if keep == 0:
            raise RaylibError(
                f"{where}: even without history the prompt takes {len(_ids(tokenizer, prompt))} tokens, "
                f"over the limit of {budget}; raise data.max_length or shorten the instruction/question."
            )
        keep = max(0, keep - 8)


LOSS_MODES = ("response", "answer_token", "all")


def encode_for_training(tokenizer, record: TallrecRecord, max_length: int, loss_on: str = "response",
                        where: str = "record") -> Encoded:
    """Prompt + answer + EOS. Labels cover the response, only its first token, or everything (`loss_on`)."""
    if loss_on not in LOSS_MODES:
        raise RaylibError(f"train.loss_on={loss_on!r} must be one of {', '.join(LOSS_MODES)}.")
    answer_ids = tokenizer(record.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = fit_prompt(tokenizer, record, max_length - len(answer_ids), where)
    prompt_ids = _ids(tokenizer, prompt)
    full_ids = _ids(tokenizer, prompt + record.output)
    if full_ids[: len(prompt_ids)] != prompt_ids:  # tokenizer merged across the boundary: keep them apart
        full_ids = prompt_ids + answer_ids[:-1]
    full_ids = full_ids + [tokenizer.eos_token_id]
    n = len(prompt_ids)
    if loss_on == "all":
        labels = list(full_ids)
    elif loss_on == "answer_token":
        labels = [IGNORE_INDEX] * n + [full_ids[n]] + [IGNORE_INDEX] * (len(full_ids) - n - 1)
    else:
        labels = [IGNORE_INDEX] * n + full_ids[n:]
    return Encoded(full_ids, labels, record.label)


def encode_for_scoring(tokenizer, record: TallrecRecord, max_length: int, where: str = "record") -> Encoded:
    """Prompt only: the model's next-token distribution at its end holds the Yes/No answer."""
    ids = _ids(tokenizer, fit_prompt(tokenizer, record, max_length, where))
    return Encoded(ids, [], record.label)


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of the first token of "Yes." and of "No." as they follow the prompt (found, never hard-coded)."""
    prompt = ALPACA_TEMPLATE.format(instruction="Q", input="I")
    base = _ids(tokenizer, prompt)
    firsts = []
    for answer in TALLREC_ANSWERS:
        full = _ids(tokenizer, prompt + answer)
        if full[: len(base)] != base or len(full) == len(base):
            full = base + tokenizer(answer, add_special_tokens=False)["input_ids"]
        firsts.append(full[len(base)])
    if firsts[0] == firsts[1]:
        raise RaylibError(f"The tokenizer gives {TALLREC_ANSWERS} the same first token; they cannot be scored.")
    return firsts[0], firsts[1]


def collate_left_padded(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left padding puts every prompt's last token in the last column; position ids skip the padding."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, width - len(e.input_ids):] = torch.tensor(e.input_ids)
        mask[row, width - len(e.input_ids):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def collate_for_training(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded like scoring, so every row's answer tokens sit in the last columns (see `causal_lm_loss`)."""
    out = collate_left_padded(batch, pad_id)
    labels = torch.full(out["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(batch):
        labels[row, labels.shape[1] - len(e.labels):] = torch.tensor(e.labels)
    out["labels"] = labels
    return out
