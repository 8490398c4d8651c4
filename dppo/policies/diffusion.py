"""Diffusion policy: DDPM/DDIM sampling in one compiled graph, and the training loss.

The reverse chain runs inside one ``tf.function`` (the Python loop over denoising steps is unrolled at trace
time), returning the action chunk and, on request, the chain of the last ``ft_denoising_steps`` samples.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dppo.policies.schedule import DiffusionSchedule
from dppo.utils.cond import Cond
from dppo.utils.seeding import tf_stream


class DiffusionModel(tf.Module):
    """A denoising network with its schedule: ``sample`` (compiled) and ``loss`` (pre-training).

    When ``actor_ft`` is set (fine-tuning, or evaluating a fine-tuned checkpoint), it runs the last
    ``ft_denoising_steps`` reverse steps and the frozen ``network`` the others.
    """

    actor_ft: keras.layers.Layer | None = None
    ft_denoising_steps: int = 0
    use_base_policy: bool = False

    def __init__(self, network: keras.layers.Layer, horizon_steps: int, obs_dim: int, action_dim: int,
                 denoising_steps: int = 100, predict_epsilon: bool = True, denoised_clip_value: float = 1.0,
                 randn_clip_value: float = 10.0, final_action_clip_value: float | None = None,
                 eps_clip_value: float | None = None, use_ddim: bool = False, ddim_steps: int | None = None,
                 ddim_discretize: str = "uniform", cond_steps: int = 1, network_path: str | None = None,
                 seed: int = 0, device: Any = None, name: str | None = None, jit_compile_sampler: bool = False):
        super().__init__(name=name)
        if use_ddim and not predict_epsilon:
            raise ValueError("use_ddim requires predict_epsilon=True")
        if use_ddim and not ddim_steps:
            raise ValueError("use_ddim=True needs model.ddim_steps")
        if ddim_discretize != "uniform":
            raise ValueError(f"ddim_discretize '{ddim_discretize}' is not supported; expected 'uniform'")
        self.network = network
        self.horizon_steps, self.obs_dim, self.action_dim = horizon_steps, obs_dim, action_dim
        self.cond_steps = cond_steps
        self.denoising_steps = int(denoising_steps)
        self.predict_epsilon = predict_epsilon
        self.denoised_clip_value = denoised_clip_value
        self.randn_clip_value = randn_clip_value
        self.final_action_clip_value = final_action_clip_value
        self.eps_clip_value = eps_clip_value
        self.use_ddim = use_ddim
        self.schedule = DiffusionSchedule(self.denoising_steps, ddim_steps if use_ddim else None)
        self.n_steps = self.schedule.n_sampling_steps
        self.seed = int(seed)
        self.rng = tf_stream(seed, "sampling")  # action noise
        self.train_rng = tf_stream(seed, "training")  # pre-training noise and timesteps
        self._buffers = {k: tf.constant(v) for k, v in vars(self.schedule).items() if isinstance(v, np.ndarray)}
        self.build_network(self.network)
        # jit_compile_sampler (opt-in, config ``model.jit_compile_sampler``): the sampler compiled with XLA was
        # 20-25% faster per call at 10-40 envs on an idle two-core CPU, but compiles for seconds per input shape,
        # draws a different random stream than the plain graph, and was slower under heavy load (benchmarks/)
        self._sample = tf.function(self._sample_graph, reduce_retracing=True,
                                   jit_compile=True if jit_compile_sampler else None)
        self.network_path = network_path  # read by load_initial_weights, not here: constructors do no file I/O

    def load_initial_weights(self, path: str) -> None:
        """The pre-trained policy fine-tuning or evaluation starts from (the EMA weights of a pre-training
        checkpoint when present)."""
        from dppo.utils.checkpoint import load_policy_weights
        load_policy_weights(self, path)

    # ----------------------------------------------------------------------------------------------------
    def dummy_cond(self, batch: int = 1) -> Cond:
        cond = {"state": tf.zeros((batch, self.cond_steps, self.obs_dim))}
        rgb_shape = getattr(self.network, "rgb_shape", None)  # pixel networks: (T_img, C, H, W)
        if rgb_shape is not None:
            cond["rgb"] = tf.zeros((batch, *rgb_shape))
        return cond

    def build_network(self, net: keras.layers.Layer) -> None:
        """Create the weights of ``net`` by calling it once."""
        net(tf.zeros((1, self.horizon_steps, self.action_dim)), tf.zeros((1,), tf.int32), self.dummy_cond())

    def _gather(self, name: str, idx: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.gather(self._buffers[name], idx), (-1, 1, 1))

    def p_mean_std(self, net: keras.layers.Layer, x: tf.Tensor, idx: tf.Tensor, cond: Cond,
                   eta: float | tf.Tensor = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and std of the reverse step at grid index ``idx`` (B,): DDPM t, or DDIM step i.

        DDPM std is the posterior std sqrt(exp(clipped log var)); DDIM std is eta * sigma_i.
        """
        t = tf.gather(self._buffers["ddim_t"], idx) if self.use_ddim else idx
        out = net(x, t, cond)
        if self.use_ddim:
            a, a_prev = self._gather("ddim_alphas", idx), self._gather("ddim_alphas_prev", idx)
            sqrt_1ma = self._gather("ddim_sqrt_one_minus_alphas", idx)
            x0 = (x - sqrt_1ma * out) / tf.sqrt(a)
            if self.denoised_clip_value is not None:
                x0 = tf.clip_by_value(x0, -self.denoised_clip_value, self.denoised_clip_value)
            eps = (x - tf.sqrt(a) * x0) / sqrt_1ma
            if self.eps_clip_value is not None:
                eps = tf.clip_by_value(eps, -self.eps_clip_value, self.eps_clip_value)
            sigma = tf.maximum(eta * self._gather("ddim_sigmas_eta1", idx), 1e-10)
            mean = tf.sqrt(a_prev) * x0 + tf.sqrt(tf.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
            return mean, sigma
        if self.predict_epsilon:
            x0 = (self._gather("sqrt_recip_alphas_cumprod", idx) * x
                  - self._gather("sqrt_recipm1_alphas_cumprod", idx) * out)
        else:
            x0 = out
        if self.denoised_clip_value is not None:
            x0 = tf.clip_by_value(x0, -self.denoised_clip_value, self.denoised_clip_value)
        mean = self._gather("posterior_mean_coef1", idx) * x0 + self._gather("posterior_mean_coef2", idx) * x
        return mean, self._gather("posterior_std", idx)

    # hooks the fine-tuning model overrides --------------------------------------------------------------
    def grid_index(self, step: int) -> int:
        """Schedule index of reverse step ``step`` (0 = noisiest): DDPM t = K-1-step; DDIM i = step."""
        return step if self.use_ddim else self.denoising_steps - 1 - step

    def net_for_step(self, step: int) -> keras.layers.Layer:
        fine_tuned = step >= self.n_steps - self.ft_denoising_steps
        if self.actor_ft is not None and fine_tuned and not self.use_base_policy:
            return self.actor_ft
        return self.network

    def chain_steps(self) -> int:
        """Number of recorded (last) reverse steps; the chain has this many + 1 entries."""
        return self.n_steps

    def sampling_std(self, std: tf.Tensor, step: int, deterministic: bool) -> tf.Tensor:
        """Base rule: DDPM std >= 1e-3 except 0 at t = 0; DDIM deterministic (eta = 0)."""
        if self.use_ddim:
            return tf.zeros_like(std)
        if self.grid_index(step) == 0:
            return tf.zeros_like(std)
        return tf.maximum(std, 1e-3)

    def sampling_eta(self, deterministic: bool) -> float:
        return 0.0

    # ----------------------------------------------------------------------------------------------------
    def _sample_graph(self, cond: Cond, deterministic: bool = False, return_chain: bool = False,
                      rng: tf.random.Generator | None = None):
        """The reverse chain; ``rng`` (default the sampling stream) draws its noise."""
        rng = self.rng if rng is None else rng
        b = tf.shape(cond["state"])[0]
        shape = (b, self.horizon_steps, self.action_dim)
        x = rng.normal(shape)
        first_recorded = self.n_steps - self.chain_steps()
        chain = [x] if first_recorded == 0 else []
        eta = self.sampling_eta(deterministic)
        for step in range(self.n_steps):
            idx = tf.fill((b,), self.grid_index(step))
            mean, std = self.p_mean_std(self.net_for_step(step), x, idx, cond, eta)
            std = self.sampling_std(std, step, deterministic)
            z = tf.clip_by_value(rng.normal(shape), -self.randn_clip_value, self.randn_clip_value)
            x = mean + std * z
            if step == self.n_steps - 1 and self.final_action_clip_value is not None:
                # clipped before it is recorded, as the reference does: PPO scores the action the env received
                x = tf.clip_by_value(x, -self.final_action_clip_value, self.final_action_clip_value)
            if step >= first_recorded - 1:  # the input of the first recorded step, then every output
                chain.append(x)
        if return_chain:
            return x, tf.stack(chain, axis=1)
        return x

    def sample(self, cond: Cond, deterministic: bool = False, return_chain: bool = False):
        """Denoise from N(0, I): the chunk (B, T_p, D_a), and the chain (B, K'+1, T_p, D_a) if asked."""
        return self._sample(cond, deterministic=deterministic, return_chain=return_chain)

    # ----------------------------------------------------------------------------------------------------
    def q_sample(self, x0: tf.Tensor, t: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        return (self._gather("sqrt_alphas_cumprod", t) * x0
                + self._gather("sqrt_one_minus_alphas_cumprod", t) * noise)

    def loss_noise(self, x0: tf.Tensor) -> dict[str, tf.Tensor]:
        """The loss's random inputs for a batch: timesteps t ~ U{0..K-1} (B,) and noise like x0, in this order."""
        t = self.train_rng.uniform((tf.shape(x0)[0],), 0, self.denoising_steps, dtype=tf.int32)
        return {"t": t, "noise": self.train_rng.normal(tf.shape(x0))}

    def loss(self, x0: tf.Tensor, cond: Cond, net: keras.layers.Layer | None = None,
             training: bool = True, t: tf.Tensor | None = None, noise: tf.Tensor | None = None) -> tf.Tensor:
        """Mean squared error of the predicted noise (or of x0) at a uniformly drawn t (``t`` and ``noise``
        drawn by :meth:`loss_noise` unless given: the data-parallel path draws them for the whole batch)."""
        net = net or self.network
        if t is None or noise is None:
            drawn = self.loss_noise(x0)
            t, noise = drawn["t"], drawn["noise"]
        pred = net(self.q_sample(x0, t, noise), t, cond, training=training)
        target = noise if self.predict_epsilon else x0
        return tf.reduce_mean(tf.square(pred - target))
