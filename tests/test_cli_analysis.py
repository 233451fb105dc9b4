"""leafrl eval (and the analysis commands) end to end on a tiny SALLM and its trained adapter."""

import json
import math

import pytest

from conftest import save_tiny_sallm, tone_dataset
from leafrl.cli import main
from leafrl.config import TrainConfig, apply_overrides
from leafrl.data.schema import Example
from leafrl.eval.evaluate import EvalResult, Evaluation, metrics_report
from leafrl.eval.metrics import text_metrics
from leafrl.trainer import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data, model, run): a tiny SALLM and a 2-step LEAF run on the tone task."""
    root = tmp_path_factory.mktemp("analysis")
    data = tone_dataset(root / "data", n_train=8, n_valid=4)
    save_tiny_sallm(root / "model")
    cfg = apply_overrides(TrainConfig(), [
        f"data={data}", f"model={root / 'model'}", f"out={root / 'run'}", "steps=2", "eval.every=100",
        "eval.examples=4", "eval.sampled_passes=0", "rollout.rollout_budget=3", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6", "optim.lr=5e-2", "lora.rank=4", "lora.alpha=8", "reward=chrf"])
    train(cfg, quiet=True)
    return data, root / "model", root / "run"


def run_cli(args, capsys):
    """(exit status, captured output) of ``leafrl ARGS`` on the paper's recipe (the tiny model
    is not the built-in one)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--recipe", "paper"])
    return exit_info.value.code, capsys.readouterr()


def test_eval_scores_base_and_adapter(trained, tmp_path, capsys):
    data, model, run = trained
    common = ["eval", "--model", str(model), "--data", str(data), "--passes", "2", "--quiet",
              "--set", "rollout.max_new_tokens=6"]
    code, _ = run_cli([*common, "--out", str(tmp_path / "base")], capsys)
    assert code == 0
    code, _ = run_cli([*common, "--adapter", str(run), "--out", str(tmp_path / "tuned")], capsys)
    assert code == 0
    base = json.loads((tmp_path / "base" / "metrics.json").read_text())
    tuned = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert base["rows"] == 4 and base["meteor"] in ("exact+stem", "exact+stem+wordnet")
    assert base["bertscore"].startswith("skipped") and tuned["adapter"] == str(run)
    ast = base["metrics"]["ast"]
    assert set(ast["greedy"]) == {"bleu", "bleu_cased", "chrf", "rouge1", "rouge2", "rougeL", "meteor"}
    assert set(ast["sampled"]["chrf"]) == {"mean", "std"}
    rows = [json.loads(line) for line in (tmp_path / "tuned" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["sampled"]) == 2 for r in rows)
    # the metrics are those of the written predictions
    refs = [r["reference"] for r in rows]
    assert tuned["metrics"]["ast"]["greedy"]["chrf"] == pytest.approx(
        text_metrics([r["greedy"] for r in rows], refs)["chrf"])
    # the adapter was loaded: lr 5e-2 for two steps changes the greedy answers
    before = [json.loads(line)["greedy"] for line in (tmp_path / "base" / "predictions.jsonl").read_text().splitlines()]
    assert before != [r["greedy"] for r in rows]


def test_eval_names_a_bad_adapter(trained, tmp_path, capsys):
    data, model, _ = trained
    code, out = run_cli(["eval", "--model", str(model), "--data", str(data), "--adapter", str(tmp_path), "--quiet"],
                        capsys)
    assert code == 1 and "--adapter" in out.err and str(tmp_path) in out.err.replace("\n", "")


def test_metrics_report_per_task_with_wer_for_transcripts():
    examples = [Example(id=f"r{i}", audio=None, prompt="p", reference=ref, task=task, meta={})
                for i, (ref, task) in enumerate([("a b c d", "asr"), ("x y", "ast"), ("e f g h", "asr")])]
    greedy = EvalResult(0.0, 0.0, ["a b c x", "x y", "e f g h"], [True, True, False])
    passes = [EvalResult(0.0, 0.0, ["a b c d", "x", "e f g h"], [False] * 3),
              EvalResult(0.0, 0.0, ["a b x x", "x y", "e f g"], [False] * 3)]
    report = metrics_report(examples, Evaluation(greedy, passes))
    assert set(report) == {"all", "asr", "ast"} and report["asr"]["rows"] == 2
    assert [report[part]["truncated_greedy"] for part in ("all", "asr", "ast")] == [2, 1, 1]
    assert report["asr"]["greedy"]["wer"] == pytest.approx(100 / 8)  # 1 of 8 words
    assert "wer" not in report["ast"]["greedy"] and "wer" not in report["all"]["greedy"]
    # sampled WER of the asr rows: pass 1 0/8, pass 2 3/8 -> mean 18.75, std 26.517
    assert report["asr"]["sampled"]["wer"]["mean"] == pytest.approx(18.75)
    assert report["asr"]["sampled"]["wer"]["std"] == pytest.approx(26.5165, abs=1e-3)


