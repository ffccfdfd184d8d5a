"""Model resolution: the embedded name, local folders, hub ids and clear errors; LoRA defaults (the dtype rule:
test_placement)."""

import pytest

from raylib import RaylibError
from raylib.assets import embedded_gguf_path, embedded_model_dir
from raylib.config import LoraSettings, ModelConfig
from raylib.model import add_lora, load_model, resolve_model_path


def test_embedded_model_is_cached_safetensors():
    assert embedded_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = embedded_model_dir()
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert not list(folder.glob("*.bin"))  # safetensors only
    assert resolve_model_path("smollm2-135m") == str(folder)


def test_names_resolve_or_fail_clearly(tiny_model_dir, tmp_path):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_path("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"  # left to transformers
    with pytest.raises(RaylibError, match="Unknown model 'llama-7b'"):
        resolve_model_path("llama-7b")
    with pytest.raises(RaylibError, match="does not exist"):
        resolve_model_path("./no/such/model")
    with pytest.raises(RaylibError, match="has no config.json"):
        resolve_model_path(str(tmp_path))


def test_lora_on_q_and_v(tiny_model_dir):
    model = add_lora(load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32")), LoraSettings())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    with pytest.raises(RaylibError, match="match no module"):
        add_lora(load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32")), LoraSettings(target_modules=["w9"]))
