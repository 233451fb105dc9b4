"""leafrl.config and leafrl.settings: defaults, recipes, YAML, --set overrides, one doc per
setting, errors that name the setting; `leafrl recipes` and `leafrl config show`."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from leafrl import recipes
from leafrl.cli import app
from leafrl.config import (
    SFTConfig,
    TrainConfig,
    apply_overrides,
    field_docs,
    load_config,
    save_config,
    settings,
    to_dict,
)
from leafrl.errors import UserError
from leafrl.models.tiny import TinyConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "leafrl"


def test_sft_defaults_and_nested_sections():
    cfg = SFTConfig()
    assert cfg.lora.rank == 64 and cfg.lora.alpha == 128 and cfg.lora.dropout == 0.05  # the paper's LoRA
    assert cfg.finetune == "full" and cfg.tiny == TinyConfig()
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.weight_decay) == (2e-3, 0.9, 0.95, 0.01)
    assert (cfg.eval.every, cfg.eval.sampled_passes, cfg.eval.max_new_tokens, cfg.eval.seed) == (200, 0, 64, 42)


def test_yaml_then_given_then_overrides(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("steps: 7\noptim:\n  lr: 0.01\nlora:\n  rank: 8\n")
    cfg = load_config(SFTConfig, path=path, overrides=["optim.lr=3e-4", "tiny.text_layers=2"], steps=9, out=None)
    assert cfg.steps == 9  # a command option beats the file
    assert cfg.optim.lr == 3e-4 and cfg.lora.rank == 8 and cfg.lora.alpha == 128
    assert cfg.tiny.text_layers == 2 and cfg.out == "runs/sft"  # None: an option not given
    assert isinstance(cfg.optim.lr, float)


def test_a_recipe_sits_between_the_defaults_and_the_file(tmp_path):
    builtin = load_config(TrainConfig, recipe="builtin-conventions")
    assert builtin.model == builtin.data == "builtin:conventions"
    assert (builtin.steps, builtin.lora.rank, builtin.lora.dropout, builtin.optim.lr) == (120, 16, 0.0, 3e-4)
    assert builtin.optim.beta2 == TrainConfig().optim.beta2  # what the recipe leaves alone is the default
    (tmp_path / "f.yaml").write_text("lora:\n  rank: 4\n")
    cfg = load_config(TrainConfig, recipe="builtin-conventions", path=tmp_path / "f.yaml", overrides=["steps=3"])
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.steps) == (4, 32, 3)
    assert load_config(TrainConfig, recipe="paper") == TrainConfig()


def test_round_trip(tmp_path):
    cfg = apply_overrides(SFTConfig(), ["finetune=lora", "system=Be brief."])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(SFTConfig, path=tmp_path / "config.yaml") == cfg
    train = load_config(TrainConfig, recipe="builtin-conventions", overrides=["leaf.terms=local"])
    save_config(train, tmp_path / "train.yaml")
    assert load_config(TrainConfig, path=tmp_path / "train.yaml") == train


@pytest.mark.parametrize("override, name", [
    ("nope=1", "nope"),
    ("lora.size=2", "lora.size"),
    ("steps=many", "steps"),
    ("optim.lr=true", "optim.lr"),
    ("steps", "steps"),
    ("steps=0", "steps"),
    ("steps.x=1", "steps"),
    ("finetune=half", "finetune"),
])
def test_bad_overrides_name_the_setting(override, name):
    with pytest.raises(UserError, match=name):
        apply_overrides(SFTConfig(), [override])


def test_a_check_of_a_class_outside_config_is_a_user_error():
    with pytest.raises(UserError, match="LeafConfig.terms"):
        apply_overrides(TrainConfig(), ["leaf.terms=sideways"])
    with pytest.raises(UserError, match="TinyConfig: window_seconds"):
        apply_overrides(SFTConfig(), ["tiny.hop_length=700"])


def test_unknown_key_in_yaml_and_missing_files(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(UserError, match="stepz"):
        load_config(SFTConfig, path=path)
    with pytest.raises(UserError, match="nowhere.yaml"):
        load_config(TrainConfig, path=tmp_path / "nowhere.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(TrainConfig, path=tmp_path / "list.yaml")
    with pytest.raises(UserError, match="recipe 'nope': no such train recipe; known: .*builtin-conventions"):
        load_config(TrainConfig, recipe="nope")


def test_every_recipe_loads_into_its_config():
    found = recipes.available()
    assert {r.kind for r in found} == {"train", "sft"} and all(r.summary for r in found)
    for r in found:
        cfg = load_config({"train": TrainConfig, "sft": SFTConfig}[r.kind], recipe=r.name)
        assert set(yaml.safe_load(r.path.read_text()) or {}) <= set(to_dict(cfg))
    names = {r.name for r in found if r.kind == "train"}
    assert {"builtin-conventions", "paper"} <= names and any(n.startswith("paper-") for n in names)
    for name in {n for n in names if n.startswith("paper-")}:  # a paper setting: the paper's values, a model and data
        cfg = load_config(TrainConfig, recipe=name)
        assert dataclasses.replace(cfg, model=None, data=None) == TrainConfig() and cfg.model and cfg.data


def test_builtin_is_the_recipe_builtin_name():
    assert recipes.name_of(None, None) == "builtin-conventions"
    assert recipes.name_of(None, "conventions") == recipes.name_of("builtin-conventions", None)
    with pytest.raises(UserError, match="give one"):
        recipes.name_of("paper", "conventions")


def test_every_setting_has_a_one_line_doc():
    for cls in (TrainConfig, SFTConfig):
        for s in settings(cls()):
            assert s.doc and len(s.doc) <= 110, (cls.__name__, s.name, s.doc)
    assert field_docs(TrainConfig)["steps"].startswith("RL steps")
    # a subclass's doc wins over its base's, the base's serves where the subclass has none
    from leafrl.config import SFTOptimConfig

    docs = field_docs(SFTOptimConfig)
    assert docs["lr"].startswith("Peak learning rate (a model trained from scratch")
    assert docs["beta2"] == "Adam's beta2 (paper: 0.95)."


def test_defaults_live_in_the_config_classes_only():
    """The functions that used to carry their own defaults (sampled-eval temperature, top-p, seed,
    SFT's Adam betas) take them from the config: no keyword default for them remains."""
    from leafrl.eval.evaluate import evaluate

    params = inspect.signature(evaluate).parameters
    for name in ("sampled_passes", "temperature", "top_p", "seed", "batch_size"):
        assert params[name].default is inspect.Parameter.empty, name
    source = (SRC / "sft.py").read_text()
    assert "betas=(0.9" not in source and "o.beta1, o.beta2" in source
    tree = ast.parse((SRC / "trainer.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == 42]  # the eval seed


def test_recipes_and_config_show_commands(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["recipes"], terminal_width=200)
    assert result.exit_code == 0 and "builtin-conventions" in result.output and "paper" in result.output
    result = runner.invoke(app, ["config", "show"], terminal_width=250)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "lora.rank" in x)
    assert "16" in line and "64" in line and "LoRA rank r" in line  # value, default, doc
    assert len([x for x in result.output.splitlines() if x.startswith("│ ") and "." in x.split("│")[1]]) > 30
    result = runner.invoke(app, ["config", "show", "--recipe", "paper", "--set", "optim.lr=1e-4", "--yaml"])
    assert result.exit_code == 0
    shown = yaml.safe_load(result.output)
    assert shown["optim"]["lr"] == 1e-4 and shown["lora"]["rank"] == 64
    (tmp_path / "shown.yaml").write_text(result.output)  # --yaml prints a file --config takes back
    assert load_config(TrainConfig, path=tmp_path / "shown.yaml") == apply_overrides(TrainConfig(), ["optim.lr=1e-4"])
    result = runner.invoke(app, ["config", "show", "--sft"], terminal_width=250)
    assert result.exit_code == 0 and "align_steps" in result.output and "finetune" in result.output
