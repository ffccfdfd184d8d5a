"""RecCocktail: the weight-space mix of two LoRA adapters, its exact fold into one PEFT adapter, the entropy
objective, the validation-only search, bad inputs, and the whole job on a tiny random LLaMA."""

from __future__ import annotations

import json

import pytest
import torch

from raylib import RaylibError


def make_adapter(model_dir, folder, seed, r=4, targets=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_model_dir, root / "base", 1), make_adapter(tiny_model_dir, root / "ingredient", 2)


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def base_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir)


def test_weights_one_zero_reproduce_each_adapter(tiny_model_dir, adapters):
    from peft import PeftModel

    from raylib.methods.cocktail.merging import MixedLora, load_two

    ids = torch.randint(0, 1000, (2, 9))
    mixed = MixedLora(load_two(base_model(tiny_model_dir), *adapters))
    for weights, folder in (([1.0, 0.0], adapters[0]), ([0.0, 1.0], adapters[1])):
        mixed.set_weights(weights)
        alone = PeftModel.from_pretrained(base_model(tiny_model_dir), folder)
        torch.testing.assert_close(logits_of(mixed, ids), logits_of(alone, ids), rtol=0, atol=1e-5)


def test_the_folded_adapter_is_the_mixed_model_and_loads_with_peft(tiny_model_dir, adapters, tmp_path):
    from peft import PeftModel

    from raylib.methods.cocktail.merging import MixedLora, fold, load_two, save_folded

    ids = torch.randint(0, 1000, (2, 9))
    mixed = MixedLora(load_two(base_model(tiny_model_dir), *adapters))
    torch.manual_seed(3)
    w = torch.rand(len(mixed.names))
    mixed.set_weights(torch.stack([w, 1 - w], dim=1))  # a different mix in every module
    expected = logits_of(mixed, ids)
    folded = fold(mixed)
    torch.testing.assert_close(logits_of(folded, ids), expected, rtol=1e-5, atol=1e-5)
    save_folded(folded, "cocktail", tmp_path / "cocktail")
    config = json.loads((tmp_path / "cocktail" / "adapter_config.json").read_text())
    assert config["r"] == 8  # two rank-4 adapters, concatenated: exact
    loaded = PeftModel.from_pretrained(base_model(tiny_model_dir), tmp_path / "cocktail")
    torch.testing.assert_close(logits_of(loaded, ids), expected, rtol=1e-5, atol=1e-5)


def test_entropy_minimisation_trains_only_the_mixing_logits_and_lowers_entropy(tiny_model_dir, adapters):
    from raylib.methods.cocktail.merging import MixedLora, answer_entropy, load_two

    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (8, 12))
    mixed = MixedLora(load_two(base_model(tiny_model_dir), *adapters))
    assert [n for n, p in mixed.named_parameters() if p.requires_grad] == ["logits"]
    optimizer = torch.optim.Adam([mixed.logits], lr=0.5)
    entropies = []
    for _ in range(15):
        loss = answer_entropy(mixed(input_ids=ids).logits, (5, 7))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        entropies.append(float(loss))
    assert entropies[-1] < entropies[0]
    assert torch.allclose(mixed.weights().sum(-1), torch.ones(len(mixed.names)))


def test_adapters_that_cannot_mix_are_refused(tiny_model_dir, adapters, tmp_path):
    from raylib.methods.cocktail.merging import check_compatible

    other_rank = make_adapter(tiny_model_dir, tmp_path / "r8", 4, r=8)
    with pytest.raises(RaylibError, match="rank"):
        check_compatible(adapters[0], other_rank)
    other_modules = make_adapter(tiny_model_dir, tmp_path / "qk", 5, targets=("q_proj", "k_proj"))
    with pytest.raises(RaylibError, match="target modules"):
        check_compatible(adapters[0], other_modules)
    with pytest.raises(RaylibError, match="not a PEFT adapter"):
        check_compatible(adapters[0], tmp_path)


def test_a_coefficient_file_for_other_modules_is_refused(tmp_path):
    from raylib.methods.cocktail.merging import load_coefficients, save_coefficients

    save_coefficients(["a.q_proj", "a.v_proj"], torch.tensor([[0.3, 0.7], [0.5, 0.5]]), tmp_path / "mix.json")
    assert load_coefficients(tmp_path / "mix.json", ["a.q_proj", "a.v_proj"]).shape == (2, 2)
    with pytest.raises(RaylibError, match="does not match the adapters' LoRA modules"):
        load_coefficients(tmp_path / "mix.json", ["a.q_proj", "b.v_proj"])


