import json

import keras
import numpy as np
import pytest

from keras_tfm.errors import UserError
from keras_tfm.layers import PositionEmbedding
from keras_tfm.layers import TransformerEncoder
from keras_tfm.models import CausalLM
from keras_tfm.models import MaskedLM
from keras_tfm.models import Seq2SeqLM

VOCAB, SRC, TGT = 20, 6, 5
KWARGS = dict(
    vocabulary_size=VOCAB,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=SRC,
    max_decoder_sequence_length=TGT,
)
LM_KWARGS = dict(
    vocabulary_size=VOCAB,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=SRC,
)


def token_ids(batch=2, length=SRC, vocabulary=VOCAB):
    return np.random.randint(4, vocabulary, size=(batch, length)).astype(
        "int32"
    )


def batch(src=None, tgt=None):
    src = token_ids() if src is None else src
    tgt = token_ids(length=TGT) if tgt is None else tgt
    return {"encoder_token_ids": src, "decoder_token_ids": tgt}


def randomize(model, scale=0.3):
    # Larger weights than the 0.02 initializer, so that outputs depend
    # visibly on every input.
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.normal(size=w.shape).astype("float32") * scale
         for w in model.get_weights()]
    )
    return model


@pytest.mark.parametrize(
    "position_embedding, decoder_vocabulary_size",
    [("learned", None), ("sinusoidal", 13), ("rotary", None)],
)
def test_logits_and_save_round_trip(
    position_embedding, decoder_vocabulary_size, tmp_path
):
    model = Seq2SeqLM(
        position_embedding=position_embedding,
        decoder_vocabulary_size=decoder_vocabulary_size,
        **KWARGS,
    )
    target_vocabulary = decoder_vocabulary_size or VOCAB
    x = batch(tgt=token_ids(length=TGT, vocabulary=target_vocabulary))
    logits = model(x)
    assert logits.shape == (2, TGT, target_vocabulary)
    assert logits.dtype == "float32"
    # Free lengths: a shorter source and target.
    shorter = {"encoder_token_ids": x["encoder_token_ids"][:, :3],
               "decoder_token_ids": x["decoder_token_ids"][:, :2]}
    assert model(shorter).shape == (2, 2, target_vocabulary)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Seq2SeqLM)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(x), logits, atol=1e-6)


def test_config_round_trip_resolves_decoder_defaults():
    model = Seq2SeqLM(
        vocabulary_size=VOCAB, num_layers=3, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=7, dropout=0.1,
        tie_embeddings=False,
    )
    config = model.get_config()
    assert config["num_decoder_layers"] == 3
    assert config["max_decoder_sequence_length"] == 7
    assert config["decoder_vocabulary_size"] is None
    assert len(model.decoder.blocks) == 3
    clone = Seq2SeqLM.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


def test_embedding_parameter_counts():
    shared = Seq2SeqLM(**KWARGS)
    untied = Seq2SeqLM(tie_embeddings=False, **KWARGS)
    separate = Seq2SeqLM(decoder_vocabulary_size=13, **KWARGS)
    # An untied head adds one (hidden, vocabulary) matrix; a separate
    # target vocabulary adds its own (tied) embedding.
    assert untied.count_params() - shared.count_params() == VOCAB * 8
    assert separate.count_params() - shared.count_params() == 13 * 8


def test_encoder_side_has_the_language_models_layers():
    # Same classes and weight paths as CausalLM's encoder side, so that
    # pre-trained weights copy over.
    model = Seq2SeqLM(**KWARGS)
    lm = CausalLM(**LM_KWARGS)
    assert isinstance(model.token_embedding, keras.layers.ReversibleEmbedding)
    assert isinstance(model.position_layer, PositionEmbedding)
    assert isinstance(model.encoder, TransformerEncoder)
    lm_paths = {
        v.path: tuple(v.shape) for v in lm.weights
        if v.path.split("/")[0] in
        ("token_embedding", "position_embedding", "encoder")
    }
    paths = {v.path: tuple(v.shape) for v in model.weights}
    assert lm_paths and lm_paths.items() <= paths.items()


def test_source_padding_changes_no_logits():
    model = randomize(Seq2SeqLM(**{**KWARGS, "max_sequence_length": 8}))
    x = batch()
    padded = dict(x)
    padded["encoder_token_ids"] = np.pad(x["encoder_token_ids"],
                                         ((0, 0), (0, 2)))
    np.testing.assert_allclose(model(padded), model(x), atol=1e-5)


def test_target_padding_is_hidden_from_later_positions():
    model = randomize(Seq2SeqLM(**KWARGS))
    x = batch()
    x["decoder_token_ids"][:, 2] = 0  # a pad in the middle
    logits = np.asarray(model(x))
    # The same decoder with an explicit mask (a second path), and without.
    encoder_outputs, source_mask = model.encode(x["encoder_token_ids"])
    embedded = model._embed_decoder(x["decoder_token_ids"])

    def decode(mask):
        hidden = model.decoder(
            embedded, encoder_outputs=encoder_outputs,
            decoder_padding_mask=mask, encoder_padding_mask=source_mask,
        )
        return np.asarray(model._decoder_logits(hidden))

    mask = np.ones((2, TGT), bool)
    mask[:, 2] = False
    np.testing.assert_allclose(logits, decode(mask), atol=1e-5)
    assert not np.allclose(logits[:, 3:], decode(None)[:, 3:], atol=1e-3)


