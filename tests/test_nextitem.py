"""BIGRec / GenRec: next-title SFT through the shared trainer, beam search, and the whole job on tiny parts."""

from __future__ import annotations

from raylib.methods.nextitem.config import BigrecJobConfig, GenrecJobConfig
from raylib.prompts import GENREC_INSTRUCTIONS, answer_text, bigrec_prompt, genrec_prompt
from raylib.methods.nextitem.task import BIGREC_TEMPLATE


def test_prompts_quote_titles_and_answers_parse_back():
    prompt = bigrec_prompt(["Alien (1979)", "Brazil (1985)"])
    assert 'watched the following movies before: "Alien (1979)", "Brazil (1985)"' in prompt
    assert prompt.endswith("### Response:\n")
    assert len(GENREC_INSTRUCTIONS) >= 5 and len({genrec_prompt(["X"], t) for t in range(len(GENREC_INSTRUCTIONS))}) \
        == len(GENREC_INSTRUCTIONS)
    assert answer_text(' "Heat (1995)"\nmore') == "Heat (1995)"
    assert answer_text("") == "" and answer_text('"') == ""


def test_genrec_prompt_is_its_codes_layout_and_the_answer_starts_on_a_title_token(tokenizer):
    """GenRec's rec.py: instruction, "### input:" with bare titles joined by commas, "### Response:", bare title."""
    from raylib.methods.nextitem.task import GenrecTask

    prompt = genrec_prompt(["Alien (1979)", "Brazil (1985)"], template=1)
    assert prompt == ("Predict the next movie for the user based on their viewing patterns.\n\n"
                      "### input:\nAlien (1979),Brazil (1985)\n\n### Response:\n")
    assert GenrecTask.answer("Heat (1995)") == "Heat (1995)"  # unquoted, as its data files write it
    # The prompt's tokens are a prefix of prompt + answer's, and the answer begins with the title's own token,
    # not with a lone space the model would have to learn to write first.
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(prompt + "Heat (1995)", add_special_tokens=False)["input_ids"]
    assert whole_ids[:len(prompt_ids)] == prompt_ids
    assert tokenizer.decode(whole_ids[len(prompt_ids)]).startswith("He")
    assert tokenizer.decode(prompt_ids[-1]).strip(" ") != ""


def test_genrec_draws_one_template_per_training_example():
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data, title_records

    data = load_sequence_data(SequenceDataConfig(valid_samples=20, test_samples=20))
    records = title_records(data.train[:200], data, "genrec", num_templates=5, seed=0)
    assert {r["template"] for r in records} == set(range(5))
    assert title_records(data.train[:200], data, "genrec", num_templates=5, seed=0) == records  # seeded
    # Test prompts mix the instructions too, as GenRec's test files do.
    assert len({r["template"] for r in title_records(data.test, data, "genrec", num_templates=7, seed=2)}) > 1
    assert {r["template"] for r in title_records(data.test, data)} == {BIGREC_TEMPLATE}  # BIGRec's one prompt


