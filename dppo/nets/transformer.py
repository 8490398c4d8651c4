"""Transformer policy heads: ``Gaussian_Transformer`` and ``GMM_Transformer``.

One conditioning token (Linear(cond) + learned position) goes through an "encoder" (Linear-Mish-Linear,
or ``n_cond_layers`` pre-LN self-attention layers) and is the memory of a pre-LN transformer decoder whose
T_p queries are learned positional tokens (self-attention among them, cross-attention to the memory,
GELU feed-forward 4 n_emb, no causal mask). A final LayerNorm + Linear head gives per-step outputs; the
mean is tanh of the first D_a (per mode) of them. Linear and positional weights ~ N(0, 0.02), zero bias.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dppo.nets.gaussian_mlp import GaussianStd
from dppo.nets.mlp import LazyBuild, Linear, mish
from dppo.nets.vit import multi_head_attention, vit_dense
from dppo.utils.cond import Cond


class Attention(LazyBuild, keras.layers.Layer):
    """Multi-head attention with separate q/k/v projections (PyTorch's in_proj split in three)."""

    def __init__(self, n_emb: int, n_head: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if n_emb % n_head:
            raise ValueError(f"n_emb {n_emb} must be divisible by n_head {n_head}")
        self.n_head = n_head
        self.q, self.k, self.v, self.out = vit_dense(n_emb), vit_dense(n_emb), vit_dense(n_emb), vit_dense(n_emb)
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, memory: tf.Tensor, training: bool = False) -> tf.Tensor:
        out = multi_head_attention(self.q(x), self.k(memory), self.v(memory), self.n_head)
        return self.dropout(self.out(out), training=training)


class FeedForward(LazyBuild, keras.layers.Layer):
    def __init__(self, n_emb: int, dropout: float = 0.0, activation: str = "gelu", **kwargs):
        super().__init__(**kwargs)
        if activation not in FF_ACTIVATIONS:
            raise ValueError(f"transformer_activation '{activation}' is not supported; expected gelu or relu")
        self.act = FF_ACTIVATIONS[activation]
        self.l1, self.l2 = vit_dense(4 * n_emb), vit_dense(n_emb)
        self.drop1, self.drop2 = keras.layers.Dropout(dropout), keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = self.drop1(self.act(self.l1(x)), training=training)
        return self.drop2(self.l2(h), training=training)


class EncoderLayer(LazyBuild, keras.layers.Layer):
    """nn.TransformerEncoderLayer(norm_first=True, activation gelu)."""

    def __init__(self, n_emb: int, n_head: int, dropout: float = 0.0, activation: str = "gelu", **kwargs):
        super().__init__(**kwargs)
        self.norm1, self.norm2 = (keras.layers.LayerNormalization(epsilon=1e-5) for _ in range(2))
        self.attn, self.ff = Attention(n_emb, n_head, dropout), FeedForward(n_emb, dropout, activation)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, training=training)
        return x + self.ff(self.norm2(x), training=training)


class DecoderLayer(LazyBuild, keras.layers.Layer):
    """nn.TransformerDecoderLayer(norm_first=True, activation gelu): self-attn, cross-attn, feed-forward."""

    def __init__(self, n_emb: int, n_head: int, dropout: float = 0.0, activation: str = "gelu", **kwargs):
        super().__init__(**kwargs)
        self.norm1, self.norm2, self.norm3 = (keras.layers.LayerNormalization(epsilon=1e-5) for _ in range(3))
        self.self_attn, self.cross_attn = Attention(n_emb, n_head, dropout), Attention(n_emb, n_head, dropout)
        self.ff = FeedForward(n_emb, dropout, activation)

    def call(self, x: tf.Tensor, memory: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, training=training)
        x = x + self.cross_attn(self.norm2(x), memory, training=training)
        return x + self.ff(self.norm3(x), training=training)


