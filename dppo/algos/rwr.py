"""DRWR: reward-weighted regression of a diffusion policy (reference ``model/diffusion/diffusion_rwr.py``,
``agent/finetune/train_rwr_diffusion_agent.py``).

Per training iteration, only the episodes that start and end inside the iteration's rollout are used (the
reference's episode accounting, dppo/runners/episodes.py). For each of their steps the discounted reward-to-go
G_t = r_t + gamma G_{t+1} (gamma per action chunk, raw chunk rewards) is normalised over all those steps,
G~ = (G - mean) / (std + 1e-3) (population std, as numpy's), and turned into a weight w = min(exp(beta G~), w_max).
The whole denoising network is then trained for ``update_epochs`` epochs of shuffled minibatches on the weighted
diffusion loss mean_b w_b mean_{h,d} (eps_theta(x_t, t, s) - eps)^2 of (state, sampled chunk) pairs, t uniform,
with one AdamW (``train.lr``, ``train.weight_decay``, ``train.lr_scheduler``).

Everything of an update - the targets (:func:`rwr_targets`) and every epoch and minibatch - runs in one
``tf.function``. Differences from the reference:

* an iteration in which no episode finished skips the update (the reference crashes on it);
* ``train.n_critic_warmup_itr`` is accepted and ignored, as in the reference (RWR has no critic): the
  robomimic configs set it to 2 and the reference trains the network from iteration 0.

The learner is built by the model (:meth:`RWRDiffusion.learner`), so the weighted-regression runner
(dppo/runners/weighted_regression.py) serves DRWR and DAWR (dppo/algos/awr.py) without knowing either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from dppo.policies.diffusion import DiffusionModel
from dppo.utils.cond import Cond, gather_cond
from dppo.utils.optim import AdamW
from dppo.utils.scheduler import make_scheduler
from dppo.utils.seeding import tf_stream


class IterationData(NamedTuple):
    """One training iteration's rollout, as the runner hands it to a weighted-regression learner."""

    cond: Cond  # {"state": (S, E, T_o, D_o)[, ...]}
    samples: tf.Tensor  # (S, E, T_p, D_a) the sampled action chunks (the first T_a were executed)
    rewards: tf.Tensor  # (S, E) chunk rewards (raw)
    terminated: tf.Tensor  # (S, E) float, 1 where the episode terminated (not truncated) at that step
    firsts: tf.Tensor  # (S + 1, E) float: firsts[0] = 1 after a reset, firsts[i + 1] = an episode ended at step i


# ------------------------------------------------------------------------------------------------ targets
def completed_episode_mask(firsts: tf.Tensor) -> tf.Tensor:
    """(S, E) bool: the steps that belong to an episode that starts and ends inside the rollout and lasts more
    than one step (the reference's accounting: episodes still running at the end, or begun before the rollout
    when the envs were not reset, are left out). ``firsts`` (S + 1, E) as in :class:`IterationData`."""
    firsts = tf.convert_to_tensor(firsts, tf.float32)
    start, done = firsts[:-1] > 0, firsts[1:] > 0
    zeros_b = tf.zeros_like(start[0])
    zeros_i = tf.zeros(tf.shape(start[0]), tf.int32)

    def forward(carry, x):
        started, since = carry
        s = x
        return tf.logical_or(s, started), tf.where(s, 0, since + 1)

    def backward(carry, x):
        ends, to_end = carry
        d = x
        return tf.logical_or(d, ends), tf.where(d, 0, to_end + 1)

    started, since = tf.scan(forward, start, initializer=(zeros_b, zeros_i - 1))
    ends, to_end = tf.scan(backward, done, initializer=(zeros_b, zeros_i - 1), reverse=True)
    return started & ends & (since + to_end + 1 > 1)


def reward_to_go(rewards: tf.Tensor, firsts: tf.Tensor, gamma: float) -> tf.Tensor:
    """(S, E) discounted reward-to-go within each episode: G_t = r_t + gamma (1 - ended_t) G_{t+1}, where
    ended_t = firsts[t + 1]; G after the last step is 0 (it only matters for episodes that do not finish)."""
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    cont = 1.0 - tf.cast(tf.convert_to_tensor(firsts, tf.float32)[1:] > 0, tf.float32)
    return tf.scan(lambda g, x: x[0] + gamma * x[1] * g, (rewards, cont), initializer=tf.zeros_like(rewards[0]),
                   reverse=True)


