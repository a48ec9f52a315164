import json
import math

import pytest
from conftest import shared_data

from keras_tfm.metrics.generation import bleu
from keras_tfm.metrics.generation import rouge


def test_bleu_hand_computed():
    # One 5-token sentence, the last token wrong: clipped n-gram matches
    # 4/5, 3/4, 2/3, 1/2; no brevity penalty (equal lengths); BLEU is the
    # geometric mean of the four precisions.
    result = bleu(["a b c d e"], ["a b c d f"])
    expected = math.exp(sum(map(math.log, (4 / 5, 3 / 4, 2 / 3, 1 / 2))) / 4)
    assert result["bleu"] == pytest.approx(100 * expected)
    assert result["precisions"] == pytest.approx([80, 75, 200 / 3, 50])
    assert result["brevity_penalty"] == 1.0
    assert result["hypothesis_length"] == result["reference_length"] == 5
    assert result["signature"].startswith("nrefs:1|case:mixed|eff:no|"
                                          "tok:13a|smooth:exp|version:")


def test_bleu_brevity_penalty_and_case():
    # 4 hypothesis tokens against 6: BP = exp(1 - 6/4); every n-gram of
    # the hypothesis matches.
    result = bleu(["the cat sat on"], ["the cat sat on a mat"])
    assert result["precisions"] == [100.0] * 4
    assert result["brevity_penalty"] == pytest.approx(math.exp(1 - 6 / 4))
    assert result["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 4))
    # Shorter than 4 tokens: no 4-gram can match, BLEU 0.
    assert bleu(["the cat sat"], ["the cat sat"])["bleu"] == 0.0
    # Cased: "The" is not "the".
    assert bleu(["The cat sat"], ["the cat sat"])["bleu"] < 100


def test_bleu_readme_example():
    # sacreBLEU's README example: "BLEU = 48.53 82.4/50.0/45.5/37.5
    # (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)".
    hypotheses = ["The dog bit the man.", "It wasn't surprising.",
                  "The man had just bitten him."]
    first = ["The dog bit the man.", "It was not unexpected.",
             "The man bit him first."]
    second = ["The dog had bit the man.", "No one was surprised.",
              "The man had bitten the dog."]
    result = bleu(hypotheses, [list(refs) for refs in zip(first, second)])
    assert round(result["bleu"], 2) == 48.53
    assert [round(p, 1) for p in result["precisions"]] == [82.4, 50.0, 45.5,
                                                           37.5]
    assert round(result["brevity_penalty"], 3) == 0.943
    assert result["signature"].startswith("nrefs:2|")


def f1(overlap, hypothesis_count, reference_count):
    precision = overlap / hypothesis_count
    recall = overlap / reference_count
    return 2 * precision * recall / (precision + recall)


def test_rouge_hand_computed():
    # Unigrams: "the", "cat" shared (2 of 3, 2 of 4); bigrams: "the cat"
    # (1 of 2, 1 of 3); longest common subsequence: "the cat" (2).
    result = rouge(["the cat sat"], ["the cat ran away"])
    assert result["rouge1"] == pytest.approx(100 * f1(2, 3, 4))
    assert result["rouge2"] == pytest.approx(100 * f1(1, 2, 3))
    assert result["rougeL"] == pytest.approx(100 * f1(2, 3, 4))
    assert result["documents"] == 1


def test_rouge_stems_and_ignores_case_and_punctuation():
    # Porter: cats -> cat, running/runs -> run.
    assert rouge(["Cats running!"], ["cat runs"])["rouge1"] == (
        pytest.approx(100.0))


def test_rouge_best_reference_by_rouge1():
    hypothesis = "apple banana cherry date"
    # A shares 3 unigrams but no bigram; B shares 2 unigrams and the
    # bigram "apple banana".
    a, b = "cherry banana apple", "apple banana zebra yak xylophone"
    r1_a, r1_b = f1(3, 4, 3), f1(2, 4, 5)
    r2_b = f1(1, 3, 4)
    assert r1_a > r1_b
    chosen = rouge([hypothesis], [[b, a]])
    # All three scores from A, the reference with the best ROUGE-1.
    assert chosen["rouge1"] == pytest.approx(100 * r1_a)
    assert chosen["rouge2"] == 0.0
    each = rouge([hypothesis], [[b, a]], best_by=None)
    assert each["rouge1"] == pytest.approx(100 * r1_a)
    assert each["rouge2"] == pytest.approx(100 * r2_b)
    # A single string is one reference; documents are averaged.
    two = rouge([hypothesis, hypothesis], [a, [b]])
    assert two["rouge1"] == pytest.approx(50 * (r1_a + r1_b))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        rouge(["a"], [["a"], ["b"]])


@pytest.mark.slow
def test_scitldr_lead1_reproduces_the_published_protocol():
    # SOURCE.md: Lead-1 (the abstract's first sentence) scores 31.3 / 11.4
    # / 24.1 on test against every target, keeping per paper the one with
    # the best ROUGE-1; the extractive oracle scores 44.4 / 22.8 / 36.0.
    rows = [json.loads(line)
            for line in open(shared_data("scitldr", "test.jsonl"))]
    references = [row["target"] for row in rows]
    lead = rouge([row["source"][0] for row in rows], references)
    assert [round(lead[k], 1) for k in ("rouge1", "rouge2", "rougeL")] == [
        31.3, 11.4, 24.1]
    oracle = rouge(
        [row["source"][row["source_labels"].index(1)] for row in rows],
        references,
    )
    assert [round(oracle[k], 1) for k in ("rouge1", "rouge2", "rougeL")] == [
        44.4, 22.8, 36.0]
    # Each metric's own best reference does not reproduce it.
    each = rouge([row["source"][0] for row in rows], references, best_by=None)
    assert round(each["rouge2"], 1) != 11.4
