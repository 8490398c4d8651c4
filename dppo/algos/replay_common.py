"""What the replay-based diffusion baselines (DIPO, DQL, QSM, IDQL) share: Polyak averaging, the TD target, the
double-Q regression loss, the expectile loss, DQL's normalised Q loss, and :class:`ReplayDiffusionModel`, the
plumbing around a method's losses (networks and target copies, optimizers, the compiled acting and multi-step
update, checkpoint groups).

A method module subclasses :class:`ReplayDiffusionModel` and implements two things:

* ``train_step(replay, batch_size, train_actor) -> dict of scalar tensors``: one update - it samples its
  minibatch(es) from the replay view (:class:`dppo.runners.replay.GraphReplay` or anything with ``sample``
  and ``write``), steps its critics and, when ``train_actor``, its actor, and updates its targets;
* optionally ``_act_graph(cond, deterministic)`` (default: the diffusion sampler on ``acting_network``).

``update(replay, num_batch, batch_size, train_actor)`` runs ``num_batch`` of those steps in one ``tf.function``
(minibatch sampling and targets included: no Python round trip per minibatch). Stochastic sampling floors the
DDPM std at ``min_sampling_denoising_std`` at every step; deterministic sampling uses the base rule (std >= 1e-3,
0 at t = 0), as the reference's baselines do. DDIM is not supported by these methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from dppo.policies.diffusion import DiffusionModel
from dppo.utils.cond import Cond
from dppo.utils.optim import AdamW

# train.* keys of the reference configs that a method's constructor may take (the runner passes those it accepts)
METHOD_TRAIN_KEYS = ("gamma", "actor_lr", "critic_lr", "actor_weight_decay", "critic_weight_decay", "max_grad_norm",
                     "target_ema_rate", "critic_tau", "action_lr", "action_gradient_steps", "eta", "q_grad_coeff",
                     "eval_deterministic", "eval_sample_num", "use_expectile_exploration")


# ---------------------------------------------------------------------------------------------- shared math
def polyak_update(target: Sequence[tf.Variable], source: Sequence[tf.Variable], tau: float) -> None:
    """theta' <- (1 - tau) theta' + tau theta for each pair."""
    for t, s in zip(target, source, strict=True):
        t.assign((1.0 - tau) * t + tau * s)


def td_target(rewards: tf.Tensor, terminated: tf.Tensor, next_value: tf.Tensor, gamma: float) -> tf.Tensor:
    """r + gamma (1 - terminated) V(s'), without gradient. ``s'`` of a truncated step is the episode's final
    observation (the runner stores it), so truncation bootstraps and only termination cuts the return."""
    return tf.stop_gradient(rewards + gamma * (1.0 - terminated) * next_value)


def double_q_loss(q1: tf.Tensor, q2: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """mean((Q1 - y)^2) + mean((Q2 - y)^2)."""
    return tf.reduce_mean(tf.square(q1 - target)) + tf.reduce_mean(tf.square(q2 - target))


def expectile_loss(diff: tf.Tensor, expectile: float) -> tf.Tensor:
    """mean(w u^2) with w = expectile where u > 0, else 1 - expectile (u = Q - V: V regresses to an upper
    expectile of Q)."""
    weight = tf.where(diff > 0.0, expectile, 1.0 - expectile)
    return tf.reduce_mean(weight * tf.square(diff))


def normalized_q_loss(q1: tf.Tensor, q2: tf.Tensor, first_head: tf.Tensor | bool) -> tf.Tensor:
    """DQL's Q term: -mean(Q_a) / mean|Q_b| with the denominator held constant; (a, b) = (1, 2) when
    ``first_head``, else (2, 1) (the reference draws the order with probability 1/2 per update)."""
    num = tf.where(first_head, q1, q2)
    den = tf.where(first_head, q2, q1)
    return -tf.reduce_mean(num) / tf.stop_gradient(tf.reduce_mean(tf.abs(den)))


def target_network(given: keras.layers.Layer | None, online: keras.layers.Layer) -> keras.layers.Layer:
    """The target copy of ``online``: ``given`` (a second instance built from the same config block - the runner
    passes one for every ``<block>_target`` argument a model takes), else a fresh instance made from the
    constructor arguments Keras recorded (only possible when they were plain Python values)."""
    if given is not None:
        return given
    try:
        config = online.get_config()
    except NotImplementedError as e:
        raise ValueError(f"cannot copy {type(online).__name__} for a target network (it was built from non-plain "
                         f"arguments); pass a second instance built from the same config") from e
    return type(online).from_config({**config, "name": f"{online.name}_target"})


def copy_weights(dst: keras.layers.Layer, src: keras.layers.Layer) -> None:
    for d, s in zip(dst.weights, src.weights, strict=True):
        d.assign(s)


# ---------------------------------------------------------------------------------------------- plumbing
class ReplayDiffusionModel(DiffusionModel):
    """A diffusion policy (``network``, alias ``actor``, trained in place) with a double-Q critic and a Polyak
    target copy of it; see the module docstring for what a method adds."""

    buffer_writes: tuple[str, ...] = ()  # replay fields the update rewrites (copied back to the NumPy buffer)

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 critic_target: keras.layers.Layer | None = None, min_sampling_denoising_std: float = 0.1,
                 gamma: float = 0.99, actor_lr: float = 1e-4,
                 critic_lr: float = 1e-3, actor_weight_decay: float = 0.0, critic_weight_decay: float = 0.0,
                 max_grad_norm: float | None = None, network_path: str | None = None, **kwargs: Any):
        super().__init__(network=actor, **kwargs)
        if self.use_ddim:
            raise ValueError(f"{type(self).__name__} samples with DDPM only; set model.use_ddim=false")
        self.min_sampling_denoising_std = float(min_sampling_denoising_std)
        self.gamma = float(gamma)
        self.critic = critic
        self.critic_target = target_network(critic_target, critic)
        cond, act = self.dummy_cond(), tf.zeros((1, self.horizon_steps, self.action_dim))
        for c in (self.critic, self.critic_target):
            c(cond, act)
        copy_weights(self.critic_target, self.critic)
        self.actor_optimizer = AdamW(self.network.trainable_variables, actor_lr, actor_weight_decay,
                                     max_grad_norm=max_grad_norm, name="actor_optimizer")
        self.critic_optimizer = AdamW(self.critic.trainable_variables, critic_lr, critic_weight_decay,
                                      name="critic_optimizer")
        self._act = tf.function(self._act_graph, reduce_retracing=True)
        self._update = tf.function(self._update_graph)
        self.network_path = network_path

    @property
    def actor(self) -> keras.layers.Layer:
        return self.network

    @property
    def acting_network(self) -> keras.layers.Layer:
        """The network that samples actions in rollouts (and is saved as the stand-alone policy)."""
        return self.network

    # weights ------------------------------------------------------------------------------------------
    def weight_groups(self) -> dict[str, list[tf.Variable]]:
        """Network weights by checkpoint group (targets included)."""
        return {"network": self.network.weights, "critic": self.critic.weights,
                "critic_target": self.critic_target.weights}

    def optimizers(self) -> dict[str, AdamW]:
        """Optimizers by name; the runner sets the learning rate of ``actor`` from train.actor_lr's schedule and
        of every ``critic*`` one from train.critic_lr's."""
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def checkpoint_groups(self) -> dict[str, list[tf.Variable]]:
        return {**self.weight_groups(), **{f"optimizer/{k}": o.state for k, o in self.optimizers().items()}}

    def trained_variables(self) -> list[tf.Variable]:
        return [v for o in self.optimizers().values() for v in o.params]

    def sync_targets(self) -> None:
        """Targets <- their online networks (after loading initial weights)."""
        copy_weights(self.critic_target, self.critic)

    def load_initial_weights(self, path: str) -> None:
        """A pre-trained policy (into the actor; targets follow), or a checkpoint of this model (every weight
        group it holds)."""
        from dppo.utils.checkpoint import groups_in, load_checkpoint, load_policy_weights, restore_group

        ckpt = load_checkpoint(path)
        names = groups_in(ckpt)
        if "network" in names and not names & {"ema", "model", "actor_ft"}:
            for group, variables in self.weight_groups().items():
                if group in names:
                    restore_group(ckpt, group, variables, path)
            return
        load_policy_weights(self, path)
        self.sync_targets()

    # sampling -----------------------------------------------------------------------------------------
    def denoise(self, cond: Cond, net: keras.layers.Layer, deterministic: bool,
                rng: tf.random.Generator) -> tf.Tensor:
        """The DDPM reverse chain with ``net`` (differentiable when called under a tape); noise from ``rng``."""
        b = tf.shape(cond["state"])[0]
        shape = (b, self.horizon_steps, self.action_dim)
        x = rng.normal(shape)
        for step in range(self.n_steps):
            t = self.denoising_steps - 1 - step
            mean, std = self.p_mean_std(net, x, tf.fill((b,), t), cond)
            if deterministic:
                std = tf.zeros_like(std) if t == 0 else tf.maximum(std, 1e-3)
            else:
                std = tf.maximum(std, self.min_sampling_denoising_std)
            x = mean + std * tf.clip_by_value(rng.normal(shape), -self.randn_clip_value, self.randn_clip_value)
        if self.final_action_clip_value is not None:
            x = tf.clip_by_value(x, -self.final_action_clip_value, self.final_action_clip_value)
        return x

    def _act_graph(self, cond: Cond, deterministic: bool) -> tf.Tensor:
        return self.denoise(cond, self.acting_network, deterministic, self.rng)

    def act(self, cond: Cond, deterministic: bool = False) -> tf.Tensor:
        """Compiled action selection: an action chunk (B, T_p, D_a)."""
        return self._act(cond, bool(deterministic))

    def diffusion_loss(self, actions: tf.Tensor, cond: Cond) -> tf.Tensor:
        """The pre-training loss (noise-prediction MSE at a uniform t) of ``network`` on ``actions``."""
        return self.loss(actions, cond, self.network)

    # update -------------------------------------------------------------------------------------------
    def critic_step(self, loss_fn) -> tuple[tf.Tensor, tf.Tensor]:
        """One step of ``critic_optimizer`` on ``loss_fn() -> (loss, mean Q1)``; returns both."""
        with tf.GradientTape() as tape:
            loss, q = loss_fn()
        self.critic_optimizer.apply(tape.gradient(loss, self.critic.trainable_variables))
        return loss, q

    def double_q_td_loss(self, batch: dict[str, tf.Tensor], next_actions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Double-Q regression to r + gamma (1 - term) min(Q1', Q2')(s', a') with the target critic; (loss,
        mean Q1)."""
        next_obs = {"state": batch["next_obs"]}
        next_q = tf.minimum(*self.critic_target(next_obs, next_actions))
        y = td_target(batch["rewards"], batch["terminated"], next_q, self.gamma)
        q1, q2 = self.critic({"state": batch["obs"]}, batch["actions"])
        return double_q_loss(q1, q2, y), tf.reduce_mean(q1)

    def actor_step(self, loss_fn) -> tf.Tensor:
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        self.actor_optimizer.apply([tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)])
        return loss

    def train_step(self, replay: Any, batch_size: int, train_actor: bool) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def _update_graph(self, replay: Any, num_batch: tf.Tensor, batch_size: int, train_actor: bool):
        out = {k: tf.constant(0.0) for k in self.metric_names(train_actor)}
        for _ in tf.range(num_batch):
            out = self.train_step(replay, batch_size, train_actor)
        return out

    def metric_names(self, train_actor: bool) -> tuple[str, ...]:
        return ("critic", "q", "actor") if train_actor else ("critic", "q")

    def update(self, replay: Any, num_batch: int, batch_size: int, train_actor: bool) -> dict[str, float]:
        """``num_batch`` updates in one compiled call; the last update's losses (as the reference logs them)."""
        out = self._update(replay, tf.constant(int(num_batch)), int(batch_size), bool(train_actor))
        return {k: float(v) for k, v in out.items()}
