import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy_reference import log_softmax

from keras_tfm.generation import seq2seq
from keras_tfm.models import Seq2SeqLM

EOS, PAD = 3, 0


def random_model(vocabulary_size, eos_boost=1.0, seed=0, max_length=6):
    """A tiny Seq2SeqLM with unit-scale random weights: outputs that vary
    with the source (the 0.02 initializer emits one token everywhere).
    `eos_boost` scales the output column of [EOS], to end some rows early.
    """
    model = Seq2SeqLM(
        vocabulary_size=vocabulary_size, num_layers=2, num_heads=2,
        hidden_dim=8, intermediate_dim=16, max_sequence_length=6,
        max_decoder_sequence_length=max_length, tie_embeddings=False,
    )
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(size=w.shape).astype("float32")
         for w in model.get_weights()]
    )
    head = model.token_embedding.reverse_embeddings
    head.assign(np.asarray(head) * np.where(np.arange(vocabulary_size) == EOS,
                                            eos_boost, 1.0))
    return model


def sources(batch, vocabulary_size, length=6):
    ids = np.random.default_rng(1).integers(4, vocabulary_size,
                                            (batch, length))
    ids[0, -2:] = PAD
    return ids.astype("int32")


@pytest.fixture(scope="module")
def model():
    # Greedy rows of `sources(6, 10)` end at once, after four tokens, and
    # never (checked below).
    return random_model(10, eos_boost=2.0)


def full_pass_log_probs(model, source, decoder_inputs):
    """Next-token log-probabilities `(n, length, vocabulary)` from the
    uncached forward pass, [PAD] banned as the decoders ban it."""
    n = len(decoder_inputs)
    logits = np.asarray(
        model(
            {
                "encoder_token_ids": np.repeat(source[None], n, axis=0),
                "decoder_token_ids": np.asarray(decoder_inputs, "int32"),
            }
        ),
        "float64",
    )
    logits[..., PAD] = -np.inf
    return log_softmax(logits)


def greedy_without_cache(model, src, max_length):
    """Greedy search recomputing the whole target at every step."""
    tokens = np.full((len(src), 1), EOS, "int32")
    finished = np.zeros(len(src), bool)
    generated = np.zeros((len(src), max_length), "int32")
    for t in range(max_length):
        logits = np.array(
            model({"encoder_token_ids": src, "decoder_token_ids": tokens})
        )[:, -1]
        logits[:, PAD] = -np.inf
        token = np.where(finished, PAD, np.argmax(logits, axis=-1))
        generated[:, t] = token
        finished |= token == EOS
        # Finished rows are fed filler; nothing reads their outputs.
        tokens = np.concatenate([tokens, np.maximum(token, 4)[:, None]], 1)
    return generated


def test_greedy_equals_recomputing_without_cache(model):
    src = sources(6, 10)
    ids = np.asarray(seq2seq.greedy_search(model, src, 6))
    assert ids.dtype == np.int32 and ids.shape == (6, 6)
    expected = greedy_without_cache(model, src, 6)
    np.testing.assert_array_equal(ids, expected)
    # The end token is kept; zeros follow; rows end at different steps.
    lengths = {
        list(row).index(EOS) + 1 if EOS in row else 6 for row in expected
    }
    assert {1, 4, 6} <= lengths
    for row in ids:
        if EOS in row:
            end = list(row).index(EOS)
            assert not row[end + 1 :].any()
        assert PAD not in row[: list(row).index(EOS) if EOS in row else 6]


@pytest.mark.parametrize(
    "eos_boost, length_penalty",
    [(2.0, 0.0), (2.0, 1.0), (2.0, 3.0), (1.0, 1.0)],
)
def test_beam_of_one_equals_greedy(eos_boost, length_penalty):
    model = random_model(10, eos_boost)
    src = sources(6, 10)
    greedy = np.asarray(seq2seq.greedy_search(model, src, 6))
    ids, scores = seq2seq.beam_search(model, src, 1, 6, length_penalty)
    np.testing.assert_array_equal(ids, greedy)
    assert scores.shape == (6,)


