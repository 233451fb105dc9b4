"""leafrl eval (and the analysis commands) end to end on a tiny SALLM and its trained adapter."""

import json

import pytest

from conftest import TEXTS, TINY, tone_dataset
from leafrl.cli import main
from leafrl.config import TrainConfig, apply_overrides
from leafrl.data.schema import Example
from leafrl.eval.evaluate import EvalResult, Evaluation, metrics_report
from leafrl.eval.metrics import text_metrics
from leafrl.models.tiny import build_tiny_sallm
from leafrl.trainer import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data, model, run): a tiny SALLM and a 2-step LEAF run on the tone task."""
    root = tmp_path_factory.mktemp("analysis")
    data = tone_dataset(root / "data", n_train=8, n_valid=4)
    model, processor = build_tiny_sallm(TEXTS, TINY)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    cfg = apply_overrides(TrainConfig(), [
        f"data={data}", f"model={root / 'model'}", f"out={root / 'run'}", "steps=2", "eval_every=100",
        "eval_examples=4", "eval_sampled_passes=0", "rollout.rollout_budget=3", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6", "optim.lr=5e-2", "lora_settings.rank=4", "lora_settings.alpha=8", "reward=chrf"])
    train(cfg, quiet=True)
    return data, root / "model", root / "run"


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
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
    greedy = EvalResult(0.0, 0.0, ["a b c x", "x y", "e f g h"])
    passes = [EvalResult(0.0, 0.0, ["a b c d", "x", "e f g h"]), EvalResult(0.0, 0.0, ["a b x x", "x y", "e f g"])]
    report = metrics_report(examples, Evaluation(greedy, passes))
    assert set(report) == {"all", "asr", "ast"} and report["asr"]["rows"] == 2
    assert report["asr"]["greedy"]["wer"] == pytest.approx(100 / 8)  # 1 of 8 words
    assert "wer" not in report["ast"]["greedy"] and "wer" not in report["all"]["greedy"]
    # sampled WER of the asr rows: pass 1 0/8, pass 2 3/8 -> mean 18.75, std 26.517
    assert report["asr"]["sampled"]["wer"]["mean"] == pytest.approx(18.75)
    assert report["asr"]["sampled"]["wer"]["std"] == pytest.approx(26.5165, abs=1e-3)
