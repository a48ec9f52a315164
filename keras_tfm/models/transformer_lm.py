import keras
import tensorflow as tf
from keras import ops

from keras_tfm.layers.position_embedding import PositionEmbedding
from keras_tfm.layers.sine_position_encoding import SinePositionEncoding
from keras_tfm.layers.transformer_encoder import TransformerEncoder

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary")


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
    `fit`s like any Keras model.
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
    ):
        if hidden_dim % num_heads != 0:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads "
                f"({num_heads}): choose a hidden_dim that is a multiple of "
                "num_heads."
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

    def _embed(self, token_ids, start_index=0, training=None):
        # (batch, seq) -> (batch, seq, hidden)
        x = self.token_embedding(token_ids)
        if self.position_layer is not None:
            x = x + self.position_layer(x, start_index=start_index)
        return self.embeddings_dropout(x, training=training)

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


    # === Training steps ===
    # Two additions to Keras' TensorFlow train step, used by keras-tfm's
    # trainer and inert unless switched on: gradient accumulation over
    # micro-batches (`micro_batches`), and global-norm clipping of the
    # gradient summed over all replicas (`global_clipnorm`); plus the fixes
    # that let `fit` run under MultiWorkerMirroredStrategy.

    micro_batches = 1
    # Keras optimizers clip each replica's share of the gradient before
    # the all-reduce, so under a multi-replica strategy their
    # `global_clipnorm` clips a different gradient than on one device.
    # Set this instead (and leave the optimizer's unset) to clip the
    # all-reduced gradient, identically on any number of replicas.
    global_clipnorm = None

    def train_step(self, data):
        if self.micro_batches == 1 and not self.global_clipnorm:
            return self._multi_worker_safe(super().train_step(data))
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        k = self.micro_batches
        parts = [
            tf.split(t, k) if t is not None else [None] * k
            for t in (x, y, sample_weight)
        ]
        weights = self.trainable_weights
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if sample_weight is not None and k > 1:
            # The whole batch's weight, which each part's loss is weighed
            # against below; summed once, not once per part.
            batch_weight = tf.reduce_sum(tf.cast(sample_weight, "float32"))
        total = None
        for x_i, y_i, w_i in zip(*parts):
            with tf.GradientTape() as tape:
                y_pred = self(x_i, training=True)
                loss = self._compute_loss(
                    x=x_i, y=y_i, y_pred=y_pred, sample_weight=w_i,
                    training=True,
                )
                if w_i is not None and k > 1:
                    # The loss is the mean over this part's weighted
                    # positions (the masked LM's masked tokens); weigh it
                    # by its share of the batch's weight, so the mean over
                    # parts is the whole batch's mean.
                    loss = loss * tf.math.divide_no_nan(
                        k * tf.reduce_sum(tf.cast(w_i, loss.dtype)),
                        tf.cast(batch_weight, loss.dtype),
                    )
                # Keras scales the loss by 1 / replicas for the all-reduce
                # sum; the tracker wants the unscaled value.
                self._loss_tracker.update_state(
                    loss * replicas, sample_weight=tf.shape(x_i)[0]
                )
                loss = self.optimizer.scale_loss(loss)
            # An untied embedding's gradient is an IndexedSlices outside
            # XLA; summing, dividing and clipping need a dense tensor.
            gradients = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices)
                else g
                for g in tape.gradient(loss, weights)
            ]
            total = (
                gradients
                if total is None
                else [a + b for a, b in zip(total, gradients)]
            )
            self.compute_metrics(x_i, y_i, y_pred, sample_weight=w_i)
        # The mean of equal micro-batches' mean gradients is the batch's.
        gradients = [g / k for g in total]
        if self.global_clipnorm:
            gradients = self._clip_global_norm(gradients)
        self.optimizer.apply_gradients(zip(gradients, weights))
        return self._multi_worker_safe(self.get_metrics_result())

    def _clip_global_norm(self, gradients):
        # This replica's gradients sum, over replicas, to the batch's mean
        # gradient; its norm decides the clipping, so all-reduce first.
        context = tf.distribute.get_replica_context()
        summed = gradients
        if context is not None and context.num_replicas_in_sync > 1:
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        norm = tf.linalg.global_norm(summed)
        # Gradients of a loss scaled for mixed precision (by the factor
        # scale_loss applies, 1 without): compare the unscaled norm.
        norm = norm / self.optimizer.scale_loss(tf.constant(1.0, norm.dtype))
        scale = tf.minimum(1.0, self.global_clipnorm / (norm + 1e-12))
        return [g * tf.cast(scale, g.dtype) for g in gradients]

    def test_step(self, data):
        return self._multi_worker_safe(super().test_step(data))

    def _multi_worker_safe(self, logs):
        # Under MultiWorkerMirroredStrategy Keras reduces each log with
        # strategy.reduce("MEAN", value, axis=0), which fails for scalars;
        # shape (1,) logs reduce to the same scalar.
        if not isinstance(
            tf.distribute.get_strategy(),
            tf.distribute.MultiWorkerMirroredStrategy,
        ):
            return logs
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds the model from a first batch that it averages with
        # strategy.reduce("MEAN"), which fails on multi-worker per-replica
        # int token ids; any one replica's batch has the right structure.
        strategy = self._distribute_strategy
        if iterator is not None and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda t: strategy.experimental_local_results(t)[0], batch
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )


def token_logits(model, hidden_states):
    """Vocabulary logits `(batch, seq, vocabulary_size)` in float32."""
    logits = model.token_embedding(hidden_states, reverse=True)
    return ops.cast(logits, "float32")
