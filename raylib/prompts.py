"""Every prompt template in one place, each citing its paper."""

from __future__ import annotations

import re

# TALLRec (Bao et al., RecSys 2023), Fig. 2 / its data files: the rec-tuning instruction and input.
TALLREC_INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the target {domain} "
    'by answering "Yes." or "No.".'
)
TALLREC_ANSWERS = ("Yes.", "No.")  # positive first


def quote_item(title: str) -> str:
    return f'"{title}"'


def tallrec_instruction(domain: str = "movie") -> str:
    return TALLREC_INSTRUCTION.format(domain=domain)


def tallrec_input(liked: list[str], disliked: list[str], target: str, domain: str = "movie") -> str:
    """TALLRec input: liked and disliked history (oldest first), then the question about the target."""
    return render_tallrec_input([quote_item(t) for t in liked], [quote_item(t) for t in disliked],
                                f"Whether the user will like the target {domain} {quote_item(target)}?")


def render_tallrec_input(liked: list[str], disliked: list[str], question: str) -> str:
    """A TALLRec input from already-quoted items (`"Title (Year)"`, or `"Title" written by Author` for books)."""
    return f"User Preference: {', '.join(liked)}\nUser Unpreference: {', '.join(disliked)}\n{question}"


_ITEM_SEPARATOR = re.compile(r', (?=")')  # items are quoted: a comma inside a title is not followed by a quote


def parse_tallrec_input(input_text: str) -> tuple[list[str], list[str], str] | None:
    """(liked items, disliked items, question) of a TALLRec input, items quoted as written; None when the text
    is not in that format (e.g. a user's own free text)."""
    lines = input_text.split("\n", 2)
    if len(lines) < 3 or not lines[0].startswith("User Preference: ") \
            or not lines[1].startswith("User Unpreference: "):
        return None
    liked = _items(lines[0].removeprefix("User Preference: "))
    disliked = _items(lines[1].removeprefix("User Unpreference: "))
    if any(not item.startswith('"') for item in liked + disliked):
        return None
    return liked, disliked, lines[2]  # render_tallrec_input(*parsed) gives input_text back


def _items(text: str) -> list[str]:
    return _ITEM_SEPARATOR.split(text) if text else []


# TALLRec trains from the Alpaca template (its finetune_rec.py `generate_prompt`), inputs always present.
ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def alpaca_prompt(instruction: str, input_text: str) -> str:
    """The text the model reads before its answer ("Yes." / "No.")."""
    return ALPACA_TEMPLATE.format(instruction=instruction, input=input_text)


def split_question(input_text: str) -> tuple[str, str]:
    """Split a TALLRec input into (history, question): the question is its last line, kept whole on truncation."""
    head, sep, last = input_text.rpartition("\n")
    return (head + sep, last) if sep else ("", input_text)
