"""Decoding a `Seq2SeqLM`: greedy search, sampling and beam search.

Every function here is built from TensorFlow ops only: the steps run in a
`tf.while_loop`, with no Python loop over steps and no NumPy, so the same
code runs eagerly, inside a `tf.function` with the input signature
`tf.TensorSpec([None, None], tf.int32)`, and inside an exported SavedModel.
`make_decoder` returns such a `tf.function` for one model and setting.

Each step feeds one target token through `Seq2SeqLM.call_decoder_with_cache`:
the source is encoded and its cross-attention keys and values projected
once (`init_cache`), and the self-attention cache grows by one position per
step.

Conventions, the same for all three methods:

- The decoder starts from `start_id` (`[EOS]`, id 3, by default): it is
  input position 0 and is not part of the output.
- Outputs are `(batch_size, max_length)` int32. The end token is included
  where it was generated; every position after it holds 0 (`[PAD]`). A
  sequence without an end token was cut at `max_length`.
- `max_length` counts generated tokens; it can be at most the model's
  `max_decoder_sequence_length`.
- The model's `pad_token_id` is never generated (its logit is set to
  `-inf` before the softmax, as fairseq does): padding targets carry no
  training signal, and a 0 in the output always means "after the end".
"""

import tensorflow as tf

# [EOS] in every keras-tfm tokenizer (keras_tfm.tokenizers.base).
EOS_ID = 3
METHODS = ("greedy", "sample", "beam")


def greedy_search(model, encoder_token_ids, max_length, start_id=EOS_ID,
                  end_id=EOS_ID):
    """The most likely token at every step.

    Args:
        model: a `Seq2SeqLM` (or any object with its `encode`, `init_cache`
            and `call_decoder_with_cache`).
        encoder_token_ids: int32 `(batch_size, source_length)`, padded with
            the model's `pad_token_id`.
        max_length: int. Tokens to generate at most.
        start_id: int. The decoder's first input token.
        end_id: int. The token that ends a sequence.

    Returns:
        int32 `(batch_size, max_length)`: the generated ids, end token
        included, 0 after it.
    """

    def choose(logits, step):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return _decode(
        model, encoder_token_ids, max_length, choose, start_id, end_id
    )


