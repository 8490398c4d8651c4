"""DPOER: DPPO with an entropy regulator, in two modes (docs/dpoer.md).

``DPOERDiffusion`` (faithful, configs ``ft_sac_ppo_diffusion_mlp*.yaml``) keeps the seed TensorFlow port's
objective: per transition ``max(-A r + (alpha / C) l_new, -A clip(r))`` with C = ``lambda_alpha_entropy``, and a
temperature loss ``-log(alpha) (H_target - H_hat)`` stepped every minibatch, with H_target = -T_a D_a. Two things
differ from the port: alpha is log-parameterised (it cannot cross zero), and H_hat measures the policy: every
``delay_alpha_update`` minibatches, ``entropy_num_samples`` full action chunks are sampled for each of
``entropy_num_states`` random states of the minibatch and their executed part (T_a x D_a) goes through the
Kozachenko-Leonenko estimator (dppo/policies/entropy.py), all inside the compiled update.

``PPOEntDiffusion`` (sound, configs ``ft_ppo_ent_diffusion_mlp.yaml``) lets the policy control its entropy: a
learnable noise scale per fine-tuned denoising step and action dimension, smoothly floored at
``min_sampling_denoising_std`` (sigma = sqrt(floor^2 + exp(2 rho))), used for sampling and for the chain
log-probs (so the PPO ratio includes the std change). Its entropy is analytic; the bonus ``alpha * H`` sits
outside the clipped max, with alpha fixed or learned toward a target entropy (SAC-style, log-parameterised).

Both plug into the shared PPO learner through its optional hooks (dppo/algos/ppo.py): ``unclipped_penalty``,
``extra_loss``, ``extra_optimizers``, ``extra_state``, ``extra_metrics``. Their extra random draws use the
``entropy`` stream, so the rollout noise of a given seed is DPPO's.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dppo.algos.ppo_diffusion import PPODiffusion
from dppo.policies.distributions import normal_entropy, normal_log_prob
from dppo.policies.entropy import knn_entropy
from dppo.utils.cond import Cond, gather_cond
from dppo.utils.optim import AdamW
from dppo.utils.seeding import tf_stream


class Temperature(tf.Module):
    """alpha = exp(log_alpha) with its own Adam (when learned); loss ``-log(alpha) (H_target - H)``, so alpha
    grows while the entropy H is below the target and shrinks above it."""

    def __init__(self, init_alpha: float, lr: float, learn: bool = True, name: str = "temperature"):
        super().__init__(name=name)
        if not init_alpha > 0:
            raise ValueError(f"model.init_alpha must be > 0 (alpha is log-parameterised), got {init_alpha}")
        self.log_alpha = tf.Variable(math.log(init_alpha), trainable=learn, name="log_alpha")
        self.optimizer = AdamW([self.log_alpha], lr, name="alpha_optimizer") if learn else None

    @property
    def alpha(self) -> tf.Tensor:
        return tf.exp(self.log_alpha)

    def loss(self, entropy: tf.Tensor, target: float) -> tf.Tensor:
        if self.optimizer is None:
            return tf.constant(0.0)
        return -self.log_alpha * tf.stop_gradient(target - entropy)


class DPOERDiffusion(PPODiffusion):
    """The port's DPOER (see the module docstring): penalty inside the unclipped branch, measured entropy."""

    def __init__(self, lambda_alpha_entropy: float = 10000.0, delay_alpha_update: int = 50,
                 init_alpha: float = 0.272, alpha_lr: float = 3e-4, target_entropy: float | None = None,
                 act_steps: int | None = None, entropy_num_states: int = 32, entropy_num_samples: int = 32,
                 entropy_knn_k: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not lambda_alpha_entropy > 0:
            raise ValueError(f"model.lambda_alpha_entropy must be > 0, got {lambda_alpha_entropy}")
        if int(delay_alpha_update) < 1:
            raise ValueError(f"model.delay_alpha_update must be >= 1, got {delay_alpha_update}")
        if int(entropy_num_samples) <= int(entropy_knn_k) or int(entropy_knn_k) < 1:
            raise ValueError(f"model.entropy_num_samples ({entropy_num_samples}) must exceed model.entropy_knn_k "
                             f"({entropy_knn_k}) >= 1")
        if int(entropy_num_states) < 1:
            raise ValueError(f"model.entropy_num_states must be >= 1, got {entropy_num_states}")
        self.lambda_alpha_entropy = float(lambda_alpha_entropy)
        self.delay_alpha_update = int(delay_alpha_update)
        self.entropy_steps = int(act_steps or self.reward_horizon)  # T_a: the executed part of the chunk
        # the port's rule for the tasks it defined (hopper -12, walker -24, lift -28, transport -112, avoid -8),
        # applied to every task
        self.target_entropy = (float(target_entropy) if target_entropy is not None
                               else -float(self.entropy_steps * self.action_dim))
        self.entropy_num_states, self.entropy_num_samples = int(entropy_num_states), int(entropy_num_samples)
        self.entropy_knn_k = int(entropy_knn_k)
        self.temperature = Temperature(float(init_alpha), float(alpha_lr))
        self.entropy_rng = tf_stream(self.seed, "entropy")  # state subsets and estimator samples
        self.entropy_estimate = tf.Variable(0.0, trainable=False, name="entropy_estimate")
        self.minibatch_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="minibatch_count")

    # the estimator ------------------------------------------------------------------------------------
    def estimate_entropy(self, cond: Cond) -> tf.Tensor:
        """Mean over a random subset of the states in ``cond`` of the kNN entropy (nats) of
        ``entropy_num_samples`` sampled executed chunks (T_a x D_a) per state; draws only from the entropy
        stream."""
        b = tf.shape(cond["state"])[0]
        s = tf.minimum(b, self.entropy_num_states)
        states = tf.math.top_k(self.entropy_rng.uniform((b,)), k=s).indices  # s distinct rows
        n = self.entropy_num_samples
        actions = self._sample_graph(gather_cond(cond, tf.repeat(states, n)), deterministic=False,
                                     rng=self.entropy_rng)
        x = tf.reshape(actions[:, :self.entropy_steps], (s, n, self.entropy_steps * self.action_dim))
        return tf.stop_gradient(tf.reduce_mean(knn_entropy(x, self.entropy_knn_k)))

    # PPO learner hooks ---------------------------------------------------------------------------------
    def transition_log_probs(self, cond: Cond, chains: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, dict]:
        lp, extras = super().transition_log_probs(cond, chains, training)
        if training:  # (alpha / C) l_new inside the unclipped argument of the max
            extras["unclipped_penalty"] = tf.stop_gradient(self.temperature.alpha) / self.lambda_alpha_entropy * lp
        return lp, extras

    def extra_loss(self, cond: Cond, samples: tf.Tensor, new_lp: tf.Tensor, extras: dict) -> tf.Tensor:
        """The temperature loss; the estimate is refreshed on the first and then every ``delay_alpha_update``-th
        minibatch."""
        due = tf.equal(self.minibatch_count % self.delay_alpha_update, 0)
        h = tf.cond(due, lambda: self.estimate_entropy(cond), lambda: tf.identity(self.entropy_estimate))
        self.entropy_estimate.assign(h)
        self.minibatch_count.assign_add(1)
        return self.temperature.loss(h, self.target_entropy)

    def extra_optimizers(self) -> list[tuple[AdamW, bool]]:
        return [(self.temperature.optimizer, False)]  # stepped every minibatch, critic warm-up included (port)

    def extra_state(self) -> list[tf.Variable]:
        return [self.temperature.log_alpha, self.entropy_estimate, self.minibatch_count]

    def extra_metrics(self) -> dict[str, float]:
        return {"alpha": float(self.temperature.alpha), "entropy_estimate": float(self.entropy_estimate),
                "target_entropy": self.target_entropy}


