"""DPPO: PPO over the denoising chain of a diffusion policy (spec 2).

The frozen pre-trained network ``network`` (alias ``actor``) runs the first K - K' denoising steps, a
trainable copy ``actor_ft`` the last K' = ``ft_denoising_steps``. Each env step contributes K' Gaussian
transitions x_{t+1} -> x_t. A minibatch is ``batch_size`` env steps carrying all their K' transitions: the unit
of the reference v0.5 in which every shipped config is written (v0.6+ draws random (env step, denoising step)
pairs and multiplies ``batch_size`` by K' to keep the same optimizer steps). All epochs run in one compiled call.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dppo.policies.diffusion import DiffusionModel
from dppo.policies.distributions import normal_log_prob
from dppo.utils.cond import Cond, gather_cond
from dppo.utils.optim import AdamW
from dppo.utils.seeding import tf_stream


def clip_coefficients(k: tf.Tensor, n: int, clip: float, base: float, rate: float) -> tf.Tensor:
    """Per-denoising-step PPO clip: base + (clip - base) (e^{rate u} - 1)/(e^rate - 1), u = k/(n-1)."""
    if n == 1:
        return tf.fill(tf.shape(k), clip)
    u = tf.cast(k, tf.float32) / (n - 1)
    return base + (clip - base) * (tf.exp(rate * u) - 1.0) / (np.exp(rate) - 1.0)


class EtaFixed:
    """The reference's fixed DDIM eta (``model.eta`` block); only ``base_eta`` matters when it is not learned."""

    def __init__(self, base_eta: float = 1.0, **_: Any):
        self.base_eta = float(base_eta)


