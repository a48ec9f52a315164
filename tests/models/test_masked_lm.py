import keras
import numpy as np

from keras_tfm.models import MaskedLM

VOCAB, SEQ = 30, 8
KWARGS = dict(
    vocabulary_size=VOCAB,
    num_layers=1,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=SEQ,
)


def token_ids(batch=2):
    return np.random.randint(4, VOCAB, size=(batch, SEQ)).astype("int32")


def test_logits_shape_and_save_round_trip(tmp_path):
    model = MaskedLM(**KWARGS)
    x = token_ids()
    assert model(x).shape == (2, SEQ, VOCAB)
    path = str(tmp_path / "mlm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.get_config() == model.get_config()


def test_attention_is_bidirectional():
    model = MaskedLM(**KWARGS)
    x = token_ids()
    changed = x.copy()
    changed[:, -1] = 4 + (changed[:, -1] - 3) % (VOCAB - 4)
    assert not np.allclose(model(x)[:, 0], model(changed)[:, 0])


def test_padding_changes_no_other_output():
    model = MaskedLM(**KWARGS)
    x = token_ids()
    x[:, -2:] = 0  # [PAD]
    # Anything at padded positions is ignored: compare two pad layouts.
    a = np.asarray(model(x))
    shorter = x.copy()
    shorter[:, -3] = 0
    b = np.asarray(model(shorter))
    assert not np.allclose(a[:, :-3], b[:, :-3])  # one token fewer matters
    # A model with the padding mask sees padded keys not at all: outputs at
    # real positions equal those of the unpadded prefix.
    prefix = np.asarray(model(x[:, :-2]))
    np.testing.assert_allclose(a[:, :-2], prefix, atol=1e-5)


def test_fit_with_sample_weights():
    model = MaskedLM(**KWARGS)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    x = token_ids(32)
    weights = (np.random.uniform(size=x.shape) < 0.3).astype("float32")
    masked = np.where(weights > 0, 2, x).astype("int32")
    history = model.fit(masked, x, sample_weight=weights, epochs=3,
                        batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "perplexity" in history.history