def test_a_failed_fold_leaves_the_existing_adapter(tmp_path):
    from raylib.methods.cocktail.merging import save_folded

    (tmp_path / "cocktail").mkdir()
    (tmp_path / "cocktail" / "adapter_model.safetensors").write_bytes(b"old")

    class Broken:
        def save_pretrained(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_folded(Broken(), "cocktail", tmp_path / "cocktail")
    assert (tmp_path / "cocktail" / "adapter_model.safetensors").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cocktail"]


def test_domains_split_and_cold_start_items_never_trained(tmp_path):
    from raylib.methods.cocktail.config import DomainConfig
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.cocktail.domains import load_domain, target_text, warm_cold
    from raylib.data.records import sample_records

    movie = load_domain(DomainConfig(name="movie"), DataConfig())
    assert movie.split == "user"
    assert not {r.user_id for r in movie.test} & {r.user_id for r in movie.train}
    train = sample_records(movie.train, 64, 0)
    warm, cold = warm_cold(movie.test, train, 50, 0)
    seen = " ".join(r.input for r in train)
    assert all(target_text(r) not in seen for r in cold) and all(target_text(r) in seen for r in warm)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(RaylibError, match="holds no records|no record"):
        load_domain(DomainConfig(name="book", source="files", file=str(tmp_path / "empty.json")), DataConfig())


def test_no_unlabelled_prompts_left_is_one_line_before_any_training(tmp_path):
    from raylib.methods.cocktail.pipeline import run_cocktail
    from raylib.config import from_dict
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.data.records import TallrecRecord, write_records

    # 6 records without users: 1 test, 1 valid, 4 training records, of which one third (1) is kept unlabelled
    write_records([TallrecRecord("i", f"record {k}", "Yes." if k % 2 else "No.") for k in range(6)],
                  tmp_path / "tiny.json")
    job = from_dict(CocktailJobConfig, {"domains": [{"name": "tiny", "source": "files", "file": str(tmp_path / "tiny.json")}],
                                        "target": "tiny", "output_dir": str(tmp_path / "run")})
    with pytest.raises(RaylibError, match="No unlabelled tiny prompts for the entropy merge"):
        run_cocktail(job)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_the_two_adapters_learn_from_disjoint_users_and_cold_means_neither_saw_it():
    """The default job's domains are genres of the embedded MovieLens (no ../shared needed), disjoint by target
    movie; each domain's training pool is cut by user into the base spirit's, the ingredient's and the unlabelled
    prompts' parts, and a cold-start test record's target is in nothing either adapter trained on."""
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.cocktail.domains import target_text, three_pools, warm_cold
    from raylib.methods.cocktail.pipeline import base_spirit_inputs, load_domains
    from raylib.data.records import sample_records

    job = CocktailJobConfig()
    domains = load_domains(job)
    assert list(domains) == ["drama", "action"] and job.target == "action"
    assert not {r.item_id for r in domains["drama"].train} & {r.item_id for r in domains["action"].train}
    pools = three_pools(domains["action"].train, job.data.seed)
    users = [{r.user_id for r in part} for part in (pools.base, pools.ingredient, pools.unlabelled)]
    assert all(users) and not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    _, base_train, _ = base_spirit_inputs(job, domains)
    ingredient = list(sample_records(pools.ingredient, job.data.train_samples, job.data.seed))
    pairs = lambda records: {(r.user_id, r.item_id) for r in records}  # noqa: E731
    assert not pairs(base_train) & pairs(ingredient)
    action = domains["action"].train  # records as columns: their items without making any text
    action_items = set(action.timelines.item_ids[action.items])
    assert {r.user_id for r in base_train if r.item_id in action_items} <= users[0]
    warm, cold = warm_cold(domains["action"].test, ingredient + base_train, 0, 0)
    seen = " ".join(r.input for r in ingredient + base_train)
    assert cold and all(target_text(r) not in seen for r in cold)


def test_fields_recCocktail_does_not_read_are_refused_by_name():
    from raylib.config import load_config
    from raylib.methods.cocktail.config import CocktailJobConfig

    for override, field in (("skip_zero_shot=true", "skip_zero_shot"), ("data.test_samples=100", "data.test_samples"),
                            ("data.source=files", "data.source")):
        with pytest.raises(RaylibError, match=f"RecCocktail does not read {field}"):
            load_config(CocktailJobConfig, None, [override])


def test_the_tune_search_sees_validation_labels_only(tiny_model_dir, adapters, tmp_path, monkeypatch):
    """The search objective's only records are the validation split: the test split never reaches it."""
    import raylib.tune
    from raylib.methods.cocktail.pipeline import tune_mix
    from raylib.config import from_dict
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.data.records import TallrecRecord

    seen = {}

    def fake_search(objective, space, **kwargs):
        seen.update(kwargs["constants"], space=space)
        return {"best_params": {k: 0.0 for k in space} | {"global": 0.5}, "best_value": 0.5}

    monkeypatch.setattr(raylib.tune, "search", fake_search)
    job = from_dict(CocktailJobConfig, {"model": {"name": str(tiny_model_dir)}, "domains": [{"name": "movie"}],
                                        "target": "movie"})
    valid = [TallrecRecord("i", f"valid {k}", "Yes." if k % 2 else "No.") for k in range(6)]
    found = tune_mix(job, adapters[0], adapters[1], valid, tmp_path)
    assert [r["input"] for r in seen["valid"]] == [r.input for r in valid]
    assert set(seen["space"]) == {"global", "group0", "group1", "group2", "group3"}
    assert len(found["weights"]) == len(seen["names"])
    # the module names come from the model built on the meta device (no weights read): the real mix's, in order
    from raylib.methods.cocktail.merging import MixedLora, load_two

    assert seen["names"] == MixedLora(load_two(base_model(tiny_model_dir), *adapters)).names


# The whole job (two domains, both LoRAs, the entropy merge, Tune, every variant scored, the mixes published and
# the base spirit reused) runs inside the leaderboard on a synthetic dataset: tests/test_leaderboard.py.