def worked_example_rollouts(copies):
    """``copies`` groups, each the spec's worked example (K = 4, boundaries 3 and 7, both fire), and
    the word vocabulary."""
    import torch

    from leafrl.eval.inspect import EXAMPLE, EXAMPLE_REWARDS, EXAMPLE_SURPRISAL
    from leafrl.rollout.record import Rollout, grouped

    words = [s.split() for s in EXAMPLE]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
    ids = torch.tensor([[vocab[w] for w in ws] for ws in words] * copies)
    return Rollout(ids, torch.ones_like(ids, dtype=torch.bool), torch.tensor([EXAMPLE_SURPRISAL] * 4 * copies),
                   grouped(4, copies), torch.tensor(EXAMPLE_REWARDS * copies)), vocab


def test_fork_rates_by_position():
    from leafrl.advantages import LeafConfig
    from leafrl.eval.analysis import fork_rates

    rollout, _ = worked_example_rollouts(20)
    rows = fork_rates(rollout, LeafConfig())
    assert [(r.position, r.selections, r.fire, r.usable) for r in rows] == [(3, 20, 20, 20), (7, 20, 20, 20)]
    assert rows[0].fire_rate == 1.0 and rows[0].fire_high == 1.0 and 0.8 < rows[0].fire_low < 0.85
    assert fork_rates(rollout, LeafConfig(), min_selections=21) == []
    assert fork_rates(rollout, LeafConfig(), max_position=5)[-1].position == 3


def test_credit_report_on_the_worked_example():
    from leafrl.advantages import LeafConfig
    from leafrl.eval.analysis import credit_report, variants
    from leafrl.eval.inspect import EXAMPLE

    rollout, vocab = worked_example_rollouts(6)
    reference = [[vocab[w] for w in EXAMPLE[0].split()]] * 6  # response 1 is the reference
    report, difference = credit_report(rollout, reference, LeafConfig(), 1 / 3, eos_token_ids=[10_000], n_samples=200)
    assert list(report) == ["grpo", "leafrl", *variants(LeafConfig()), "ceiling"]
    assert report["grpo"]["auc"]["value"] == 0.5
    assert list(report["ceiling"]) == ["auc"] and report["ceiling"]["auc"]["value"] >= report["leaf"]["auc"]["value"]
    assert difference["value"] == pytest.approx(report["leafrl"]["auc"]["value"] - report["leaf"]["auc"]["value"])
    # response 2 (reward 0.4): its first 7 words are right, its last 3 wrong; LEAF gives them 0.28, 0.60 and
    # -0.10, GRPO one +0.3 to all: LEAF's wrong tokens rank below its right ones (AUC 1 on that response)
    assert report["leaf"]["auc"]["value"] > 0.5
    # the low-reward responses (3 and 4) hold right tokens "der rote Hund" (3) and "zum Park" (4): LEAF credits
    # response 3's shared prefix (+0.28), GRPO blames all of it
    assert report["grpo"]["right_nonnegative_low"]["value"] == 0.0
    assert report["leaf"]["right_nonnegative_low"]["value"] > 0.0


def test_forks_and_credit_commands(trained, tmp_path, capsys):
    data, model, run = trained
    common = ["--model", str(model), "--data", str(data), "--limit", "4", "--quiet", "--set",
              "rollout.max_new_tokens=6", "--set", "rollout.rollout_budget=3"]
    code, out = run_cli(["forks", *common, "--adapter", str(run), "--out", str(tmp_path / "forks")], capsys)
    assert code == 0, out.err
    header = (tmp_path / "forks" / "forks.csv").read_text().splitlines()[0]
    assert header.startswith("model,position,selections,fire,fire_rate")
    assert (tmp_path / "forks" / "forks.png").is_file()
    code, out = run_cli(["credit", *common, "--out", str(tmp_path / "credit")], capsys)
    assert code == 0, out.err
    saved = json.loads((tmp_path / "credit" / "credit.json").read_text())
    grpo_auc = saved["estimators"]["grpo"]["auc"]["value"]  # NaN when no response has right and wrong tokens
    assert saved["items"] == 4 and saved["k"] == 3 and (grpo_auc == 0.5 or math.isnan(grpo_auc))
    assert saved["model"] == str(model) and saved["adapter"] is None and saved["split"] == "train"
    assert saved["recommended"] == "leafrl" and saved["recommended"] in saved["estimators"]
    assert "ceiling" in saved["estimators"] and set(saved["recommended_minus_leaf"]) == {"value", "low", "high"}
    assert "ceiling" not in saved["share_of_ceiling"] and "leaf" in saved["share_of_ceiling"]
    assert (tmp_path / "credit" / "credit.png").stat().st_size > 10_000
    code, out = run_cli(["forks", *common, "--adapter", "none", "--adapter", "none", "--out", str(tmp_path)], capsys)
    assert code == 1 and "--adapter" in out.err


