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


# BIGRec (Bao et al., "A Bi-Step Grounding Paradigm for LLMs in Recommendation", 2023), its data files: the
# Alpaca template with this instruction, the history as quoted titles, the answer the quoted next title.
BIGREC_INSTRUCTION = ("Given a list of {domain}s the user has watched before, please recommend a new {domain} "
                      "that the user likes to the user.")
BIGREC_INPUT = "The user has watched the following {domain}s before: {history}"

# GenRec (Ji et al., "GenRec: Large Language Model for Generative Recommendation", ECIR 2024), its code: rec.py's
# `generate_prompt` lays out the instruction, the history under "### input:" as unquoted titles joined by commas,
# and the next item's title (unquoted) under "### Response:"; its data files mix paraphrased instructions in
# training and test alike (data/testset/*.json). These are the movie-domain forms of the instructions of its
# published test file. Where ours differs: its prompt string starts with a stray " # noqa: E501" line (a lint
# comment inside the f-string), which we leave out.
GENREC_INSTRUCTIONS = (
    "Using the user's history, predict the {domain} the user is likely to watch next",
    "Predict the next {domain} for the user based on their viewing patterns.",
    "Given a user's viewing history, predict the {domain} they are most likely to watch next",
    "Check the viewing history below, find a {domain} similar to these",
    "Using the past choices, can you predict the next {domain} they will likely watch?",
    "Based on the user's viewing history, what could be the next {domain} they are likely to watch?",
    "Analyze the viewing history to recommend the next {domain} they may want to watch.",
)
GENREC_LAYOUT = "{instruction}\n\n### input:\n{history}\n\n### Response:\n"


def bigrec_prompt(history: list[str], domain: str = "movie") -> str:
    """BIGRec step 1 prompt; `history` are titles, oldest first (quoted here)."""
    items = ", ".join(quote_item(t) for t in history)
    return alpaca_prompt(BIGREC_INSTRUCTION.format(domain=domain), BIGREC_INPUT.format(domain=domain, history=items))


def genrec_prompt(history: list[str], template: int = 0, domain: str = "movie") -> str:
    """GenRec's prompt with instruction number `template` (of GENREC_INSTRUCTIONS) for `history` (titles, oldest
    first, unquoted, joined by commas as its data files write them). It ends in a newline: the answer's first
    token is the title's own first token, never a lone space."""
    if not 0 <= template < len(GENREC_INSTRUCTIONS):
        raise ValueError(f"GenRec template {template} is not one of 0..{len(GENREC_INSTRUCTIONS) - 1}")
    instruction = GENREC_INSTRUCTIONS[template].format(domain=domain)
    return GENREC_LAYOUT.format(instruction=instruction, history=",".join(history) or "(nothing yet)")


def title_answer(title: str) -> str:
    """What BIGRec learns to write: the quoted title (its data files). GenRec writes the bare title."""
    return quote_item(title)


def answer_text(generated: str) -> str:
    """A generated answer back to a title: first line, surrounding whitespace and quotes removed."""
    line = generated.strip().split("\n", 1)[0].strip()
    return line[1:-1].strip() if len(line) >= 2 and line[0] == line[-1] == '"' else line.strip('"').strip()


# CoReLLa (Xi et al., "Play to Your Strengths", 2024, Sec. 3.2 / its Table of prompts): the user's rating
# history, then the question about the target; the answer is " yes" or " no" (positive first).
CORELLA_TEMPLATE = (
    "Below is the rating history of a user: {history}\n"
    "Please predict whether the user will like {target} based on his/her rating history and the quality of the "
    "target item. You should ONLY answer no or yes. Answer:"
)
CORELLA_ANSWERS = (" yes", " no")


def corella_history(titles: list[str], ratings: list[float]) -> list[str]:
    """History items as the prompt writes them, oldest first: `"Toy Story (1995)" (4 stars)`."""
    return [f"{quote_item(t)} ({r:g} star{'' if r == 1 else 's'})" for t, r in zip(titles, ratings)]


def corella_prompt(history: list[str], target: str) -> str:
    """`history` as `corella_history` renders it; an empty history says so."""
    return CORELLA_TEMPLATE.format(history=", ".join(history) or "(no ratings yet)", target=quote_item(target))
