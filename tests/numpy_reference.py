"""Plain NumPy versions of the layers, to check them against."""

import math

import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def gelu_tanh(x):
    return 0.5 * x * (
        1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))
    )


def attention(x, qkv_kernel, qkv_bias, out_kernel, out_bias, num_heads,
              mask=None):
    """softmax(Q K^T / sqrt(d)) V per head; mask (batch, q, k) bool."""
    batch, seq, hidden = x.shape
    head_dim = hidden // num_heads
    qkv = x @ qkv_kernel + qkv_bias
    q, k, v = np.split(qkv, 3, axis=-1)

    def heads(t):  # (batch, heads, seq, head_dim)
        return t.reshape(batch, seq, num_heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -1e9)
    out = softmax(scores) @ v  # (batch, heads, seq, head_dim)
    out = out.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    return out @ out_kernel + out_bias


def causal_mask(batch, seq):
    return np.broadcast_to(
        np.tril(np.ones((seq, seq), bool)), (batch, seq, seq)
    )


def cross_attention(x, memory, q_kernel, q_bias, kv_kernel, kv_bias,
                    out_kernel, out_bias, num_heads, mask=None):
    """Queries from x (batch, q, hidden), keys and values from memory
    (batch, k, hidden); mask (batch, q, k) bool. Returns the outputs and
    the probabilities (batch, heads, q, k)."""
    batch, q_len, hidden = x.shape
    k_len = memory.shape[1]
    head_dim = hidden // num_heads
    q = x @ q_kernel + q_bias
    k, v = np.split(memory @ kv_kernel + kv_bias, 2, axis=-1)

    def heads(t, length):  # (batch, heads, length, head_dim)
        return t.reshape(batch, length, num_heads, head_dim).transpose(
            0, 2, 1, 3
        )

    q, k, v = heads(q, q_len), heads(k, k_len), heads(v, k_len)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -1e9)
    probabilities = softmax(scores)
    out = (probabilities @ v).transpose(0, 2, 1, 3).reshape(
        batch, q_len, hidden
    )
    return out @ out_kernel + out_bias, probabilities


def decoder_block(x, memory, w, num_heads, self_mask, cross_mask,
                  normalize_first, epsilon=1e-5):
    """A TransformerDecoderBlock with the tanh GELU; `w` maps sublayer
    weight paths ("self_attention/qkv/kernel", ...) to arrays."""

    def norm(h, name):
        return layer_norm(h, w[f"{name}/gamma"], w[f"{name}/beta"], epsilon)

    def self_attn(h):
        return attention(
            h, w["self_attention/qkv/kernel"], w["self_attention/qkv/bias"],
            w["self_attention/output/kernel"],
            w["self_attention/output/bias"], num_heads, self_mask,
        )

    def cross_attn(h):
        return cross_attention(
            h, memory,
            w["cross_attention/query/kernel"],
            w["cross_attention/query/bias"],
            w["cross_attention/key_value/kernel"],
            w["cross_attention/key_value/bias"],
            w["cross_attention/output/kernel"],
            w["cross_attention/output/bias"], num_heads, cross_mask,
        )[0]

    def ffn(h):
        h = gelu_tanh(h @ w["feedforward_intermediate/kernel"]
                      + w["feedforward_intermediate/bias"])
        return h @ w["feedforward_output/kernel"] + w["feedforward_output/bias"]

    if normalize_first:
        x = x + self_attn(norm(x, "self_attention_norm"))
        x = x + cross_attn(norm(x, "cross_attention_norm"))
        return x + ffn(norm(x, "feedforward_norm"))
    x = norm(x + self_attn(x), "self_attention_norm")
    x = norm(x + cross_attn(x), "cross_attention_norm")
    return norm(x + ffn(x), "feedforward_norm")


def log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))