def test_inspect_saved_rollouts_and_sampled(trained, tmp_path, capsys):
    data, model, run = trained
    code, out = run_cli(["inspect", "--rollouts", str(run), "--html", str(tmp_path / "saved.html")], capsys)
    assert code == 0, out.err
    page = (tmp_path / "saved.html").read_text()
    saved = json.loads(sorted((run / "rollouts").glob("*.json"))[-1].read_text())
    assert page.count("<h2>") == 2 and saved["groups"][0]["id"] in page and "(step 2)" in page
    assert "<script" not in page and "http" not in page.split("</style>")[1]  # opens offline
    assert "LEAF span advantages vs GRPO" in out.out and "boundaries [" in out.out
    # the same page from the dataset, sampling K responses with the model
    code, out = run_cli(["inspect", "--model", str(model), "--data", str(data), "--items", "1", "--quiet",
                         "--set", "rollout.max_new_tokens=6", "--html", str(tmp_path / "sampled.html")], capsys)
    assert code == 0, out.err
    page = (tmp_path / "sampled.html").read_text()
    assert page.count("<h2>") == 1 and page.count("<tr><td class='num'>") >= 8  # K = 8 responses
    code, out = run_cli(["inspect", "--rollouts", str(tmp_path)], capsys)
    assert code == 1 and "no saved rollouts" in " ".join(out.err.split())


def test_html_colours_follow_the_advantage():
    import torch

    from leafrl.advantages import LeafConfig
    from leafrl.eval.inspect import worked_example
    from leafrl.viz.html import render_html

    view = worked_example(LeafConfig(), 1 / 3)
    page = render_html([view], "t")
    assert "token 3 (surprisal 5.00), token 7 (surprisal 4.00)" in page
    assert "+1.22" in page and "-2.08" in page  # the spec's z-scored spans
    assert page.count("rgba(220,40,40") >= 3 and page.count("rgba(0,160,60") >= 5
    assert "der rote Hund" in page and torch.equal(view.stats.boundaries, torch.tensor([[3, 7]]))
    # the nodes' values are the spec's: V(a) = 0.4 (n 3), V(b) = 0.5 (n 2), V(root) = 0.3
    assert "<td class='num'>0.400</td><td class='num'>3</td>" in page
    assert "<td class='num'>0.500</td><td class='num'>2</td>" in page and "root value 0.300" in page


def test_tree_views_of_several_groups_are_each_groups_own():
    """Views of a two-group rollout are the views of each group alone (the tree of one group
    does not see the other's rows)."""
    import torch

    from leafrl.advantages import LeafConfig
    from leafrl.eval.inspect import tree_view, tree_views
    from leafrl.rollout.record import GroupInfo, Rollout

    rollout, _ = worked_example_rollouts(2)
    rollout = rollout.scored(torch.tensor([0.6, 0.4, 0.2, 0.0, 0.1, 0.9, 0.5, 0.5]))
    infos = [GroupInfo(f"g{g}", "ast", "p", "r", ["x"] * 4, [["a"] * 10] * 4) for g in range(2)]
    views = tree_views(infos, rollout, LeafConfig(), 1 / 3)
    second = Rollout(rollout.ids[4:], rollout.mask[4:], rollout.surprisal[4:], torch.zeros(4, dtype=torch.long),
                     rollout.rewards[4:])
    alone = tree_view("g1 (ast)", "p", "r", [["a"] * 10] * 4, "", second, LeafConfig(), 1 / 3)
    assert [v.title for v in views] == ["g0 (ast)", "g1 (ast)"]
    torch.testing.assert_close(views[1].tree.span_advantage, alone.tree.span_advantage)
    torch.testing.assert_close(views[1].grpo, alone.grpo)
    assert float(views[1].tree.root_value[0]) == pytest.approx(0.5)
