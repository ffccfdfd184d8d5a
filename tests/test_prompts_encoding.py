"""Prompt text, answer-token ids, label masking and history-side truncation."""

import pytest

from raylib import RaylibError
from raylib.data.records import TallrecRecord
from raylib.encoding import IGNORE_INDEX, answer_token_ids, encode_for_scoring, encode_for_training
from raylib.prompts import alpaca_prompt, tallrec_input, tallrec_instruction

RECORD = TallrecRecord(
    instruction=tallrec_instruction("movie"),
    input=tallrec_input(["Toy Story (1995)", "Heat (1995)"], ["Casino (1995)"], "Fargo (1996)"),
    output="Yes.",
)


def test_tallrec_prompt_text():
    assert RECORD.input == ('User Preference: "Toy Story (1995)", "Heat (1995)"\n'
                            'User Unpreference: "Casino (1995)"\n'
                            'Whether the user will like the target movie "Fargo (1996)"?')
    prompt = alpaca_prompt(RECORD.instruction, RECORD.input)
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert prompt.endswith(f"### Input:\n{RECORD.input}\n\n### Response:\n")


def test_answer_ids_come_from_the_tokenizer(tokenizer):
    yes_id, no_id = answer_token_ids(tokenizer)
    assert yes_id != no_id
    assert tokenizer.decode([yes_id]).strip() == "Yes" and tokenizer.decode([no_id]).strip() == "No"


def test_training_labels_cover_only_the_answer(tokenizer):
    enc = encode_for_training(tokenizer, RECORD, max_length=512)
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "Yes." + tokenizer.eos_token
    assert answer[0] == answer_token_ids(tokenizer)[0]  # the scored token is the first one trained
    assert len(enc.input_ids) == len(enc.labels) and enc.label == 1
    full = encode_for_training(tokenizer, RECORD, max_length=512, loss_on="all")
    assert full.labels[1:] == full.input_ids[1:]  # TALLRec's train_on_inputs=True (the first token: nothing
    assert full.labels[0] == IGNORE_INDEX  # before it predicts it)
    first = encode_for_training(tokenizer, RECORD, max_length=512, loss_on="answer_token")
    assert [t for t in first.labels if t != IGNORE_INDEX] == [answer_token_ids(tokenizer)[0]]


def test_long_prompts_lose_history_not_question_or_answer(tokenizer):
    many = [f"Movie number {i} (19{i % 100:02d})" for i in range(200)]
    record = TallrecRecord(RECORD.instruction, tallrec_input(many, many, "Fargo (1996)"), "No.")
    enc = encode_for_training(tokenizer, record, max_length=256)
    assert len(enc.input_ids) <= 256
    text = tokenizer.decode(enc.input_ids)
    assert text.endswith('Whether the user will like the target movie "Fargo (1996)"?\n\n### Response:\nNo.'
                         + tokenizer.eos_token)
    assert "Movie number 199" in text and "Movie number 0 " not in text  # the newest history is kept
    scoring = encode_for_scoring(tokenizer, record, max_length=200)
    assert len(scoring.input_ids) <= 200


def test_prompt_that_cannot_fit_is_a_clear_error(tokenizer):
    record = TallrecRecord(RECORD.instruction, "Whether " + "very " * 400 + "?", "Yes.")
    with pytest.raises(RaylibError, match="raise data.max_length"):
        encode_for_scoring(tokenizer, record, max_length=128, where="test.json record 7")


@pytest.mark.parametrize("loss_on", ["response", "answer_token"])
def test_answer_only_loss_equals_the_full_model_loss(tiny_model_dir, tokenizer, loss_on):
    """`causal_lm_loss` runs the LM head on the answer positions only; the loss is the model's own."""
    import torch

    from raylib.config import ModelConfig
    from raylib.encoding import collate_for_training
    from raylib.model import load_model
    from raylib.train.loss import causal_lm_loss

    model = load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    other = TallrecRecord(RECORD.instruction, tallrec_input(["Heat (1995)"], [], "Casino (1995)"), "No.")
    batch = collate_for_training([encode_for_training(tokenizer, r, 512, loss_on) for r in (RECORD, other)],
                                 tokenizer.pad_token_id)
    with torch.no_grad():
        ours = causal_lm_loss(model, batch, loss_on)
        reference = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")},
                          labels=batch["labels"]).loss
    assert torch.allclose(ours, reference, atol=1e-5)


