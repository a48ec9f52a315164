"""Bits per byte: the one formula every figure in keras-tfm uses.

Bits per byte is the information a model needs to code a text, divided by
the text's UTF-8 size, so models with different tokenizers compare. A
`[UNK]` target is charged its cross-entropy plus 8 bits for every byte it
hides (a plain byte code for them), so a tokenizer that maps rare text to
`[UNK]` cannot look better for it.
"""

import math


def bits_per_byte(nats, text_bytes, unknown_bytes=0):
    """`(nats / ln 2 + 8 * unknown_bytes) / text_bytes`.

    Args:
        nats: total negative log-likelihood of the targets, in nats.
        text_bytes: UTF-8 bytes the targets cover.
        unknown_bytes: bytes hidden in `[UNK]` targets.
    """
    bits = nats / math.log(2) + 8 * unknown_bytes
    return bits / max(1, text_bytes)
