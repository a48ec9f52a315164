import keras
from keras import ops

from keras_tfm.layers.checks import check_heads_divide
from keras_tfm.layers.masks import document_masking
from keras_tfm.layers.position_embedding import PositionEmbedding
from keras_tfm.layers.sine_position_encoding import SinePositionEncoding
from keras_tfm.layers.transformer_encoder import TransformerEncoder

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary")
# [EOS], which ends a document in packed windows (keras_tfm.tokenizers).
EOS_TOKEN_ID = 3

# The constructor arguments `CausalLM` and `MaskedLM` share: they build the
# layers and make up the config of either.
ARCHITECTURE = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "max_sequence_length",
    "dropout",
    "position_embedding",
    "rotary_max_wavelength",
    "layer_norm_epsilon",
    "normalize_first",
    "tie_embeddings",
    "use_bias",
    "activation",
    "attend_within_documents",
)


def architecture(arguments):
    """The `ARCHITECTURE` entries of a constructor's `locals()`."""
    return {name: arguments[name] for name in ARCHITECTURE}


def lm_initializer():
    """GPT-2's initializer: normal with stddev 0.02, for every weight."""
    return keras.initializers.RandomNormal(stddev=0.02)


class TransformerLM(keras.Model):
    """The parts a causal and a masked language model share.

    Token embedding, position information, a `TransformerEncoder` stack and
    an output projection to the vocabulary (tied to the token embedding by
    default). Subclasses build the functional graph: `CausalLM` adds the
    causal mask, `MaskedLM` a padding mask and a BERT-style prediction head.
    Each is a functional model, so it saves to `.keras`, exports and
    `fit`s like any Keras model. Models hold architecture only: keras-tfm's
    training step (micro-batches, accumulation, clipping after the
    all-reduce) is `keras_tfm.training.TrainingModel`'s.
    """

    def _build_layers(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length,
        dropout,
        position_embedding,
        rotary_max_wavelength,
        layer_norm_epsilon,
        normalize_first,
        tie_embeddings,
        use_bias,
        activation,
        dtype,
        attend_within_documents=False,
    ):
        check_heads_divide(hidden_dim, num_heads)
        self._documents = attend_within_documents
        if attend_within_documents and position_embedding == "rotary":
            raise ValueError(
                "attend_within_documents restarts positions in every "
                "document, which rotary embeddings do not support yet: use "
                "position_embedding 'learned' or 'sinusoidal'."
            )
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"Unknown position_embedding '{position_embedding}': use one "
                f"of {', '.join(POSITION_EMBEDDINGS)}."
            )
        # `ReversibleEmbedding` embeds token ids and, called with
        # `reverse=True`, projects hidden states back to vocabulary logits;
        # tied, both use one matrix (Press & Wolf, 2017).
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            tie_weights=tie_embeddings,
            embeddings_initializer=lm_initializer(),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_layer = None
        if position_embedding == "learned":
            self.position_layer = PositionEmbedding(
                sequence_length=max_sequence_length,
                initializer=lm_initializer(),
                dtype=dtype,
                name="position_embedding",
            )
        elif position_embedding == "sinusoidal":
            self.position_layer = SinePositionEncoding(
                dtype=dtype, name="position_embedding"
            )
        self.embeddings_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="embeddings_dropout"
        )
        self.encoder = TransformerEncoder(
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=normalize_first,
            use_bias=use_bias,
            rotary_max_wavelength=(
                rotary_max_wavelength
                if position_embedding == "rotary"
                else None
            ),
            kernel_initializer=lm_initializer(),
            dtype=dtype,
            name="encoder",
        )

    def _embed(self, token_ids, start_index=0, positions=None,
               training=None):
        # (batch, seq) -> (batch, seq, hidden)
        x = self.token_embedding(token_ids)
        if self.position_layer is not None:
            x = x + self.position_layer(
                x, start_index=start_index, positions=positions
            )
        return self.embeddings_dropout(x, training=training)

    def _document_masking(self, token_ids):
        """`(attention_mask, positions)` that keep attention inside each
        document of a packed window and restart positions after `[EOS]`;
        `(None, None)` for models that attend across documents."""
        if not self._documents:
            return None, None
        return document_masking(token_ids, EOS_TOKEN_ID)

    def _store_config(self, **config):
        for name, value in config.items():
            setattr(self, name, value)
        self._config_keys = list(config)

    def get_config(self):
        # Like keras-hub's Backbone, the config is the constructor's
        # arguments, not Functional's graph, and `from_config` is
        # `cls(**config)`.
        config = {"name": self.name, "trainable": self.trainable}
        for key in self._config_keys:
            config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def compile_from_config(self, config):
        # Keras skips this for models with a custom `compile`; ours only
        # fills in defaults, so restoring the saved settings is safe.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _compile_defaults(self, optimizer, loss):
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(
                learning_rate=3e-4, weight_decay=0.1, beta_2=0.99
            )
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            )
        return optimizer, loss


def token_logits(model, hidden_states):
    """Vocabulary logits `(batch, seq, vocabulary_size)` in float32."""
    logits = model.token_embedding(hidden_states, reverse=True)
    return ops.cast(logits, "float32")