def test_validation_loss_with_every_token_labelled(tiny_model_dir, tokenizer):
    """`loss_on: all` (BIGRec's and GenRec's `train_on_inputs`) labels the longest row from its first column; the
    per-record validation loss is each row's own whole-sequence loss (the first token is never predicted)."""
    import torch

    from raylib.config import ModelConfig
    from raylib.encoding import collate_for_training
    from raylib.model import load_model
    from raylib.train.loss import per_row_loss

    model = load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    other = TallrecRecord(RECORD.instruction, tallrec_input(["Heat (1995)"], [], "Casino (1995)"), "No.")
    items = [encode_for_training(tokenizer, r, 512, "all") for r in (RECORD, other)]
    batch = collate_for_training(items, tokenizer.pad_token_id)
    with torch.no_grad():
        rows = per_row_loss(model, batch)
        alone = [model(input_ids=torch.tensor([i.input_ids]), labels=torch.tensor([i.labels])).loss for i in items]
    assert torch.allclose(rows, torch.stack(alone), atol=1e-4)


def _input_of(prompt: str) -> str:
    return prompt.split("### Input:\n", 1)[1].rsplit("\n\n### Response:\n", 1)[0]


def test_parse_tallrec_input_gives_whole_items_back():
    from raylib.prompts import parse_tallrec_input, render_tallrec_input

    text = tallrec_input(["Godfather, The (1972)", "Heat (1995)"], [], "Fargo (1996)")
    assert parse_tallrec_input(text) == (['"Godfather, The (1972)"', '"Heat (1995)"'], [],
                                         'Whether the user will like the target movie "Fargo (1996)"?')
    book = ('User Preference: "Dune, Part One" written by Herbert, Frank, "Emma" written by Jane Austen\n'
            'User Unpreference: "Ulysses" written by James Joyce\n'
            'Whether the user will like the target book "Persuasion" written by Jane Austen?')
    liked, disliked, question = parse_tallrec_input(book)
    assert liked == ['"Dune, Part One" written by Herbert, Frank', '"Emma" written by Jane Austen']
    assert disliked == ['"Ulysses" written by James Joyce'] and question.endswith("Jane Austen?")
    assert render_tallrec_input(liked, disliked, question) == book
    assert parse_tallrec_input("I liked Heat, Casino\nWhether I will like Fargo?") is None


@pytest.mark.parametrize("n_liked, n_disliked", [(12, 12), (20, 3), (3, 20)])
def test_truncation_drops_whole_items_oldest_first_and_keeps_both_kinds(tokenizer, n_liked, n_disliked):
    from raylib.encoding import fit_prompt
    from raylib.prompts import parse_tallrec_input, quote_item

    liked = [f"Liked film, The number {i} ({1950 + i})" for i in range(n_liked)]  # commas inside titles
    disliked = [f"Disliked film, A number {i} ({1970 + i})" for i in range(n_disliked)]
    record = TallrecRecord(RECORD.instruction, tallrec_input(liked, disliked, "Fargo, The Movie (1996)"), "No.")
    full = len(tokenizer(alpaca_prompt(record.instruction, record.input))["input_ids"])
    budget = full - 90  # room for roughly half the history
    prompt = fit_prompt(tokenizer, record, budget)
    assert len(tokenizer(prompt)["input_ids"]) <= budget
    kept_liked, kept_disliked, question = parse_tallrec_input(_input_of(prompt))
    assert question == 'Whether the user will like the target movie "Fargo, The Movie (1996)"?'
    assert kept_liked and kept_disliked  # both kinds survive (before: every liked item went first)
    assert len(kept_liked) + len(kept_disliked) < n_liked + n_disliked
    # whole titles, the newest ones: what is kept is the end of each list
    assert kept_liked == [quote_item(t) for t in liked][-len(kept_liked):]
    assert kept_disliked == [quote_item(t) for t in disliked][-len(kept_disliked):]


def test_free_text_input_loses_whole_pieces_from_its_start(tokenizer):
    from raylib.encoding import TRUNCATION_MARK, fit_prompt

    pieces = [f"Some film number {i}" for i in range(40)]
    text = "I have watched " + ", ".join(pieces) + "\nWould I like Fargo?"
    record = TallrecRecord(RECORD.instruction, text, "Yes.")
    budget = len(tokenizer(alpaca_prompt(record.instruction, text))["input_ids"]) - 60
    kept = _input_of(fit_prompt(tokenizer, record, budget))
    assert kept.startswith(TRUNCATION_MARK) and kept.endswith("\nWould I like Fargo?")
    history = kept.removeprefix(TRUNCATION_MARK).removesuffix("\nWould I like Fargo?")
    original = ("I have watched " + ", ".join(pieces)).split(", ")
    assert history.split(", ") == original[-len(history.split(", ")):]  # whole pieces, the newest ones
