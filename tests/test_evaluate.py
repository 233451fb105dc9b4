"""leafrl.eval.evaluate: one greedy pass and sampled passes drawn together, per batch."""

import pytest
import torch

from conftest import noise
from leafrl.data.schema import Example
from leafrl.eval.evaluate import evaluate
from leafrl.eval.metrics import corpus_bleu
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import generate_completions

SAMPLING = {"temperature": 0.9, "top_p": 0.9}


def examples(n=5):
    return [Example(id=f"r{i}", audio=(noise(0.5 + 0.3 * i, seed=i), 16000), prompt="What do you hear?",
                    reference="drei rote Äpfel und ein blaues Auto", task="ast") for i in range(n)]


def test_passes_match_the_calls_they_stand_for(tiny_sallm):
    """Greedy = a greedy generate of each batch; sampled pass j = sample j of one seeded call
    of several samples per prompt; BLEU is the corpus BLEU of the pass's predictions."""
    model, family = tiny_sallm
    rows = examples()
    result = evaluate(model, family, rows, max_new_tokens=6, batch_size=3, sampled_passes=2, seed=7, **SAMPLING)
    torch.manual_seed(7)
    greedy, sampled = [], []
    for start in (0, 3):
        inputs = encode_examples(family, rows[start:start + 3])
        out = generate_completions(model, family, inputs, do_sample=False, max_new_tokens=6, surprisal=None)
        greedy += [t.strip() for t in family.decode(out.ids)]
        out = generate_completions(model, family, inputs, num_samples=2, max_new_tokens=6, temperature=0.9,
                                   top_p=0.9, surprisal=None)
        sampled += [t.strip() for t in family.decode(out.ids)]
    assert result.greedy.predictions == greedy
    assert [r.predictions for r in result.sampled] == [sampled[0::2], sampled[1::2]]
    refs = [ex.reference for ex in rows]
    assert result.greedy.bleu == corpus_bleu(greedy, refs)
    passes = [corpus_bleu(sampled[j::2], refs) for j in (0, 1)]
    assert result.sampled_bleu == pytest.approx(sum(passes) / 2)
    # seeded: a second call repeats; greedy does not depend on the batch size
    again = evaluate(model, family, rows, max_new_tokens=6, batch_size=3, sampled_passes=2, seed=7, **SAMPLING)
    assert [r.predictions for r in again.sampled] == [r.predictions for r in result.sampled]
    assert evaluate(model, family, rows, max_new_tokens=6, batch_size=5, sampled_passes=0, seed=0,
                    **SAMPLING).greedy.predictions == greedy


def test_no_sampled_passes_and_bad_count(tiny_sallm):
    model, family = tiny_sallm
    common = {"max_new_tokens": 3, "seed": 0, "batch_size": 8, **SAMPLING}
    assert evaluate(model, family, examples(2), sampled_passes=0, **common).sampled == []
    with pytest.raises(ValueError, match="sampled_passes"):
        evaluate(model, family, examples(2), sampled_passes=-1, **common)
