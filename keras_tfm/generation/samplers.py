"""Choosing the next token: greedy, or sampling with top-k and top-p."""

import keras_hub

from keras_tfm.errors import UserError


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Raises `UserError` naming a sampling setting that cannot work."""
    if temperature < 0:
        raise UserError("--temperature must be >= 0 (0 means greedy).")
    if top_k is not None and top_k < 1:
        raise UserError("--top-k must be a positive integer.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError("--top-p must be in (0, 1].")


def make_sampler(temperature=1.0, top_k=None, top_p=None, seed=None):
    """A keras-hub sampler for the given settings.

    `temperature=0` is greedy decoding (argmax). Otherwise logits are
    divided by `temperature`, then restricted to the `top_k` most likely
    tokens and/or the smallest set whose probability reaches `top_p`, then
    sampled; `seed` makes the draw reproducible.
    """
    check_sampling(temperature, top_k, top_p)
    samplers = keras_hub.samplers
    if temperature == 0:
        return samplers.GreedySampler()
    if top_p is not None:
        return samplers.TopPSampler(
            p=top_p, k=top_k, seed=seed, temperature=temperature
        )
    if top_k is not None:
        return samplers.TopKSampler(k=top_k, seed=seed, temperature=temperature)
    return samplers.RandomSampler(seed=seed, temperature=temperature)