def test_future_target_token_never_changes_earlier_logits():
    model = randomize(Seq2SeqLM(**KWARGS))
    x = batch()
    changed = dict(x)
    changed["decoder_token_ids"] = x["decoder_token_ids"].copy()
    changed["decoder_token_ids"][:, 3:] = token_ids(length=TGT - 3)
    a, b = np.asarray(model(x)), np.asarray(model(changed))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)
    assert not np.allclose(a[:, 3:], b[:, 3:], atol=1e-3)


@pytest.mark.parametrize(
    "position_embedding", ["learned", "sinusoidal", "rotary"]
)
@pytest.mark.parametrize("decoder_vocabulary_size", [None, 13])
def test_cached_decoding_equals_full_forward(
    position_embedding, decoder_vocabulary_size
):
    model = randomize(
        Seq2SeqLM(
            position_embedding=position_embedding,
            decoder_vocabulary_size=decoder_vocabulary_size,
            **KWARGS,
        )
    )
    x = batch(tgt=token_ids(length=TGT, vocabulary=13))
    x["encoder_token_ids"][0, -2:] = 0
    full = np.asarray(model(x))
    encoder_outputs, mask = model.encode(x["encoder_token_ids"])
    cache = model.init_cache(2, encoder_outputs)
    assert tuple(cache["self_attention"].shape) == (2, 2, 2, TGT, 2, 4)
    assert tuple(cache["cross_attention"].shape) == (2, 2, 2, SRC, 2, 4)
    tgt = x["decoder_token_ids"]
    logits, hidden, cache = model.call_decoder_with_cache(
        tgt[:, :2], cache, 0, mask
    )
    assert hidden.shape == (2, 2, 8)
    steps = [np.asarray(logits)]
    for t in range(2, TGT):
        logits, _, cache = model.call_decoder_with_cache(
            tgt[:, t : t + 1], cache, t, mask
        )
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_mixed_precision():
    from keras_tfm.training.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = Seq2SeqLM(**KWARGS)
    assert model.decoder.compute_dtype == "bfloat16"
    assert model.decoder.variable_dtype == "float32"
    x = batch()
    logits = model(x)
    assert logits.dtype == "float32"
    assert np.isfinite(np.asarray(logits)).all()
    encoder_outputs, mask = model.encode(x["encoder_token_ids"])
    cache = model.init_cache(2, encoder_outputs)
    logits, _, cache = model.call_decoder_with_cache(
        x["decoder_token_ids"][:, :1], cache, 0, mask
    )
    assert logits.dtype == "float32"
    assert cache["self_attention"].dtype == "bfloat16"
    assert cache["cross_attention"].dtype == "bfloat16"


def test_load_encoder_weights_from_a_masked_lm():
    model = Seq2SeqLM(**KWARGS)
    lm = randomize(MaskedLM(**LM_KWARGS))
    decoder_before = [w.copy() for w in model.decoder.get_weights()]
    model.load_encoder_weights(lm)
    np.testing.assert_array_equal(
        model.token_embedding.embeddings, lm.token_embedding.embeddings
    )
    np.testing.assert_array_equal(
        model.position_layer.position_embeddings,
        lm.position_layer.position_embeddings,
    )
    for a, b in zip(model.encoder.get_weights(), lm.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.decoder.get_weights(), decoder_before):
        np.testing.assert_array_equal(a, b)
    # Both encoders are bidirectional with a padding mask: the copied
    # encoder computes the MaskedLM's hidden states.
    src = token_ids()
    src[0, -2:] = 0
    expected = lm.encoder(lm._embed(src), padding_mask=src != 0)
    np.testing.assert_allclose(model.encode(src)[0], expected, atol=1e-5)


def test_load_encoder_weights_copies_shared_position_rows():
    model = Seq2SeqLM(**{**KWARGS, "max_sequence_length": 4})
    lm = randomize(CausalLM(**LM_KWARGS))  # 6 positions
    model.load_encoder_weights(lm)
    np.testing.assert_array_equal(
        model.position_layer.position_embeddings,
        np.asarray(lm.position_layer.position_embeddings)[:4],
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_dim": 12}, "hidden_dim is 12 in the LM and 8"),
        ({"num_layers": 3}, "num_layers is 3 in the LM and 2"),
        ({"num_heads": 4}, "num_heads is 4 in the LM and 2"),
        ({"position_embedding": "rotary"}, "position_embedding"),
        ({"vocabulary_size": 30}, "vocabulary_size is 30, the Seq2SeqLM's 20"),
    ],
)
def test_load_encoder_weights_mismatch_raises(change, message):
    model = Seq2SeqLM(**KWARGS)
    lm = CausalLM(**{**LM_KWARGS, **change})
    with pytest.raises(ValueError, match=message):
        model.load_encoder_weights(lm)


