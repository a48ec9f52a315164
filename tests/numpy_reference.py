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
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


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
    return np.broadcast_to(np.tril(np.ones((seq, seq), bool)), (batch, seq, seq))
