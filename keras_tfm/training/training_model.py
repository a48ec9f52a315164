"""`TrainingModel`: keras-tfm's train step around any Keras model.

The models in `keras_tfm.models` are architecture only and train with
Keras' own step. Pre-training and fine-tuning wrap them in a
`TrainingModel`, whose step adds what Keras' lacks:

- batch splits: each batch is split into `batch_splits` parts computed as
  independent forward and backward passes in the one compiled step, their
  gradients summed. The update is the same; on a CPU, XLA runs the parts'
  single-threaded element-wise ops side by side on two cores.
- gradient accumulation across steps: `grad_accum_steps` calls of the
  compiled step each add one micro-batch's gradients to accumulators; the
  last applies their weighted mean. Activation memory is one
  micro-batch's. Keras' optimizer option `gradient_accumulation_steps`
  applies inside a `tf.cond`, which tf.distribute refuses ("merge_call
  called while defining a new graph"); here the choice between "add" and
  "add and apply" is made in Python between two compiled functions, so it
  works under every strategy.
- clipping after the all-reduce: Keras' optimizers clip each replica's
  share of the gradient, so `global_clipnorm` would change the result with
  the number of replicas; `global_clipnorm` here clips the summed one.
- `fit` under MultiWorkerMirroredStrategy, which fails in stock Keras
  (keras-team/keras#20585): scalar logs are reshaped for Keras' multi-worker
  reduction, and the model is built from one replica's first batch
  (overriding Keras' private `_maybe_symbolic_build`; `pyproject.toml` pins
  Keras below its next minor release, and a test checks the method's
  signature).

The wrapped model is `training_model.model`; save that, not the wrapper.
The wrapper's `save_weights` holds model and optimizer: keras-tfm's
checkpoints.
"""

import keras
import tensorflow as tf


class TrainingModel(keras.Model):
    """Trains `model` with micro-batches, accumulation and global clipping.

    Args:
        model: the Keras model to train (maps inputs to predictions).
        batch_splits: int. Parts each batch is computed in, side by side.
            Defaults to `1`.
        grad_accum_steps: int. Batches whose gradients make one optimizer
            step. `fit` then runs `grad_accum_steps` calls per optimizer
            step; `optimizer.iterations` counts optimizer steps. Defaults to
            `1`.
        global_clipnorm: float or `None`. Clip the gradient (summed over
            replicas and accumulated batches) to this global norm.

    Example:
    ```python
    trainer = TrainingModel(lm, grad_accum_steps=4, global_clipnorm=1.0)
    trainer.compile(optimizer="adamw", loss=...)
    trainer.fit(micro_batches, steps_per_epoch=4 * optimizer_steps)
    lm.save("model.keras")
    ```
    """

    def __init__(self, model, batch_splits=1, grad_accum_steps=1,
                 global_clipnorm=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("batch_splits", batch_splits),
                            ("grad_accum_steps", grad_accum_steps)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{name} must be a positive int; got {value!r}"
                )
        self.model = model
        # A functional model is built on construction; so is its wrapper
        # (checkpoints load into it before any call).
        self.built = model.built
        self.batch_splits = batch_splits
        self.grad_accum_steps = grad_accum_steps
        self.global_clipnorm = global_clipnorm
        # Calls of the train function so far; every grad_accum_steps-th
        # applies the update.
        self._calls = 0
        # Per-replica gradient sums and their total weight: plain
        # tf.Variables, synchronized on read, so that each replica adds to
        # its own copy without a cross-replica merge. Not saved: they are
        # zero whenever a checkpoint is written (at step boundaries).
        self._accumulators = None
        if grad_accum_steps > 1:
            self._accumulators = _Accumulators(model.trainable_variables)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # === The step ===

    def _batch_gradients(self, data):
        """Gradients of this replica's batch mean loss, and the batch's
        weight (its sample weights' sum, or its size)."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        k = self.batch_splits
        parts = [_split(t, k) for t in (x, y, sample_weight)]
        weights = self.trainable_weights
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if sample_weight is not None:
            batch_weight = tf.reduce_sum(tf.cast(sample_weight, "float32"))
        else:
            batch_weight = tf.cast(_batch_size(x), "float32")
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
                    loss * replicas, sample_weight=_batch_size(x_i)
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
        # The mean of equal parts' mean gradients is the batch's.
        return [g / k for g in total], batch_weight

    def accumulate_step(self, data):
        """Adds one micro-batch's gradients to the accumulators."""
        gradients, weight = self._batch_gradients(data)
        self._accumulators.add(gradients, weight)
        return self._logs()

    def train_step(self, data):
        """One optimizer step: this batch's gradients (plus the
        accumulated ones), clipped after the all-reduce, applied."""
        gradients, weight = self._batch_gradients(data)
        if self._accumulators is not None:
            # The accumulated batches' weighted mean: each batch weighs by
            # its weight, as if all had been one batch.
            gradients = self._accumulators.mean_and_reset(gradients, weight)
        if self.global_clipnorm:
            gradients = self._clip_global_norm(gradients)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._logs()

    def test_step(self, data):
        return self._multi_worker_safe(super().test_step(data))

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if self.grad_accum_steps == 1:
            return self.train_function
        apply = self.train_function
        # Keras compiles whatever `self.train_step` is when it is asked:
        # point it at the accumulating step for the second function.
        self.train_step = self.accumulate_step
        try:
            super().make_train_function(force=True)
        finally:
            del self.train_step
        accumulate = self.train_function

        def train_function(iterator):
            self._calls += 1
            if self._calls % self.grad_accum_steps == 0:
                return apply(iterator)
            return accumulate(iterator)

        self.train_function = train_function
        return train_function

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

    # === Multi-worker fixes ===

    def _logs(self):
        return self._multi_worker_safe(self.get_metrics_result())

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


def _split(data, k):
    """`k` equal parts of a tensor or of a structure of tensors (a dict of
    model inputs), each part of the same structure."""
    if data is None:
        return [None] * k
    pieces = [tf.split(t, k) for t in tf.nest.flatten(data)]
    return [tf.nest.pack_sequence_as(data, [p[i] for p in pieces])
            for i in range(k)]


def _batch_size(data):
    return tf.shape(tf.nest.flatten(data)[0])[0]


class _Accumulators:
    """Gradient sums and their weight, one copy per replica.

    Kept outside Keras' tracking (a plain object holding tf.Variables), so
    they are neither saved nor restored with the model.
    """

    def __init__(self, variables):
        def zeros(shape):
            return tf.Variable(
                tf.zeros(shape, "float32"),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

        self.sums = [zeros(v.shape) for v in variables]
        self.weight = zeros(())

    def add(self, gradients, weight):
        for total, gradient in zip(self.sums, gradients):
            total.assign_add(weight * tf.cast(gradient, "float32"))
        self.weight.assign_add(weight)

    def mean_and_reset(self, gradients, weight):
        total_weight = self.weight + weight
        means = [
            tf.cast(
                (total + weight * tf.cast(g, "float32")) / total_weight, g.dtype
            )
            for total, g in zip(self.sums, gradients)
        ]
        for total in self.sums:
            total.assign(tf.zeros_like(total))
        self.weight.assign(0.0)
        return means
