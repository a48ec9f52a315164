"""nanoGPT's model and train step in PyTorch: the benchmark's outside reference.

The issue this package answers to compares it with nanoGPT's CPU recipe on
PyTorch (`--device=cpu --compile=False`: float32, eager, no `torch.compile`).
This module rebuilds that model at a config's size so `keras-tfm benchmark
--pytorch-reference` can time it interleaved with keras-tfm's step, in one
process, on the same batches. It follows nanoGPT's `model.py` and
`train.py` as that recipe runs them: token and position embeddings, pre-LN
blocks with a fused QKV projection and PyTorch's fused causal attention
(`scaled_dot_product_attention`), exact GELU, no biases (layer norms
included), the output head tied to the token embedding, GPT-2's
initialisation, and AdamW (weight decay on matrices only) with the global
gradient norm clipped.

PyTorch is optional (`pip install torch`; the CPU build is enough) and is
imported only here.
"""

import math

import numpy as np

from keras_tfm.errors import UserError


def import_torch():
    """PyTorch, or a one-line UserError that says how to install it."""
    try:
        import torch
    except ImportError:
        raise UserError(
            "--pytorch-reference needs PyTorch, which is not installed: "
            "pip install torch (the CPU build is enough)."
        ) from None
    return torch


class NanoGPTTrainer:
    """nanoGPT at a `TrainConfig`'s size, with a Keras-like train step.

    `train_on_batch(x, y)` takes the (batch, sequence) token ids and
    targets keras-tfm's step takes (tensors or arrays), runs nanoGPT's
    forward, backward, clipping and AdamW update, and returns the loss as
    a float (as nanoGPT's loop does with `loss.item()`, which also waits
    for the step to finish).
    """

    def __init__(self, config, vocabulary_size):
        torch = import_torch()
        self._torch = torch
        torch.manual_seed(config.seed)
        self.model = _gpt(torch, config, vocabulary_size)
        self.model.train()
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
            betas=(config.beta_1, config.beta_2),
        )
        self.clipnorm = config.clipnorm

    def train_on_batch(self, x, y):
        torch = self._torch
        x = torch.from_numpy(np.asarray(x, dtype=np.int64))
        y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        logits = self.model(x)  # (batch, sequence, vocabulary)
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), y.view(-1)
        )
        loss.backward()
        if self.clipnorm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                           self.clipnorm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def count_params(self):
        # The tied head is the embedding's tensor, counted once.
        return sum(p.numel() for p in self.model.parameters())

    @property
    def torch_threads(self):
        return self._torch.get_num_threads()

    @property
    def torch_version(self):
        return self._torch.__version__


def matmul_products(xs, w, dys):
    """A function that runs a linear layer's three matmuls in PyTorch.

    For each `x` (rows, in) and `dy` (rows, out) array, with the weight `w`
    (in, out) stored (out, in) as `torch.nn.Linear` stores it: the products
    its forward and backward compute (`keras_tfm.matmuls` times
    TensorFlow's the same way).
    """
    torch = import_torch()
    xs = [torch.from_numpy(x) for x in xs]
    dys = [torch.from_numpy(dy) for dy in dys]
    weight = torch.from_numpy(w).t().contiguous()  # (out, in)

    def run():
        for x, dy in zip(xs, dys):
            torch.nn.functional.linear(x, weight)  # (rows, out)
            dy @ weight  # d/dx: (rows, in)
            dy.t() @ x  # d/dweight: (out, in)

    return run


def _gpt(torch, config, vocabulary_size):
    """nanoGPT's GPT, built inside a function so torch stays optional."""
    nn = torch.nn
    F = torch.nn.functional
    d, h = config.hidden_dim, config.num_heads

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(d, 3 * d, bias=False)  # fused Q, K, V
            self.c_proj = nn.Linear(d, d, bias=False)

        def forward(self, x):
            batch, sequence, _ = x.shape
            q, k, v = self.c_attn(x).split(d, dim=2)
            # (batch, heads, sequence, head_dim)
            q, k, v = (
                t.view(batch, sequence, h, d // h).transpose(1, 2)
                for t in (q, k, v)
            )
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).contiguous().view(batch, sequence, d)
            return self.c_proj(y)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d, eps=config.layer_norm_epsilon,
                                     bias=False)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(d, eps=config.layer_norm_epsilon,
                                     bias=False)
            self.c_fc = nn.Linear(d, config.intermediate_dim, bias=False)
            self.mlp_proj = nn.Linear(config.intermediate_dim, d, bias=False)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocabulary_size, d)
            self.wpe = nn.Embedding(config.sequence_length, d)
            self.blocks = nn.ModuleList(
                Block() for _ in range(config.num_layers)
            )
            self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_epsilon,
                                     bias=False)
            self.lm_head = nn.Linear(d, vocabulary_size, bias=False)
            self.lm_head.weight = self.wte.weight  # tied
            # GPT-2's initialisation, as nanoGPT sets it: N(0, 0.02), and
            # the projections into the residual stream scaled down by the
            # number of residual additions.
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, 0.0, 0.02)
            residual_std = 0.02 / math.sqrt(2 * config.num_layers)
            for block in self.blocks:
                nn.init.normal_(block.attn.c_proj.weight, 0.0, residual_std)
                nn.init.normal_(block.mlp_proj.weight, 0.0, residual_std)

        def forward(self, token_ids):
            positions = torch.arange(token_ids.shape[1])
            x = self.wte(token_ids) + self.wpe(positions)  # (batch, seq, d)
            for block in self.blocks:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return GPT()
