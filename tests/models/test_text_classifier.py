import keras
import numpy as np
import pytest

from keras_tfm.models import CausalLM
from keras_tfm.models import MaskedLM
from keras_tfm.models import TextClassifier
from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import save_config

VOCAB, SEQ, CLASSES = 30, 8, 3
BACKBONE = dict(
    vocabulary_size=VOCAB,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=SEQ,
)
POOLINGS = [("first", False), ("mean", False), ("last", True), ("mean", True)]


def classifier(**kwargs):
    return TextClassifier(**{**BACKBONE, "num_classes": CLASSES, **kwargs})


def token_ids(lengths=(5, 8), seq=SEQ):
    # [EOS] then random tokens, right-padded with 0 to `seq`.
    x = np.zeros((len(lengths), seq), "int32")
    for row, length in enumerate(lengths):
        x[row, 0] = 3
        x[row, 1:length] = np.random.randint(4, VOCAB, size=length - 1)
    return x


def hidden_states(model, x):
    # The backbone's output, called layer by layer: (batch, seq, hidden).
    h = model.token_embedding(x)
    if model.position_layer is not None:
        h = h + model.position_layer(h)
    return np.asarray(
        model.encoder(h, padding_mask=x != 0, use_causal_mask=model.causal)
    )


def head(model, pooled):
    # The classifier layer in numpy: (batch, hidden) -> (batch, classes).
    kernel, bias = (w.numpy() for w in model.classifier.weights)
    return pooled @ kernel + bias


@pytest.mark.parametrize("position_embedding", ["learned", "rotary"])
@pytest.mark.parametrize("pooling, causal", POOLINGS)
def test_logits_shape_and_dtype(pooling, causal, position_embedding):
    model = classifier(
        pooling=pooling, causal=causal, position_embedding=position_embedding
    )
    logits = model(token_ids())
    assert logits.shape == (2, CLASSES) and logits.dtype == "float32"
    assert model(token_ids((3,), seq=4)).shape == (1, CLASSES)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        classifier(pooling="max")
    with pytest.raises(ValueError, match="num_classes"):
        classifier(num_classes=1)


def test_config_and_keras_file_round_trip(tmp_path):
    model = classifier(pooling="last", causal=True, classifier_dropout=0.2)
    x = token_ids()
    clone = TextClassifier.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
    path = str(tmp_path / "classifier.keras")
    # Compiled and trained a step: the optimizer's state saves too.
    model.compile(jit_compile=False)
    model.train_on_batch(x, np.array([0, 2]))
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, TextClassifier)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert isinstance(loaded.optimizer, keras.optimizers.AdamW)
    assert int(loaded.optimizer.iterations) == 1


@pytest.mark.parametrize("pooling, causal", POOLINGS)
def test_pooling_matches_numpy_from_hidden_states(pooling, causal):
    model = classifier(pooling=pooling, causal=causal)
    x = token_ids(lengths=(3, 8, 5))
    h = hidden_states(model, x)
    real = (x != 0).astype("float32")
    if pooling == "first":
        pooled = h[:, 0]
    elif pooling == "mean":
        pooled = (h * real[:, :, None]).sum(1) / real.sum(1, keepdims=True)
    else:
        pooled = h[np.arange(3), [2, 7, 4]]  # the last real positions
    np.testing.assert_allclose(model(x), head(model, pooled), atol=1e-5)


@pytest.mark.parametrize("pooling, causal", POOLINGS)
def test_padding_never_changes_a_prediction(pooling, causal):
    model = classifier(pooling=pooling, causal=causal)
    x = token_ids(lengths=(5, 3), seq=5)
    padded = np.pad(x, ((0, 0), (0, 3)))  # three more pads per row
    np.testing.assert_allclose(model(x), model(padded), atol=1e-5)
    # Each row alone, without its padding, is predicted the same too.
    alone = np.asarray(model(x[1:, :3]))
    np.testing.assert_allclose(model(padded)[1:], alone, atol=1e-5)