def brute_force(model, source, max_length, alpha):
    """Every sequence the search can return, scored with the uncached
    model: `max_length` tokens without [EOS], or fewer ending in it; no
    [PAD]. Returns {ids padded with 0: score}."""
    vocabulary = [t for t in range(model.vocabulary_size) if t != PAD]
    words = [t for t in vocabulary if t != EOS]
    candidates = []
    for length in range(1, max_length + 1):
        for prefix in itertools.product(words, repeat=length - 1):
            candidates.append(list(prefix) + [EOS])
            if length == max_length:
                candidates += [list(prefix) + [t] for t in words]
    # Inputs: the start token, then the sequence; filler after its end is
    # never read (causal).
    inputs = [([EOS] + c + [4] * max_length)[:max_length] for c in candidates]
    log_probs = full_pass_log_probs(model, source, inputs)
    scores = {}
    for c, lp in zip(candidates, log_probs):
        total = sum(lp[t, token] for t, token in enumerate(c))
        padded = tuple(c + [PAD] * (max_length - len(c)))
        scores[padded] = total / ((5 + len(c)) / 6) ** alpha
    return scores


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_brute_force_best(alpha):
    # Six ids (five without [PAD]) and three steps: 20 beams keep every
    # live prefix, so the search is exhaustive and must find the best of
    # all 85 sequences, with its score.
    model = random_model(6, seed=0, max_length=3)
    src = sources(4, 6)
    ids, scores = seq2seq.beam_search(model, src, 20, 3, alpha)
    all_ids, all_scores = seq2seq.beam_search(
        model, src, 20, 3, alpha, return_all_beams=True
    )
    assert all_ids.shape == (4, 20, 3) and all_scores.shape == (4, 20)
    for row in range(len(src)):
        expected = brute_force(model, src[row], 3, alpha)
        best = max(expected, key=expected.get)
        np.testing.assert_array_equal(ids[row], best)
        np.testing.assert_allclose(scores[row], expected[best], atol=1e-4)
        # Every hypothesis in the n-best list, not only the winner, has its
        # true score: the self-attention cache followed each beam.
        found = np.isfinite(all_scores[row])
        assert found.sum() >= 2
        for hypothesis, score in zip(
            np.asarray(all_ids[row])[found], np.asarray(all_scores[row])[found]
        ):
            np.testing.assert_allclose(
                score, expected[tuple(hypothesis)], atol=1e-4
            )
        assert (np.diff(np.asarray(all_scores[row])[found]) <= 0).all()
        assert not np.asarray(all_ids[row])[~found].any()
    # Greedy misses the best for some source: the search mattered.
    greedy = np.asarray(seq2seq.greedy_search(model, src, 3))
    assert (greedy != np.asarray(ids)).any(axis=1).any()


class BigramModel:
    """A stand-in with `Seq2SeqLM`'s decoding interface whose next-token
    probabilities depend on the previous token only, so that the best
    sequence can be worked out by hand. Counts decoder calls."""

    pad_token_id = PAD
    max_decoder_sequence_length = 8

    def __init__(self, table):
        # table[previous][next] = probability, for a vocabulary of 6.
        probabilities = np.zeros((6, 6))
        for previous, row in table.items():
            for token, p in row.items():
                probabilities[previous, token] = p
        with np.errstate(divide="ignore"):
            self.log_table = tf.constant(np.log(probabilities), tf.float32)
        self.calls = 0

    def encode(self, encoder_token_ids):
        batch_size = tf.shape(encoder_token_ids)[0]
        return tf.zeros([batch_size, 1, 1]), tf.ones([batch_size, 1], bool)

    def init_cache(self, batch_size, encoder_outputs):
        return {
            "self_attention": tf.zeros([batch_size, 1]),
            "cross_attention": tf.zeros([batch_size, 1]),
        }

    def call_decoder_with_cache(self, token_ids, cache, index, mask):
        self.calls += 1
        logits = tf.gather(self.log_table, token_ids[:, 0])[:, None, :]
        return logits, logits, cache


A, B = 4, 5


def test_beam_finds_what_greedy_misses():
    # Greedy: A (0.6), then 1 (0.3), then [EOS] (0.9): p = 0.162.
    # Best: B (0.4), then [EOS] (0.95): p = 0.38.
    model = BigramModel(
        {
            EOS: {A: 0.6, B: 0.4},
            A: {1: 0.3, 2: 0.25, EOS: 0.2, B: 0.25},
            1: {EOS: 0.9, 2: 0.05, A: 0.05},
            2: {EOS: 1.0},
            B: {EOS: 0.95, 1: 0.05},
        }
    )
    src = np.full((2, 3), 7, "int32")
    greedy = np.asarray(seq2seq.greedy_search(model, src, 5))
    np.testing.assert_array_equal(greedy[0], [A, 1, EOS, 0, 0])
    ids, scores = seq2seq.beam_search(model, src, 2, 5, length_penalty=0.0)
    np.testing.assert_array_equal(ids, [[B, EOS, 0, 0, 0]] * 2)
    np.testing.assert_allclose(scores, [math.log(0.38)] * 2, rtol=1e-5)


