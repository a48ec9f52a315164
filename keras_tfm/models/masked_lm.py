import keras
from keras import ops

from keras_tfm.layers.activations import get_activation
from keras_tfm.models import transformer_lm
from keras_tfm.models.metrics import default_metrics
from keras_tfm.models.transformer_lm import TransformerLM
from keras_tfm.models.transformer_lm import lm_initializer
from keras_tfm.models.transformer_lm import token_logits


@keras.saving.register_keras_serializable(package="keras_tfm")
class MaskedLM(TransformerLM):
    """A BERT-style masked language model.

    Maps int32 token ids `(batch_size, sequence_length)`, some replaced by
    `[MASK]` (see `keras_tfm.data.mask_tokens`), to logits `(batch_size,
    sequence_length, vocabulary_size)` that predict the original tokens.
    Attention is bidirectional; positions holding `pad_token_id` are masked
    out as keys. Train with `fit` on `(masked_ids, original_ids,
    sample_weight)` where the weight is 1 at the masked positions only.

    Takes the same arguments as `CausalLM`, plus:

    Args:
        pad_token_id: int. The id of padding, hidden from attention.
            Defaults to `0`.
        attend_within_documents: bool. Attention (and positions) stay
            inside each `[EOS]`-ended document of a packed window.
            Defaults to `False`.

    The output head is BERT's: a dense layer with the feed-forward
    activation, a layer norm, then the (tied) projection to the vocabulary.
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
        pad_token_id=0,
        dtype=None,
        **kwargs,
    ):
        # The architecture's arguments, shared by layers and config.
        architecture = transformer_lm.architecture(locals())

        # === Layers ===
        self._build_layers(**architecture, dtype=dtype)
        self.head_dense = keras.layers.Dense(
            hidden_dim,
            activation=get_activation(activation),
            kernel_initializer=lm_initializer(),
            dtype=dtype,
            name="head_dense",
        )
        self.head_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="head_norm"
        )

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = ops.not_equal(token_ids, pad_token_id)
        attention_mask, positions = self._document_masking(token_ids)
        x = self._embed(token_ids, positions=positions)
        x = self.encoder(x, padding_mask=padding_mask,
                         attention_mask=attention_mask)
        x = self.head_norm(self.head_dense(x))
        logits = token_logits(self, x)
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)

        # === Config ===
        self._store_config(**architecture, pad_token_id=pad_token_id)

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto",
                **kwargs):
        """`Model.compile` with masked-LM defaults.

        As `CausalLM.compile`, but the metrics are weighted, so that with
        the masking dataset's sample weights they count masked positions
        only.
        """
        optimizer, loss = self._compile_defaults(optimizer, loss)
        if weighted_metrics == "auto":
            weighted_metrics = default_metrics()
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            **kwargs,
        )
