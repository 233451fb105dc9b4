"""LeafGRPOTrainer: TRL's GRPOTrainer with LEAF's advantages, on CPU with a tiny text model.
It trains and logs LEAF's statistics; at fork_budget 0 its advantages are TRL's own GRPO ones;
the rows of several processes gathered and sliced back equal one process's."""

import pytest
import torch

pytest.importorskip("trl")

from conftest import assert_trls_grpo, torchrun_two  # noqa: E402
from leafrl.advantages import LeafConfig, leaf_advantages  # noqa: E402
from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer, leaf_rows  # noqa: E402
from leafrl.token_credit import leafrl_advantages  # noqa: E402

PROMPTS = ["Translate into German: the red dog", "Translate into German: three cars", "How many apples?",
           "Translate into German: a blue house"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def save_text_model(path, sharpness=1.0):
    """A tiny Qwen2 text model; ``sharpness`` scales its output layer (random logits are nearly
    flat, so even at a low temperature its samples share no prefix unless they are sharpened)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from conftest import TEXTS
    from leafrl.models.tiny import train_tokenizer

    tok = train_tokenizer(TEXTS + PROMPTS, 320)
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return save_text_model(tmp_path_factory.mktemp("trl-model"))


def length_reward(completions, **kwargs):
    """Graded from the first random response: longer is better, up to 20 characters."""
    return [min(len(c[0]["content"]), 20) / 20 for c in completions]


def make_trainer(path, out, batch=8, **leaf):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = LeafGRPOConfig(output_dir=str(out), use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
                          disable_tqdm=True, seed=0, max_steps=2, per_device_train_batch_size=batch, num_generations=4,
                          max_completion_length=8, learning_rate=1e-2, gradient_checkpointing=False,
                          shuffle_dataset=False, **{"beta": 0.02, **leaf})
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS * 4])
    return LeafGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=length_reward, args=args,
                           train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(path),
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


def test_trains_and_logs_leaf_statistics(tiny_text, tmp_path):
    trainer = make_trainer(tiny_text, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logged = trainer.state.log_history[0]
    assert {"leaf/fork_fire_rate", "leaf/nodes_per_group", "leaf/nonzero_adv_frac"} <= set(logged)
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved


def test_fork_budget_0_gives_trls_grpo_advantages(tmp_path, trls_advantages):
    """No boundary: one span per response, LEAF's advantage of every token is the response's
    z-scored reward, which is TRL's GRPO advantage (TRL adds 1e-4 to the std)."""
    # a sharp model: its completions share prefixes, so fork_budget 2 would not match (tested below)
    trainer = make_trainer(save_text_model(tmp_path / "sharp", sharpness=40.0), tmp_path, temperature=0.7,
                           fork_budget=0)
    trainer.model.train()  # as in a training step
    batch = trainer._generate_and_score_completions([{"prompt": [{"role": "user", "content": p}]}
                                                     for p in PROMPTS[:2] for _ in range(4)])
    assert_trls_grpo(batch, trls_advantages)


class TwoProcesses:
    """What accelerate does for process ``index`` of 2 whose rows are ``shares``: gather
    concatenates every process's tensor, padded to the longest."""

    def __init__(self, shares, index):
        self.shares, self.process_index = shares, index
        self.calls = 0

    def pad_across_processes(self, x, dim, pad_index):
        return x  # padded in gather, where every share is known

    def gather(self, x):
        name = ("ids", "mask", "surprisal")[self.calls % 3]
        self.calls += 1
        parts = [share[name].to(x.dtype) for share in self.shares]
        width = max(p.shape[1] for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


def test_trains_with_leaf_or_leafrls_credit_without_a_surprisal_pass(tiny_text, tmp_path, monkeypatch):
    original = LeafGRPOTrainer._get_per_token_logps_and_entropies
    no_grad_passes = []
    monkeypatch.setattr(LeafGRPOTrainer, "_get_per_token_logps_and_entropies",
                        lambda self, *a, **k: no_grad_passes.append(not torch.is_grad_enabled()) or original(self, *a,
                                                                                                             **k))
    counts = {}
    for algo in ("leaf", "leafrl"):
        no_grad_passes.clear()
        trainer = make_trainer(tiny_text, tmp_path / algo, algo=algo)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        counts[algo] = sum(no_grad_passes)
        assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert trainer.leaf is None
    assert counts["leafrl"] == counts["leaf"]  # no surprisal pass for either (TRL's reference pass stays)
    with pytest.raises(ValueError, match="algo"):
        LeafGRPOConfig(output_dir=str(tmp_path), use_cpu=True, algo="ppo")


def test_groups_split_across_processes_get_the_advantages_of_one_process():
    """TRL may put a prompt's completions on two processes: each process's LEAF rows, gathered
    and sliced back, equal the rows of the whole batch computed at once."""
    gen = torch.Generator().manual_seed(0)
    k, n = 4, 12  # 3 groups of 4 over 2 processes of 6 rows: group 1 is split
    base = torch.randint(0, 30, (1, 9), generator=gen).repeat(n, 1)
    own = torch.randint(0, 30, (n, 9), generator=gen)
    leave = torch.randint(1, 9, (n, 1), generator=gen)
    ids = torch.where(torch.arange(9) < leave, base, own)
    mask = torch.arange(9) < torch.randint(3, 10, (n, 1), generator=gen)
    mask[:6, 7:] = False  # process 0's completions are shorter: it pads to 7 columns, process 1 to 9
    surprisal = torch.rand(n, 9, generator=gen)
    rewards = torch.rand(n, generator=gen)
    rewards[5] = float("nan")  # one unscorable completion
    filled = rewards.clone()
    filled[5] = torch.nanmean(rewards[4:8])
    whole, _ = leaf_advantages(ids, mask, surprisal, filled, torch.arange(n) // k, LeafConfig())
    whole[5] = 0.0
    shares = [{"ids": ids[:6, :7], "mask": mask[:6, :7], "surprisal": surprisal[:6, :7]},
              {"ids": ids[6:], "mask": mask[6:], "surprisal": surprisal[6:]}]
    for index, rows in enumerate((slice(0, 6), slice(6, 12))):
        share = shares[index]
        adv, stats = leaf_rows(TwoProcesses(shares, index), share["ids"], share["mask"], share["surprisal"], rewards,
                               k, LeafConfig())
        width = share["ids"].shape[1]
        torch.testing.assert_close(adv, whole[rows, :width])
        assert stats["fork_fire_rate"] >= 0
    whole = leafrl_advantages(ids, mask, filled, torch.arange(n) // k)  # leafrl's credit: the same gathering
    whole[5] = 0.0
    for index, rows in enumerate((slice(0, 6), slice(6, 12))):
        share = shares[index]
        adv, stats = leaf_rows(TwoProcesses(shares, index), share["ids"], share["mask"], None, rewards, k, None)
        torch.testing.assert_close(adv, whole[rows, :share["ids"].shape[1]])
        assert stats == {}


SCRIPT = """
import sys, json, torch
sys.path.insert(0, {tests!r})
from test_trl import make_trainer
trainer = make_trainer({model!r}, {out!r}, batch=6)  # 12 rows = 3 groups: one is split
seen = []
original = type(trainer)._generate_and_score_completions
def recording(self, inputs):
    out = original(self, inputs)
    seen.append(out["advantages"].shape[0])
    return out
type(trainer)._generate_and_score_completions = recording
trainer.train()
if trainer.accelerator.is_main_process:
    json.dump({{"processes": trainer.accelerator.num_processes, "rows": seen,
               "log": trainer.state.log_history[0]}}, open({result!r}, "w"))
"""


@pytest.mark.slow
def test_two_processes_train_with_groups_split_between_them(tiny_text, tmp_path):
    """torchrun, 2 CPU processes (gloo): 3 groups of 4 over 2 x 6 rows, so one group has rows on
    both; each process keeps its 6 rows and the run logs LEAF's statistics."""
    from pathlib import Path

    summary = torchrun_two(SCRIPT.format(tests=str(Path(__file__).parent), model=str(tiny_text),
                                         out=str(tmp_path / "out"), result=str(tmp_path / "result.json")),
                           tmp_path)
    assert summary["processes"] == 2 and set(summary["rows"]) == {6}
    assert "leaf/fork_fire_rate" in summary["log"]


def test_with_shared_prefixes_leaf_gives_tokens_of_a_response_different_credit(tmp_path):
    """With a sharp model the K completions share prefixes, LEAF's boundaries fire, and its
    advantages vary along a response where TRL's GRPO gives every token one value."""
    trainer = make_trainer(save_text_model(tmp_path / "sharp", sharpness=40.0), tmp_path, temperature=0.7,
                           fork_budget=2)
    trainer.model.train()
    batch = trainer._generate_and_score_completions([{"prompt": [{"role": "user", "content": p}]}
                                                     for p in PROMPTS[:2] for _ in range(4)])
    adv, mask = batch["advantages"], batch["completion_mask"].bool()
    assert trainer._metrics["train"]["leaf/fork_fire_rate"][-1] > 0
    varies = [bool(row[m].unique().numel() > 1) for row, m in zip(adv, mask)]
    assert any(varies)


def test_a_saved_adapter_records_its_base_model_as_leafrl_commands_check_it(tiny_text, tmp_path):
    """The identity the trainer saves beside its LoRA (computed under the LoRA) is the bare base
    model's, so `leafrl eval --adapter` accepts it on that model and refuses it on another."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leafrl.errors import UserError
    from leafrl.identity import check_adapter, of_model

    trainer = make_trainer(tiny_text, tmp_path)
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "adapter_config.json").is_file()
    bare = of_model(str(tiny_text), AutoModelForCausalLM.from_pretrained(tiny_text),
                    AutoTokenizer.from_pretrained(tiny_text))
    assert check_adapter(tmp_path / "saved", "saved", bare) is None
    sharp = save_text_model(tmp_path / "sharp", sharpness=40.0)
    with pytest.raises(UserError, match="weights differ"):
        check_adapter(tmp_path / "saved", "saved", of_model(str(sharp), AutoModelForCausalLM.from_pretrained(sharp),
                                                            AutoTokenizer.from_pretrained(sharp)))


def test_leafs_surprisal_is_kept_while_sampling_and_equals_the_sampled_distributions(tiny_text, tmp_path,
                                                                                     monkeypatch):
    """The surprisal the logits processor keeps during TRL's generate is -log p of each sampled
    token under softmax(logits / T) with top-p 1 (TRL's own log-probs of the same completions, from
    a forward pass); the advantages are built from it without any pass of their own."""
    seen = {}
    original = LeafGRPOTrainer._generate_and_score_completions

    def recording(self, inputs):
        out = original(self, inputs)
        seen["drawn"] = self._sampled_surprisal
        return out

    passes = []
    real = LeafGRPOTrainer._get_per_token_logps_and_entropies
    monkeypatch.setattr(LeafGRPOTrainer, "_get_per_token_logps_and_entropies",
                        lambda self, *a, **k: passes.append(1) or real(self, *a, **k))
    trainer = make_trainer(tiny_text, tmp_path, temperature=0.7, top_p=1.0, beta=0.0)
    kept = {}
    real_rows = leaf_rows

    def keep(accelerator, ids, mask, surprisal, *rest):
        kept.update(ids=ids, mask=mask, surprisal=surprisal)
        return real_rows(accelerator, ids, mask, surprisal, *rest)

    monkeypatch.setattr("leafrl.integrations.trl.leaf_rows", keep)
    trainer.model.train()
    batch = trainer._generate_and_score_completions([{"prompt": [{"role": "user", "content": p}]}
                                                     for p in PROMPTS[:2] for _ in range(4)])
    assert passes == []  # no forward pass for the surprisal (beta 0: no reference pass either)
    ids, mask = batch["completion_ids"], batch["completion_mask"]
    with torch.no_grad():
        logp = real(trainer, trainer.model, torch.cat([batch["prompt_ids"], ids], 1),
                    torch.cat([batch["prompt_mask"], mask], 1), ids.size(1), batch_size=8)[0]
    m = mask.bool()
    # TRL's forward of left-padded rows numbers positions from the padding, generate from the first
    # real token: a few of the padded rows' values differ in the third decimal
    torch.testing.assert_close(kept["surprisal"][m], -logp[m], atol=2e-3, rtol=1e-3)
    assert (kept["surprisal"][~m] == 0).all() and kept["surprisal"][m].gt(0).all()
