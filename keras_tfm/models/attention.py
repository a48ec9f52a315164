"""What a language model attends to: one layer's attention probabilities.

    from keras_tfm.models.attention import attention_maps

    maps = attention_maps(model, tokenizer.encode("def f(x):"), layer=0)
    maps.shape  # (heads, query, key); each row sums to 1

For pictures and inspection only: the forward pass runs the model's own
layers eagerly, one sequence at a time.
"""

import numpy as np
from keras import ops

from keras_tfm.models.causal_lm import CausalLM
from keras_tfm.models.masked_lm import MaskedLM


def attention_maps(model, token_ids, layer=0):
    """The attention probabilities of one block for one sequence.

    Runs the embeddings and the blocks before `layer` with the model's own
    layers and masks (causal for a `CausalLM`, padding for a `MaskedLM`,
    and documents for a model that attends within them), then that block's
    attention with `return_attention_scores=True`. Dropout is off.

    Args:
        model: a `CausalLM` or `MaskedLM`.
        token_ids: one sequence of ids: a list, or an array of shape
            `(sequence_length,)` or `(1, sequence_length)`, at most the
            model's `max_sequence_length` long.
        layer: int. The block, counted from 0; negative counts from the
            last (`-1` is the last block). Defaults to `0`.

    Returns:
        A float32 numpy array of shape `(num_heads, query, key)`: row `q`
        of head `h` holds the probabilities with which token `q` attends
        to each token. A causal model's rows are zero above the diagonal;
        a masked model's columns at padding are zero.

    Raises:
        TypeError: `model` is not a `CausalLM` or `MaskedLM`.
        ValueError: `token_ids` is not one non-empty sequence that fits,
            or `layer` is out of range.
    """
    if not isinstance(model, (CausalLM, MaskedLM)):
        raise TypeError(
            "attention_maps() takes a CausalLM or MaskedLM; got "
            f"{type(model).__name__}."
        )
    ids = np.asarray(token_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or not 0 < len(ids) <= model.max_sequence_length:
        raise ValueError(
            "token_ids must be one sequence of 1 to "
            f"{model.max_sequence_length} ids; got shape {ids.shape}."
        )
    num_layers = model.num_layers
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"layer must be in [{-num_layers}, {num_layers}) for this "
            f"{num_layers}-layer model; got {layer}."
        )
    layer %= num_layers
    # (1, seq): a batch of one.
    ids = ops.convert_to_tensor(ids[None, :].astype("int32"))

    # The masks the model's functional graph builds.
    attention_mask, positions = model._document_masking(ids)
    masks = {"attention_mask": attention_mask}
    if isinstance(model, CausalLM):
        masks["use_causal_mask"] = True
    else:
        masks["padding_mask"] = ops.not_equal(ids, model.pad_token_id)

    # (1, seq, hidden): the residual stream entering block `layer`.
    x = model._embed(ids, positions=positions, training=False)
    blocks = model.encoder.blocks
    for block in blocks[:layer]:
        x = block(x, training=False, **masks)
    block = blocks[layer]
    if block.normalize_first:
        x = block.attention_norm(x)
    _, scores = block.attention(
        x, training=False, return_attention_scores=True, **masks
    )
    # (1, heads, query, key) -> (heads, query, key)
    return np.asarray(ops.convert_to_numpy(scores)[0], dtype="float32")
