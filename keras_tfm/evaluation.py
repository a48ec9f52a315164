"""Loss, perplexity and bits per byte of a language model on token windows.

Bits per byte make models with different tokenizers comparable: the total
information the model needs to code the text, divided by the text's UTF-8
size. A `[UNK]` target is charged its cross-entropy plus 8 bits for every
byte it hides (a plain byte code for them), so a tokenizer that maps rare
text to `[UNK]` cannot look better for it.
"""

import math

import numpy as np
import tensorflow as tf

from keras_tfm.data import make_dataset


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
        tokenizer: the run's tokenizer; needed for `"masked"`.
        batch_size: int.
        seed: int. Seeds the masked LM's masks.

    Returns:
        A dict with `loss` (mean nats per predicted token), `perplexity`,
        `bits_per_byte`, `tokens` (predicted tokens), `bytes`,
        `unknown_tokens`, `unknown_rate` and `unknown_bytes`.
    """
    token_nll = _nll_function(model)
    total_nats, total_tokens = 0.0, 0
    if objective == "causal":
        for start in range(0, len(windows), batch_size):
            batch = windows.tokens[start : start + batch_size]
            nll = token_nll(batch[:, :-1], batch[:, 1:]).numpy()
            weights = batch[:, 1:] != 0  # [PAD] fills the last window
            total_nats += float(nll[weights].sum())
            total_tokens += int(weights.sum())
        text_bytes = int(windows.target_bytes.sum())
        unknown_bytes = int(windows.target_unknown_bytes.sum())
        unknown_tokens = int(
            (windows.tokens[:, 1:] == tokenizer.unk_id).sum()
            if tokenizer is not None
            else 0
        )
        bits = total_nats / math.log(2) + 8 * unknown_bytes
        scored_tokens = total_tokens
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
        for inputs, targets, weights in dataset:
            nll = token_nll(inputs, targets).numpy()
            weights = weights.numpy()
            total_nats += float((nll * weights).sum())
            total_tokens += int(weights.sum())
            used += len(inputs)
        # A masked LM is no density model of the text: spread its mean
        # masked-token loss over every token of the windows it saw, as a
        # pseudo bits per byte, comparable between masked LMs only.
        seen = windows.subset(np.arange(used))
        text_bytes = int(seen.target_bytes.sum())
        unknown_bytes = int(seen.target_unknown_bytes.sum())
        unknown_tokens = int((seen.tokens[:, :-1] == tokenizer.unk_id).sum())
        scored_tokens = seen.tokens[:, :-1].size
        mean = total_nats / max(1, total_tokens)
        bits = mean * scored_tokens / math.log(2) + 8 * unknown_bytes
    loss = total_nats / max(1, total_tokens)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": bits / max(1, text_bytes),
        "tokens": total_tokens,
        "bytes": text_bytes,
        "unknown_tokens": unknown_tokens,
        "unknown_rate": unknown_tokens / max(1, scored_tokens),
        "unknown_bytes": unknown_bytes,
    }
