"""PPO with the exact likelihood of a diffusion policy (the reference's PPOExactDiffusion).

Rollouts sample exactly as DPPO does, but only the final action chunk is stored. Its log-likelihood comes
from the probability-flow ODE of the VP process that matches the DDPM schedule, integrated with Euler steps
from the data (u = ``sde_eps``) to the prior (u = 1), with the divergence estimated by Hutchinson's trace
estimator (``sde_num_epsilon`` Rademacher or Gaussian probes):

    dx/du = -1/2 beta(u) (x - eps_theta(x, tau(u)) / sqrt(1 - abar_tau)),
    log p(a) = log N(x(1); 0, I) + int div_x(dx/du) du.

Continuous time u in [0, 1] maps to the DDPM grid as in DPM-Solver's discrete schedule: u = (t + 1)/K for
DDPM index t, log abar(u) piecewise linear between the grid points (abar(0) = 1), hence
beta(u) = -K log(1 - beta_t) on segment t; the network gets the (fractional) index tau(u) = uK - 1, clamped
to [``min_network_time``, K - 1]. The policy's log-prob is reported in bits per dimension, as the
reference does, and enters single-step PPO (scalar clip, log-probs clamped to [-5, 2], no entropy term).

Fixes of the reference (both change its numbers; they are bugs, not choices):
* [quirk] the reference evaluates the divergence with the frozen base actor while the drift uses actor_ft
  on the fine-tuned steps; here the divergence uses the same actor as the drift, so the estimate is the
  divergence of the field actually integrated (and actor_ft gets the gradient of its own trace term);
* [quirk] the reference integrates the per-step DDPM betas over unit time (drift -1/2 beta_t x with t the
  integer index and u in [0, 1]), i.e. 1/K of the required time scale: x(1) is then far from the N(0, I)
  prior and the "likelihood" is not a density of the model. Here beta is scaled to the continuous time
  (beta(u) = -K log(1 - beta_t)), which makes the estimate converge to the model's density as the step
  shrinks (checked against the closed form for Gaussian data in tests/test_ppo_gaussian.py).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dppo.algos.ppo_diffusion import PPODiffusion
from dppo.algos.ppo_gaussian import LOG_PROB_CLAMP, SingleStepPolicy
from dppo.policies.schedule import cosine_beta_schedule
from dppo.utils.cond import Cond


def ode_grid(denoising_steps: int, eps: float, step_size: float, min_beta: float, min_network_time: float = 0.0,
             round_network_time: bool = False) -> list[tuple[float, float, float, float, int]]:
    """The Euler steps of the probability-flow ODE: (du, beta(u), tau, 1/sqrt(1 - abar_tau), DDPM index of
    tau) at the left end u of each step of a grid eps, eps + h, ..., 1."""
    k = denoising_steps
    betas = np.maximum(cosine_beta_schedule(k), min_beta)
    log_alpha = np.log1p(-betas)
    log_abar = np.concatenate([[0.0], np.cumsum(log_alpha)])  # at u = j/K, i.e. DDPM index j - 1
    grid = np.arange(eps, 1.0, step_size)
    grid = np.append(grid[grid < 1.0 - 1e-9], 1.0)
    steps = []
    for u0, u1 in zip(grid[:-1], grid[1:]):
        seg = min(int(math.floor(u0 * k + 1e-9)), k - 1)
        tau = float(np.clip(u0 * k - 1.0, min_network_time, k - 1))
        if round_network_time:
            tau = float(np.clip(np.round(tau), max(min_network_time, 0.0), k - 1))
        log_abar_tau = np.interp(tau, np.arange(-1, k), log_abar)
        inv_std = 1.0 / math.sqrt(-math.expm1(log_abar_tau))
        steps.append((float(u1 - u0), float(-k * log_alpha[seg]), tau, inv_std, int(round(max(tau, 0.0)))))
    return steps


class PPOExactDiffusion(SingleStepPolicy, PPODiffusion):
    """DPPO sampling, exact-likelihood single-step PPO update.

    ``sde_*`` options follow the reference's names (``sde``, ``rtol``/``atol`` and ``sde_rtol``/``sde_atol``
    are accepted and ignored: only the fixed-step Euler method is implemented, as every config uses).
    """

    def __init__(self, sde: Any = None, sde_hutchinson_type: str = "Rademacher", sde_eps: float = 1e-4,
                 sde_step_size: float = 1e-3, sde_method: str = "euler", sde_num_epsilon: int = 1,
                 sde_min_beta: float = 1e-2, sde_probability_flow: bool = True, sde_continuous: bool = False,
                 sde_rtol: float | None = None, sde_atol: float | None = None, rtol: float | None = None,
                 atol: float | None = None, min_network_time: float = 0.0, round_network_time: bool = False,
                 bits_per_dim: bool = True, log_prob_clamp: tuple[float, float] | None = LOG_PROB_CLAMP,
                 **kwargs: Any):
        if sde_method != "euler":
            raise ValueError(f"model.sde_method '{sde_method}' is not supported; only 'euler' (fixed step) is")
        if not sde_probability_flow:
            raise ValueError("model.sde_probability_flow must be True: the likelihood needs the probability-flow "
                             "ODE (the reverse SDE's drift has no density interpretation)")
        if sde_continuous:
            raise ValueError("model.sde_continuous=True is not supported (the networks take DDPM indices)")
        if sde_hutchinson_type not in ("Rademacher", "Gaussian"):
            raise ValueError(f"model.sde_hutchinson_type must be 'Rademacher' or 'Gaussian', got "
                             f"'{sde_hutchinson_type}'")
        if kwargs.get("use_ddim"):
            raise ValueError("the exact-likelihood variant needs DDPM sampling (use_ddim=False)")
        self.hutchinson_type = sde_hutchinson_type
        self.num_epsilon = int(sde_num_epsilon)
        self.bits_per_dim = bool(bits_per_dim)
        super().__init__(**kwargs)
        # one scalar ratio per sample: the single-step PPO settings replace DPPO's per-denoising-step ones
        self._init_ppo(kwargs.get("clip_ploss_coef", 0.01), kwargs.get("clip_vloss_coef"),
                       kwargs.get("norm_adv", True), log_prob_clamp)
        self.ode_steps = ode_grid(self.denoising_steps, float(sde_eps), float(sde_step_size), float(sde_min_beta),
                                  float(min_network_time), bool(round_network_time))

    # rollouts: DPPO's sampler, final sample stored -----------------------------------------------------
    def sample_for_rollout(self, cond: Cond, deterministic: bool) -> tf.Tensor:
        return self.sample(cond, deterministic=deterministic)

    # likelihood ------------------------------------------------------------------------------------------
    def _probes(self, shape: tuple) -> tf.Tensor:
        if self.hutchinson_type == "Gaussian":
            return self.train_rng.normal(shape)
        return tf.cast(self.train_rng.uniform(shape, 0, 2, dtype=tf.int32), tf.float32) * 2.0 - 1.0

    def net_for_index(self, t: int) -> keras.layers.Layer:
        """actor_ft on the fine-tuned DDPM indices t < K' (unless use_base_policy), else the frozen base."""
        if t < self.ft_denoising_steps and not self.use_base_policy:
            return self.actor_ft
        return self.network

    def exact_log_prob(self, cond: Cond, samples: tf.Tensor, training: bool = False) -> tf.Tensor:
        """log p(samples) in nats (B,) by the probability-flow ODE with a Hutchinson divergence."""
        b = tf.shape(samples)[0]
        d = self.horizon_steps * self.action_dim
        n = self.num_epsilon
        x = tf.reshape(samples, (b, d))
        cond_rep = {k: tf.tile(v, [n] + [1] * (len(v.shape) - 1)) for k, v in cond.items()}  # probe-major rows
        probes = self._probes((n * b, d))
        delta = tf.zeros((b,))
        for du, beta, tau, inv_std, t_index in self.ode_steps:
            net = self.net_for_index(t_index)
            xr = tf.tile(x, [n, 1])
            with tf.GradientTape() as tape:
                tape.watch(xr)
                eps = net(tf.reshape(xr, (n * b, self.horizon_steps, self.action_dim)), tf.fill((n * b,), tau),
                          cond_rep, training=training)
                drift = -0.5 * beta * (xr - inv_std * tf.reshape(eps, (n * b, d)))
                projected = tf.reduce_sum(drift * probes)
            grad = tape.gradient(projected, xr)  # (d drift / dx)^T v, differentiable w.r.t. the weights
            div = tf.reduce_mean(tf.reshape(tf.reduce_sum(grad * probes, axis=-1), (n, b)), axis=0)
            x = x + du * drift[:b]
            delta = delta + du * div
        prior = -0.5 * d * math.log(2 * math.pi) - 0.5 * tf.reduce_sum(tf.square(x), axis=-1)
        return prior + delta

    def policy_terms(self, cond: Cond, samples: tf.Tensor, training: bool) -> tuple[tf.Tensor, dict]:
        log_prob = self.exact_log_prob(cond, samples, training=training)
        if self.bits_per_dim:
            log_prob = log_prob / (math.log(2.0) * self.horizon_steps * self.action_dim)
        return log_prob, {}
