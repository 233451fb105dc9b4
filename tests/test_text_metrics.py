"""The paper's text metrics (leafrl.eval.metrics.text_metrics): hand-worked values, equality with
sacrebleu, jiwer, rouge-score and nltk called directly, German words in ROUGE, METEOR without WordNet,
BERTScore on a tiny local encoder, and the errors."""

import sys

import pytest

from leafrl.eval.metrics import _NoWordNet, _UnicodeWordTokenizer, meteor_matching, text_metrics

REFS = ["ich sehe zwei rote hunde und eine katze", "the cat sat on the mat", "Die Straße ist schön.",
        "a dog ran in the park today"]
PREDS = ["ich sehe drei rote hunde und katzen", "the cat sat on a mat", "Die Strasse ist schon.", "a dog runs"]


def _wordnet():
    """What text_metrics passes to nltk's METEOR on this machine."""
    if meteor_matching() == "exact+stem+wordnet":
        from nltk.corpus import wordnet
        return wordnet
    return _NoWordNet()


def test_identical_predictions_score_the_maximum():
    refs = ["the cat sat on the mat", "ich sehe zwei rote hunde"]
    m = text_metrics(refs, refs, wer=True)
    assert set(m) == {"bleu", "bleu_cased", "chrf", "rouge1", "rouge2", "rougeL", "meteor", "wer"}
    for key in ("bleu", "bleu_cased", "chrf", "rouge1", "rouge2", "rougeL"):
        assert m[key] == pytest.approx(100), key
    assert m["wer"] == 0
    # METEOR's fragmentation penalty 0.5 * (chunks / matches)^3 keeps even a perfect match of n words,
    # one chunk, below 100: (1 - 0.5 / n^3), here n = 6 and n = 5
    assert m["meteor"] == pytest.approx(100 * ((1 - 0.5 / 6**3) + (1 - 0.5 / 5**3)) / 2)


def test_optional_keys_only_when_asked():
    m = text_metrics(PREDS, REFS)
    assert "wer" not in m and "bertscore_f1" not in m
    assert all(0 <= v <= 100 for v in m.values())


def test_one_word_substituted_out_of_four_is_wer_25():
    assert text_metrics(["a x c d"], ["a b c d"], wer=True)["wer"] == pytest.approx(25)


def test_rouge_by_hand():
    """"the cat sat" against "the cat sat on the mat": 3 of 6 reference words, all 3 predicted ones
    (P 1, R 1/2, F 2/3); 2 of 5 reference bigrams (F 2 * 0.4 / 1.4); LCS 3 words (as ROUGE-1)."""
    m = text_metrics(["the cat sat"], ["the cat sat on the mat"])
    assert m["rouge1"] == pytest.approx(100 * 2 / 3)
    assert m["rouge2"] == pytest.approx(100 * 0.8 / 1.4)
    assert m["rougeL"] == pytest.approx(100 * 2 / 3)


def test_rouge_is_the_mean_f1_over_rows():
    m = text_metrics(["the cat sat", "x y"], ["the cat sat on the mat", "x y"])
    assert m["rouge1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_german_words_count_in_rouge():
    """rouge-score's default tokenizer keeps only [a-z0-9]: "Hütte" and "hätte" both become "h tte" and
    match in full. Ours keeps umlauts and ß, and lowercases."""
    from rouge_score.rouge_scorer import RougeScorer

    assert RougeScorer(["rouge1"]).score("hätte", "Hütte")["rouge1"].fmeasure == 1  # why we pass a tokenizer
    assert text_metrics(["Hütte"], ["hätte"])["rouge1"] == 0
    assert text_metrics(["schön"], ["schon"])["rouge1"] == 0
    assert text_metrics(["Straße"], ["straße"])["rouge1"] == pytest.approx(100)
    assert text_metrics(["die große Straße"], ["Die Straße"])["rouge1"] == pytest.approx(100 * 2 * (2 / 3) / (5 / 3))
    assert _UnicodeWordTokenizer().tokenize("Grüße, Straße!") == ["grüße", "straße"]


def test_bleu_and_chrf_are_sacrebleus():
    import sacrebleu

    m = text_metrics(PREDS, REFS)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS], lowercase=True).score)
    assert m["bleu_cased"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)


def test_bleu_is_lowercased_and_bleu_cased_is_not():
    m = text_metrics(["The Cat sat on the mat"], ["the cat sat on the mat"])
    assert m["bleu"] == pytest.approx(100)
    assert m["bleu_cased"] < 60  # "The" and "Cat" miss: 50.8