def test_causal_last_pooling_sees_nothing_after_the_last_token():
    # Under causal attention, the state at position 4 of a full sequence is
    # what "last" pooling reads from its 5-token prefix (padded): whatever
    # follows the pooled token, pads or text, cannot reach it.
    x = token_ids(lengths=(8, 8))
    prefix = x.copy()
    prefix[:, 5:] = 0
    model = classifier(pooling="last", causal=True)
    from_full = head(model, hidden_states(model, x)[:, 4])
    np.testing.assert_allclose(model(prefix), from_full, atol=1e-5)
    # A bidirectional backbone's state at 4 does see the later tokens.
    model = classifier(pooling="last", causal=False)
    from_full = head(model, hidden_states(model, x)[:, 4])
    assert not np.allclose(model(prefix), from_full, atol=1e-5)


def backbone_weights(model):
    # Path -> value of the token matrix, position table and encoder.
    weights = {"token": model.token_embedding.embeddings.numpy()}
    for layer in (model.position_layer, model.encoder):
        weights.update({w.path: w.numpy() for w in layer.weights})
    return weights


@pytest.mark.parametrize("lm_class", [CausalLM, MaskedLM])
def test_load_backbone_weights_copies_the_language_model(lm_class):
    causal = lm_class is CausalLM
    lm = lm_class(**BACKBONE, tie_embeddings=False)
    model = classifier(causal=causal, pooling="last" if causal else "mean")
    before = backbone_weights(model)
    expected = backbone_weights(lm)
    assert set(before) == set(expected)
    assert not np.allclose(before["token"], expected["token"])
    head_before = [w.numpy() for w in model.classifier.weights]
    model.load_backbone_weights(lm)
    after = backbone_weights(model)
    for path, value in expected.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    for a, b in zip(head_before, model.classifier.weights):
        np.testing.assert_array_equal(a, b.numpy())
    if causal:
        # The same hidden states: through the LM's own untied output
        # projection they give the LM's logits.
        x = token_ids(lengths=(8, 8))
        projection = lm.token_embedding.reverse_embeddings.numpy()
        np.testing.assert_allclose(
            hidden_states(model, x) @ projection, lm(x), atol=1e-5
        )


@pytest.mark.parametrize(
    "lm_kwargs, classifier_kwargs, message",
    [
        ({"hidden_dim": 16}, {}, "hidden_dim is 16, the classifier's 8"),
        ({"num_layers": 1}, {}, "num_layers is 1"),
        ({"position_embedding": "rotary"}, {}, "position_embedding"),
        ({"activation": "relu"}, {}, "activation is 'relu'"),
        ({}, {"causal": False}, "causal is True"),
    ],
)
def test_architecture_mismatch_raises(lm_kwargs, classifier_kwargs, message):
    lm = CausalLM(**{**BACKBONE, **lm_kwargs})
    model = classifier(**{"causal": True, "pooling": "last",
                          **classifier_kwargs})
    before = backbone_weights(model)
    with pytest.raises(ValueError, match=message):
        model.load_backbone_weights(lm)
    # Nothing was copied.
    np.testing.assert_array_equal(backbone_weights(model)["token"],
                                  before["token"])


def test_load_backbone_weights_refuses_other_models():
    with pytest.raises(ValueError, match="CausalLM or MaskedLM"):
        classifier().load_backbone_weights(classifier())


def write_run(run_dir, objective, lm):
    run_dir.mkdir()
    config = TrainConfig(
        objective=objective, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, sequence_length=SEQ,
    )
    save_config(config, str(run_dir / "config.json"))
    lm.save(str(run_dir / "model.keras"))
    return str(run_dir)


@pytest.mark.parametrize(
    "objective, lm_class, pooling",
    [("causal", CausalLM, "last"), ("masked", MaskedLM, "mean")],
)
def test_from_run_builds_the_backbone_of_a_run(
    tmp_path, objective, lm_class, pooling
):
    lm = lm_class(**BACKBONE, activation="gelu_approximate")
    run_dir = write_run(tmp_path / "run", objective, lm)
    model = TextClassifier.from_run(
        run_dir, num_classes=2, classifier_dropout=0.3
    )
    assert model.causal == (objective == "causal")
    assert model.pooling == pooling
    assert model.num_classes == 2 and model.classifier_dropout == 0.3
    assert model.activation == "gelu_approximate"
    for path, value in backbone_weights(lm).items():
        np.testing.assert_array_equal(backbone_weights(model)[path], value)
    assert TextClassifier.from_run(run_dir, 2, pooling="first").pooling == (
        "first"
    )
    with pytest.raises(ValueError, match="hidden_dim is 8"):
        TextClassifier.from_run(run_dir, 2, hidden_dim=16, num_heads=2)


