"""DPPO: PPO over the denoising chain of a diffusion policy.

The frozen pre-trained network ``network`` (alias ``actor``) runs the first K - K' denoising steps, a
trainable copy ``actor_ft`` the last K' = ``ft_denoising_steps``. Each env step contributes K' Gaussian
transitions x_{t+1} -> x_t, scored by ``transition_log_probs``; the shared ``PPOLearner`` (dppo/algos/ppo.py)
runs the minibatches (``batch_size`` env steps, each with all its K' transitions) and the optimizer steps.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dppo.policies.diffusion import DiffusionModel
from dppo.policies.distributions import normal_log_prob
from dppo.utils.cond import Cond, gather_cond


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
                 network_path: str | None = None, reward_horizon: int | None = None, **kwargs):
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
        # chunk steps that carry reward (the runner passes the config's reward_horizon, default act_steps)
        self.reward_horizon = int(reward_horizon or self.horizon_steps)
        k = tf.range(self.ft_denoising_steps)
        self.ppo_clip = clip_coefficients(k, self.ft_denoising_steps, self.clip_ploss_coef, self.clip_ploss_coef_base,
                                          self.clip_ploss_coef_rate)  # smallest on the noisiest step
        self.ppo_weights = tf.pow(self.gamma_denoising, tf.cast(self.ft_denoising_steps - 1 - k, tf.float32))
        if self.ft_denoising_steps > self.n_steps:
            raise ValueError(f"ft_denoising_steps ({self.ft_denoising_steps}) > number of denoising steps "
                             f"({self.n_steps})")
        if self.actor_ft is None:
            raise ValueError("PPODiffusion needs actor_ft, a second network of the actor's architecture "
                             "(the runner builds it from model.actor)")
        self.build_network(self.actor_ft)
        self.critic(self.dummy_cond())
        self.sync_actor_ft()
        self.network_path = network_path

    def load_initial_weights(self, path: str) -> None:
        """A pre-trained policy (into network and actor_ft) or a fine-tuning checkpoint (network, actor_ft, critic)."""
        from dppo.utils.checkpoint import load_finetune_weights
        load_finetune_weights(self, path)

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
        the frozen ones included."""
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

    # what the PPO learner needs ------------------------------------------------------------------------
    def act(self, cond: Cond, deterministic: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Action chunk and what the update scores again (the chain)."""
        return self.sample(cond, deterministic=deterministic, return_chain=True)

    def transition_log_probs(self, cond: Cond, chains: tf.Tensor,
                             training: bool = False) -> tuple[tf.Tensor, dict]:
        """Per-transition log-probs (B, K') of chains (B, K'+1, T_p, D_a): the elementwise log-densities clamped
        to [-5, 2], then averaged over the first ``reward_horizon`` chunk steps and the action dimensions."""
        lp = tf.clip_by_value(self.chain_log_probs(cond, chains), -5.0, 2.0)[:, :, :self.reward_horizon]
        lp = tf.reduce_mean(lp, axis=(2, 3))
        return lp, {"entropy": tf.fill(tf.shape(lp)[:1], self.eta if self.use_ddim else 1.0)}

    def trainable_actor_variables(self) -> list[tf.Variable]:
        return self.actor_ft.trainable_variables
