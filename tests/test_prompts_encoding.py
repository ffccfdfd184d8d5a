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
    assert full.labels == full.input_ids  # TALLRec's train_on_inputs=True
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