def test_beam_stops_once_no_live_beam_can_win():
    # After step 1 the finished [B, EOS] (0.38) beats the only live beam
    # ([A, 1], 0.18), and live log-probabilities only fall: two decoder
    # calls, not five.
    model = BigramModel(
        {
            EOS: {A: 0.6, B: 0.4},
            A: {1: 0.3, 2: 0.25, EOS: 0.2, B: 0.25},
            1: {EOS: 0.9, 2: 0.05, A: 0.05},
            B: {EOS: 0.95, 1: 0.05},
        }
    )
    seq2seq.beam_search(model, np.ones((1, 3), "int32"), 2, 5, 0.0)
    assert model.calls == 2


def test_length_penalty_changes_the_choice():
    # [EOS] at once: p = 0.55. [A, EOS]: p = 0.45 * 0.9 = 0.405.
    # alpha = 0: log 0.55 = -0.598 beats log 0.405 = -0.904.
    # alpha = 4: -0.904 / (7 / 6) ** 4 = -0.488 beats -0.598 / 1.
    model = BigramModel(
        {
            EOS: {EOS: 0.55, A: 0.45},
            A: {EOS: 0.9, 1: 0.1},
            1: {EOS: 1.0},
        }
    )
    src = np.ones((1, 3), "int32")
    ids, scores = seq2seq.beam_search(model, src, 2, 4, length_penalty=0.0)
    np.testing.assert_array_equal(ids, [[EOS, 0, 0, 0]])
    np.testing.assert_allclose(scores, [math.log(0.55)], rtol=1e-5)
    ids, scores = seq2seq.beam_search(model, src, 2, 4, length_penalty=4.0)
    np.testing.assert_array_equal(ids, [[A, EOS, 0, 0]])
    np.testing.assert_allclose(
        scores, [math.log(0.405) / (7 / 6) ** 4], rtol=1e-5
    )


def test_search_continues_while_a_longer_hypothesis_could_win():
    # [EOS] at once: log 0.74 = -0.301, penalty 1. The live [A] (log 0.26
    # = -1.347) divided by the next length's penalty ((7 / 6) ** 4 = 1.85)
    # cannot beat it, but [A, B, 1, EOS] (log 0.26 + 3 log 0.99 = -1.377)
    # scores -1.377 / (9 / 6) ** 4 = -0.272 and wins: the bound must use
    # the largest penalty still reachable.
    model = BigramModel(
        {
            EOS: {EOS: 0.74, A: 0.26},
            A: {B: 0.99, EOS: 0.01},
            B: {1: 0.99, EOS: 0.01},
            1: {EOS: 0.99, 2: 0.01},
            2: {EOS: 1.0},
        }
    )
    src = np.ones((1, 3), "int32")
    ids, scores = seq2seq.beam_search(model, src, 2, 4, length_penalty=4.0)
    np.testing.assert_array_equal(ids, [[A, B, 1, EOS]])
    expected = (math.log(0.26) + 3 * math.log(0.99)) / 1.5**4
    np.testing.assert_allclose(scores, [expected], rtol=1e-5)


def test_sampling_with_top_k_1_or_tiny_top_p_is_greedy(model):
    src = sources(6, 10)
    greedy = np.asarray(seq2seq.greedy_search(model, src, 6))
    top_k = seq2seq.sample(model, src, 6, temperature=1.5, top_k=1, seed=3)
    top_p = seq2seq.sample(model, src, 6, temperature=1.5, top_p=1e-4, seed=3)
    np.testing.assert_array_equal(top_k, greedy)
    np.testing.assert_array_equal(top_p, greedy)


def test_sampling_follows_the_tempered_distribution(model):
    # One step from one source, 4000 times: the token frequencies are
    # softmax(logits / temperature) with [PAD] banned.
    src = np.repeat(sources(1, 10), 4000, axis=0)
    ids = np.asarray(seq2seq.sample(model, src, 1, temperature=2.0, seed=0))
    frequencies = np.bincount(ids[:, 0], minlength=10) / len(ids)
    logits = np.asarray(
        model({"encoder_token_ids": src[:1],
               "decoder_token_ids": np.full((1, 1), EOS, "int32")}),
        "float64",
    )[0, 0]
    logits[PAD] = -np.inf
    expected = np.exp(log_softmax(logits / 2.0))
    np.testing.assert_allclose(frequencies, expected, atol=0.03)
    assert frequencies[PAD] == 0