class Transformer(LazyBuild, keras.layers.Layer):
    """cond (B, T_cond * cond_dim') -> (head output (B, T_p, output_dim), pre-head features (B, T_p, n_emb))."""

    def __init__(self, output_dim: int, horizon_steps: int, cond_dim: int, T_cond: int = 1, n_layer: int = 12,  # noqa: N803
                 n_head: int = 12, n_emb: int = 768, p_drop_emb: float = 0.0, p_drop_attn: float = 0.0,
                 causal_attn: bool = False, n_cond_layers: int = 0, activation: str = "gelu", **kwargs):
        super().__init__(**kwargs)
        if causal_attn:
            raise NotImplementedError("causal_attn=True is not supported (no reference config uses it)")
        if cond_dim % T_cond:
            raise ValueError(f"cond_dim {cond_dim} is not divisible by T_cond {T_cond}")
        self.horizon_steps, self.T_cond, self.n_emb = horizon_steps, T_cond, n_emb
        self.cond_token_dim = cond_dim // T_cond
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.cond_obs_emb = vit_dense(n_emb)
        self.cond_pos_emb = self.add_weight(shape=(1, T_cond, n_emb), initializer=init, name="cond_pos_emb")
        self.pos_emb = self.add_weight(shape=(1, horizon_steps, n_emb), initializer=init, name="pos_emb")
        if n_cond_layers > 0:
            self.encoder_layers = [EncoderLayer(n_emb, n_head, p_drop_attn, activation) for _ in range(n_cond_layers)]
            self.encoder_mlp = None
        else:
            self.encoder_layers = []
            self.encoder_mlp = [vit_dense(4 * n_emb), vit_dense(n_emb)]
        self.drop = keras.layers.Dropout(p_drop_emb)
        self.decoder = [DecoderLayer(n_emb, n_head, p_drop_attn, activation) for _ in range(n_layer)]
        self.ln_f = keras.layers.LayerNormalization(epsilon=1e-5)
        self.head = vit_dense(output_dim)

    def call(self, cond: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        b = tf.shape(cond)[0]
        c = tf.reshape(cond, (b, self.T_cond, self.cond_token_dim))
        memory = self.drop(self.cond_obs_emb(c) + self.cond_pos_emb, training=training)
        if self.encoder_mlp is not None:
            memory = self.encoder_mlp[1](mish(self.encoder_mlp[0](memory)))
        for layer in self.encoder_layers:
            memory = layer(memory, training=training)
        x = self.drop(tf.tile(self.pos_emb, (b, 1, 1)), training=training)
        for layer in self.decoder:
            x = layer(x, memory, training=training)
        pre_head = self.ln_f(x)
        return self.head(pre_head), pre_head


def _transformer_kwargs(kw: dict) -> dict:
    """The reference's config names (transformer_embed_dim, transformer_num_heads, transformer_num_layers,
    transformer_activation, p_drop_emb, p_drop_attn; defaults 256, 8, 6, gelu, 0, 0) with the short aliases
    n_emb, n_head, n_layer, embd_pdrop, attn_pdrop also accepted."""
    def pick(names, default):
        found = [kw.pop(n) for n in names if n in kw]
        return found[0] if found else default

    return dict(n_emb=int(pick(("transformer_embed_dim", "n_emb"), 256)),
                n_head=int(pick(("transformer_num_heads", "n_head"), 8)),
                n_layer=int(pick(("transformer_num_layers", "n_layer"), 6)),
                activation=pick(("transformer_activation", "activation"), "gelu"),
                p_drop_emb=float(pick(("p_drop_emb", "embd_pdrop"), 0.0)),
                p_drop_attn=float(pick(("p_drop_attn", "attn_pdrop"), 0.0)),
                T_cond=int(pick(("T_cond",), 1)), causal_attn=pick(("causal_attn",), False),
                n_cond_layers=int(pick(("n_cond_layers",), 0)))


FF_ACTIVATIONS = {"gelu": lambda x: tf.nn.gelu(x, approximate=False), "relu": tf.nn.relu}


class Gaussian_Transformer(LazyBuild, GaussianStd, keras.layers.Layer):  # noqa: N801 (the reference's class name)
    """cond -> (tanh mean, std), each (B, T_p * D_a). ``transition_dim`` is the reference's name for D_a."""

    def __init__(self, transition_dim: int | None = None, horizon_steps: int = 1, cond_dim: int = 1,
                 fixed_std: float | None = None, learn_fixed_std: bool = False, std_min: float = 0.01,
                 std_max: float = 1.0, action_dim: int | None = None, **kwargs):
        kwargs.pop("device", None)
        tkw = _transformer_kwargs(kwargs)
        super().__init__(**kwargs)
        self.action_dim = int(transition_dim if transition_dim is not None else action_dim)
        self.horizon_steps, self.cond_dim = horizon_steps, cond_dim
        self._init_std(fixed_std, learn_fixed_std, std_min, std_max, self.action_dim)
        out_dim = self.action_dim * (2 if fixed_std is None else 1)
        self.transformer = Transformer(out_dim, horizon_steps, cond_dim, **tkw)

    def call(self, cond: Cond, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        state = cond["state"]
        b = tf.shape(state)[0]
        d = self.horizon_steps * self.action_dim
        out, _ = self.transformer(tf.reshape(state, (b, self.cond_dim)), training=training)
        mean = tf.reshape(tf.tanh(out[..., :self.action_dim]), (b, d))
        if self.learn_fixed_std:
            scale = tf.tile(self._learned_fixed_scale()[None, :], (b, self.horizon_steps))
        elif self.use_fixed_std:
            scale = tf.fill(tf.shape(mean), tf.cast(self.fixed_std, mean.dtype))
        else:
            scale = self._clamped_scale(tf.reshape(out[..., self.action_dim:], (b, d)))
        return mean, scale


class GMM_Transformer(LazyBuild, GaussianStd, keras.layers.Layer):  # noqa: N801
    """cond -> (tanh means (B, M, T_p*D_a), stds, logits (B, M)); logits = Linear(T_p n_emb -> M) on the
    normed decoder output (PyTorch default init, as the reference's modes_head is outside its init)."""

    def __init__(self, transition_dim: int | None = None, horizon_steps: int = 1, cond_dim: int = 1,
                 num_modes: int = 5, fixed_std: float | None = None, learn_fixed_std: bool = False,
                 std_min: float = 0.01, std_max: float = 1.0, action_dim: int | None = None, **kwargs):
        kwargs.pop("device", None)
        tkw = _transformer_kwargs(kwargs)
        super().__init__(**kwargs)
        self.action_dim = int(transition_dim if transition_dim is not None else action_dim)
        self.horizon_steps, self.cond_dim, self.num_modes = horizon_steps, cond_dim, num_modes
        self._init_std(fixed_std, learn_fixed_std, std_min, std_max, self.action_dim * num_modes)
        out_dim = self.action_dim * num_modes * (2 if fixed_std is None else 1)
        self.transformer = Transformer(out_dim, horizon_steps, cond_dim, **tkw)
        self.modes_head = Linear(num_modes)

    def _per_mode(self, x: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        """(B, T_p, M * D_a) -> (B, M, T_p * D_a)."""
        x = tf.reshape(x, (b, self.horizon_steps, self.num_modes, self.action_dim))
        return tf.reshape(tf.transpose(x, (0, 2, 1, 3)), (b, self.num_modes, self.horizon_steps * self.action_dim))

    def call(self, cond: Cond, training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        state = cond["state"]
        b = tf.shape(state)[0]
        md = self.num_modes * self.action_dim
        out, pre_head = self.transformer(tf.reshape(state, (b, self.cond_dim)), training=training)
        mean = self._per_mode(tf.tanh(out[..., :md]), b)
        if self.learn_fixed_std:  # (M * D_a) -> (1, M, D_a) tiled over the horizon
            scale = tf.reshape(self._learned_fixed_scale(), (1, self.num_modes, self.action_dim))
            scale = tf.tile(scale, (b, 1, self.horizon_steps))
        elif self.use_fixed_std:
            scale = tf.fill(tf.shape(mean), tf.cast(self.fixed_std, mean.dtype))
        else:
            scale = self._clamped_scale(self._per_mode(out[..., md:], b))
        logits = self.modes_head(tf.reshape(pre_head, (b, self.horizon_steps * self.transformer.n_emb)))
        return mean, scale, logits