def test_beam_search_returns_num_beams_distinct_candidates(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from raylib.generation import beam_search

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [bigrec_prompt(["Alien (1979)"]), bigrec_prompt(["Brazil (1985)", "Dune (1984)", "Heat (1995)"])]
    batched = beam_search(model, tokenizer, prompts, num_beams=4, max_new_tokens=6, batch_size=2, progress=False)
    assert [len(b) for b in batched] == [4, 4]
    assert all(len(set(b)) == 4 for b in batched)
    # the shared-prompt cache (the default) gives exactly the beams of plain `generate`, one prompt at a time
    plain = [beam_search(model, tokenizer, [p], 4, 6, 1, progress=False, shared_prompt=False)[0] for p in prompts]
    assert plain == batched


def test_beam_search_falls_back_to_plain_generate_once_where_transformers_internals_differ(tiny_model_dir, tokenizer,
                                                                                           monkeypatch):
    """The shared-prompt cache subclasses transformers' cache layer; a transformers whose internals differ (here:
    the layer class is gone) gets one warning and plain `generate`'s beams, not a crash."""
    import pytest
    from transformers import AutoModelForCausalLM

    import raylib.generation as generation

    def changed_internals():
        raise AttributeError("module 'transformers.cache_utils' has no attribute 'DynamicLayer'")

    monkeypatch.setattr(generation, "_shared_prompt_layer", changed_internals)
    monkeypatch.setattr(generation, "_SHARED_PROMPT_FAILED", [])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [bigrec_prompt(["Alien (1979)"]), bigrec_prompt(["Brazil (1985)", "Dune (1984)"])]
    with pytest.warns(RuntimeWarning, match="falls back to plain generate") as warned:
        beams = generation.beam_search(model, tokenizer, prompts, 3, 5, batch_size=1, progress=False)
    assert len(warned) == 1  # once, not per batch
    assert beams == generation.beam_search(model, tokenizer, prompts, 3, 5, batch_size=1, progress=False,
                                           shared_prompt=False)


def test_constrained_beams_spell_only_catalogue_answers(tiny_model_dir, tokenizer):
    """A random model writes anything; with the catalogue's token trie every beam is a catalogue answer, with the
    shared-prompt cache as without it."""
    from transformers import AutoModelForCausalLM

    from raylib.generation import TokenTrie, beam_search

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    answers = ['"Alien (1979)"', '"Aliens (1986)"', '"Brazil (1985)"', '"Dune (1984)"', '"Heat (1995)"']
    trie = TokenTrie.of_answers(tokenizer, answers, bigrec_prompt([]))
    prompts = [bigrec_prompt(["Alien (1979)"]), bigrec_prompt(["Brazil (1985)", "Dune (1984)"])]
    free = beam_search(model, tokenizer, prompts, num_beams=4, max_new_tokens=6, batch_size=2, progress=False)
    assert not any(text in answers for beams in free for text in beams)
    constrained = beam_search(model, tokenizer, prompts, 4, 6, 2, progress=False, allowed=trie)
    assert all(len(set(beams)) == 4 and set(beams) <= set(answers) for beams in constrained)
    plain = [beam_search(model, tokenizer, [p], 4, 6, 1, progress=False, shared_prompt=False, allowed=trie)[0]
             for p in prompts]
    assert plain == constrained


def sentencepiece_style_tokenizer():
    """A LLaMA-1/2-style tokenizer built here (no download): text starts with a word-boundary mark "▁" (a space
    made visible), which a text after a newline does not get."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    corpus = [bigrec_prompt(["Alien (1979)", "Heat (1995)"]) + f'"{t}"' for t in
              ("Alien (1979)", "Aliens (1986)", "Brazil (1985)", "Dune (1984)", "Heat (1995)")] * 20
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def test_the_trie_spells_answers_as_training_tokenizes_them_after_the_prompt():
    """With a SentencePiece-style tokenizer a title alone starts with "▁", after the prompt's newline it does not:
    the trie must hold the tokens the tuned model learned to write, or constrained beams force one it never
    emits."""
    from raylib.encoding import encode_pair
    from raylib.generation import TokenTrie

    tokenizer = sentencepiece_style_tokenizer()
    answers = ['"Alien (1979)"', '"Dune (1984)"']
    prompt = bigrec_prompt(["Heat (1995)"])
    trie = TokenTrie.of_answers(tokenizer, answers, bigrec_prompt([]))
    for answer in answers:
        trained = encode_pair(tokenizer, prompt, answer)
        learned = trained.input_ids[len(trained.input_ids) - sum(1 for t in trained.labels if t != -100):]
        alone = tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert learned[0] != alone[0]  # the difference this test is about
        for k in range(len(learned)):  # every learned token is allowed after the one before it
            assert learned[k] in trie.next_tokens(learned[:k])


# BIGRec's and GenRec's whole jobs (SFT, beams constrained to the catalogue, grounding, SASRec, popularity, gamma by
# Ray Tune, published for serving, every step on a GPU worker) run inside the leaderboard on a synthetic dataset:
# tests/test_leaderboard.py.


def test_the_authors_recipes_train_on_the_whole_prompt():
    """BIGRec's README passes `--train_on_inputs`; GenRec's rec.py defaults to it: the history titles are training
    targets too. The recipes that say they are the authors' do the same (the laptop ones keep the answer only)."""
    import torch

    from raylib.config import load_config
    from raylib.methods.nextitem.task import BigrecTask
    from raylib.train.task import WorkerContext

    for cls, path in ((BigrecJobConfig, "jobs/configs/bigrec.yaml"), (GenrecJobConfig, "jobs/configs/genrec.yaml")):
        job = load_config(cls, path, [])
        assert job.train.loss_on == "all", path
    job = load_config(BigrecJobConfig, "jobs/configs/bigrec.yaml", [])
    task = BigrecTask(WorkerContext(job, rank=0, world=1, device=torch.device("cpu"), dtype=torch.float32))
    (item,) = task.encode([{"history": ["Alien (1979)"], "target": "Heat (1995)", "template": BIGREC_TEMPLATE}], "t")
    assert -100 not in item.labels[1:]  # every prompt token is a target (the first has nothing before it)


def test_gamma_is_searched_over_the_authors_range():
    """BIGRec's adjust scripts try gamma in 0, 0.01 ... 0.99, 1 ... 99; ours searches 0.01-100 log-uniformly."""
    from raylib.methods.nextitem.config import GroundingSettings

    g = GroundingSettings()
    assert g.gamma_low <= 0.01 and g.gamma_high >= 99
