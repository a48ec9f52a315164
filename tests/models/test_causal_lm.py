import os

import keras
import numpy as np
import pytest

import keras_tfm
from keras_tfm.models import CausalLM

VOCAB, SEQ = 30, 8
KWARGS = dict(
    vocabulary_size=VOCAB,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=SEQ,
)


def token_ids(batch=2, seq=SEQ):
    return np.random.randint(4, VOCAB, size=(batch, seq)).astype("int32")


@pytest.mark.parametrize(
    "position_embedding", ["learned", "sinusoidal", "rotary"]
)
def test_logits_shape_and_save_round_trip(position_embedding, tmp_path):
    model = CausalLM(position_embedding=position_embedding, **KWARGS)
    x = token_ids()
    logits = model(x)
    assert logits.shape == (2, SEQ, VOCAB)
    assert model(token_ids(seq=3)).shape == (2, 3, VOCAB)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CausalLM)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(x), logits, atol=1e-6)


def test_saved_model_loads_in_the_global_precision(tmp_path):
    # model.keras holds float32 weights and no precision: a model trained
    # in mixed_bfloat16 loads in Keras' global policy, float32 unless the
    # caller sets another before loading (the README says so).
    from keras_tfm.training.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = CausalLM(**KWARGS)
    assert model.encoder.compute_dtype == "bfloat16"
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.encoder.compute_dtype == "float32"
    with dtype_policy("mixed_bfloat16"):
        loaded = keras.models.load_model(path, compile=False)
    assert loaded.encoder.compute_dtype == "bfloat16"
    assert loaded.encoder.variable_dtype == "float32"
    x = token_ids()
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_config_round_trip():
    model = CausalLM(dropout=0.1, tie_embeddings=False, **KWARGS)
    clone = CausalLM.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()


def test_untied_head_adds_one_matrix():
    tied = CausalLM(tie_embeddings=True, **KWARGS)
    untied = CausalLM(tie_embeddings=False, **KWARGS)
    assert untied.count_params() - tied.count_params() == VOCAB * 8


def test_future_token_never_changes_earlier_logits():
    model = CausalLM(**KWARGS)
    x = token_ids()
    changed = x.copy()
    changed[:, 5:] = (changed[:, 5:] + 1 - 4) % (VOCAB - 4) + 4
    a, b = np.asarray(model(x)), np.asarray(model(changed))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-5)
    assert not np.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize(
    "position_embedding", ["learned", "sinusoidal", "rotary"]
)
def test_cached_decoding_equals_full_forward(position_embedding):
    model = CausalLM(position_embedding=position_embedding, **KWARGS)
    x = token_ids()
    full = np.asarray(model(x))
    cache = model.init_cache(2)
    logits, _, cache = model.call_with_cache(x[:, :3], cache, 0)
    steps = [np.asarray(logits)]
    for t in range(3, SEQ):
        logits, _, cache = model.call_with_cache(x[:, t : t + 1], cache, t)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_fit_lowers_loss_on_a_learnable_sequence():
    model = CausalLM(**KWARGS)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), jit_compile=False
    )
    # Each token is the previous one plus one: learnable in a few steps.
    start = np.random.randint(4, VOCAB - SEQ - 1, size=(64, 1))
    seq = (start + np.arange(SEQ + 1)).astype("int32")
    x, y = seq[:, :-1], seq[:, 1:]
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert "perplexity" in history.history and "accuracy" in history.history
    np.testing.assert_allclose(
        history.history["perplexity"][-1], np.exp(losses[-1]), rtol=0.2
    )


def test_compile_defaults():
    model = CausalLM(**KWARGS)
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.loss.from_logits


def test_hidden_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CausalLM(**{**KWARGS, "num_heads": 3})


def test_loads_after_importing_keras_tfm_only(tmp_path):
    # A fresh interpreter: `import keras_tfm` must register everything.
    path = str(tmp_path / "model.keras")
    CausalLM(**KWARGS).save(path)
    code = (
        "import keras_tfm, keras, numpy as np\n"
        f"m = keras.models.load_model({path!r})\n"
        "print(m(np.zeros((1, 4), 'int32')).shape)\n"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ,
             "PYTHONPATH": os.path.dirname(keras_tfm.__path__[0])},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"(1, 4, {VOCAB})" in out.stdout


@pytest.mark.parametrize("position_embedding", ["learned", "sinusoidal"])
def test_attention_never_crosses_a_document_boundary(position_embedding):
    # Windows packed from several documents, each ended by [EOS] (id 3).
    model = CausalLM(**{**KWARGS, "max_sequence_length": 12},
                     position_embedding=position_embedding,
                     attend_within_documents=True)
    x = np.array([[5, 6, 7, 3, 8, 9, 10, 3, 11, 12, 13, 14]], "int32")
    changed = x.copy()
    changed[0, 1] = 20  # a token of the first document
    a, b = np.asarray(model(x)), np.asarray(model(changed))
    # The other documents' logits do not move; the first's do.
    np.testing.assert_array_equal(a[0, 4:], b[0, 4:])
    assert not np.allclose(a[0, 1:4], b[0, 1:4])
    # A document computes as if it were alone in its window (positions
    # restart after [EOS]).
    alone = np.asarray(model(x[:, 4:8]))
    np.testing.assert_allclose(alone[0], a[0, 4:8], atol=1e-5)


def test_cached_generation_within_documents_equals_recomputing():
    from keras_tfm import generation

    model = CausalLM(**{**KWARGS, "max_sequence_length": 12},
                     attend_within_documents=True)
    prompt = [5, 6, 3, 8]  # the prompt's second document is the current
    cached = generation.generate_ids(model, prompt, 6)
    tokens = list(prompt)
    for _ in range(6):
        logits = np.asarray(model(np.array([tokens], "int32")))[0, -1]
        tokens.append(int(np.argmax(logits)))
    assert cached == tokens[len(prompt):]


def test_rotary_within_documents_is_refused():
    with pytest.raises(ValueError, match="rotary"):
        CausalLM(**KWARGS, position_embedding="rotary",
                 attend_within_documents=True)
