import math

import keras
import numpy as np
import pytest
from numpy_reference import causal_mask
from numpy_reference import layer_norm
from numpy_reference import softmax

from keras_tfm.models import CausalLM
from keras_tfm.models import MaskedLM
from keras_tfm.models.attention import attention_maps

VOCAB, SEQ, HEADS, HIDDEN = 30, 8, 2, 8
KWARGS = dict(
    vocabulary_size=VOCAB,
    num_layers=2,
    num_heads=HEADS,
    hidden_dim=HIDDEN,
    intermediate_dim=16,
    max_sequence_length=SEQ,
)


def reference_probabilities(block, hidden_states, mask):
    """softmax(Q K^T / sqrt(d)) per head from the block's own weights;
    `hidden_states` (seq, hidden) enter the block, `mask` (seq, seq)."""
    norm = block.attention_norm
    x = layer_norm(hidden_states, norm.gamma.numpy(), norm.beta.numpy(),
                   norm.epsilon)
    qkv = block.attention.qkv_dense
    # (seq, 3 * hidden) -> each (heads, seq, head_dim)
    q, k, _ = np.split(x @ qkv.kernel.numpy() + qkv.bias.numpy(), 3, -1)
    head_dim = HIDDEN // HEADS

    def heads(t):
        return t.reshape(-1, HEADS, head_dim).transpose(1, 0, 2)

    scores = heads(q) @ heads(k).transpose(0, 2, 1) / math.sqrt(head_dim)
    return softmax(np.where(mask[None], scores, -1e9))


def embeddings(model, ids):
    """Token plus learned position embeddings, from the weights."""
    table = model.token_embedding.embeddings.numpy()
    positions = model.position_layer.weights[0].numpy()
    return table[ids] + positions[: len(ids)]


def random_ids(seq=SEQ):
    return np.random.randint(4, VOCAB, size=seq).astype("int32")


def test_causal_layer_0_matches_numpy_from_the_weights():
    model = CausalLM(**KWARGS)
    ids = random_ids()
    maps = attention_maps(model, ids, layer=0)
    assert maps.shape == (HEADS, SEQ, SEQ)
    assert maps.dtype == np.float32
    expected = reference_probabilities(
        model.encoder.blocks[0], embeddings(model, ids),
        causal_mask(1, SEQ)[0],
    )
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    # Rows sum to 1, with nothing above the diagonal (no future token).
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(maps, k=1) == 0)
    # The first token can only attend to itself.
    np.testing.assert_allclose(maps[:, 0, 0], 1.0, atol=1e-6)


def test_a_later_layer_sees_the_hidden_states_of_the_blocks_before():
    model = CausalLM(**KWARGS)
    ids = random_ids()
    # The hidden states entering block 1: the embeddings through block 0.
    hidden = model.encoder.blocks[0](
        embeddings(model, ids)[None].astype("float32"), use_causal_mask=True
    )
    expected = reference_probabilities(
        model.encoder.blocks[1], np.asarray(hidden)[0],
        causal_mask(1, SEQ)[0],
    )
    np.testing.assert_allclose(
        attention_maps(model, ids, layer=1), expected, atol=1e-5
    )
    # -1 is the last layer; a batch of one is accepted too.
    np.testing.assert_allclose(
        attention_maps(model, ids[None, :], layer=-1), expected, atol=1e-5
    )
    # A shorter sentence gives a smaller map.
    assert attention_maps(model, ids[:3].tolist()).shape == (HEADS, 3, 3)


def test_masked_lm_attends_both_ways_and_never_to_padding():
    model = MaskedLM(**KWARGS)
    ids = random_ids()
    ids[-2:] = 0  # [PAD]
    maps = attention_maps(model, ids, layer=0)
    visible = np.broadcast_to(ids != 0, (SEQ, SEQ))
    expected = reference_probabilities(
        model.encoder.blocks[0], embeddings(model, ids), visible
    )
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps[:, :, -2:], 0.0, atol=1e-7)
    # Bidirectional: the first token sees later ones.
    assert np.all(maps[:, 0, 1:-2] > 0)


def test_attention_stays_inside_each_document():
    model = CausalLM(attend_within_documents=True, **KWARGS)
    ids = random_ids()
    ids[3] = 3  # [EOS] ends the first document at position 3
    maps = attention_maps(model, ids, layer=1)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    # Tokens 4.. (the second document) never see tokens 0..3.
    assert np.all(maps[:, 4:, :4] == 0)
    # ... and see every earlier token of their own.
    rows, columns = np.tril_indices(SEQ - 4)
    assert np.all(maps[:, 4 + rows, 4 + columns] > 0)


def test_post_ln_blocks_attend_to_the_unnormalized_stream():
    model = CausalLM(normalize_first=False, **KWARGS)
    ids = random_ids()
    maps = attention_maps(model, ids)
    block = model.encoder.blocks[0]
    x = embeddings(model, ids)
    qkv = block.attention.qkv_dense
    q, k, _ = np.split(x @ qkv.kernel.numpy() + qkv.bias.numpy(), 3, -1)
    head_dim = HIDDEN // HEADS
    q = q.reshape(SEQ, HEADS, head_dim).transpose(1, 0, 2)
    k = k.reshape(SEQ, HEADS, head_dim).transpose(1, 0, 2)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
    expected = softmax(np.where(causal_mask(1, SEQ), scores, -1e9))
    np.testing.assert_allclose(maps, expected, atol=1e-5)


def test_bad_arguments():
    model = CausalLM(**KWARGS)
    with pytest.raises(ValueError, match="layer must be in"):
        attention_maps(model, random_ids(), layer=2)
    with pytest.raises(ValueError, match="one sequence"):
        attention_maps(model, random_ids(SEQ + 1))
    with pytest.raises(ValueError, match="one sequence"):
        attention_maps(model, np.zeros((2, 4), "int32"))
    with pytest.raises(ValueError, match="one sequence"):
        attention_maps(model, [])
    other = keras.Sequential([keras.layers.Embedding(VOCAB, HIDDEN)])
    with pytest.raises(TypeError, match="CausalLM or MaskedLM"):
        attention_maps(other, random_ids())