def sample(
    model,
    encoder_token_ids,
    max_length,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
    start_id=EOS_ID,
    end_id=EOS_ID,
):
    """Draws each token from the model's distribution.

    Logits are divided by `temperature`, then restricted to the `top_k`
    most likely tokens and/or to the smallest set whose probability reaches
    `top_p`, then sampled. `temperature=0` is greedy search. Draws are
    stateless (`tf.random.stateless_categorical` seeded with `(seed,
    step)`), so a given `seed` reproduces the same output, in a SavedModel
    too; `seed=None` draws a fresh seed per call.

    Args:
        model, encoder_token_ids, max_length, start_id, end_id: as in
            `greedy_search`.
        temperature: float >= 0. Defaults to `1.0`.
        top_k: int or `None`. Defaults to `None` (no limit).
        top_p: float in (0, 1] or `None`. Defaults to `None` (no limit).
        seed: int or `None`. Defaults to `None`.

    Returns:
        int32 `(batch_size, max_length)`, as `greedy_search`.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; received {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive int; received {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1]; received {top_p}")
    if temperature == 0:
        return greedy_search(
            model, encoder_token_ids, max_length, start_id, end_id
        )
    if seed is None:
        seed = tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int32)
    seed = tf.cast(seed, tf.int32)

    def choose(logits, step):
        logits = logits / temperature
        if top_k is not None:
            k = tf.minimum(top_k, tf.shape(logits)[-1])
            # (batch, 1): the k-th largest logit; smaller ones are dropped.
            kth = tf.math.top_k(logits, k=k).values[:, -1:]
            logits = tf.where(logits < kth, float("-inf"), logits)
        if top_p is not None:
            # Keep the largest logits while the probability before each is
            # below top_p: the most likely token always stays.
            ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
            before = tf.math.cumsum(
                tf.nn.softmax(ordered), axis=-1, exclusive=True
            )
            kept = tf.where(before < top_p, ordered, float("inf"))
            threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
            logits = tf.where(logits < threshold, float("-inf"), logits)
        draws = tf.random.stateless_categorical(
            logits, 1, seed=tf.stack([seed, step]), dtype=tf.int32
        )
        return draws[:, 0]

    return _decode(
        model, encoder_token_ids, max_length, choose, start_id, end_id
    )


def _decode(model, encoder_token_ids, max_length, choose, start_id, end_id):
    """The one-token-per-step loop of greedy search and sampling."""
    _check_max_length(model, max_length)
    encoder_token_ids = tf.convert_to_tensor(encoder_token_ids, tf.int32)
    batch_size = tf.shape(encoder_token_ids)[0]
    encoder_outputs, encoder_padding_mask = model.encode(encoder_token_ids)
    cache = model.init_cache(batch_size, encoder_outputs)
    positions = tf.range(max_length)[None, :]

    def body(step, previous, tokens, finished, cache):
        # previous: (batch,), the token at input position `step`.
        logits, _, cache = model.call_decoder_with_cache(
            previous[:, None], cache, step, encoder_padding_mask
        )
        token = choose(_next_token_logits(model, logits), step)
        # A finished row only pads.
        token = tf.where(finished, 0, token)
        tokens = tf.where(positions == step, token[:, None], tokens)
        finished = tf.logical_or(finished, tf.equal(token, end_id))
        return step + 1, token, tokens, finished, cache

    def cond(step, previous, tokens, finished, cache):
        return tf.logical_and(
            step < max_length, tf.logical_not(tf.reduce_all(finished))
        )

    loop_vars = (
        tf.constant(0),
        tf.fill([batch_size], tf.constant(start_id, tf.int32)),
        tf.zeros([batch_size, max_length], tf.int32),
        tf.zeros([batch_size], tf.bool),
        cache,
    )
    _, _, tokens, _, _ = tf.while_loop(cond, body, loop_vars)
    return tokens


def length_penalty_factor(length, alpha):
    """GNMT's length penalty `((5 + length) / 6) ** alpha` (Wu et al.,
    2016): a hypothesis' score is its log-probability divided by this.
    `alpha=0` scores by log-probability alone; a larger `alpha` favours
    longer outputs."""
    length = tf.cast(length, tf.float32)
    return tf.pow((5.0 + length) / 6.0, alpha)


def beam_search(
    model,
    encoder_token_ids,
    beam_size,
    max_length,
    length_penalty=1.0,
    start_id=EOS_ID,
    end_id=EOS_ID,
    return_all_beams=False,
):
    """The highest-scoring sequence found with `beam_size` beams.

    A hypothesis' score is its log-probability (the sum over its tokens,
    end token included) divided by GNMT's length penalty `((5 + length) /
    6) ** length_penalty`, `length` counting its tokens (end token included,
    start token not). See `length_penalty_factor`.

    Each step extends every live beam by every token and keeps the
    `beam_size` most probable of these candidates. Candidates that end (in
    `end_id`, or by reaching `max_length`) move to a pool of finished
    hypotheses (the `beam_size` best by score); the others stay live, so a
    beam that ends is not replaced and the beam narrows. With
    `beam_size=1` this is greedy search, token for token. The self-
    attention cache follows the beams: each step gathers the rows of the
    beams the survivors came from. The search stops early once no live
    beam can beat a row's best finished score, for every row: a live
    log-probability only falls as tokens are added, so its best possible
    score is its current log-probability divided by the largest penalty
    still reachable.

    Args:
        model, encoder_token_ids, max_length, start_id, end_id: as in
            `greedy_search`.
        beam_size: int. Beams per source.
        length_penalty: float. GNMT's `alpha`. Defaults to `1.0`.
        return_all_beams: bool. If true, returns the `beam_size` best
            finished hypotheses (an n-best list) instead of the best one.
            Defaults to `False`.

    Returns:
        `(token_ids, scores)`: int32 `(batch_size, max_length)`, as
        `greedy_search`, and float32 `(batch_size,)`, the scores. With
        `return_all_beams=True`, `(batch_size, beam_size, max_length)` and
        `(batch_size, beam_size)`, best first; when fewer hypotheses
        finished, the last entries hold zeros and a score of `-inf`.
    """
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(
            f"beam_size must be a positive int; received {beam_size!r}"
        )
    _check_max_length(model, max_length)
    encoder_token_ids = tf.convert_to_tensor(encoder_token_ids, tf.int32)
    batch_size = tf.shape(encoder_token_ids)[0]
    encoder_outputs, encoder_padding_mask = model.encode(encoder_token_ids)
    # The beams of source b are rows b * beam_size ... (b + 1) * beam_size
    # - 1 of every decoder tensor and of the cache.
    cache = model.init_cache(batch_size, encoder_outputs)
    cache = tf.nest.map_structure(
        lambda t: tf.repeat(t, beam_size, axis=0), cache
    )
    encoder_padding_mask = tf.repeat(encoder_padding_mask, beam_size, axis=0)
    positions = tf.range(max_length)[None, None, :]
    row_offsets = tf.range(batch_size)[:, None] * beam_size  # (batch, 1)
    negative_infinity = tf.constant(float("-inf"))
    max_penalty = length_penalty_factor(max_length, length_penalty)

    def body(step, alive_ids, alive_log_probs, finished_ids, finished_scores,
             cache):
        # The live beams' tokens at input position `step`: (batch, beams)
        previous = tf.cond(
            step > 0,
            lambda: tf.gather(alive_ids, tf.maximum(step - 1, 0), axis=2),
            lambda: tf.fill([batch_size, beam_size], start_id),
        )
        logits, _, cache = model.call_decoder_with_cache(
            tf.reshape(previous, [-1, 1]), cache, step, encoder_padding_mask
        )
        log_probs = tf.nn.log_softmax(_next_token_logits(model, logits))
        vocabulary_size = tf.shape(log_probs)[-1]
        # (batch, beams * vocabulary): every one-token extension.
        candidates = tf.reshape(
            alive_log_probs[:, :, None]
            + tf.reshape(log_probs, [batch_size, beam_size, -1]),
            [batch_size, -1],
        )
        # (batch, beams), best first.
        top_log_probs, top_indices = tf.math.top_k(candidates, k=beam_size)
        origin = top_indices // vocabulary_size
        token = top_indices % vocabulary_size
        ids = tf.gather(alive_ids, origin, batch_dims=1)
        ids = tf.where(positions == step, token[:, :, None], ids)
        ended = tf.logical_or(
            tf.equal(token, end_id), step == max_length - 1
        )

        # === Finished pool: the best beam_size by score ===
        scores = top_log_probs / length_penalty_factor(step + 1,
                                                       length_penalty)
        pool_scores = tf.concat(
            [finished_scores, tf.where(ended, scores, negative_infinity)],
            axis=1,
        )
        pool_ids = tf.concat([finished_ids, ids], axis=1)
        finished_scores, best = tf.math.top_k(pool_scores, k=beam_size)
        finished_ids = tf.gather(pool_ids, best, batch_dims=1)

        # === Live beams: the candidates that did not end ===
        alive_log_probs = tf.where(ended, negative_infinity, top_log_probs)
        cache = _reorder_cache(cache, tf.reshape(origin + row_offsets, [-1]))
        return (step + 1, ids, alive_log_probs, finished_ids,
                finished_scores, cache)

    def cond(step, alive_ids, alive_log_probs, finished_ids, finished_scores,
             cache):
        # Live hypotheses end at a length in [step + 1, max_length]; the
        # penalty is monotonic in the length, so its largest value there is
        # at one end.
        largest_penalty = tf.maximum(
            length_penalty_factor(step + 1, length_penalty), max_penalty
        )
        best_possible = tf.reduce_max(alive_log_probs, axis=1) / (
            largest_penalty
        )
        can_improve = best_possible > tf.reduce_max(finished_scores, axis=1)
        return tf.logical_and(step < max_length, tf.reduce_any(can_improve))

    # Beam 0 starts live, the others dead: at the first step all beams
    # would hold the same hypothesis.
    initial_log_probs = tf.constant(
        [0.0] + [float("-inf")] * (beam_size - 1)
    )
    loop_vars = (
        tf.constant(0),
        tf.zeros([batch_size, beam_size, max_length], tf.int32),
        tf.tile(initial_log_probs[None, :], [batch_size, 1]),
        tf.zeros([batch_size, beam_size, max_length], tf.int32),
        tf.fill([batch_size, beam_size], negative_infinity),
        cache,
    )
    _, _, _, finished_ids, finished_scores, _ = tf.while_loop(
        cond, body, loop_vars
    )
    # The pool is sorted, best first.
    if return_all_beams:
        # Empty pool entries (fewer hypotheses finished) hold zeros.
        found = finished_scores[:, :, None] > negative_infinity
        return tf.where(found, finished_ids, 0), finished_scores
    return finished_ids[:, 0], finished_scores[:, 0]


def _next_token_logits(model, logits):
    # (batch, 1, vocabulary) -> (batch, vocabulary), padding banned.
    logits = tf.cast(logits[:, 0, :], tf.float32)
    is_pad = tf.range(tf.shape(logits)[-1]) == model.pad_token_id
    return tf.where(is_pad, float("-inf"), logits)


def _reorder_cache(cache, indices):
    # Beams move only within their own source's rows, whose cross-attention
    # entries are identical copies: only the self-attention cache moves.
    return {**cache, "self_attention": tf.gather(cache["self_attention"],
                                                 indices)}


def _check_max_length(model, max_length):
    limit = model.max_decoder_sequence_length
    if not isinstance(max_length, int) or not 1 <= max_length <= limit:
        raise ValueError(
            "max_length must be an int from 1 to the model's "
            f"max_decoder_sequence_length ({limit}); received {max_length!r}"
        )


def make_decoder(
    model,
    method="greedy",
    max_length=None,
    beam_size=4,
    length_penalty=1.0,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
    start_id=EOS_ID,
    end_id=EOS_ID,
):
    """A `tf.function` decoding with `model` and fixed settings.

    Its one input is `encoder_token_ids`, int32 `tf.TensorSpec([None,
    None])` (any batch size and source length), so a SavedModel can track
    and serve it, e.g. as an `ExportArchive` endpoint.

    Args:
        model: a `Seq2SeqLM`.
        method: `"greedy"`, `"sample"` or `"beam"`.
        max_length: int or `None`. Tokens to generate at most; `None` is
            the model's `max_decoder_sequence_length`.
        beam_size, length_penalty: for `"beam"`.
        temperature, top_k, top_p, seed: for `"sample"`.
        start_id, end_id: as in `greedy_search`.

    Returns:
        A `tf.function` returning `{"token_ids": (batch, max_length)}`, plus
        `"scores"` `(batch,)` for beam search.

    Example:
    ```python
    decode = make_decoder(model, method="beam", beam_size=4, max_length=32)
    ids = decode(tf.constant([[17, 5, 9, 3]]))["token_ids"]
    ```
    """
    if method not in METHODS:
        raise ValueError(
            f"Unknown decoding method '{method}': use one of "
            f"{', '.join(METHODS)}."
        )
    if max_length is None:
        max_length = model.max_decoder_sequence_length

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="encoder_token_ids")
        ]
    )
    def decode(encoder_token_ids):
        if method == "beam":
            token_ids, scores = beam_search(
                model,
                encoder_token_ids,
                beam_size=beam_size,
                max_length=max_length,
                length_penalty=length_penalty,
                start_id=start_id,
                end_id=end_id,
            )
            return {"token_ids": token_ids, "scores": scores}
        if method == "sample":
            token_ids = sample(
                model,
                encoder_token_ids,
                max_length,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                seed=seed,
                start_id=start_id,
                end_id=end_id,
            )
            return {"token_ids": token_ids}
        token_ids = greedy_search(
            model, encoder_token_ids, max_length, start_id, end_id
        )
        return {"token_ids": token_ids}

    return decode
