"""Records -> token ids. Over-long prompts lose whole history items (oldest first), never the question or answer."""

from __future__ import annotations

import dataclasses

import torch

from raylib import RaylibError
from raylib.data.records import TallrecRecord
from raylib.prompts import (ALPACA_TEMPLATE, TALLREC_ANSWERS, alpaca_prompt, parse_tallrec_input,
                            render_tallrec_input, split_question)

IGNORE_INDEX = -100  # label value torch's cross-entropy skips
TRUNCATION_MARK = "... "  # marks free-text history that lost pieces


@dataclasses.dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    label: int  # 1 = "Yes." (like), 0 = "No."


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def fit_prompt(tokenizer, record: TallrecRecord, budget: int, where: str = "record") -> str:
    """The record's prompt in at most `budget` tokens: an over-long one loses whole history items (oldest first,
    see `shorter_inputs`), never the question."""
    def size(input_text: str) -> int:
        return len(token_ids(tokenizer, alpaca_prompt(record.instruction, input_text)))

    if size(record.input) <= budget:
        return alpaca_prompt(record.instruction, record.input)
    candidates = shorter_inputs(record.input)
    if size(candidates[-1]) > budget:
        raise RaylibError(
            f"{where}: even without history the prompt takes {size(candidates[-1])} tokens, "
            f"over the limit of {budget}; raise data.max_length or shorten the instruction/question."
        )
    lo, hi = 0, len(candidates) - 1  # binary search for the longest candidate that fits (sizes only shrink)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if size(candidates[mid]) <= budget else (mid + 1, hi)
    return alpaca_prompt(record.instruction, candidates[lo])


def shorter_inputs(input_text: str) -> list[str]:
    """Ever shorter versions of an input, one whole history item less each; the last has no history left.

    A TALLRec input loses its oldest item from whichever list (liked or disliked; liked on a tie) holds more,
    so both kinds survive as long as possible, and is re-rendered in the same format. Text that is not in that
    format (a user's own) loses whole comma-separated pieces of the lines before its question, from the start.
    """
    parsed = parse_tallrec_input(input_text)
    if parsed is None:
        history, question = split_question(input_text)
        pieces = history.split(", ") if history else []
        return [TRUNCATION_MARK + ", ".join(pieces[k:]) + question for k in range(1, len(pieces))] + [question]
    liked, disliked, question = parsed
    shorter = []
    while liked or disliked:
        if len(liked) >= len(disliked):
            liked = liked[1:]
        else:
            disliked = disliked[1:]
        shorter.append(render_tallrec_input(liked, disliked, question))
    return shorter


LOSS_MODES = ("response", "answer_token", "all")


def response_ids(tokenizer, prompt: str, response: str, prompt_ids: list[int] | None = None) -> list[int]:
    """The response's tokens as they follow `prompt` in training: tokenized together with the prompt where the
    prompt's own tokens come out unchanged (a SentencePiece tokenizer starts a text with a word-boundary token it
    does not put after a newline), else alone (the tokenizer would merge across the boundary)."""
    prompt_ids = prompt_ids if prompt_ids is not None else token_ids(tokenizer, prompt)
    full_ids = token_ids(tokenizer, prompt + response)
    if full_ids[:len(prompt_ids)] == prompt_ids:
        return full_ids[len(prompt_ids):]
    return tokenizer(response, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, prompt: str, response: str, loss_on: str = "response", label: int = 0) -> Encoded:
    """Prompt + response + EOS as one sequence. Labels cover the response (+ EOS), only its first token, or
    everything (`loss_on`); the prompt's own tokenization is kept even where the tokenizer would merge across
    the boundary, so the response starts exactly where scoring reads the next token."""
    if loss_on not in LOSS_MODES:
        raise RaylibError(f"train.loss_on={loss_on!r} must be one of {', '.join(LOSS_MODES)}.")
    prompt_ids = token_ids(tokenizer, prompt)
    full_ids = prompt_ids + response_ids(tokenizer, prompt, response, prompt_ids) + [tokenizer.eos_token_id]
    n = len(prompt_ids)
    if loss_on == "all":  # every token but the first: nothing before it predicts it (in a left-padded batch
        labels = [IGNORE_INDEX] + full_ids[1:]  # a padding position would otherwise be made to)
    elif loss_on == "answer_token":
        labels = [IGNORE_INDEX] * n + [full_ids[n]] + [IGNORE_INDEX] * (len(full_ids) - n - 1)
    else:
        labels = [IGNORE_INDEX] * n + full_ids[n:]
    return Encoded(full_ids, labels, label)


def encode_for_training(tokenizer, record: TallrecRecord, max_length: int, loss_on: str = "response",
                        where: str = "record") -> Encoded:
    """A TALLRec record for training: its prompt (history cut to fit) + answer + EOS."""
    answer_len = len(tokenizer(record.output, add_special_tokens=False)["input_ids"]) + 1
    prompt = fit_prompt(tokenizer, record, max_length - answer_len, where)
    return encode_pair(tokenizer, prompt, record.output, loss_on, record.label)


def encode_for_scoring(tokenizer, record: TallrecRecord, max_length: int, where: str = "record") -> Encoded:
    """Prompt only: the model's next-token distribution at its end holds the Yes/No answer."""
    ids = token_ids(tokenizer, fit_prompt(tokenizer, record, max_length, where))
    return Encoded(ids, [], record.label)


def answer_token_ids(tokenizer, answers: tuple[str, str] = TALLREC_ANSWERS,
                     prompt: str | None = None) -> tuple[int, int]:
    """Ids of the first token of the positive and the negative answer ("Yes." / "No." after TALLRec's Alpaca
    prompt by default) as they follow `prompt` (found from the tokenizer, never hard-coded)."""
    prompt = prompt if prompt is not None else ALPACA_TEMPLATE.format(instruction="Q", input="I")
    base = token_ids(tokenizer, prompt)
    firsts = []
    for answer in answers:
        full = token_ids(tokenizer, prompt + answer)
        if full[: len(base)] != base or len(full) == len(base):
            full = base + tokenizer(answer, add_special_tokens=False)["input_ids"]
        firsts.append(full[len(base)])
    if firsts[0] == firsts[1]:
        raise RaylibError(f"The tokenizer gives {answers} the same first token; they cannot be scored.")
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


def fit_history(tokenizer, render, history: list[str], budget: int, where: str = "record") -> str:
    """`render(history)` in at most `budget` tokens: the oldest history items go first, never the instruction.
    `render` maps a (possibly shortened) list of items to the whole prompt."""
    def size(items: list[str]) -> int:
        return len(token_ids(tokenizer, render(items)))

    if size(history) <= budget:
        return render(history)
    if size([]) > budget:
        raise RaylibError(f"{where}: even without history the prompt takes {size([])} tokens, over the limit of "
                          f"{budget}; raise data.max_length.")
    lo, hi = 1, len(history)  # drop the `lo` oldest items: binary search for the fewest drops that fit
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if size(history[mid:]) <= budget else (mid + 1, hi)
    return render(history[lo:])
