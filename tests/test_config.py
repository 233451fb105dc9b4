"""leafrl.config: defaults, YAML, --set overrides, errors that name the setting."""

import pytest

from leafrl.config import SFTConfig, apply_overrides, load_config, save_config
from leafrl.models.tiny import TinySize


def test_sft_defaults_and_nested_sections():
    cfg = SFTConfig()
    assert cfg.lora_settings.rank == 64 and cfg.lora_settings.alpha == 128  # the paper's LoRA
    assert cfg.lora_settings.dropout == 0.05
    assert cfg.tiny == TinySize()


def test_yaml_then_given_then_overrides(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("steps: 7\nlr: 0.01\nlora_settings:\n  rank: 8\n")
    cfg = load_config(SFTConfig, path, ["lr=3e-4", "tiny.text_layers=2"], steps=9, out=None)
    assert cfg.steps == 9  # a CLI option beats the file
    assert cfg.lr == 3e-4 and cfg.lora_settings.rank == 8 and cfg.lora_settings.alpha == 128
    assert cfg.tiny.text_layers == 2
    assert isinstance(cfg.lr, float)


def test_round_trip(tmp_path):
    cfg = apply_overrides(SFTConfig(), ["lora=true", "system=Be brief."])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(SFTConfig, tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override, name", [
    ("nope=1", "nope"),
    ("lora_settings.size=2", "lora_settings.size"),
    ("steps=many", "steps"),
    ("lr=true", "lr"),
    ("steps", "steps"),
    ("steps=0", "steps"),
    ("steps.x=1", "steps"),
])
def test_bad_overrides_name_the_setting(override, name):
    with pytest.raises(ValueError, match=name):
        apply_overrides(SFTConfig(), [override])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        load_config(SFTConfig, path)