def test_top_k_and_top_p_restrict_the_support(model):
    src = np.repeat(sources(1, 10), 2000, axis=0)
    first = {"encoder_token_ids": src[:1],
             "decoder_token_ids": np.full((1, 1), EOS, "int32")}
    logits = np.asarray(model(first), "float64")[0, 0]
    logits[PAD] = -np.inf
    order = np.argsort(-logits)
    ids = np.asarray(seq2seq.sample(model, src, 1, top_k=2, seed=0))
    assert set(ids[:, 0]) == set(order[:2])
    # top_p: the smallest most-likely set whose probability reaches p.
    probabilities = np.exp(log_softmax(logits))[order]
    p = 0.5 * (probabilities[0] + probabilities[:2].sum())  # needs two
    ids = np.asarray(seq2seq.sample(model, src, 1, top_p=p, seed=0))
    assert set(ids[:, 0]) == set(order[:2])


def test_sampling_seed_reproduces(model):
    src = sources(8, 10)
    a = seq2seq.sample(model, src, 6, temperature=3.0, seed=1)
    b = seq2seq.sample(model, src, 6, temperature=3.0, seed=1)
    c = seq2seq.sample(model, src, 6, temperature=3.0, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_make_decoder_serves_any_batch_and_source_length(model):
    greedy = seq2seq.make_decoder(model, "greedy")
    beam = seq2seq.make_decoder(model, "beam", beam_size=3,
                                length_penalty=0.5)
    assert isinstance(greedy, tf.types.experimental.PolymorphicFunction)
    for src in (sources(2, 10), sources(3, 10, length=4)):
        out = greedy(tf.constant(src))
        np.testing.assert_array_equal(
            out["token_ids"], seq2seq.greedy_search(model, src, 6)
        )
        out = beam(tf.constant(src))
        ids, scores = seq2seq.beam_search(model, src, 3, 6, 0.5)
        np.testing.assert_array_equal(out["token_ids"], ids)
        np.testing.assert_allclose(out["scores"], scores, atol=1e-5)
    # One trace each, whatever the batch size and source length.
    assert greedy.experimental_get_tracing_count() == 1
    assert beam.experimental_get_tracing_count() == 1


def test_bad_settings_raise(model):
    src = sources(2, 10)
    with pytest.raises(ValueError, match="max_decoder_sequence_length"):
        seq2seq.greedy_search(model, src, 7)
    with pytest.raises(ValueError, match="beam_size"):
        seq2seq.beam_search(model, src, 0, 6)
    with pytest.raises(ValueError, match="Unknown decoding method"):
        seq2seq.make_decoder(model, "nucleus")
    with pytest.raises(ValueError, match="top_p"):
        seq2seq.sample(model, src, 6, top_p=1.5)


def test_mixed_precision_decoding():
    from keras_tfm.training.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = Seq2SeqLM(
            vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=6,
        )
    src = sources(2, 10)
    ids = seq2seq.greedy_search(model, src, 4)
    assert ids.dtype == tf.int32 and ids.shape == (2, 4)
    ids, scores = seq2seq.beam_search(model, src, 2, 4)
    assert ids.dtype == tf.int32 and scores.dtype == tf.float32
    assert np.isfinite(np.asarray(scores)).all()


@pytest.mark.slow
def test_decoder_runs_inside_a_saved_model(model, tmp_path):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("translate", seq2seq.make_decoder(model, "greedy"))
    archive.add_endpoint(
        "sample",
        seq2seq.make_decoder(model, "sample", max_length=4, top_k=3, seed=7),
    )
    archive.write_out(str(tmp_path), verbose=False)
    revived = tf.saved_model.load(str(tmp_path))
    for src in (sources(2, 10), sources(3, 10, length=4)):
        np.testing.assert_array_equal(
            revived.translate(tf.constant(src))["token_ids"],
            seq2seq.greedy_search(model, src, 6),
        )
        # Stateless draws: the same seed gives the same tokens.
        np.testing.assert_array_equal(
            revived.sample(tf.constant(src))["token_ids"],
            seq2seq.sample(model, src, 4, top_k=3, seed=7),
        )
