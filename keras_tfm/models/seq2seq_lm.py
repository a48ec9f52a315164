import json
import os

import keras
from keras import ops

from keras_tfm.errors import UserError
from keras_tfm.layers.position_embedding import PositionEmbedding
from keras_tfm.layers.sine_position_encoding import SinePositionEncoding
from keras_tfm.layers.transformer_decoder import TransformerDecoder
from keras_tfm.models.causal_lm import CausalLM
from keras_tfm.models.masked_lm import MaskedLM
from keras_tfm.models.metrics import default_metrics
from keras_tfm.models.transformer_lm import TransformerLM
from keras_tfm.models.transformer_lm import lm_initializer

# The arguments an LM and the encoder must agree on before weights copy:
# a different value changes a weight's shape or what the weights mean.
ENCODER_MATCH = (
    "hidden_dim",
    "num_heads",
    "num_layers",
    "intermediate_dim",
    "position_embedding",
    "normalize_first",
    "use_bias",
    "activation",
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class Seq2SeqLM(TransformerLM):
    """An encoder-decoder Transformer for translation and summarization.

    Maps `{"encoder_token_ids": (batch_size, source_length),
    "decoder_token_ids": (batch_size, target_length)}` int32 to logits
    `(batch_size, target_length, target_vocabulary_size)` float32: position
    `t` of the decoder sees the whole source and target tokens `<= t`, and
    predicts target token `t + 1`. Train with `fit` on teacher-forced pairs
    (decoder inputs are the targets shifted right behind a start token,
    `[EOS]` by convention) with sample weights 0 at target padding; decode
    with `keras_tfm.generation.seq2seq`.

    The encoder side is a `CausalLM`'s or `MaskedLM`'s, with the same layer
    classes and names (`token_embedding`, `position_embedding`, `encoder`),
    so `load_encoder_weights` copies a pre-trained LM into it and
    `from_run` starts from a pre-training run. Positions holding
    `pad_token_id` are hidden from attention on both sides.

    Args:
        vocabulary_size: int. The source vocabulary size.
        num_layers: int. Encoder blocks.
        num_heads: int. Attention heads; must divide `hidden_dim`.
        hidden_dim: int. The width of both residual streams.
        intermediate_dim: int. The feed-forward hidden size.
        max_sequence_length: int. The longest source.
        decoder_vocabulary_size: int or `None`. The target vocabulary size;
            `None` shares the source vocabulary and its embedding between
            both sides. Defaults to `None`.
        num_decoder_layers: int or `None`. Decoder blocks; `None` is
            `num_layers`. Defaults to `None`.
        max_decoder_sequence_length: int or `None`. The longest target (the
            decoder's position table and self-attention cache); `None` is
            `max_sequence_length`. Defaults to `None`.
        dropout: float. Dropout rate. Defaults to `0.0`.
        position_embedding: `"learned"`, `"sinusoidal"` or `"rotary"`, on
            both sides. Defaults to `"learned"`.
        rotary_max_wavelength: int. RoPE's longest wavelength, used with
            `position_embedding="rotary"`. Defaults to `10000`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        normalize_first: bool. Pre-LN (`True`) or post-LN blocks. Defaults
            to `True`.
        tie_embeddings: bool. Whether the output projection is the
            transposed decoder input embedding. Defaults to `True`.
        use_bias: bool. Whether dense layers and norms have biases.
            Defaults to `True`.
        activation: the feed-forward activation. Defaults to `"gelu"`.
        pad_token_id: int. The padding id on both sides. Defaults to `0`.
        dtype: the dtype policy of the layers. Defaults to `None` (the
            global policy).

    Example:
    ```python
    model = keras_tfm.models.Seq2SeqLM(
        vocabulary_size=260, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=64,
    )
    model.compile()  # AdamW, cross-entropy from logits, perplexity
    model.fit(
        {"encoder_token_ids": sources, "decoder_token_ids": shifted},
        targets,
        sample_weight=targets != 0,
    )
    ids = keras_tfm.generation.seq2seq.greedy_search(model, sources, 32)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Rothe et al., 2020](https://arxiv.org/abs/1907.12461)
          (encoder-decoders warm-started from pre-trained checkpoints)
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length,
        decoder_vocabulary_size=None,
        num_decoder_layers=None,
        max_decoder_sequence_length=None,
        dropout=0.0,
        position_embedding="learned",
        rotary_max_wavelength=10000,
        layer_norm_epsilon=1e-5,
        normalize_first=True,
        tie_embeddings=True,
        use_bias=True,
        activation="gelu",
        pad_token_id=0,
        dtype=None,
        **kwargs,
    ):
        if num_decoder_layers is None:
            num_decoder_layers = num_layers
        if max_decoder_sequence_length is None:
            max_decoder_sequence_length = max_sequence_length
        shared = decoder_vocabulary_size is None

        # === Layers ===
        # The encoder side exactly as the LMs build it. With one shared
        # vocabulary, `token_embedding` also embeds the targets and (tied or
        # not) projects back to logits; with two, it embeds sources only and
        # needs no reverse matrix.
        self._build_layers(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
            dropout=dropout,
            position_embedding=position_embedding,
            rotary_max_wavelength=rotary_max_wavelength,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=normalize_first,
            tie_embeddings=tie_embeddings if shared else True,
            use_bias=use_bias,
            activation=activation,
            dtype=dtype,
        )
        self.decoder_token_embedding = None
        if not shared:
            self.decoder_token_embedding = keras.layers.ReversibleEmbedding(
                input_dim=decoder_vocabulary_size,
                output_dim=hidden_dim,
                tie_weights=tie_embeddings,
                embeddings_initializer=lm_initializer(),
                dtype=dtype,
                name="decoder_token_embedding",
            )
        self.decoder_position_layer = None
        if position_embedding == "learned":
            self.decoder_position_layer = PositionEmbedding(
                sequence_length=max_decoder_sequence_length,
                initializer=lm_initializer(),
                dtype=dtype,
                name="decoder_position_embedding",
            )
        elif position_embedding == "sinusoidal":
            self.decoder_position_layer = SinePositionEncoding(
                dtype=dtype, name="decoder_position_embedding"
            )
        self.decoder_embeddings_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="decoder_embeddings_dropout"
        )
        self.decoder = TransformerDecoder(
            num_layers=num_decoder_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=normalize_first,
            use_bias=use_bias,
            rotary_max_wavelength=(
                rotary_max_wavelength
                if position_embedding == "rotary"
                else None
            ),
            kernel_initializer=lm_initializer(),
            dtype=dtype,
            name="decoder",
        )

        # === Functional Model ===
        encoder_token_ids = keras.Input(
            shape=(None,), dtype="int32", name="encoder_token_ids"
        )
        decoder_token_ids = keras.Input(
            shape=(None,), dtype="int32", name="decoder_token_ids"
        )
        encoder_padding_mask = ops.not_equal(encoder_token_ids, pad_token_id)
        decoder_padding_mask = ops.not_equal(decoder_token_ids, pad_token_id)
        encoder_outputs = self.encoder(
            self._embed(encoder_token_ids), padding_mask=encoder_padding_mask
        )
        x = self.decoder(
            self._embed_decoder(decoder_token_ids),
            encoder_outputs=encoder_outputs,
            decoder_padding_mask=decoder_padding_mask,
            encoder_padding_mask=encoder_padding_mask,
        )
        logits = self._decoder_logits(x)
        super().__init__(
            inputs={
                "encoder_token_ids": encoder_token_ids,
                "decoder_token_ids": decoder_token_ids,
            },
            outputs=logits,
            **kwargs,
        )

        # === Config ===
        self._store_config(
            vocabulary_size=vocabulary_size,
            decoder_vocabulary_size=decoder_vocabulary_size,
            num_layers=num_layers,
            num_decoder_layers=num_decoder_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
            max_decoder_sequence_length=max_decoder_sequence_length,
            dropout=dropout,
            position_embedding=position_embedding,
            rotary_max_wavelength=rotary_max_wavelength,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=normalize_first,
            tie_embeddings=tie_embeddings,
            use_bias=use_bias,
            activation=activation,
            pad_token_id=pad_token_id,
        )

    # --- Forward pieces ---

    @property
    def target_embedding(self):
        """The `ReversibleEmbedding` of the targets (and of the logits)."""
        if self.decoder_token_embedding is None:
            return self.token_embedding
        return self.decoder_token_embedding

    def _embed_decoder(self, token_ids, start_index=0, training=None):
        # (batch, tgt) -> (batch, tgt, hidden)
        x = self.target_embedding(token_ids)
        if self.decoder_position_layer is not None:
            x = x + self.decoder_position_layer(x, start_index=start_index)
        return self.decoder_embeddings_dropout(x, training=training)

    def _decoder_logits(self, hidden_states):
        # (batch, tgt, target_vocabulary) in float32 for a stable softmax.
        logits = self.target_embedding(hidden_states, reverse=True)
        return ops.cast(logits, "float32")

    def encode(self, encoder_token_ids, training=False):
        """The encoder's outputs and the source padding mask.

        Returns:
            `(encoder_outputs, encoder_padding_mask)`: `(batch_size,
            source_length, hidden_dim)` and boolean `(batch_size,
            source_length)`, false at `pad_token_id`.
        """
        encoder_padding_mask = ops.not_equal(
            encoder_token_ids, self.pad_token_id
        )
        x = self._embed(encoder_token_ids, training=training)
        encoder_outputs = self.encoder(
            x, padding_mask=encoder_padding_mask, training=training
        )
        return encoder_outputs, encoder_padding_mask

    def init_cache(self, batch_size, encoder_outputs):
        """The decoding cache for `batch_size` sources.

        A dict of two tensors, each stacked per decoder layer on axis 1
        with keys at index 0 and values at index 1 of axis 2:

        - `"self_attention"`: zeros of shape `(batch_size,
          num_decoder_layers, 2, max_decoder_sequence_length, num_heads,
          head_dim)`, filled one target position per decoding step;
        - `"cross_attention"`: the encoder outputs' keys and values,
          `(batch_size, num_decoder_layers, 2, source_length, num_heads,
          head_dim)`, projected once here and only read afterwards.
        """
        head_dim = self.hidden_dim // self.num_heads
        self_attention = ops.zeros(
            (
                batch_size,
                self.num_decoder_layers,
                2,
                self.max_decoder_sequence_length,
                self.num_heads,
                head_dim,
            ),
            dtype=self.compute_dtype,
        )
        cross_attention = self.decoder.compute_cross_attention_cache(
            encoder_outputs
        )
        return {
            "self_attention": self_attention,
            "cross_attention": cross_attention,
        }

    def call_decoder_with_cache(
        self,
        decoder_token_ids,
        cache,
        cache_update_index,
        encoder_padding_mask=None,
    ):
        """The decoder for target tokens at `cache_update_index` onwards.

        Runs `decoder_token_ids` `(batch, n)` as target positions
        `cache_update_index ... cache_update_index + n - 1`, attending to
        the target positions already in the cache and to the whole source,
        and writes their keys and values into the cache. Equals the full
        forward pass (the tests check this).

        Returns:
            `(logits, hidden_states, cache)`; logits `(batch, n,
            target_vocabulary_size)` float32.
        """
        x = self._embed_decoder(
            decoder_token_ids, start_index=cache_update_index
        )
        x, self_attention = self.decoder(
            x,
            encoder_padding_mask=encoder_padding_mask,
            self_attention_cache=cache["self_attention"],
            cross_attention_cache=cache["cross_attention"],
            cache_update_index=cache_update_index,
        )
        cache = {
            "self_attention": self_attention,
            "cross_attention": cache["cross_attention"],
        }
        return self._decoder_logits(x), x, cache

    # --- Training defaults ---

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto",
                **kwargs):
        """`Model.compile` with seq2seq defaults.

        As `CausalLM.compile`, but the metrics are weighted, so that with
        sample weights 0 at target padding they count real tokens only.
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

    # --- Pre-trained weights ---

    def load_encoder_weights(self, lm, decoder_from_lm=False):
        """Copies a pre-trained LM into the encoder (and the decoder).

        Copies the token embedding, the position embedding (the rows both
        tables have, when their lengths differ) and every encoder block and
        the final norm from `lm`, a `CausalLM` or `MaskedLM`. A
        `MaskedLM`'s prediction head is not copied.

        With `decoder_from_lm=True` (a `CausalLM` with as many layers as
        the decoder), each decoder block also gets the LM block's
        self-attention, norms and feed-forward, the decoder its final norm,
        position embedding, target embedding and output projection;
        cross-attention stays freshly initialized.

        Raises:
            ValueError: `lm` is not a keras-tfm LM, or its architecture,
                vocabulary size or layer count does not match.
        """
        if not isinstance(lm, (CausalLM, MaskedLM)):
            raise ValueError(
                "load_encoder_weights needs a keras_tfm CausalLM or "
                f"MaskedLM; received {type(lm).__name__}."
            )
        for name in ENCODER_MATCH:
            if getattr(lm, name) != getattr(self, name):
                raise ValueError(
                    f"cannot copy the LM into the encoder: {name} is "
                    f"{getattr(lm, name)!r} in the LM and "
                    f"{getattr(self, name)!r} in the Seq2SeqLM."
                )
        if lm.vocabulary_size != self.vocabulary_size:
            raise ValueError(
                "cannot copy the token embedding: the LM's vocabulary_size "
                f"is {lm.vocabulary_size}, the Seq2SeqLM's "
                f"{self.vocabulary_size}; build the Seq2SeqLM with the LM's "
                "tokenizer."
            )
        if decoder_from_lm:
            self._check_decoder_source(lm)

        self.token_embedding.embeddings.assign(lm.token_embedding.embeddings)
        _copy_positions(self.position_layer, lm.position_layer)
        self.encoder.set_weights(lm.encoder.get_weights())
        if decoder_from_lm:
            self._copy_decoder(lm)

    def _check_decoder_source(self, lm):
        if not isinstance(lm, CausalLM):
            raise ValueError(
                "decoder_from_lm=True needs a CausalLM (a decoder is "
                f"causal); received {type(lm).__name__}."
            )
        if lm.num_layers != self.num_decoder_layers:
            raise ValueError(
                "decoder_from_lm=True needs as many LM layers as decoder "
                f"layers: num_layers is {lm.num_layers} in the LM and "
                f"num_decoder_layers {self.num_decoder_layers} in the "
                "Seq2SeqLM."
            )
        target_size = self.target_embedding.input_dim
        if target_size != lm.vocabulary_size:
            raise ValueError(
                "decoder_from_lm=True needs the LM's vocabulary on the "
                f"target side: the LM's vocabulary_size is "
                f"{lm.vocabulary_size}, decoder_vocabulary_size "
                f"{target_size}."
            )

    def _copy_decoder(self, lm):
        # Block by block: the decoder block's self-attention branch and
        # feed-forward are the LM block's, under `self_` names.
        for source, target in zip(lm.encoder.blocks, self.decoder.blocks):
            pairs = (
                (source.attention_norm, target.self_attention_norm),
                (source.attention, target.self_attention),
                (source.feedforward_norm, target.feedforward_norm),
                (source.feedforward_intermediate,
                 target.feedforward_intermediate),
                (source.feedforward_output, target.feedforward_output),
            )
            for a, b in pairs:
                b.set_weights(a.get_weights())
        if self.decoder.final_norm is not None:
            self.decoder.final_norm.set_weights(
                lm.encoder.final_norm.get_weights()
            )
        _copy_positions(self.decoder_position_layer, lm.position_layer)
        embedding = self.target_embedding
        if embedding is not self.token_embedding:
            embedding.embeddings.assign(lm.token_embedding.embeddings)
        if not embedding.tie_weights:
            # The LM's output projection: its own matrix when untied, else
            # its transposed embedding.
            source = lm.token_embedding
            embedding.reverse_embeddings.assign(
                source.reverse_embeddings
                if not source.tie_weights
                else ops.transpose(source.embeddings)
            )

    @classmethod
    def from_run(cls, run_dir, decoder_from_lm=False, **overrides):
        """A Seq2SeqLM whose encoder is a pre-training run's model.

        Reads the architecture from `run_dir/config.json` (the run's
        `TrainConfig` as plain JSON) and the trained LM from
        `run_dir/model.keras`; the vocabulary size, pad id and RoPE
        wavelength come from the LM itself (the config's `vocabulary_size`
        is the WordPiece target, not the model's). `overrides` (any
        constructor argument, e.g. `num_decoder_layers` or `dtype`) win.
        The encoder (and with `decoder_from_lm=True` the decoder) is then
        copied from the LM with `load_encoder_weights`.

        Raises:
            UserError: `config.json` or `model.keras` is missing.
        """
        config_path = os.path.join(run_dir, "config.json")
        model_path = os.path.join(run_dir, "model.keras")
        for path in (config_path, model_path):
            if not os.path.isfile(path):
                raise UserError(
                    f"no {os.path.basename(path)} in '{run_dir}': pass the "
                    "directory of a finished keras-tfm pre-training run."
                )
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        lm = keras.models.load_model(model_path, compile=False)
        kwargs = dict(
            vocabulary_size=lm.vocabulary_size,
            num_layers=config["num_layers"],
            num_heads=config["num_heads"],
            hidden_dim=config["hidden_dim"],
            intermediate_dim=config["intermediate_dim"],
            max_sequence_length=config["sequence_length"],
            dropout=config.get("dropout", 0.0),
            position_embedding=config.get("position_embedding", "learned"),
            rotary_max_wavelength=lm.rotary_max_wavelength,
            layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
            normalize_first=config.get("normalize_first", True),
            tie_embeddings=config.get("tie_embeddings", True),
            use_bias=config.get("use_bias", True),
            activation=config.get("activation", "gelu"),
            pad_token_id=getattr(lm, "pad_token_id", 0),
        )
        kwargs.update(overrides)
        model = cls(**kwargs)
        model.load_encoder_weights(lm, decoder_from_lm=decoder_from_lm)
        return model


def _copy_positions(target, source):
    """Copies a learned position table's shared rows; other kinds have no
    weights."""
    if not isinstance(target, PositionEmbedding):
        return
    rows = min(target.sequence_length, source.sequence_length)
    table = ops.convert_to_tensor(source.position_embeddings)[:rows]
    target.position_embeddings.assign(
        ops.concatenate(
            [table, ops.convert_to_tensor(target.position_embeddings)[rows:]],
            axis=0,
        )
    )
