import keras
from keras import ops

from keras_tfm.models import transformer_lm
from keras_tfm.models.metrics import default_metrics
from keras_tfm.models.transformer_lm import TransformerLM
from keras_tfm.models.transformer_lm import token_logits


@keras.saving.register_keras_serializable(package="keras_tfm")
class CausalLM(TransformerLM):
    """A GPT-style causal language model.

    Maps int32 token ids `(batch_size, sequence_length)` to next-token
    logits `(batch_size, sequence_length, vocabulary_size)`: position `t`
    predicts token `t + 1` and sees only tokens `<= t`. Train it with
    `fit` on `(token_ids, next_token_ids)` pairs, as
    `keras_tfm.data.make_dataset` yields them; generate with
    `keras_tfm.generation.generate`, which uses `call_with_cache`.

    Args:
        vocabulary_size: int. The number of token ids.
        num_layers: int. The number of Transformer blocks.
        num_heads: int. Attention heads; must divide `hidden_dim`.
        hidden_dim: int. The width of the residual stream.
        intermediate_dim: int. The feed-forward hidden size.
        max_sequence_length: int. The longest sequence the model accepts
            (the learned position table's size and the KV cache's length).
        dropout: float. Dropout rate. Defaults to `0.0`.
        position_embedding: `"learned"`, `"sinusoidal"` or `"rotary"`.
            Defaults to `"learned"`.
        rotary_max_wavelength: int. RoPE's longest wavelength, used with
            `position_embedding="rotary"`. Defaults to `10000`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        normalize_first: bool. Pre-LN (`True`) or post-LN blocks. Defaults
            to `True`.
        tie_embeddings: bool. Whether the output projection is the
            transposed token embedding. Defaults to `True`.
        use_bias: bool. Whether dense layers and norms have biases.
            Defaults to `True`.
        activation: the feed-forward activation. Defaults to `"gelu"`.
        attend_within_documents: bool. Whether a token attends only to
            tokens of its own document (documents end with `[EOS]`, id 3),
            its position restarting in each: for windows packed from many
            documents. Defaults to `False`.
        dtype: the dtype policy of the layers. Defaults to `None` (the
            global policy).

    Example:
    ```python
    model = keras_tfm.models.CausalLM(
        vocabulary_size=260, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=64,
    )
    model.compile()  # AdamW, cross-entropy from logits, perplexity
    model.fit(keras_tfm.data.make_dataset(windows, batch_size=32),
              steps_per_epoch=100)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length,
        dropout=0.0,
        position_embedding="learned",
        rotary_max_wavelength=10000,
        layer_norm_epsilon=1e-5,
        normalize_first=True,
        tie_embeddings=True,
        use_bias=True,
        activation="gelu",
        attend_within_documents=False,
        dtype=None,
        **kwargs,
    ):
        # The architecture's arguments, shared by layers and config.
        architecture = transformer_lm.architecture(locals())

        # === Layers ===
        self._build_layers(**architecture, dtype=dtype)

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        attention_mask, positions = self._document_masking(token_ids)
        x = self._embed(token_ids, positions=positions)
        x = self.encoder(x, use_causal_mask=True,
                         attention_mask=attention_mask)
        logits = token_logits(self, x)
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)

        # === Config ===
        self._store_config(**architecture)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """`Model.compile` with language-model defaults.

        `"auto"` gives AdamW (learning rate 3e-4, weight decay 0.1),
        sparse cross-entropy from logits, and perplexity and accuracy
        metrics.
        """
        optimizer, loss = self._compile_defaults(optimizer, loss)
        if metrics == "auto":
            metrics = default_metrics()
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def init_cache(self, batch_size):
        """An empty KV cache for `batch_size` sequences.

        Shape `(batch_size, num_layers, 2, max_sequence_length, num_heads,
        head_dim)`; index 0 of the third axis holds keys, 1 values.
        """
        head_dim = self.hidden_dim // self.num_heads
        shape = (
            batch_size,
            self.num_layers,
            2,
            self.max_sequence_length,
            self.num_heads,
            head_dim,
        )
        return ops.zeros(shape, dtype=self.compute_dtype)

    def call_with_cache(self, token_ids, cache, cache_update_index,
                        document_start=None):
        """The forward pass for tokens at `cache_update_index` onwards.

        Runs `token_ids` `(batch, n)` as positions `cache_update_index ...
        cache_update_index + n - 1`, attending to everything already in the
        cache, and writes their keys and values into it. A prompt is
        "prefilled" with one call at index 0; decoding then feeds one token
        per call. Matches the full forward pass (tests check this).

        With `attend_within_documents`, a call at index 0 (the prefill)
        finds the documents in `token_ids` itself; later calls pass
        `document_start`, `(batch,)`: the first position of the current
        document, whose keys alone the new tokens see.

        Returns:
            `(logits, hidden_states, cache)`, logits of shape `(batch, n,
            vocabulary_size)`.
        """
        attention_mask, positions = None, None
        if self._documents:
            attention_mask, positions = self._cached_document_masking(
                token_ids, cache, cache_update_index, document_start
            )
        x = self._embed(token_ids, start_index=cache_update_index,
                        positions=positions)
        x, cache = self.encoder(
            x,
            use_causal_mask=True,
            cache=cache,
            cache_update_index=cache_update_index,
            attention_mask=attention_mask,
        )
        return token_logits(self, x), x, cache

    def _cached_document_masking(self, token_ids, cache, cache_update_index,
                                 document_start):
        # (batch, n, cache_length): the causal mask hides later keys.
        length = ops.shape(cache)[3]
        n = ops.shape(token_ids)[1]
        if document_start is None:
            same, positions = self._document_masking(token_ids)
            # Keys beyond this call's tokens are hidden by causality.
            same = ops.pad(same, [[0, 0], [0, 0], [0, length - n]])
            return same, positions
        document_start = ops.reshape(document_start, (-1, 1))
        keys = ops.arange(length)[None, None, :]
        visible = ops.greater_equal(keys, document_start[:, :, None])
        positions = ops.arange(n)[None, :] + cache_update_index
        return visible, positions - document_start