class PPODiffusion(DiffusionModel):
    """Diffusion policy with a fine-tuned copy of its last denoising steps, a critic V(s) and the PPO loss."""

    single_step = False  # each env step carries K' transitions (the exact-likelihood subclass scores one)

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 actor_ft: keras.layers.Layer | None = None, ft_denoising_steps: int = 10,
                 min_sampling_denoising_std: float = 0.1, min_logprob_denoising_std: float = 0.1,
                 gamma_denoising: float = 0.99, clip_ploss_coef: float = 0.01, clip_ploss_coef_base: float = 1e-3,
                 clip_ploss_coef_rate: float = 3.0, clip_vloss_coef: float | None = None,
                 clip_advantage_lower_quantile: float = 0.0, clip_advantage_upper_quantile: float = 1.0,
                 norm_adv: bool = True, use_bc_loss: bool = False, bc_loss_coeff: float = 0.0,
                 use_base_policy: bool = False, eta: Any = None, learn_eta: bool = False,
                 network_path: str | None = None, **kwargs):
        if learn_eta:
            raise NotImplementedError("model.learn_eta=True is not supported (no reference config uses it); "
                                      "eta is fixed at eta.base_eta")
        if use_bc_loss:
            raise NotImplementedError("model.use_bc_loss is not supported (the reference's BC term crashes "
                                      "[quirk] and no config enables it)")
        self.critic = critic
        self.actor_ft = actor_ft
        self.ft_denoising_steps = int(ft_denoising_steps)
        self.min_sampling_denoising_std = float(min_sampling_denoising_std)
        self.min_logprob_denoising_std = float(min_logprob_denoising_std)
        self.gamma_denoising = float(gamma_denoising)
        self.clip_ploss_coef, self.clip_ploss_coef_base = float(clip_ploss_coef), float(clip_ploss_coef_base)
        self.clip_ploss_coef_rate = float(clip_ploss_coef_rate)
        self.clip_vloss_coef = clip_vloss_coef
        self.clip_adv_quantiles = (float(clip_advantage_lower_quantile), float(clip_advantage_upper_quantile))
        self.norm_adv = norm_adv
        self.use_base_policy = use_base_policy
        self.eta = float(getattr(eta, "base_eta", 1.0 if eta is None else eta))
        super().__init__(network=actor, **kwargs)
        self.shuffle_rng = tf_stream(self.seed, "shuffle")  # minibatch order
        if self.ft_denoising_steps > self.n_steps:
            raise ValueError(f"ft_denoising_steps ({self.ft_denoising_steps}) > number of denoising steps "
                             f"({self.n_steps})")
        if self.actor_ft is None:
            raise ValueError("PPODiffusion needs actor_ft, a second network of the actor's architecture "
                             "(the runner builds it from model.actor)")
        self.build_network(self.actor_ft)
        self.critic(self.dummy_cond())
        self.sync_actor_ft()
        if network_path:
            from dppo.utils.checkpoint import load_finetune_weights
            load_finetune_weights(self, network_path)
        self.actor_optimizer: AdamW | None = None
        self.critic_optimizer: AdamW | None = None
        self._old = tf.function(self._old_graph)
        self._update = tf.function(self._update_graph)

    @property
    def actor(self) -> keras.layers.Layer:
        return self.network

    def sync_actor_ft(self) -> None:
        """actor_ft <- the frozen base network."""
        for dst, src in zip(self.actor_ft.weights, self.network.weights):
            dst.assign(src)

    # sampling -------------------------------------------------------------------------------------------
    def chain_steps(self) -> int:
        return self.ft_denoising_steps

    def sampling_std(self, std: tf.Tensor, step: int, deterministic: bool) -> tf.Tensor:
        """Deterministic: the base rule; stochastic: max(std, min_sampling_denoising_std) at every step,
        the frozen ones included (spec 1.4)."""
        if deterministic:
            return super().sampling_std(std, step, deterministic)
        return tf.maximum(std, self.min_sampling_denoising_std)

    def sampling_eta(self, deterministic: bool) -> float:
        return 0.0 if deterministic else self.eta

    # log-probabilities ----------------------------------------------------------------------------------
    def ft_grid_index(self, k: tf.Tensor) -> tf.Tensor:
        """Schedule index of fine-tuned step k (0 = noisiest fine-tuned step)."""
        step = self.n_steps - self.ft_denoising_steps + k
        return step if self.use_ddim else self.denoising_steps - 1 - step

    def transition_log_prob(self, cond: Cond, x_prev: tf.Tensor, x_next: tf.Tensor, k: tf.Tensor,
                            net: keras.layers.Layer | None = None) -> tf.Tensor:
        """Elementwise log pi(x_next | x_prev, s) of fine-tuned step k, (B, T_p, D_a), with the std floored
        at ``min_logprob_denoising_std``."""
        mean, std = self.p_mean_std(net or self.actor_ft, x_prev, self.ft_grid_index(k), cond, self.eta)
        return normal_log_prob(x_next, mean, tf.maximum(std, self.min_logprob_denoising_std))

    def chain_log_probs(self, cond: Cond, chains: tf.Tensor) -> tf.Tensor:
        """Log-probs of all K' transitions of each chain: (B, K', T_p, D_a) (sample-major)."""
        b, kp = tf.shape(chains)[0], self.ft_denoising_steps
        rep = tf.repeat(tf.range(b), kp)
        k = tf.tile(tf.range(kp), [b])
        x_prev = tf.reshape(chains[:, :-1], (-1, self.horizon_steps, self.action_dim))
        x_next = tf.reshape(chains[:, 1:], (-1, self.horizon_steps, self.action_dim))
        logp = self.transition_log_prob(gather_cond(cond, rep), x_prev, x_next, k)
        return tf.reshape(logp, (b, kp, self.horizon_steps, self.action_dim))

    # the runner's interface ------------------------------------------------------------------------------
    def act(self, cond: Cond, deterministic: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Action chunk and what the update needs to score it again (the chain)."""
        return self.sample(cond, deterministic=deterministic, return_chain=True)

    def _old_graph(self, cond: Cond, chains: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.critic(cond), self.chain_log_probs(cond, chains)

    def values_and_log_probs(self, cond: Cond, chains: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """V(s) (B,) and old log-probs (B, K', T_p, D_a) under the current actor_ft."""
        return self._old(cond, chains)

    def values(self, cond: Cond) -> tf.Tensor:
        return self._values(cond)

    @tf.function(reduce_retracing=True)
    def _values(self, cond: Cond) -> tf.Tensor:
        return self.critic(cond)

    # loss ------------------------------------------------------------------------------------------------
    def loss(self, cond: Cond, chains: tf.Tensor, returns: tf.Tensor, old_values: tf.Tensor, advantages: tf.Tensor,
             old_log_probs: tf.Tensor, reward_horizon: int) -> dict[str, tf.Tensor]:
        """PPO loss of a minibatch of B env steps, each with its K' denoising transitions (spec 2.5).

        ``chains`` (B, K'+1, T_p, D_a), ``old_log_probs`` (B, K', T_p, D_a), the rest (B,). Advantages are
        normalised over the B env steps, then broadcast to the K' transitions with gamma_denoising^(K'-1-k);
        the critic runs once per env step. Returns the loss terms and diagnostics.
        """
        kp = self.ft_denoising_steps

        def per_transition(lp: tf.Tensor) -> tf.Tensor:  # clamp elementwise, keep H_r chunk steps, average
            return tf.reduce_mean(tf.clip_by_value(lp, -5.0, 2.0)[:, :, :reward_horizon], axis=(2, 3))

        new_lp = per_transition(self.chain_log_probs(cond, chains))  # (B, K')
        old_lp = per_transition(old_log_probs)
        adv = advantages
        if self.norm_adv:
            n = tf.cast(tf.size(adv), tf.float32)
            mean = tf.reduce_mean(adv)
            std = tf.sqrt(tf.reduce_sum(tf.square(adv - mean)) / tf.maximum(n - 1.0, 1.0))
            adv = (adv - mean) / (std + 1e-8)
        lo_q, hi_q = self.clip_adv_quantiles
        if lo_q > 0.0 or hi_q < 1.0:
            adv = tf.clip_by_value(adv, quantile(adv, lo_q), quantile(adv, hi_q))
        k = tf.range(kp)
        discount = tf.pow(self.gamma_denoising, tf.cast(kp - 1 - k, tf.float32))  # (K',)
        adv = adv[:, None] * discount[None, :]  # (B, K')
        log_ratio = new_lp - old_lp
        ratio = tf.exp(log_ratio)
        clip = clip_coefficients(k, kp, self.clip_ploss_coef, self.clip_ploss_coef_base,
                                 self.clip_ploss_coef_rate)[None, :]
        pg_loss = tf.reduce_mean(tf.maximum(-adv * ratio, -adv * tf.clip_by_value(ratio, 1 - clip, 1 + clip)))
        values = self.critic(cond, training=True)
        if self.clip_vloss_coef is None:
            v_loss = 0.5 * tf.reduce_mean(tf.square(values - returns))
        else:
            v_clipped = old_values + tf.clip_by_value(values - old_values, -self.clip_vloss_coef,
                                                      self.clip_vloss_coef)
            v_loss = 0.5 * tf.reduce_mean(tf.maximum(tf.square(values - returns), tf.square(v_clipped - returns)))
        return {
            "pg_loss": pg_loss, "v_loss": v_loss,
            "entropy_loss": -tf.constant(self.eta if self.use_ddim else 1.0),
            "approx_kl": tf.reduce_mean((ratio - 1.0) - log_ratio),
            "clipfrac": tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32)),
            "ratio": tf.reduce_mean(ratio),
        }

    # update ----------------------------------------------------------------------------------------------
    def trainable_actor_variables(self) -> list[tf.Variable]:
        return self.actor_ft.trainable_variables

    def set_optimizers(self, actor_optimizer: AdamW, critic_optimizer: AdamW) -> None:
        self.actor_optimizer, self.critic_optimizer = actor_optimizer, critic_optimizer

    def update(self, batch: dict[str, Any], train_actor: bool, batch_size: int, update_epochs: int,
               vf_coef: float, ent_coef: float, target_kl: float | None, reward_horizon: int) -> dict[str, float]:
        """All epochs of minibatch updates; a minibatch is ``batch_size`` env steps with all their K' denoising
        transitions (the reference v0.5 unit, in which every shipped config's ``batch_size`` is written)."""
        out = self._update(batch["cond"], batch["samples"], batch["returns"], batch["values"], batch["advantages"],
                           batch["log_probs"], tf.constant(train_actor), batch_size=int(batch_size),
                           update_epochs=int(update_epochs), vf_coef=float(vf_coef), ent_coef=float(ent_coef),
                           target_kl=float(target_kl) if target_kl is not None else float("inf"),
                           reward_horizon=int(reward_horizon))
        return {k: float(v) for k, v in out.items()}

    def _update_graph(self, cond, chains, returns, values, advantages, log_probs, train_actor, batch_size,
                      update_epochs, vf_coef, ent_coef, target_kl, reward_horizon):
        n = tf.shape(chains)[0]
        n_batch = tf.maximum(1, n // batch_size)  # the remainder of a shuffled epoch is dropped, as in the reference
        actor_vars = self.trainable_actor_variables()
        critic_vars = self.critic.trainable_variables
        zero = tf.constant(0.0)
        last = {key: zero for key in ("loss", "pg_loss", "v_loss", "entropy_loss", "approx_kl", "ratio",
                                      "minibatch_transitions")}
        clipfrac_sum, n_done, stop = zero, zero, tf.constant(False)
        for _ in tf.range(update_epochs):
            perm = tf.argsort(self.shuffle_rng.uniform((n,)))
            for b in tf.range(n_batch):
                i = perm[b * batch_size:(b + 1) * batch_size]
                with tf.GradientTape(persistent=True) as tape:
                    terms = self.loss(gather_cond(cond, i), tf.gather(chains, i), tf.gather(returns, i),
                                      tf.gather(values, i), tf.gather(advantages, i), tf.gather(log_probs, i),
                                      reward_horizon)
                    loss = terms["pg_loss"] + ent_coef * terms["entropy_loss"] + vf_coef * terms["v_loss"]
                if train_actor:
                    self.actor_optimizer.apply(tape.gradient(loss, actor_vars))
                self.critic_optimizer.apply(tape.gradient(loss, critic_vars))
                del tape
                last = {"loss": loss, **{key: terms[key] for key in last if key in terms},
                        "minibatch_transitions": tf.cast(tf.size(i) * self.ft_denoising_steps, tf.float32)}
                clipfrac_sum += terms["clipfrac"]
                n_done += 1.0
                if terms["approx_kl"] > target_kl:
                    stop = tf.constant(True)
                    break
            if stop:
                break
        return {**last, "clipfrac": clipfrac_sum / n_done, "n_minibatches": n_done}


def quantile(x: tf.Tensor, q: float) -> tf.Tensor:
    """Linear-interpolation quantile of a 1-D tensor (torch.quantile's default)."""
    s = tf.sort(x)
    pos = q * tf.cast(tf.size(s) - 1, tf.float32)
    lo = tf.cast(tf.floor(pos), tf.int32)
    hi = tf.minimum(lo + 1, tf.size(s) - 1)
    w = pos - tf.floor(pos)
    return tf.gather(s, lo) * (1 - w) + tf.gather(s, hi) * w
