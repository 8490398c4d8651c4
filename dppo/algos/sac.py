"""Soft Actor-Critic with a tanh-squashed Gaussian policy (reference ``model/rl/gaussian_sac.py``).

Actor: the reference's ``Gaussian_MLP`` with a learned, state-dependent std (``fixed_std: null``): a shared
MLP trunk (activation after every layer), a linear mean head and a linear log-variance head squashed by tanh
into [log std_min^2, log std_max^2] (std in [0.0067, 7.389] = [e^-5, e^2] in the SAC configs). Sampling draws
u = mean + std * clip(eps, -c, c) (c = ``randn_clip_value``), acts with a = tanh(u) and scores
log pi(a) = sum_dims [log N(u; mean, std) - log(1 - tanh(u)^2 + 1e-6)].

Critic: :class:`dppo.nets.critics.CriticObsAct` (two Q heads) plus a Polyak-averaged target copy (tau).
Temperature: alpha = exp(log_alpha), learned with Adam toward ``target_entropy`` (default -D_a * T_a).

Losses, exactly as the reference (alpha = exp(log_alpha) read once per update call, held constant):

* critic: y = r + gamma (1 - term) (min(Q1', Q2')(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s');
  L = mean((Q1(s,a) - y)^2) + mean((Q2(s,a) - y)^2)
* actor: L = mean(alpha log pi(a~|s) - min(Q1, Q2)(s, a~)), a~ reparameterised
* temperature: L = -mean(exp(log_alpha) (log pi(a~|s) + target_entropy)), log pi without gradient

One :meth:`SAC.update` call is one compiled graph: a critic step + target update, then (when asked)
``actor_steps`` (reference: 2) actor steps each followed by one temperature step, all on the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.critics import CriticObsAct
from dppo.nets.mlp import MLP, Linear
from dppo.policies.distributions import LOG_2PI, TANH_EPS
from dppo.utils.optim import AdamW
from dppo.utils.seeding import tf_stream


class TanhGaussianActor(keras.layers.Layer):
    """State -> (mean, std) of a diagonal Gaussian over the pre-tanh action chunk, both (B, T_p * D_a)."""

    def __init__(self, cond_dim: int, action_dim: int, horizon_steps: int = 1,
                 mlp_dims: Sequence[int] = (256, 256), activation_type: str = "ReLU",
                 std_min: float = 0.0067, std_max: float = 7.3891, **kwargs):
        super().__init__(**kwargs)
        self.cond_dim, self.action_dim, self.horizon_steps = cond_dim, action_dim, horizon_steps
        out = action_dim * horizon_steps
        self.base = MLP([cond_dim, *mlp_dims], activation_type=activation_type, out_activation_type=activation_type)
        self.mean_head = Linear(out)
        self.logvar_head = Linear(out)
        self.logvar_min = 2.0 * math.log(std_min)
        self.logvar_max = 2.0 * math.log(std_max)

    def call(self, cond: dict[str, tf.Tensor] | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        state = cond["state"] if isinstance(cond, dict) else cond
        h = self.base(tf.reshape(state, (tf.shape(state)[0], -1)))
        mean = self.mean_head(h)
        logvar = tf.tanh(self.logvar_head(h))
        logvar = self.logvar_min + 0.5 * (self.logvar_max - self.logvar_min) * (logvar + 1.0)
        return mean, tf.exp(0.5 * logvar)


def tanh_gaussian_sample(mean: tf.Tensor, std: tf.Tensor, noise: tf.Tensor,
                         randn_clip_value: float = 10.0) -> tuple[tf.Tensor, tf.Tensor]:
    """a = tanh(mean + std * clip(noise)) and its log-density summed over the last axis (reparameterised)."""
    eps = tf.clip_by_value(noise, -randn_clip_value, randn_clip_value)
    u = mean + std * eps
    action = tf.tanh(u)
    log_normal = -0.5 * tf.square(eps) - tf.math.log(std) - 0.5 * LOG_2PI
    logprob = tf.reduce_sum(log_normal - tf.math.log(1.0 - tf.square(action) + TANH_EPS), axis=-1)
    return action, logprob


class SAC(tf.Module):
    """Networks, optimizers and compiled SAC update of one agent. Observations are (B, T_o, D_o) (or (B, D)),
    actions (B, T_p, D_a) in [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, horizon_steps: int = 1, cond_steps: int = 1,
                 actor_mlp_dims: Sequence[int] = (256, 256), actor_activation_type: str = "ReLU",
                 std_min: float = 0.0067, std_max: float = 7.3891,
                 critic_mlp_dims: Sequence[int] = (256, 256), critic_activation_type: str = "ReLU",
                 critic_use_layernorm: bool = False, randn_clip_value: float = 10.0, gamma: float = 0.99,
                 target_ema_rate: float = 0.005, actor_lr: float = 3e-4, critic_lr: float = 1e-3,
                 init_temperature: float = 1.0, target_entropy: float | None = None, actor_steps: int = 2,
                 seed: int = 0, name: str = "sac"):
        super().__init__(name=name)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.horizon_steps, self.cond_steps = horizon_steps, cond_steps
        self.gamma, self.tau = float(gamma), float(target_ema_rate)
        self.randn_clip_value = float(randn_clip_value)
        self.actor_steps = int(actor_steps)
        self.target_entropy = float(-action_dim * horizon_steps if target_entropy is None else target_entropy)
        cond_dim = obs_dim * cond_steps
        self.actor = TanhGaussianActor(cond_dim, action_dim, horizon_steps, actor_mlp_dims, actor_activation_type,
                                       std_min, std_max)
        critic_kw = dict(mlp_dims=critic_mlp_dims, activation_type=critic_activation_type,
                         use_layernorm=critic_use_layernorm, double_q=True)
        self.critic = CriticObsAct(cond_dim, action_dim, horizon_steps, **critic_kw)
        self.target_critic = CriticObsAct(cond_dim, action_dim, horizon_steps, **critic_kw)
        s = tf.zeros((1, cond_steps, obs_dim))
        a = tf.zeros((1, horizon_steps, action_dim))
        self.actor(s)
        self.critic(s, a)
        self.target_critic(s, a)
        for t, w in zip(self.target_critic.weights, self.critic.weights):
            t.assign(w)
        self.log_alpha = tf.Variable(math.log(init_temperature), dtype=tf.float32, name="log_alpha")
        self.actor_optimizer = AdamW(self.actor.trainable_variables, actor_lr, name="actor_adam")
        self.critic_optimizer = AdamW(self.critic.trainable_variables, critic_lr, name="critic_adam")
        self.alpha_optimizer = AdamW([self.log_alpha], critic_lr, name="alpha_adam")
        self.rng = tf_stream(seed, "training")  # reparameterisation noise of actions and updates
        self._update = tf.function(self._update_graph)
        self._act = tf.function(self._act_graph, reduce_retracing=True)

    # ---------------------------------------------------------------------------------------------- policy
    def _noise(self, mean: tf.Tensor) -> tf.Tensor:
        return self.rng.normal(tf.shape(mean))

    def sample_with_noise(self, obs: tf.Tensor, noise: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Actions (B, T_p, D_a) and log-probs (B,) for given standard-normal ``noise`` (B, T_p * D_a)."""
        mean, std = self.actor(obs)
        action, logprob = tanh_gaussian_sample(mean, std, noise, self.randn_clip_value)
        return tf.reshape(action, (-1, self.horizon_steps, self.action_dim)), logprob

    def _act_graph(self, obs: tf.Tensor, deterministic: bool) -> tf.Tensor:
        mean, std = self.actor(obs)
        u = mean if deterministic else mean + std * tf.clip_by_value(
            self._noise(mean), -self.randn_clip_value, self.randn_clip_value)
        return tf.reshape(tf.tanh(u), (-1, self.horizon_steps, self.action_dim))

    def act(self, obs, deterministic: bool = False) -> tf.Tensor:
        """Compiled action selection: tanh(sample) or, deterministic, tanh(mean). (B, T_p, D_a)."""
        return self._act(tf.convert_to_tensor(obs, tf.float32), bool(deterministic))

    @property
    def alpha(self) -> tf.Tensor:
        return tf.exp(self.log_alpha)

    # ---------------------------------------------------------------------------------------------- losses
    def critic_loss(self, obs, actions, rewards, next_obs, terminated, alpha, noise) -> tuple[tf.Tensor, tf.Tensor]:
        """Twin-Q TD loss with next actions drawn with ``noise``; returns (loss, mean Q1)."""
        next_actions, next_logprob = self.sample_with_noise(next_obs, noise)
        tq1, tq2 = self.target_critic(next_obs, next_actions)
        next_q = tf.minimum(tq1, tq2) - alpha * next_logprob
        target = tf.stop_gradient(rewards + self.gamma * (1.0 - terminated) * next_q)
        q1, q2 = self.critic(obs, actions)
        loss = tf.reduce_mean(tf.square(q1 - target)) + tf.reduce_mean(tf.square(q2 - target))
        return loss, tf.reduce_mean(q1)

    def actor_loss(self, obs, alpha, noise) -> tuple[tf.Tensor, tf.Tensor]:
        """mean(alpha log pi - min Q) with reparameterised actions; returns (loss, log-probs)."""
        actions, logprob = self.sample_with_noise(obs, noise)
        q1, q2 = self.critic(obs, actions)
        return tf.reduce_mean(alpha * logprob - tf.minimum(q1, q2)), logprob

    def temperature_loss(self, logprob: tf.Tensor) -> tf.Tensor:
        """-mean(exp(log_alpha) (log pi + target_entropy)), gradient to log_alpha only."""
        return -tf.reduce_mean(tf.exp(self.log_alpha) * (tf.stop_gradient(logprob) + self.target_entropy))

    # ---------------------------------------------------------------------------------------------- update
    def _update_graph(self, obs, actions, rewards, next_obs, terminated, do_critic: bool, do_actor: bool):
        alpha = tf.exp(tf.identity(self.log_alpha))
        flat = (tf.shape(obs)[0], self.horizon_steps * self.action_dim)
        out = {"alpha": alpha}
        if do_critic:
            with tf.GradientTape() as tape:
                loss_c, q = self.critic_loss(obs, actions, rewards, next_obs, terminated, alpha,
                                             self.rng.normal(flat))
            self.critic_optimizer.apply(tape.gradient(loss_c, self.critic.trainable_variables))
            for t, w in zip(self.target_critic.weights, self.critic.weights):
                t.assign((1.0 - self.tau) * t + self.tau * w)
            out.update(loss_critic=loss_c, q=q)
        if do_actor:
            for _ in range(self.actor_steps):
                with tf.GradientTape() as tape:
                    loss_a, logprob = self.actor_loss(obs, alpha, self.rng.normal(flat))
                self.actor_optimizer.apply(tape.gradient(loss_a, self.actor.trainable_variables))
                _, logprob_new = self.sample_with_noise(obs, self.rng.normal(flat))
                with tf.GradientTape() as tape:
                    loss_t = self.temperature_loss(logprob_new)
                self.alpha_optimizer.apply(tape.gradient(loss_t, [self.log_alpha]))
            out.update(loss_actor=loss_a, loss_alpha=loss_t, entropy=-tf.reduce_mean(logprob))
        return out

    def update(self, obs, actions, rewards, next_obs, terminated, do_critic: bool = True,
               do_actor: bool = True) -> dict[str, tf.Tensor]:
        """One compiled update on a batch (critic step + Polyak, then ``actor_steps`` actor/alpha steps)."""
        f = tf.float32
        return self._update(tf.convert_to_tensor(obs, f), tf.convert_to_tensor(actions, f),
                            tf.convert_to_tensor(rewards, f), tf.convert_to_tensor(next_obs, f),
                            tf.convert_to_tensor(terminated, f), bool(do_critic), bool(do_actor))

    # ---------------------------------------------------------------------------------------------- state
    def checkpoint_groups(self) -> dict[str, list[tf.Variable]]:
        """Every variable a checkpoint needs to continue exactly (weights, targets, alpha, optimizers)."""
        return {"actor": self.actor.weights, "critic": self.critic.weights,
                "target_critic": self.target_critic.weights, "log_alpha": [self.log_alpha],
                "optimizer/actor": self.actor_optimizer.state, "optimizer/critic": self.critic_optimizer.state,
                "optimizer/alpha": self.alpha_optimizer.state}
