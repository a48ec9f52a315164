"""The on-device sampler of `keras_tfm.export.decoder` (what
`generate --backend tflite` draws with): greedy, temperature, top-k and
top-p against distributions computed here by hand."""

import numpy as np
import pytest

from keras_tfm.export.decoder import _choose

# Probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 (as logits).
PROBABILITIES = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
LOGITS = np.log(PROBABILITIES).astype(np.float32)


def frequencies(draws=20000, **settings):
    rng = np.random.default_rng(0)
    counts = np.bincount(
        [_choose(LOGITS, rng=rng, **settings) for _ in range(draws)],
        minlength=len(LOGITS),
    )
    return counts / draws


def assert_close_to(observed, expected):
    # 20,000 draws: a frequency's standard error is below 0.004.
    np.testing.assert_allclose(observed, expected, atol=0.015)


def test_greedy_is_the_argmax():
    rng = np.random.default_rng(0)
    assert _choose(LOGITS, 0.0, None, None, rng) == 0


def test_sampling_follows_the_softmax():
    assert_close_to(frequencies(temperature=1.0, top_k=None, top_p=None),
                    PROBABILITIES)


def test_temperature_sharpens():
    # Temperature 0.5 squares the probabilities, then renormalizes.
    squared = PROBABILITIES ** 2 / (PROBABILITIES ** 2).sum()
    assert_close_to(frequencies(temperature=0.5, top_k=None, top_p=None),
                    squared)


def test_top_k_keeps_the_k_most_likely():
    # The two most likely, renormalized: 2/3 and 1/3.
    assert_close_to(frequencies(temperature=1.0, top_k=2, top_p=None),
                    [2 / 3, 1 / 3, 0, 0, 0])


@pytest.mark.parametrize("top_p, expected", [
    # The smallest set whose probability reaches p: {0} for 0.5,
    # {0, 1} for 0.7, {0, 1, 2} for 0.8.
    (0.5, [1, 0, 0, 0, 0]),
    (0.7, [2 / 3, 1 / 3, 0, 0, 0]),
    (0.8, [4 / 7, 2 / 7, 1 / 7, 0, 0]),
])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    assert_close_to(frequencies(temperature=1.0, top_k=None, top_p=top_p),
                    expected)


def test_top_k_and_top_p_together():
    # top-k 3 first (0.5, 0.25, 0.125 -> 4/7, 2/7, 1/7), then p 0.8 of
    # those keeps {0, 1} (6/7 >= 0.8): 2/3, 1/3.
    assert_close_to(frequencies(temperature=1.0, top_k=3, top_p=0.8),
                    [2 / 3, 1 / 3, 0, 0, 0])
