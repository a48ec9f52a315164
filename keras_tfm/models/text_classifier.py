import json
import os

import keras
from keras import ops

from keras_tfm.models.causal_lm import CausalLM
from keras_tfm.models.masked_lm import MaskedLM
from keras_tfm.models.transformer_lm import TransformerLM
from keras_tfm.models.transformer_lm import lm_initializer

POOLINGS = ("first", "mean", "last")

# The arguments that decide the backbone's weights and what it computes:
# `load_backbone_weights` refuses a language model that differs in any.
BACKBONE_ARCHITECTURE = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "max_sequence_length",
    "position_embedding",
    "rotary_max_wavelength",
    "layer_norm_epsilon",
    "normalize_first",
    "use_bias",
    "activation",
    "attend_within_documents",
)

# What a pre-training run's config.json must hold for `from_run`, beside
# its objective: config key -> the language model's argument, which
# `from_run` checks against model.keras.
RUN_CONFIG_KEYS = {
    "num_layers": "num_layers",
    "num_heads": "num_heads",
    "hidden_dim": "hidden_dim",
    "intermediate_dim": "intermediate_dim",
    "sequence_length": "max_sequence_length",
    "position_embedding": "position_embedding",
}


def default_pooling(causal):
    """The pooling `from_run(pooling="auto")` picks for a backbone.

    Causal: `"last"`, the only position whose state has seen the whole
    text (GPT-1 classifies from the final token). Masked: `"mean"`; our
    masked LM has no sentence-level objective (BERT's `[CLS]` is trained by
    next-sentence prediction), so no single position is trained to sum up
    the text, while the mean draws on every token's state directly, which
    also suits a frozen backbone.
    """
    return "last" if causal else "mean"


def pool(hidden_states, padding_mask, pooling):
    """`(batch, seq, hidden)` -> `(batch, hidden)`, ignoring padding.

    `padding_mask` is `(batch, seq)`, true at real tokens.
    """
    if pooling == "first":
        return hidden_states[:, 0, :]
    mask = ops.cast(padding_mask, hidden_states.dtype)
    if pooling == "mean":
        # (batch, hidden) / (batch, 1); an all-pad row divides by 1.
        total = ops.sum(hidden_states * mask[:, :, None], axis=1)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return total / count
    # "last": the state at the last real token, which under causal
    # attention has seen every token of the text. positions: 1, 2, ... at
    # real tokens, 0 at pads, (batch, seq); its row maximum marks the last.
    real = ops.cast(padding_mask, "int32")
    positions = real * ops.cumsum(ops.ones_like(real), axis=1)
    last = ops.maximum(ops.max(positions, axis=1) - 1, 0)
    return ops.take_along_axis(
        hidden_states, last[:, None, None], axis=1
    )[:, 0, :]