def test_from_run_refuses_other_directories(tmp_path):
    with pytest.raises(ValueError, match="config.json and model.keras "
                       "missing"):
        TextClassifier.from_run(str(tmp_path), 2)
    lm = CausalLM(**BACKBONE)
    run_dir = write_run(tmp_path / "run", "causal", lm)
    (tmp_path / "run" / "config.json").write_text('{"objective": "causal"}')
    with pytest.raises(ValueError, match="lacks num_layers"):
        TextClassifier.from_run(run_dir, 2)
    save_config(TrainConfig(objective="masked"), f"{run_dir}/config.json")
    with pytest.raises(ValueError, match="holds a CausalLM, but the run's "
                       "objective is 'masked'"):
        TextClassifier.from_run(run_dir, 2)
    # config.json of another run (the default sizes) beside this model.
    save_config(TrainConfig(), f"{run_dir}/config.json")
    with pytest.raises(ValueError, match="has num_layers 2 but .* says "
                       "num_layers 4"):
        TextClassifier.from_run(run_dir, 2)


def test_mixed_bfloat16_runs():
    model = classifier(dtype="mixed_bfloat16", pooling="mean")
    assert model.encoder.compute_dtype == "bfloat16"
    assert model.classifier.variable_dtype == "float32"
    x = token_ids()
    logits = model(x)
    assert logits.dtype == "float32" and np.isfinite(logits).all()
    # Close to the float32 model with the same weights.
    reference = classifier(pooling="mean")
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(logits, reference(x), atol=0.02)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    loss = model.train_on_batch(x, np.array([0, 1]))
    assert np.isfinite(loss).all()


def test_compile_defaults():
    model = classifier()
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.loss.from_logits
    (metric,) = model.get_compile_config()["metrics"]
    assert metric["class_name"] == "SparseCategoricalAccuracy"
    assert metric["config"]["name"] == "accuracy"
    # With zero gradients Adam's step is 0, so only weight decay moves a
    # weight: matrices decay, biases and layer-norm parameters do not.
    before = {w.path: w.numpy() for w in model.trainable_weights}
    model.optimizer.apply_gradients(
        [(np.zeros(w.shape, "float32"), w) for w in model.trainable_weights]
    )
    for w in model.trainable_weights:
        decays = w.path.endswith(("kernel", "embeddings"))
        assert np.array_equal(w.numpy(), before[w.path]) != decays, w.path


def separable_task(count=32):
    # Class 0: tokens 4-16, class 1: tokens 17-29; pads at random lengths.
    labels = np.arange(count) % 2
    x = np.zeros((count, SEQ), "int32")
    for row, label in enumerate(labels):
        length = np.random.randint(3, SEQ + 1)
        low = 4 if label == 0 else 17
        x[row, :length] = np.random.randint(low, low + 13, size=length)
    return x, labels


# About 8 s on two idle CPU cores, more on busy ones.
@pytest.mark.slow
def test_fit_lowers_loss_on_a_separable_task():
    x, y = separable_task()
    model = classifier(num_classes=2, pooling="mean")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert history.history["accuracy"][-1] == 1.0


def test_frozen_backbone_leaves_backbone_weights_unchanged():
    x, y = separable_task(16)
    model = classifier(num_classes=2, pooling="mean")
    for layer in model.backbone_layers():
        layer.trainable = False
    assert [w.path for w in model.trainable_weights] == [
        "classifier/kernel", "classifier/bias"
    ]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    before = backbone_weights(model)
    head_before = [w.numpy() for w in model.classifier.weights]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for path, value in backbone_weights(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    for a, b in zip(head_before, model.classifier.weights):
        assert not np.allclose(a, b.numpy())