def test_wer_is_jiwers_corpus_wer():
    import jiwer

    assert text_metrics(PREDS, REFS, wer=True)["wer"] == pytest.approx(100 * jiwer.wer(REFS, PREDS))
    # corpus WER (all edits over all reference words), not the mean of the rows' WER
    assert text_metrics(["a x c d", "e"], ["a b c d", "e f"], wer=True)["wer"] == pytest.approx(100 * 2 / 6)


def test_meteor_is_nltks_on_lowercased_whitespace_tokens():
    from nltk.translate.meteor_score import meteor_score

    wordnet = _wordnet()
    expected = [meteor_score([r.lower().split()], p.lower().split(), wordnet=wordnet) for p, r in zip(PREDS, REFS)]
    assert text_metrics(PREDS, REFS)["meteor"] == pytest.approx(100 * sum(expected) / len(expected))


def test_meteor_by_hand_with_stems():
    """"the cats sat" against "the cat sat on a mat": 3 matches ("cats" by its Porter stem), P 1, R 1/2,
    Fmean = P R / (0.9 P + 0.1 R) = 0.5 / 0.95; one chunk, penalty 0.5 (1/3)^3."""
    fmean = 0.5 / 0.95
    assert text_metrics(["The cats sat"], ["the cat sat on a mat"])["meteor"] == pytest.approx(
        100 * fmean * (1 - 0.5 / 27))
    # nltk aligns greedily from the end: against "... on the mat" the predicted "the" takes the second
    # "the", so the 3 matches form 2 chunks (penalty 0.5 (2/3)^3), where METEOR proper would find 1
    assert text_metrics(["the cat sat"], ["the cat sat on the mat"])["meteor"] == pytest.approx(
        100 * fmean * (1 - 0.5 * 8 / 27))


def test_meteor_matching_follows_the_local_wordnet(monkeypatch):
    import nltk

    assert meteor_matching() in ("exact+stem+wordnet", "exact+stem")

    def missing(resource, *args, **kwargs):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", missing)
    assert meteor_matching() == "exact+stem"
    assert text_metrics(["a small house"], ["a small house"])["meteor"] == pytest.approx(100 * (1 - 0.5 / 27))

    seen = []
    monkeypatch.setattr(nltk.data, "find", lambda resource, *a, **k: seen.append(resource) or resource)
    assert meteor_matching() == "exact+stem+wordnet"
    assert seen == ["corpora/wordnet"]

    monkeypatch.setattr(nltk.data, "find", lambda r, *a, **k: r if r.endswith(".zip") else missing(r))
    assert meteor_matching() == "exact+stem+wordnet"  # the zipped corpus counts too


def test_no_wordnet_has_no_synonyms():
    assert _NoWordNet().synsets("house") == []


@pytest.mark.parametrize(("preds", "refs", "message"), [
    (["a", "b"], ["a"], r"predictions \(2\) and references \(1\) differ in length"),
    ([], [], "predictions: nothing to score"),
])
def test_bad_inputs_are_refused(preds, refs, message):
    with pytest.raises(ValueError, match=message):
        text_metrics(preds, refs)


def test_bertscore_model_must_be_a_local_directory(tmp_path):
    with pytest.raises(ValueError, match="bertscore_model .*not a local directory .*never downloads"):
        text_metrics(["a"], ["a"], bertscore_model="roberta-large")
    with pytest.raises(ValueError, match="not a local directory"):
        text_metrics(["a"], ["a"], bertscore_model=str(tmp_path / "missing"))


def test_bertscore_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bert_score", None)  # import bert_score now raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'leafrl\[bertscore\]'"):
        text_metrics(["a"], ["a"], bertscore_model=str(tmp_path))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) and a WordPiece tokenizer trained here on a few sentences."""
    pytest.importorskip("bert_score")
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(REFS + PREDS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tokenizer = transformers.BertTokenizerFast(tokenizer_object=tok, model_max_length=64)
    model_dir = tmp_path_factory.mktemp("tiny_bert")
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(model_dir)
    return str(model_dir)


def test_bertscore_on_a_tiny_local_encoder(tiny_encoder):
    import bert_score

    same = text_metrics(REFS, REFS, bertscore_model=tiny_encoder)["bertscore_f1"]
    assert same == pytest.approx(100, abs=1e-3)
    different = text_metrics(PREDS, REFS, bertscore_model=tiny_encoder)["bertscore_f1"]
    assert different < 99
    _, _, f1 = bert_score.score(PREDS, REFS, model_type=tiny_encoder, num_layers=2, device="cpu")
    assert different == pytest.approx(100 * float(f1.mean()), abs=1e-4)
