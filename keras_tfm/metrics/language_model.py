"""Loss, perplexity and bits per byte of a language model on token windows.

See `keras_tfm.metrics.bits_per_byte` for why bits per byte, and how
`[UNK]` targets are charged.
"""

import math

import numpy as np
import tensorflow as tf

from keras_tfm.data.pipeline import make_dataset
from keras_tfm.metrics.bits_per_byte import bits_per_byte


def _nll_function(model):
    # One compiled forward pass per model: per-token negative log-likelihood
    # in nats, (batch, seq).
    @tf.function
    def token_nll(inputs, targets):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)

    return token_nll


def evaluate_windows(
    model, windows, objective="causal", tokenizer=None, batch_size=32, seed=0
):
    """Evaluates `model` on every window.

    Args:
        model: a `CausalLM` or `MaskedLM` (or any model of token ids to
            logits).
        windows: `keras_tfm.data.Windows`.
        objective: `"causal"` or `"masked"`.
        tokenizer: the run's tokenizer: its `[PAD]` and `[UNK]` ids, and the
            masked LM's masking.
        batch_size: int.
        seed: int. Seeds the masked LM's masks.

    Returns:
        A dict with `loss` (mean nats per predicted token), `perplexity`,
        `bits_per_byte`, `tokens` (predicted tokens), `bytes`,
        `unknown_tokens`, `unknown_rate` and `unknown_bytes`.
    """
    token_nll = _nll_function(model)
    pad_id = tokenizer.pad_id if tokenizer is not None else 0
    unk_id = tokenizer.unk_id if tokenizer is not None else None
    total_nats, total_tokens = 0.0, 0
    if objective == "causal":
        for start in range(0, len(windows), batch_size):
            batch = windows.tokens[start : start + batch_size]
            nll = token_nll(batch[:, :-1], batch[:, 1:]).numpy()
            weights = batch[:, 1:] != pad_id  # [PAD] fills the last window
            total_nats += float(nll[weights].sum())
            total_tokens += int(weights.sum())
        seen = windows
        targets = windows.tokens[:, 1:]
        nats, scored_tokens = total_nats, total_tokens
    else:
        dataset = make_dataset(
            windows,
            min(batch_size, len(windows)),
            objective="masked",
            tokenizer=tokenizer,
            training=False,
            seed=seed,
        )
        used = 0
        for inputs, labels, weights in dataset:
            nll = token_nll(inputs, labels).numpy()
            weights = weights.numpy()
            total_nats += float((nll * weights).sum())
            total_tokens += int(weights.sum())
            used += len(inputs)
        # A masked LM is no density model of the text: spread its mean
        # masked-token loss over every token of the windows it saw, as a
        # pseudo bits per byte, comparable between masked LMs only.
        seen = windows.subset(np.arange(used))
        targets = seen.tokens[:, :-1]
        scored_tokens = targets.size
        nats = total_nats / max(1, total_tokens) * scored_tokens
    text_bytes = int(seen.target_bytes.sum())
    unknown_bytes = int(seen.target_unknown_bytes.sum())
    unknown_tokens = int((targets == unk_id).sum()) if unk_id is not None else 0
    loss = total_nats / max(1, total_tokens)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": bits_per_byte(nats, text_bytes, unknown_bytes),
        "tokens": total_tokens,
        "bytes": text_bytes,
        "unknown_tokens": unknown_tokens,
        "unknown_rate": unknown_tokens / max(1, scored_tokens),
        "unknown_bytes": unknown_bytes,
    }


def unigram_bits_per_byte(train, validation, vocabulary_size):
    """Bits per byte of validation targets under train-set token counts.

    The baseline a language model must beat: each token coded by its
    add-one-smoothed frequency, ignoring all context.
    """
    counts = np.bincount(
        train.tokens[:, 1:].ravel(), minlength=vocabulary_size
    )
    return unigram_bits_per_byte_from_counts(counts, validation)


def unigram_bits_per_byte_from_counts(counts, validation):
    """The same baseline from token counts `(vocabulary_size,)`."""
    counts = np.asarray(counts, np.float64)
    log_probability = np.log((counts + 1) / (counts.sum() + len(counts)))
    nats = -log_probability[validation.tokens[:, 1:]].sum()
    return bits_per_byte(
        nats,
        int(validation.target_bytes.sum()),
        int(validation.target_unknown_bytes.sum()),
    )