class PPOEntDiffusion(PPODiffusion):
    """DPPO with learnable per-step noise scales and an analytic entropy bonus (see the module docstring)."""

    extra_loss_row_mean = True  # linear in the rows' mean entropy: PPOLearner may split minibatches (micro_batch)

    def __init__(self, std_per_action_dim: bool = True, init_std_scale: float = 1.5, std_lr: float = 1e-3,
                 max_denoising_std: float = 1.0, learn_alpha: bool = True, init_alpha: float = 0.01,
                 alpha_lr: float = 1e-2, target_entropy: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if self.use_ddim:
            raise ValueError("PPOEntDiffusion learns the DDPM steps' noise; model.use_ddim must be false")
        if not init_std_scale > 1.0:
            raise ValueError(f"model.init_std_scale must be > 1 (the std starts above its floor), "
                             f"got {init_std_scale}")
        self.floor = self.min_sampling_denoising_std  # the floor of sampling and of the chain log-probs alike
        self.max_denoising_std = float(max_denoising_std)
        kp = self.ft_denoising_steps
        t = [int(self.ft_grid_index(k)) for k in range(kp)]
        base = np.maximum(self.schedule.posterior_std[t], self.floor)  # what DPPO samples with (stochastic)
        init = np.minimum(float(init_std_scale) * base, self.max_denoising_std)
        rho = 0.5 * np.log(np.maximum(init ** 2 - self.floor ** 2, 1e-12))
        dims = self.action_dim if std_per_action_dim else 1
        self.log_std_param = tf.Variable(np.tile(rho[:, None], (1, dims)).astype(np.float32), name="log_std_param")
        self.std_optimizer = AdamW([self.log_std_param], float(std_lr), name="std_optimizer")
        self.temperature = Temperature(float(init_alpha), float(alpha_lr), learn=bool(learn_alpha))
        # target: per action dimension and fine-tuned step; default the initial one (hold the starting spread)
        per_step = (float(target_entropy) if target_entropy is not None
                    else float(self.chain_entropy()) / kp)
        self.target_entropy = per_step * kp  # of the whole chain, per action dimension

    def denoising_std(self) -> tf.Tensor:
        """(K', D_a) std of each fine-tuned step: sqrt(floor^2 + exp(2 rho)), capped at ``max_denoising_std``."""
        std = tf.sqrt(self.floor ** 2 + tf.exp(2.0 * self.log_std_param))
        return tf.minimum(tf.broadcast_to(std, (self.ft_denoising_steps, self.action_dim)), self.max_denoising_std)

    def chain_entropy(self) -> tf.Tensor:
        """sum_k mean_d H(N(0, sigma_kd^2)): the fine-tuned chain's entropy per action dimension (by the chain
        rule an upper bound of the entropy of the action these steps produce)."""
        return tf.reduce_sum(tf.reduce_mean(normal_entropy(self.denoising_std()), axis=-1))

    # sampling and scoring with the learned std ---------------------------------------------------------
    def sampling_std(self, std: tf.Tensor, step: int, deterministic: bool) -> tf.Tensor:
        k = step - (self.n_steps - self.ft_denoising_steps)
        if deterministic or k < 0:  # evaluation, and the frozen steps: DPPO's rule
            return super().sampling_std(std, step, deterministic)
        return self.denoising_std()[k][None, None, :]

    def transition_log_prob(self, cond: Cond, x_prev: tf.Tensor, x_next: tf.Tensor, k: tf.Tensor,
                            net=None) -> tf.Tensor:
        mean, _ = self.p_mean_std(net or self.actor_ft, x_prev, self.ft_grid_index(k), cond, self.eta)
        return normal_log_prob(x_next, mean, tf.gather(self.denoising_std(), k)[:, None, :])

    def transition_log_probs(self, cond: Cond, chains: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, dict]:
        lp, extras = super().transition_log_probs(cond, chains, training)
        rows = tf.shape(lp)[:1]
        extras["entropy"] = tf.fill(rows, 1.0) * self.chain_entropy()
        extras["std"] = tf.fill(rows, 1.0) * tf.reduce_mean(self.denoising_std())
        return lp, extras

    # PPO learner hooks ---------------------------------------------------------------------------------
    def extra_loss(self, cond: Cond, samples: tf.Tensor, new_lp: tf.Tensor, extras: dict) -> tf.Tensor:
        """-alpha H (the bonus, outside the clipped max) plus the temperature loss when alpha is learned."""
        entropy = tf.reduce_mean(extras["entropy"])
        return (-tf.stop_gradient(self.temperature.alpha) * entropy
                + self.temperature.loss(entropy, self.target_entropy))

    def extra_optimizers(self) -> list[tuple[AdamW, bool]]:
        opts = [(self.std_optimizer, True)]
        if self.temperature.optimizer is not None:
            opts.append((self.temperature.optimizer, True))
        return opts

    def extra_state(self) -> list[tf.Variable]:
        return [self.log_std_param, self.temperature.log_alpha]

    def extra_metrics(self) -> dict[str, float]:
        std = tf.reduce_mean(self.denoising_std(), axis=-1).numpy()
        return {"alpha": float(self.temperature.alpha), "target_entropy": self.target_entropy,
                **{f"std_k{k}": float(s) for k, s in enumerate(std)}}
