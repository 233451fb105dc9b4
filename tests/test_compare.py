"""leafrl compare: the arms, the run states, and the report's numbers on synthetic runs with
known answers."""

import json

import pytest
import yaml

from leafrl.compare import Arm, parse_arms, plan, state_of, write_report
from leafrl.config import TrainConfig, save_config, to_dict


def test_parse_arms():
    arms = parse_arms("leaf,grpo,leaf:leaf.boundaries=trie:leaf.fork_budget=4")
    assert [a.algo for a in arms] == ["leaf", "grpo", "leaf"]
    assert arms[2].overrides == ("leaf.boundaries=trie", "leaf.fork_budget=4")
    assert arms[2].slug == "leaf+leaf.boundaries=trie+leaf.fork_budget=4"
    for bad in ("leaf", "leaf,leaf", "ppo,grpo", "leaf:fork_budget,grpo"):
        with pytest.raises(ValueError, match="--algos"):
            parse_arms(bad)


def test_plan_pairs_seeds_across_arms(tmp_path):
    runs = plan(TrainConfig(steps=3), parse_arms("leaf,grpo:leaf.fork_budget=1"), [0, 7], tmp_path)
    assert [(a.name, s, c.algo, c.seed) for a, s, c in runs] == [
        ("leaf", 0, "leaf", 0), ("leaf", 7, "leaf", 7), ("grpo:leaf.fork_budget=1", 0, "grpo", 0),
        ("grpo:leaf.fork_budget=1", 7, "grpo", 7)]
    assert runs[3][2].out == str(tmp_path / "runs" / "grpo+leaf.fork_budget=1" / "seed-7")
    assert runs[3][2].leaf.fork_budget == 1 and runs[0][2].steps == 3


def test_state_of_reuses_only_the_same_settings(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), steps=3)
    assert state_of(cfg) == "new"
    save_config(cfg, tmp_path / "r" / "config.yaml")
    assert state_of(cfg) == "resume"  # started, no checkpoint yet: resumed from step 0 in place
    (tmp_path / "r" / "summary.json").write_text("{}")
    assert state_of(cfg) == "done"
    with pytest.raises(ValueError, match="other settings"):
        state_of(TrainConfig(out=str(tmp_path / "r"), steps=4))


def fake_run(out, final, curve, sampled, reward, fork=None):
    """A finished run: before at step 0, evaluations at 2 and 4 (the last in summary/after)."""
    out.mkdir(parents=True)
    save_config(TrainConfig(out=str(out)), out / "config.yaml")
    (out / "before.json").write_text(json.dumps({"metrics": {"valid_bleu": curve[0], "valid_bleu_sampled": 5.0}}))
    rows = []
    for step in range(1, 5):
        row = {"step": step, "reward_mean": reward * step}
        if fork is not None:
            row.update(fork_fire_rate=fork, usable_fork_fire_rate=fork / 2)
        if step == 2:
            row["valid_bleu"], row["valid_bleu_sampled"] = curve[1], sampled - 1
        rows.append(row)
    rows.append({"step": 4, "valid_bleu": final, "valid_bleu_sampled": sampled})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "summary.json").write_text(json.dumps({
        "steps": 4, "wall_seconds": 60.0, "valid_bleu_before": curve[0], "valid_bleu_after": final,
        "valid_bleu_sampled_before": 5.0, "valid_bleu_sampled_after": sampled}))


def test_report_numbers_on_known_runs(tmp_path):
    arms = parse_arms("leaf,grpo")
    # greedy: LEAF 30, 32, 34 vs GRPO 29, 30, 31 -> diffs 1, 2, 3: mean 2, t CI 2 -+ 2.484138
    for seed, (leaf, grpo) in enumerate([(30.0, 29.0), (32.0, 30.0), (34.0, 31.0)]):
        fake_run(tmp_path / "runs" / "leaf" / f"seed-{seed}", leaf, [10.0, 31.0], 20.0 + seed, 0.1, fork=0.6)
        fake_run(tmp_path / "runs" / "grpo" / f"seed-{seed}", grpo, [10.0, 20.0], 20.0, 0.1)
    summary = write_report(tmp_path, arms, [0, 1, 2], TrainConfig(steps=4), wall_seconds=120.0)
    assert summary["leaf_bleu_mean"] == pytest.approx(32.0) and summary["grpo_bleu_mean"] == pytest.approx(30.0)
    assert summary["diff_of"] == "leaf - grpo" and summary["diff_mean"] == pytest.approx(2.0)
    assert summary["diff_ci95"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-5)
    assert summary["diff_sampled_mean"] == pytest.approx(1.0)  # 20, 21, 22 vs 20
    assert summary["seeds"] == [0, 1, 2] and summary["steps"] == 4
    assert summary["wall_seconds"] == 120.0 and summary["run_seconds_total"] == 6 * 60.0
    # LEAF's mean curve is 10, 31, 32 at steps 0, 2, 4: it passes GRPO's final 30 at step 2
    assert summary["diffs"]["leaf"]["steps_to_reach_reference"] == 2
    leaf = summary["arms"]["leaf"]["valid_bleu"]
    assert leaf["ci95"] == pytest.approx([32 - 4.968275, 32 + 4.968275], abs=1e-5)  # sd 2
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["diff_mean"] == pytest.approx(2.0)
    text = (tmp_path / "report.md").read_text()
    assert "| greedy | +1.00 | +2.00 | +3.00 | +2.00 [-0.48, +4.48] | 0.074 |" in text
    assert "to reach grpo's final greedy BLEU (30.00): 2." in text
    assert yaml.safe_load(text.split("```yaml")[1].split("```")[0])["steps"] == 4
    for png in ("bleu.png", "reward.png", "forks.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_report_reference_is_grpo_wherever_it_is(tmp_path):
    arms = [Arm("grpo", "grpo", ()), Arm("leaf:leaf.terms=global", "leaf", ("leaf.terms=global",))]
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / "grpo" / f"seed-{seed}", 30.0, [10.0, 20.0], 20.0, 0.1)
        fake_run(tmp_path / "runs" / arms[1].slug / f"seed-{seed}", 29.0 + seed, [10.0, 15.0], 20.0, 0.1)
    summary = write_report(tmp_path, arms, [0, 1], TrainConfig(steps=4), wall_seconds=1.0)
    assert summary["reference"] == "grpo" and summary["diff_of"] == "leaf:leaf.terms=global - grpo"
    assert summary["diff_mean"] == pytest.approx(-0.5)
    assert summary["diffs"]["leaf:leaf.terms=global"]["steps_to_reach_reference"] is None
    assert "leaf_bleu_mean" not in summary and not (tmp_path / "forks.png").exists()
    assert to_dict(TrainConfig())["algo"] == "leaf"
