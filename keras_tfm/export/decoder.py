"""On-device generation: a TFLite file with `prefill` and `decode`.

Signatures (static shapes; L is the model's max_sequence_length):

- `prefill`: `token_ids` int32 `[1, L]` (the prompt, padded with 0) ->
  `logits` float32 `[1, L, V]` and `cache` float32 `[1, layers, 2, L,
  heads, head_dim]`, the keys and values of every position.
- `decode`: `token_id` int32 `[1, 1]`, `index` int32 `[]` (its position)
  and `cache` -> `logits` float32 `[1, V]` (for position index + 1) and the
  updated `cache`.

An app prefills the prompt once, reads the logits at the prompt's last
position, then feeds each chosen token to `decode` with the cache from the
previous call. `generate_ids` below does exactly that with the LiteRT
interpreter alone, and slides the window as `keras_tfm.generation` does,
so greedy output equals the Keras model's token for token.
"""

import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_tfm.export import tflite


def decoder_archive(model):
    length = model.max_sequence_length
    archive = keras.export.ExportArchive()
    archive.track(model)
    cache_shape = tuple(model.init_cache(1).shape)

    def prefill(token_ids):
        cache = tf.zeros(cache_shape, model.compute_dtype)
        logits, _, cache = model.call_with_cache(token_ids, cache, 0)
        return {"logits": tf.cast(logits, tf.float32), "cache": cache}

    def decode(token_id, index, cache):
        logits, _, cache = model.call_with_cache(token_id, cache, index)
        return {"logits": tf.cast(logits[:, 0], tf.float32), "cache": cache}

    archive.add_endpoint(
        "prefill",
        prefill,
        input_signature=[
            tf.TensorSpec([1, length], tf.int32, name="token_ids")
        ],
    )
    archive.add_endpoint(
        "decode",
        decode,
        input_signature=[
            tf.TensorSpec([1, 1], tf.int32, name="token_id"),
            tf.TensorSpec([], tf.int32, name="index"),
            tf.TensorSpec(cache_shape, tf.float32, name="cache"),
        ],
    )
    return archive


def convert_decoder(model, allow_flex=False):
    """The prefill/decode TFLite file (float32) as bytes, and its ops."""
    with tempfile.TemporaryDirectory() as tmp:
        decoder_archive(model).write_out(tmp, verbose=False)
        content = tflite.convert_saved_model(
            tmp, ["prefill", "decode"], "none", allow_flex
        )
    return content, tflite.list_ops(content)


def _choose(logits, temperature, top_k, top_p, rng):
    if temperature == 0:
        return int(np.argmax(logits))
    logits = logits.astype(np.float64) / temperature
    if top_k:
        cutoff = np.sort(logits)[-min(top_k, len(logits))]
        logits = np.where(logits < cutoff, -np.inf, logits)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    if top_p is not None:
        order = np.argsort(-probabilities)
        cumulative = np.cumsum(probabilities[order])
        keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
        kept = np.zeros_like(probabilities)
        kept[keep] = probabilities[keep]
        probabilities = kept / kept.sum()
    return int(rng.choice(len(probabilities), p=probabilities))


def generate_ids(runner, prompt_ids, max_new_tokens, temperature=0.0,
                 top_k=None, top_p=None, seed=None):
    """Generates with a prefill/decode TFLite interpreter alone.

    Args:
        runner: a LiteRT `Interpreter` of the decoder file.
        prompt_ids: list of int, at least one.
    """
    prefill = runner.get_signature_runner("prefill")
    decode = runner.get_signature_runner("decode")
    length = prefill.get_input_details()["token_ids"]["shape"][1]
    rng = np.random.default_rng(seed)
    tokens, new = list(prompt_ids), []
    while len(new) < max_new_tokens:
        # The same window as keras_tfm.generation.generate_ids.
        remaining = max_new_tokens - len(new)
        context = tokens[-max(1, length - min(remaining, length // 2)) :]
        steps = min(remaining, length - len(context))
        padded = np.zeros((1, length), np.int32)
        padded[0, : len(context)] = context
        out = prefill(token_ids=padded)
        logits, cache = out["logits"][0, len(context) - 1], out["cache"]
        for position in range(len(context), len(context) + steps):
            token = _choose(logits, temperature, top_k, top_p, rng)
            tokens.append(token)
            new.append(token)
            if position == len(context) + steps - 1:
                break
            out = decode(
                token_id=np.array([[token]], np.int32),
                index=np.array(position, np.int32),
                cache=cache,
            )
            logits, cache = out["logits"][0], out["cache"]
    return new