@keras.saving.register_keras_serializable(package="keras_tfm")
class TextClassifier(TransformerLM):
    """A Transformer text classifier, fine-tuned from a language model.

    Maps int32 token ids `(batch_size, sequence_length)`, right-padded with
    `pad_token_id`, to class logits `(batch_size, num_classes)` in float32.
    The backbone is a `CausalLM`'s or `MaskedLM`'s, with the same layer
    classes and names (`token_embedding`, `position_embedding`,
    `embeddings_dropout`, `encoder`), so `load_backbone_weights` copies a
    pre-trained model's weights in; the vocabulary head is left out. The
    encoder's output is pooled to one vector per text and classified by
    dropout and a dense layer named `classifier`.

    Padding never changes a prediction: pad positions are masked out as
    attention keys and pooling skips them. With `causal=True` the backbone
    attends causally, as the causal LM it came from was trained to, and
    `pooling="last"` reads the one state that has seen the whole text.

    Args:
        vocabulary_size: int. The number of token ids.
        num_classes: int. The number of classes.
        num_layers: int. The number of Transformer blocks.
        num_heads: int. Attention heads; must divide `hidden_dim`.
        hidden_dim: int. The width of the residual stream.
        intermediate_dim: int. The feed-forward hidden size.
        max_sequence_length: int. The longest sequence the model accepts.
        dropout: float. Dropout rate in the backbone. Defaults to `0.0`.
        position_embedding: `"learned"`, `"sinusoidal"` or `"rotary"`.
            Defaults to `"learned"`.
        rotary_max_wavelength: int. RoPE's longest wavelength. Defaults to
            `10000`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        normalize_first: bool. Pre-LN (`True`) or post-LN blocks. Defaults
            to `True`.
        use_bias: bool. Whether dense layers and norms have biases.
            Defaults to `True`.
        activation: the feed-forward activation. Defaults to `"gelu"`.
        causal: bool. Whether the backbone attends causally (a backbone
            from a `CausalLM`). Defaults to `False`.
        pooling: `"first"` (position 0, BERT's `[CLS]` place), `"mean"`
            (over real tokens) or `"last"` (the last real token; for causal
            backbones). Defaults to `"first"`.
        pad_token_id: int. The id of padding. Defaults to `0`.
        classifier_dropout: float. Dropout on the pooled vector. Defaults
            to `0.1`.
        dtype: the dtype policy of the layers. Defaults to `None` (the
            global policy).

    Call arguments:
        token_ids: int32 tensor `(batch_size, sequence_length)`.
        training: bool. Whether dropout is active.

    Example:
    ```python
    classifier = keras_tfm.models.TextClassifier.from_run(
        "runs/small-causal", num_classes=2
    )
    classifier.compile()  # AdamW, cross-entropy from logits, accuracy
    classifier.fit(keras_tfm.data.labelled.classification_dataset(
        data.texts, data.labels, tokenizer, sequence_length=128,
        batch_size=32, training=True,
    ), steps_per_epoch=500)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_classes,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length,
        dropout=0.0,
        position_embedding="learned",
        rotary_max_wavelength=10000,
        layer_norm_epsilon=1e-5,
        normalize_first=True,
        use_bias=True,
        activation="gelu",
        causal=False,
        pooling="first",
        pad_token_id=0,
        classifier_dropout=0.1,
        attend_within_documents=False,
        dtype=None,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(
                f"Unknown pooling '{pooling}': use one of "
                f"{', '.join(POOLINGS)}."
            )
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "`num_classes` must be an int of at least 2. "
                f"Received: num_classes={num_classes}"
            )
        backbone = dict(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
            dropout=dropout,
            position_embedding=position_embedding,
            rotary_max_wavelength=rotary_max_wavelength,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=normalize_first,
            use_bias=use_bias,
            activation=activation,
            attend_within_documents=attend_within_documents,
        )

        # === Layers ===
        # The language models' backbone layers; tied embeddings hold the
        # token matrix only, as no vocabulary projection is needed.
        self._build_layers(**backbone, tie_embeddings=True, dtype=dtype)
        self.classifier_dropout_layer = keras.layers.Dropout(
            classifier_dropout, dtype=dtype, name="classifier_dropout"
        )
        # Small initial logits: the head starts near the uniform guess and
        # sends small gradients into the pre-trained backbone.
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=lm_initializer(),
            dtype=dtype,
            name="classifier",
        )

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        # (batch, seq), true at real tokens: pads are hidden as keys.
        padding_mask = ops.not_equal(token_ids, pad_token_id)
        # A backbone pre-trained within documents sees text after its
        # [EOS] as a new document, positions from 0, as it did then.
        attention_mask, positions = self._document_masking(token_ids)
        x = self._embed(token_ids, positions=positions)
        x = self.encoder(
            x, padding_mask=padding_mask, use_causal_mask=causal,
            attention_mask=attention_mask,
        )
        x = pool(x, padding_mask, pooling)  # (batch, hidden)
        x = self.classifier_dropout_layer(x)
        logits = ops.cast(self.classifier(x), "float32")
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)

        # === Config ===
        self._store_config(
            **backbone,
            num_classes=num_classes,
            causal=causal,
            pooling=pooling,
            pad_token_id=pad_token_id,
            classifier_dropout=classifier_dropout,
        )

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """`Model.compile` with fine-tuning defaults.

        `"auto"` gives AdamW at learning rate 1e-4 (the middle of the range
        google-research/bert searched for its small BERTs) with BERT's
        weight decay of 0.01 on matrices only, sparse cross-entropy from
        logits, and accuracy.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(
                learning_rate=1e-4, weight_decay=0.01
            )
            optimizer.exclude_from_weight_decay(
                var_names=["bias", "gamma", "beta"]
            )
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            )
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def backbone_layers(self):
        """The pre-trained layers, to freeze (`trainable = False`) when
        only the head should train."""
        layers = [self.token_embedding]
        if self.position_layer is not None:
            layers.append(self.position_layer)
        return layers + [self.embeddings_dropout, self.encoder]

    def load_backbone_weights(self, lm):
        """Copies a `CausalLM`'s or `MaskedLM`'s backbone weights in.

        The token embedding matrix, the learned position table (if any) and
        every encoder weight are copied; the LM's output head is not.

        Raises:
            ValueError: `lm` is not a keras-tfm language model, or its
                architecture differs from this classifier's (the message
                names the first difference).
        """
        if not isinstance(lm, (CausalLM, MaskedLM)):
            raise ValueError(
                "load_backbone_weights takes a keras_tfm CausalLM or "
                f"MaskedLM; got {type(lm).__name__}."
            )
        differences = self._architecture_differences(lm)
        if differences:
            name, lm_value = differences[0]
            raise ValueError(
                f"the language model's {name} is {lm_value!r}, the "
                f"classifier's {getattr(self, name)!r}: build the "
                "classifier with the language model's architecture (see "
                "TextClassifier.from_run)."
            )
        # (classifier variable, language-model variable) pairs.
        pairs = [
            (self.token_embedding.embeddings, lm.token_embedding.embeddings)
        ]
        layers = [(self.encoder, lm.encoder)]
        if self.position_layer is not None:
            layers.append((self.position_layer, lm.position_layer))
        for own_layer, lm_layer in layers:
            lm_weights = {w.path: w for w in lm_layer.weights}
            own_weights = {w.path: w for w in own_layer.weights}
            if set(lm_weights) != set(own_weights):
                raise ValueError(
                    f"the weights of layer '{own_layer.name}' differ from "
                    "the language model's: "
                    f"{sorted(set(lm_weights) ^ set(own_weights))[:3]}"
                )
            pairs += [(own_weights[p], lm_weights[p]) for p in own_weights]
        # Every check before the first copy: a refusal changes nothing.
        for own, source in pairs:
            if tuple(own.shape) != tuple(source.shape):
                raise ValueError(
                    f"weight '{own.path}' has shape {tuple(own.shape)}, the "
                    f"language model's {tuple(source.shape)}."
                )
        for own, source in pairs:
            own.assign(source)

    def _architecture_differences(self, lm):
        # (name, lm_value) for every argument that differs. Causality and
        # the pad id change what the encoder computes, so they count too.
        config = lm.get_config()
        config["causal"] = isinstance(lm, CausalLM)
        if "pad_token_id" in config:
            checked = BACKBONE_ARCHITECTURE + ("causal", "pad_token_id")
        else:
            checked = BACKBONE_ARCHITECTURE + ("causal",)
        skip = set()
        if self.position_embedding != "rotary":
            skip.add("rotary_max_wavelength")
        if self.position_embedding != "learned":
            # Only a learned table's size depends on it.
            skip.add("max_sequence_length")
        return [
            (name, config[name])
            for name in checked
            if name not in skip and config[name] != getattr(self, name)
        ]

    @classmethod
    def from_run(cls, run_dir, num_classes, pooling="auto", **overrides):
        """A classifier with a pre-training run's backbone.

        Reads `run_dir/config.json` (the objective) and `run_dir/model.keras`
        (the trained language model, whose config gives the exact
        architecture: config.json's `vocabulary_size` is the WordPiece
        target, not the tokenizer's size), builds a classifier of the same
        architecture, causal if the run's objective was `"causal"`, and
        copies the backbone weights in.

        Args:
            run_dir: str. A finished pre-training run directory.
            num_classes: int. The number of classes.
            pooling: `"auto"`, `"first"`, `"mean"` or `"last"`. `"auto"`
                is `default_pooling`: `"last"` for a causal backbone,
                `"mean"` for a masked one. Defaults to `"auto"`.
            **overrides: other `TextClassifier` arguments, such as
                `dropout`, `classifier_dropout` or `dtype`.

        Raises:
            ValueError: `run_dir` is not a finished pre-training run, or an
                override changes the architecture.
        """
        config_path = os.path.join(run_dir, "config.json")
        model_path = os.path.join(run_dir, "model.keras")
        missing = [
            os.path.basename(path)
            for path in (config_path, model_path)
            if not os.path.isfile(path)
        ]
        if missing:
            raise ValueError(
                f"'{run_dir}' is not a finished pre-training run "
                f"({' and '.join(missing)} missing): pass the --output-dir "
                "of a finished `keras-tfm pretrain` run."
            )
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except ValueError as e:
            raise ValueError(
                f"'{config_path}' is not valid JSON ({e}): restore it."
            ) from None
        required = ["objective", *RUN_CONFIG_KEYS]
        lacking = required
        if isinstance(config, dict):
            lacking = [key for key in required if key not in config]
        if lacking:
            raise ValueError(
                f"'{config_path}' is not a pre-training config (it lacks "
                f"{', '.join(lacking)}): pass the "
                "--output-dir of a `keras-tfm pretrain` run."
            )
        objective = config["objective"]
        expected = {"causal": CausalLM, "masked": MaskedLM}.get(objective)
        if expected is None:
            raise ValueError(
                f"'{config_path}' has objective {objective!r}: a "
                "pre-training run's is 'causal' or 'masked'."
            )
        lm = keras.models.load_model(model_path, compile=False)
        if not isinstance(lm, expected):
            raise ValueError(
                f"'{model_path}' holds a {type(lm).__name__}, but the run's "
                f"objective is '{objective}' (a {expected.__name__}): the "
                "run directory is inconsistent."
            )
        lm_config = lm.get_config()
        for key, lm_key in RUN_CONFIG_KEYS.items():
            if config[key] != lm_config[lm_key]:
                raise ValueError(
                    f"'{model_path}' has {lm_key} {lm_config[lm_key]!r} but "
                    f"'{config_path}' says {key} {config[key]!r}: the run "
                    "directory is inconsistent."
                )
        causal = objective == "causal"
        if pooling == "auto":
            pooling = default_pooling(causal)
        kwargs = {name: lm_config[name] for name in BACKBONE_ARCHITECTURE}
        kwargs.update(
            dropout=lm_config["dropout"],
            num_classes=num_classes,
            causal=causal,
            pooling=pooling,
            pad_token_id=lm_config.get("pad_token_id", 0),
        )
        kwargs.update(overrides)
        classifier = cls(**kwargs)
        classifier.load_backbone_weights(lm)
        return classifier
