"""AdamW with linear warmup and cosine decay, as every keras-tfm run uses."""

import keras


def build_optimizer(config):
    """AdamW with linear warmup to `config.learning_rate`, then cosine decay
    to `learning_rate * min_learning_rate_ratio` at `max_steps`.

    Gradient clipping is the `TrainingModel`'s (`global_clipnorm`), which
    clips the all-reduced gradient rather than each replica's share. The
    schedule is a function of the optimizer's step, which counts optimizer
    steps (one per global batch, accumulated batches included), whatever
    the number of replicas.
    """
    warmup = config.resolved_warmup_steps()
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=config.max_steps - warmup,
        alpha=config.min_learning_rate_ratio,
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=1e-8,
    )
    # Decay matrices only: biases and layer-norm scales/offsets are exempt.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
