"""Argument checks shared by layers, models and configs."""


def check_heads_divide(hidden_dim, num_heads):
    """Raises `ValueError` unless `num_heads` divides `hidden_dim`."""
    if hidden_dim % num_heads != 0:
        raise ValueError(
            f"hidden_dim ({hidden_dim}) must be divisible by num_heads "
            f"({num_heads}): choose a hidden_dim that is a multiple of "
            "num_heads"
        )
