"""Text generation from a `CausalLM` with the attention KV cache.

The sampling loop is keras-hub's (`keras_hub.samplers`): a `while_loop`
that asks `next(prompt, cache, index)` for the logits of position `index`
and writes the sampled token there. `next` runs one token through
`CausalLM.call_with_cache`, so each step costs one position, not the whole
sequence. The loop runs compiled in a `tf.function`.
"""

import weakref

import tensorflow as tf

from keras_tfm.generation.samplers import make_sampler


def _compile_generate(model, sampler):
    # The compiled loop refers to the model weakly: `_GREEDY` keeps it per
    # model, and a strong reference from the value would keep every model
    # (and its entry) alive forever.
    model_ref = weakref.ref(model)
    del model

    def next_logits(prompt, cache, index):
        model = model_ref()
        # Feed the token at index - 1; its logits predict position index.
        token = prompt[:, index - 1 : index]
        document_start = None
        if getattr(model, "attend_within_documents", False):
            document_start = current_document_start(prompt, index - 1)
        logits, hidden, cache = model.call_with_cache(
            token, cache, index - 1, document_start=document_start
        )
        return logits[:, 0, :], hidden[:, 0, :], cache

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def generate(buffer, prompt_length):
        model = model_ref()
        # buffer: (batch, prompt_length + new_tokens), the prompt first.
        batch_size = tf.shape(buffer)[0]
        # Prefill: one pass over the prompt fills the cache for all of it.
        cache = model.init_cache(batch_size)
        _, _, cache = model.call_with_cache(buffer, cache, 0)
        positions = tf.range(tf.shape(buffer)[1])[None, :]
        keep = tf.broadcast_to(positions < prompt_length, tf.shape(buffer))
        return sampler(
            next_logits,
            buffer,
            cache=cache,
            index=prompt_length,
            mask=keep,
            model=model,
        )

    return generate


def current_document_start(buffer, position, eos_id=3):
    """`(batch,)`: where the document of the token at `position` starts:
    one past the last `[EOS]` before it (0 if none)."""
    positions = tf.range(tf.shape(buffer)[1])[None, :]
    before = tf.logical_and(tf.equal(buffer, eos_id), positions < position)
    last = tf.reduce_max(tf.where(before, positions, -1), axis=1)
    return last + 1


# model -> its compiled greedy generation loop.
_GREEDY = weakref.WeakKeyDictionary()


def generate_ids(model, prompt_ids, max_new_tokens, sampler=None):
    """Extends `prompt_ids` by `max_new_tokens` sampled ids.

    The context is the model's `max_sequence_length`. A longer generation
    slides the window: when it is full, the last half of the text becomes
    the new prompt and the cache is rebuilt from it.

    Args:
        model: a `CausalLM`.
        prompt_ids: list of int. At least one id.
        max_new_tokens: int.
        sampler: a keras-hub sampler; default: greedy (compiled once per
            model; a sampler is compiled per call, as its random state is
            its own).

    Returns:
        list of int: the new ids only.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one token")
    if sampler is None:
        # Greedy decoding has no state: trace it once per model.
        generate = _GREEDY.get(model)
        if generate is None:
            generate = _compile_generate(model, make_sampler(temperature=0))
            _GREEDY[model] = generate
    else:
        generate = _compile_generate(model, sampler)
    max_length = model.max_sequence_length
    tokens, new = list(prompt_ids), []
    while len(new) < max_new_tokens:
        remaining = max_new_tokens - len(new)
        context = tokens[
            -max(1, max_length - min(remaining, max_length // 2)) :
        ]
        steps = min(remaining, max_length - len(context))
        buffer = tf.constant([context + [0] * steps], dtype=tf.int32)
        output = generate(buffer, tf.constant(len(context), tf.int32))
        sampled = output[0, len(context) :].numpy().tolist()
        tokens += sampled
        new += sampled
    return new


def generate(
    model,
    tokenizer,
    prompt,
    max_new_tokens=100,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
):
    """Generates text after `prompt`; returns the new text only.

    An empty prompt starts from `[EOS]`, i.e. a fresh document.
    """
    prompt_ids = tokenizer.encode(prompt) if prompt else []
    prompt_ids = prompt_ids or [tokenizer.eos_id]
    sampler = make_sampler(temperature, top_k, top_p, seed)
    if temperature == 0:
        sampler = None  # greedy: the cached loop
    ids = generate_ids(model, prompt_ids, max_new_tokens, sampler)
    return tokenizer.decode(ids)
