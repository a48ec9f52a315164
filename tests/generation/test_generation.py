import numpy as np
import pytest

from keras_tfm import generation
from keras_tfm.errors import UserError
from keras_tfm.models import CausalLM
from keras_tfm.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def model():
    return CausalLM(
        vocabulary_size=260, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16,
    )


def greedy_without_cache(model, prompt, steps):
    tokens = list(prompt)
    for _ in range(steps):
        context = np.array([tokens[-model.max_sequence_length:]], "int32")
        tokens.append(int(np.argmax(model(context)[0, -1])))
    return tokens[len(prompt):]


def test_cached_greedy_equals_recomputing(model):
    prompt = [10, 20, 30]
    cached = generation.generate_ids(model, prompt, 10)
    assert cached == greedy_without_cache(model, prompt, 10)


def greedy_sliding_without_cache(model, prompt, steps):
    # The documented rule, recomputed without the cache: when the context
    # (16 here) is full, the last half becomes the new prompt (or less, if
    # fewer tokens remain to generate) and generation continues from it.
    length = model.max_sequence_length
    tokens, new = list(prompt), []
    while len(new) < steps:
        remaining = steps - len(new)
        context = tokens[-max(1, length - min(remaining, length // 2)):]
        for _ in range(min(remaining, length - len(context))):
            logits = model(np.array([context], "int32"))[0, -1]
            context.append(int(np.argmax(logits)))
            tokens.append(context[-1])
            new.append(context[-1])
    return new


def test_long_generation_slides_the_window(model):
    # 40 tokens from a 16-token context: three refills of the window.
    ids = generation.generate_ids(model, [5, 6], 40)
    assert ids == greedy_sliding_without_cache(model, [5, 6], 40)


def test_a_generated_model_can_be_freed():
    # The compiled greedy loop is kept per model; it must not keep the
    # model (and itself) alive once the caller lets go of it.
    import gc

    from keras_tfm.generation import causal

    small = CausalLM(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8,
    )
    before = len(causal._GREEDY)
    generation.generate_ids(small, [1, 2], 3)
    assert len(causal._GREEDY) == before + 1
    del small
    gc.collect()
    assert len(causal._GREEDY) == before


def test_sampling_is_reproducible_with_a_seed(model):
    def sample(seed, **kwargs):
        sampler = generation.make_sampler(1.0, seed=seed, **kwargs)
        return generation.generate_ids(model, [7, 8, 9], 12, sampler)

    assert sample(1, top_k=50) == sample(1, top_k=50)
    assert sample(1, top_p=0.9) == sample(1, top_p=0.9)
    assert sample(1) != sample(2)


def test_top_k_of_one_is_greedy(model):
    sampler = generation.make_sampler(1.0, top_k=1, seed=3)
    assert generation.generate_ids(model, [1, 2], 6, sampler) == (
        generation.generate_ids(model, [1, 2], 6)
    )


def test_generate_text(model):
    text = generation.generate(
        model, ByteTokenizer(), "Hi", max_new_tokens=5, temperature=0
    )
    assert isinstance(text, str)


def test_bad_sampling_settings():
    with pytest.raises(UserError):
        generation.make_sampler(-1.0)
    with pytest.raises(UserError):
        generation.make_sampler(1.0, top_p=1.5)
    with pytest.raises(UserError):
        generation.make_sampler(1.0, top_k=0)