def rwr_targets(rewards: tf.Tensor, firsts: tf.Tensor, gamma: float, beta: float,
                max_weight: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(mask, returns, weights), each (S, E): the steps of completed episodes, their reward-to-go G and their
    weights min(exp(beta (G - mean) / (std + 1e-3)), max_weight) with mean and (population) std over the masked
    steps; weights are 0 off the mask."""
    mask = completed_episode_mask(firsts)
    g = reward_to_go(rewards, firsts, gamma)
    valid = tf.boolean_mask(g, mask)
    mean = tf.reduce_mean(valid)
    std = tf.sqrt(tf.reduce_mean(tf.square(valid - mean)))
    w = tf.minimum(tf.exp(beta * (g - mean) / (std + 1e-3)), max_weight)
    return mask, g, tf.where(mask, w, tf.zeros_like(w))


# ------------------------------------------------------------------------------------------------ policy
class RWRDiffusion(DiffusionModel):
    """A diffusion policy whose whole denoising network is fine-tuned by reward-weighted regression.

    Sampling: DDPM with every step's std floored at ``min_sampling_denoising_std`` in training rollouts (the
    last step included, as the reference does); evaluation rollouts use the base rule (no noise at t = 0).
    ``clamp_action`` clips the final sample (the reference's name for ``final_action_clip_value``).
    """

    def __init__(self, network: keras.layers.Layer, min_sampling_denoising_std: float = 0.1,
                 randn_clip_value: float = 10.0, clamp_action: float | None = None, use_ddim: bool = False,
                 network_path: str | None = None, **kwargs: Any):
        if use_ddim:
            raise ValueError("model.use_ddim: RWR/AWR diffusion does not support DDIM (as in the reference)")
        self.min_sampling_denoising_std = float(min_sampling_denoising_std)
        if clamp_action is not None:
            kwargs.setdefault("final_action_clip_value", float(clamp_action))
        super().__init__(network=network, randn_clip_value=randn_clip_value, **kwargs)
        self.network_path = network_path

    # sampling -------------------------------------------------------------------------------------------
    def sampling_std(self, std: tf.Tensor, step: int, deterministic: bool) -> tf.Tensor:
        if deterministic:
            return super().sampling_std(std, step, deterministic)
        return tf.maximum(std, self.min_sampling_denoising_std)

    def act(self, cond: Cond, deterministic: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """The chunk sent to the env, and what the update regresses on (the same chunk)."""
        x = self.sample(cond, deterministic=deterministic)
        return x, x

    # training -------------------------------------------------------------------------------------------
    def weighted_loss(self, x0: tf.Tensor, cond: Cond, weights: tf.Tensor) -> tf.Tensor:
        """mean_b w_b mean_{h,d} (net(x_t, t, s) - target)^2 at t uniform in [0, K), x_t = q_sample(x0, t, eps);
        target = eps (or x0 without predict_epsilon)."""
        b = tf.shape(x0)[0]
        t = self.train_rng.uniform((b,), 0, self.denoising_steps, dtype=tf.int32)
        noise = self.train_rng.normal(tf.shape(x0))
        pred = self.network(self.q_sample(x0, t, noise), t, cond, training=True)
        target = noise if self.predict_epsilon else x0
        per_sample = tf.reduce_mean(tf.square(pred - target), axis=tf.range(1, tf.rank(x0)))
        return tf.reduce_mean(per_sample * weights)

    def trainable_actor_variables(self) -> list[tf.Variable]:
        return self.network.trainable_variables

    def checkpoint_groups(self) -> dict[str, list]:
        """What a checkpoint holds of the policy: the fine-tuned network as "model" (the group a pre-trained or
        evaluated policy is read from, see dppo.utils.checkpoint.load_policy_weights)."""
        return {"model": self.network.weights}

    def learner(self, train: Mapping[str, Any], n_envs: int, n_steps: int, seed: int) -> RWRLearner:
        return RWRLearner(self, train, seed)


# ------------------------------------------------------------------------------------------------ learner
def _get(train: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = train.get(key, default)
    return default if value is None else value


class RWRLearner(tf.Module):
    """Owns the optimizer, the LR schedule and the compiled update of an :class:`RWRDiffusion` policy.

    The interface the weighted-regression runner uses (DAWR's learner has the same): ``update(data, itr)``,
    ``end_iteration()``, ``learning_rates()``, ``trained_variables()``, ``checkpoint_groups()``,
    ``scalar_state()`` / ``load_scalar_state(get)``, ``buffer_state()`` / ``load_buffer_state(arrays)``.
    """

    def __init__(self, policy: RWRDiffusion, train: Mapping[str, Any], seed: int):
        super().__init__(name="rwr_learner")
        self.policy = policy
        lr = float(train["lr"])
        self.scheduler = make_scheduler(lr, train.get("lr_scheduler"))
        self.optimizer = AdamW(policy.trainable_actor_variables(), self.scheduler.lr,
                               float(_get(train, "weight_decay", 0.0)), max_grad_norm=train.get("max_grad_norm"),
                               name="optimizer")
        self.gamma = float(train["gamma"])
        self.beta = float(_get(train, "beta", 10.0))
        self.max_weight = float(_get(train, "max_reward_weight", 100.0))
        self.batch_size = int(train["batch_size"])
        self.update_epochs = int(_get(train, "update_epochs", 1))
        self.shuffle_rng = tf_stream(seed, "shuffle")  # minibatch order
        self._update = tf.function(self._update_graph, reduce_retracing=True)

    def update(self, data: IterationData, itr: int) -> dict[str, float]:
        out = self._update(data.cond, data.samples, data.rewards, data.firsts)
        return {k: float(v) for k, v in out.items()}

    def _update_graph(self, cond: Cond, samples: tf.Tensor, rewards: tf.Tensor, firsts: tf.Tensor):
        mask, returns, weights = rwr_targets(rewards, firsts, self.gamma, self.beta, self.max_weight)
        rows = tf.where(tf.reshape(mask, (-1,)))[:, 0]
        flat = lambda x: tf.gather(tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0)), rows)  # noqa: E731
        cond_k, x0_k, w_k = {k: flat(v) for k, v in cond.items()}, flat(samples), flat(weights)
        n = tf.size(rows, out_type=tf.int32)
        bs = self.batch_size
        n_batch = tf.where(n > 0, tf.maximum(1, n // bs), 0)  # the remainder of an epoch is dropped, as the reference
        variables = self.policy.trainable_actor_variables()
        loss_sum, count = tf.constant(0.0), tf.constant(0)
        for _ in tf.range(self.update_epochs):
            perm = tf.argsort(self.shuffle_rng.uniform((n,)))
            for b in tf.range(n_batch):
                i = perm[b * bs:(b + 1) * bs]
                with tf.GradientTape() as tape:
                    loss = self.policy.weighted_loss(tf.gather(x0_k, i), gather_cond(cond_k, i), tf.gather(w_k, i))
                grads = tape.gradient(loss, variables)
                self.optimizer.apply([tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)])
                loss_sum += loss
                count += 1
        nan = tf.constant(float("nan"))
        valid_g = tf.boolean_mask(returns, mask)
        any_rows = n > 0
        return {"loss": tf.where(count > 0, loss_sum / tf.cast(tf.maximum(count, 1), tf.float32), nan),
                "n_minibatches": tf.cast(count, tf.float32), "samples": tf.cast(n, tf.float32),
                "weight_mean": tf.where(any_rows, tf.reduce_mean(w_k), nan),
                "weight_max": tf.where(any_rows, tf.reduce_max(tf.concat([w_k, [0.0]], 0)), nan),
                "weight_clipped_frac": tf.where(any_rows, tf.reduce_mean(tf.cast(w_k >= self.max_weight, tf.float32)),
                                                nan),
                "return_to_go_mean": tf.where(any_rows, tf.reduce_mean(valid_g), nan)}

    # per-iteration bookkeeping --------------------------------------------------------------------------
    def end_iteration(self) -> None:
        """Step the LR schedule: every iteration, evaluation ones included (as the reference)."""
        self.scheduler.step()
        self.optimizer.set_lr(self.scheduler.lr)

    def learning_rates(self) -> dict[str, float]:
        return {"actor": float(self.optimizer.learning_rate.numpy())}

    def trained_variables(self) -> list[tf.Variable]:
        return self.policy.trainable_actor_variables()

    # checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_groups(self) -> dict[str, list]:
        return {**self.policy.checkpoint_groups(), "optimizer/actor": self.optimizer.state}

    def scalar_state(self) -> dict[str, Any]:
        return {"scheduler_steps/actor": self.scheduler.steps}

    def load_scalar_state(self, get: Any) -> None:
        self.scheduler.steps = int(get("scheduler_steps/actor"))

    def buffer_state(self) -> dict[str, np.ndarray]:
        return {}

    def load_buffer_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        pass