def test_decoder_from_causal_lm():
    lm = randomize(CausalLM(**{**LM_KWARGS, "max_sequence_length": TGT}))
    model = Seq2SeqLM(**{**KWARGS, "max_sequence_length": TGT})
    cross_before = [
        [w.copy() for w in block.cross_attention.get_weights()]
        for block in model.decoder.blocks
    ]
    model.load_encoder_weights(lm, decoder_from_lm=True)
    for source, target, before in zip(
        lm.encoder.blocks, model.decoder.blocks, cross_before
    ):
        for a, b in zip(source.attention.get_weights(),
                        target.self_attention.get_weights()):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(before, target.cross_attention.get_weights()):
            np.testing.assert_array_equal(a, b)
    # With the cross-attention branches silenced, the pre-LN decoder is
    # the causal LM: same logits on the same tokens.
    for block in model.decoder.blocks:
        dense = block.cross_attention.output_dense
        dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    tgt = token_ids(length=TGT)
    logits = model(batch(src=token_ids(length=TGT), tgt=tgt))
    np.testing.assert_allclose(logits, lm(tgt), atol=1e-5)


def test_decoder_from_lm_copies_an_untied_head():
    lm = randomize(CausalLM(**{**LM_KWARGS, "tie_embeddings": False}))
    model = Seq2SeqLM(**{**KWARGS, "tie_embeddings": False})
    model.load_encoder_weights(lm, decoder_from_lm=True)
    np.testing.assert_array_equal(
        model.token_embedding.reverse_embeddings,
        lm.token_embedding.reverse_embeddings,
    )


def test_decoder_from_lm_needs_a_matching_causal_lm():
    model = Seq2SeqLM(**KWARGS)
    with pytest.raises(ValueError, match="needs a CausalLM"):
        model.load_encoder_weights(MaskedLM(**LM_KWARGS), decoder_from_lm=True)
    shallow = Seq2SeqLM(**{**KWARGS, "num_decoder_layers": 1})
    with pytest.raises(ValueError, match="num_layers is 2 in the LM and "
                       "num_decoder_layers 1"):
        shallow.load_encoder_weights(
            CausalLM(**LM_KWARGS), decoder_from_lm=True
        )
    with pytest.raises(ValueError, match="needs a keras_tfm CausalLM"):
        model.load_encoder_weights(Seq2SeqLM(**KWARGS))


def write_run(run_dir, lm):
    # A run directory as pre-training leaves it: the resolved TrainConfig
    # (whose vocabulary_size, 2000, is the WordPiece target) and the model.
    from keras_tfm.training.config import TrainConfig

    run_dir.mkdir()
    config = TrainConfig(
        num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        sequence_length=SRC, activation="gelu_approximate",
    )
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    lm.save(str(run_dir / "model.keras"))
    return str(run_dir)


def test_from_run(tmp_path):
    lm = randomize(
        CausalLM(**{**LM_KWARGS, "activation": "gelu_approximate"})
    )
    run_dir = write_run(tmp_path / "run", lm)
    model = Seq2SeqLM.from_run(run_dir, num_decoder_layers=1)
    assert model.vocabulary_size == VOCAB  # the model's, not the config's
    assert model.max_sequence_length == SRC
    assert model.activation == "gelu_approximate"
    assert len(model.decoder.blocks) == 1  # the override wins
    for a, b in zip(model.encoder.get_weights(), lm.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "run" / "model.keras").unlink()
    with pytest.raises(UserError, match="no model.keras"):
        Seq2SeqLM.from_run(run_dir)


def test_from_run_with_the_decoder(tmp_path):
    lm = randomize(
        CausalLM(**{**LM_KWARGS, "activation": "gelu_approximate"})
    )
    model = Seq2SeqLM.from_run(
        write_run(tmp_path / "run", lm), decoder_from_lm=True
    )
    np.testing.assert_array_equal(
        model.decoder.blocks[1].feedforward_output.kernel,
        lm.encoder.blocks[1].feedforward_output.kernel,
    )


def test_compile_defaults():
    model = Seq2SeqLM(**KWARGS)
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.loss.from_logits


def copy_task(n, length, vocabulary):
    """Targets are the sources then [EOS]; decoder inputs are the targets
    shifted right behind the [EOS] start token."""
    rng = np.random.default_rng(1)
    sources = rng.integers(4, vocabulary, size=(n, length)).astype("int32")
    eos = np.full((n, 1), 3, "int32")
    targets = np.concatenate([sources, eos], axis=1)
    decoder_inputs = np.concatenate([eos, sources], axis=1)
    return sources, decoder_inputs, targets


@pytest.mark.slow
def test_fit_lowers_loss_on_a_copy_task():
    model = Seq2SeqLM(
        vocabulary_size=12, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=5,
        max_decoder_sequence_length=6,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    sources, decoder_inputs, targets = copy_task(256, 5, 12)
    history = model.fit(
        {"encoder_token_ids": sources, "decoder_token_ids": decoder_inputs},
        targets,
        batch_size=32,
        epochs=6,
        verbose=0,
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert "perplexity" in history.history
