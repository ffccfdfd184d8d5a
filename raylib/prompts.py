"""Every prompt template in one place, each citing its paper."""

from __future__ import annotations

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
    return (
        f"User Preference: {', '.join(quote_item(t) for t in liked)}\n"
        f"User Unpreference: {', '.join(quote_item(t) for t in disliked)}\n"
        f"Whether the user will like the target {domain} {quote_item(target)}?"
    )


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
