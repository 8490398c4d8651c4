"""DAWR: advantage-weighted regression of a diffusion policy (reference ``model/diffusion/diffusion_awr.py``,
``agent/finetune/train_awr_diffusion_agent.py``).

Data: a FIFO buffer of the last ``train.buffer_size`` rollout steps of the training iterations, each entry holding
all N_e envs: observation, action chunk, scaled reward (``train.scale_reward_factor`` x chunk reward) and
terminated flag. After each training rollout:

1. **Value targets** on the whole buffer, in buffer order (:func:`td_lambda_targets`): with V = critic(s),
   e_i = r_i + gamma V_{i+1} (1 - term_i) - V_i, v_i = alpha e_i + gamma lambda (1 - term_i) v_{i+1},
   target_i = v_i + V_i, alpha = lambda = 0.95 (hard-coded in the reference); for the newest entry
   V_{i+1} := V_i. Truncations and iteration boundaries are not treated specially (as the reference).
2. **Critic**: num_batch / critic_update_ratio AdamW steps of MSE(critic(s), target) on minibatches of
   ``batch_size`` rows drawn with replacement, num_batch = n_steps x n_envs / batch_size x replay_ratio.
3. **Actor** (from iteration ``n_critic_warmup_itr`` on): values and targets again with the updated critic,
   A = target - V; num_batch steps on minibatches drawn with replacement, each normalising its advantages
   (A - mean) / (std + 1e-6) (unbiased std) and weighting the diffusion loss of the buffer's action chunks by
   w = min(exp(beta A), max_adv_weight).

Each phase (targets and every minibatch) runs in one ``tf.function``; the buffer is checkpointed, so a resumed
run continues exactly.

**Reference quirks, fixed here; each has a model flag that restores it** (set all three to reproduce the
reference's curves):

* ``model.reference_critic_broadcast`` (default false). The reference's critic returns (B, 1) and its targets
  are (B,); ``mean((V - target) ** 2)`` broadcasts to (B, B), i.e. mean_{i,j} (V_i - target_j)^2, whose gradient
  in V_i is 2/B (V_i - mean_j target_j): every state regresses towards the *batch-mean* target, so the critic
  learns little more than a constant. Here the loss is mean_i (V_i - target_i)^2.
* ``model.reference_critic_rows`` (default false). The reference draws the critic's minibatch rows with
  ``np.random.choice(len(obs_trajs))`` on the (steps, envs) buffer, i.e. from [0, n_buffer_steps), but indexes
  the flattened (steps x envs) rows with them: the critic only ever sees the oldest 1/N_e of the buffer. Here
  rows are drawn from the whole buffer.
* ``model.reference_td_gamma`` (default false). The reference calls its TD(lambda) routine without a discount,
  so the targets use its default 0.99 whatever ``train.gamma`` says (robomimic configs: 0.999). Here they use
  ``train.gamma``.

Also different: the buffer holds the full sampled chunk (T_p steps) rather than the executed T_a steps (the
same in every shipped config; with T_p > T_a the reference's loss would not run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dppo.algos.rwr import IterationData, RWRDiffusion, _get
from dppo.utils.cond import Cond, gather_cond
from dppo.utils.optim import AdamW
from dppo.utils.scheduler import make_scheduler
from dppo.utils.seeding import tf_stream

TD_ALPHA = 0.95  # step size of the reference's TD(lambda) recursion (hard-coded there)
TD_LAMBDA = 0.95
REFERENCE_TD_GAMMA = 0.99  # the discount the reference's targets use whatever train.gamma is


# ------------------------------------------------------------------------------------------------ targets
def td_lambda_targets(rewards: tf.Tensor, terminated: tf.Tensor, values: tf.Tensor, gamma: float,
                      lam: float = TD_LAMBDA, alpha: float = TD_ALPHA) -> tf.Tensor:
    """(S, E) value targets over a buffer in time order (see the module docstring): rewards, terminated and
    values V(s_i) are (S, E); the newest entry bootstraps with its own value (zeroed if terminated)."""
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    values = tf.convert_to_tensor(values, tf.float32)
    cont = 1.0 - tf.cast(tf.convert_to_tensor(terminated), tf.float32)
    next_values = tf.concat([values[1:], values[-1:]], axis=0) * cont
    errors = rewards + gamma * next_values - values
    v = tf.scan(lambda acc, x: alpha * x[0] + gamma * lam * x[1] * acc, (errors, cont),
                initializer=tf.zeros_like(values[0]), reverse=True)
    return v + values


def critic_loss(values: tf.Tensor, targets: tf.Tensor, reference_broadcast: bool = False) -> tf.Tensor:
    """MSE of V (B,) against the targets (B,); ``reference_broadcast``: the reference's (B, 1) - (B,) ->
    (B, B) broadcast, mean_{i,j} (V_i - target_j)^2."""
    if reference_broadcast:
        return tf.reduce_mean(tf.square(values[:, None] - targets[None, :]))
    return tf.reduce_mean(tf.square(values - targets))


def normalize_unbiased(x: tf.Tensor, eps: float = 1e-6) -> tf.Tensor:
    """(x - mean) / (std + eps) with the unbiased std (torch.Tensor.std)."""
    n = tf.cast(tf.size(x), x.dtype)
    mean = tf.reduce_mean(x)
    std = tf.sqrt(tf.reduce_sum(tf.square(x - mean)) / tf.maximum(n - 1.0, 1.0))
    return (x - mean) / (std + eps)


def advantage_weights(advantages: tf.Tensor, beta: float, max_weight: float) -> tf.Tensor:
    """One minibatch's weights: min(exp(beta (A - mean) / (std + 1e-6)), max_weight)."""
    return tf.minimum(tf.exp(beta * normalize_unbiased(advantages)), max_weight)


def flatten_steps(x: tf.Tensor) -> tf.Tensor:
    """(S, E, ...) -> (S * E, ...), step-major (row s * E + e)."""
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))


# ------------------------------------------------------------------------------------------------ buffer
class StepBuffer:
    """FIFO of the last ``capacity`` rollout steps; each entry holds all envs. NumPy ring arrays, read back in
    time order (oldest first)."""

    FIELDS = ("actions", "rewards", "terminated")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"train.buffer_size must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.arrays: dict[str, np.ndarray] = {}  # "obs/<key>", "actions", "rewards", "terminated"
        self.ptr = 0  # next entry to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append ``n`` steps: every column is (n, E, ...), in time order."""
        n = len(next(iter(columns.values())))
        if not self.arrays:
            self.arrays = {k: np.zeros((self.capacity, *np.shape(v)[1:]), np.float32) for k, v in columns.items()}
        for start in range(0, n, self.capacity):  # more steps than the capacity: only the last ones stay
            chunk = {k: np.asarray(v[start:start + self.capacity], np.float32) for k, v in columns.items()}
            m = len(next(iter(chunk.values())))
            idx = (self.ptr + np.arange(m)) % self.capacity
            for k, v in chunk.items():
                self.arrays[k][idx] = v
            self.ptr = int((self.ptr + m) % self.capacity)
            self.size = int(min(self.size + m, self.capacity))

    def ordered(self) -> dict[str, np.ndarray]:
        """Every column, oldest entry first: (size, E, ...)."""
        if self.size < self.capacity:
            return {k: v[:self.size] for k, v in self.arrays.items()}
        return {k: np.concatenate([v[self.ptr:], v[:self.ptr]]) for k, v in self.arrays.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the contents with ``arrays`` in time order (as :meth:`ordered` returns them)."""
        self.arrays, self.ptr, self.size = {}, 0, 0
        if arrays:
            n = len(next(iter(arrays.values())))
            if n > self.capacity:
                raise ValueError(f"the saved buffer holds {n} steps but train.buffer_size is {self.capacity}")
            self.add(arrays)


# ------------------------------------------------------------------------------------------------ policy
class AWRDiffusion(RWRDiffusion):
    """A diffusion policy (``actor``, the whole denoising network, fine-tuned) with a critic V(s)."""

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 reference_critic_broadcast: bool = False, reference_critic_rows: bool = False,
                 reference_td_gamma: bool = False, **kwargs: Any):
        self.critic = critic
        self.reference_critic_broadcast = bool(reference_critic_broadcast)
        self.reference_critic_rows = bool(reference_critic_rows)
        self.reference_td_gamma = bool(reference_td_gamma)
        super().__init__(network=actor, **kwargs)
        self.critic(self.dummy_cond())

    @property
    def actor(self) -> keras.layers.Layer:
        return self.network

    def load_initial_weights(self, path: str) -> None:
        """The policy to start from (see :meth:`DiffusionModel.load_initial_weights`), and the critic too when
        ``path`` is a DAWR checkpoint."""
        from dppo.utils.checkpoint import groups_in, load_checkpoint, restore_group
        super().load_initial_weights(path)
        state = load_checkpoint(path)
        if "critic" in groups_in(state) and "actor_ft" not in groups_in(state):
            restore_group(state, "critic", self.critic.weights, path)

    def checkpoint_groups(self) -> dict[str, list]:
        return {**super().checkpoint_groups(), "critic": self.critic.weights}

    def learner(self, train: Mapping[str, Any], n_envs: int, n_steps: int, seed: int) -> AWRLearner:
        return AWRLearner(self, train, n_envs, n_steps, seed)


# ------------------------------------------------------------------------------------------------ learner
class AWRLearner(tf.Module):
    """Optimizers, LR schedules, the step buffer and the two compiled update phases of an :class:`AWRDiffusion`
    policy (the learner interface is :class:`dppo.algos.rwr.RWRLearner`'s)."""

    def __init__(self, policy: AWRDiffusion, train: Mapping[str, Any], n_envs: int, n_steps: int, seed: int):
        super().__init__(name="awr_learner")
        self.policy = policy
        self.actor_scheduler = make_scheduler(float(train["actor_lr"]), train.get("actor_lr_scheduler"))
        self.critic_scheduler = make_scheduler(float(train["critic_lr"]), train.get("critic_lr_scheduler"))
        self.actor_optimizer = AdamW(policy.trainable_actor_variables(), self.actor_scheduler.lr,
                                     float(_get(train, "actor_weight_decay", 0.0)),
                                     max_grad_norm=train.get("max_grad_norm"), name="actor_optimizer")
        self.critic_optimizer = AdamW(policy.critic.trainable_variables, self.critic_scheduler.lr,
                                      float(_get(train, "critic_weight_decay", 0.0)), name="critic_optimizer")
        self.gamma = REFERENCE_TD_GAMMA if policy.reference_td_gamma else float(train["gamma"])
        self.beta = float(_get(train, "beta", 10.0))
        self.max_weight = float(_get(train, "max_adv_weight", 100.0))
        self.scale_reward = float(_get(train, "scale_reward_factor", 1.0))
        self.batch_size = int(train["batch_size"])
        num_batch = int(n_steps * n_envs / self.batch_size * float(_get(train, "replay_ratio", 1)))
        self.actor_steps = num_batch
        self.critic_steps = num_batch // int(_get(train, "critic_update_ratio", 1))
        self.n_critic_warmup_itr = int(_get(train, "n_critic_warmup_itr", 0))
        self.value_batch = int(_get(train, "logprob_batch_size", 10000))  # rows per critic call on the buffer
        self.buffer = StepBuffer(int(train["buffer_size"]))
        self.shuffle_rng = tf_stream(seed, "shuffle")  # minibatch rows
        self._critic_phase = tf.function(self._critic_graph, reduce_retracing=True)
        self._actor_phase = tf.function(self._actor_graph, reduce_retracing=True)

    # ----------------------------------------------------------------------------------------------------
    def update(self, data: IterationData, itr: int) -> dict[str, float]:
        """Add the iteration's steps to the buffer, then the critic phase and (after the warm-up) the actor's."""
        columns = {f"obs/{k}": np.asarray(v) for k, v in data.cond.items()}
        columns.update(actions=np.asarray(data.samples), rewards=self.scale_reward * np.asarray(data.rewards),
                       terminated=np.asarray(data.terminated, np.float32))
        self.buffer.add(columns)
        buf = self.buffer.ordered()
        cond = {k[len("obs/"):]: tf.constant(v) for k, v in buf.items() if k.startswith("obs/")}
        rewards, terminated = tf.constant(buf["rewards"]), tf.constant(buf["terminated"])
        out = {k: float(v) for k, v in self._critic_phase(cond, rewards, terminated).items()}
        if itr >= self.n_critic_warmup_itr:
            actor = self._actor_phase(cond, tf.constant(buf["actions"]), rewards, terminated)
            out.update({k: float(v) for k, v in actor.items()})
        out["buffer_steps"] = float(len(self.buffer))
        return out

    def values(self, cond: Cond) -> tf.Tensor:
        """V of every row of a flat cond (N, ...), ``value_batch`` rows per critic call."""
        n = tf.shape(next(iter(cond.values())))[0]
        chunk = self.value_batch
        out = tf.TensorArray(tf.float32, size=(n + chunk - 1) // chunk, infer_shape=False)
        for c in tf.range((n + chunk - 1) // chunk):
            rows = tf.range(c * chunk, tf.minimum(n, (c + 1) * chunk))
            out = out.write(c, self.policy.critic(gather_cond(cond, rows)))
        return out.concat()

    def targets(self, cond: Cond, rewards: tf.Tensor, terminated: tf.Tensor) -> tuple[Cond, tf.Tensor, tf.Tensor]:
        """The flat cond, V (S * E,) and the TD(lambda) targets (S * E,) of the buffer."""
        flat = {k: flatten_steps(v) for k, v in cond.items()}
        values = tf.reshape(self.values(flat), tf.shape(rewards))
        targets = td_lambda_targets(rewards, terminated, values, self.gamma)
        return flat, tf.reshape(values, (-1,)), tf.reshape(targets, (-1,))

    def _critic_graph(self, cond: Cond, rewards: tf.Tensor, terminated: tf.Tensor) -> dict[str, tf.Tensor]:
        flat, values, targets = self.targets(cond, rewards, terminated)
        n_rows = tf.shape(rewards)[0] if self.policy.reference_critic_rows else tf.size(rewards)
        variables = self.policy.critic.trainable_variables
        loss_sum = tf.constant(0.0)
        for _ in tf.range(self.critic_steps):
            i = self.shuffle_rng.uniform((self.batch_size,), 0, n_rows, dtype=tf.int32)
            with tf.GradientTape() as tape:
                v = self.policy.critic(gather_cond(flat, i), training=True)
                loss = critic_loss(v, tf.gather(targets, i), self.policy.reference_critic_broadcast)
            grads = tape.gradient(loss, variables)
            self.critic_optimizer.apply(grads)
            loss_sum += loss
        explained = 1.0 - tf.math.reduce_variance(targets - values) / tf.maximum(tf.math.reduce_variance(targets),
                                                                                  1e-8)
        return {"critic_loss": loss_sum / tf.cast(tf.maximum(self.critic_steps, 1), tf.float32),
                "explained_variance": explained, "value_mean": tf.reduce_mean(values),
                "target_mean": tf.reduce_mean(targets)}

    def _actor_graph(self, cond: Cond, actions: tf.Tensor, rewards: tf.Tensor,
                     terminated: tf.Tensor) -> dict[str, tf.Tensor]:
        flat, values, targets = self.targets(cond, rewards, terminated)  # with the updated critic
        advantages = targets - values
        actions = flatten_steps(actions)
        variables = self.policy.trainable_actor_variables()
        n_rows = tf.size(rewards)
        loss_sum, w_sum, clipped = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(self.actor_steps):
            i = self.shuffle_rng.uniform((self.batch_size,), 0, n_rows, dtype=tf.int32)
            w = advantage_weights(tf.gather(advantages, i), self.beta, self.max_weight)
            with tf.GradientTape() as tape:
                loss = self.policy.weighted_loss(tf.gather(actions, i), gather_cond(flat, i), w)
            grads = tape.gradient(loss, variables)
            self.actor_optimizer.apply([tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)])
            loss_sum += loss
            w_sum += tf.reduce_mean(w)
            clipped += tf.reduce_mean(tf.cast(w >= self.max_weight, tf.float32))
        steps = tf.cast(tf.maximum(self.actor_steps, 1), tf.float32)
        return {"loss": loss_sum / steps, "weight_mean": w_sum / steps, "weight_clipped_frac": clipped / steps,
                "advantage_std": tf.math.reduce_std(advantages)}

    # per-iteration bookkeeping --------------------------------------------------------------------------
    def end_iteration(self) -> None:
        """Step both LR schedules: every iteration, warm-up and evaluation ones included (as the reference)."""
        for scheduler, optimizer in ((self.actor_scheduler, self.actor_optimizer),
                                     (self.critic_scheduler, self.critic_optimizer)):
            scheduler.step()
            optimizer.set_lr(scheduler.lr)

    def learning_rates(self) -> dict[str, float]:
        return {"actor": float(self.actor_optimizer.learning_rate.numpy()),
                "critic": float(self.critic_optimizer.learning_rate.numpy())}

    def trained_variables(self) -> list[tf.Variable]:
        return [*self.policy.trainable_actor_variables(), *self.policy.critic.trainable_variables]

    # checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_groups(self) -> dict[str, list]:
        return {**self.policy.checkpoint_groups(), "optimizer/actor": self.actor_optimizer.state,
                "optimizer/critic": self.critic_optimizer.state}

    def scalar_state(self) -> dict[str, Any]:
        return {"scheduler_steps/actor": self.actor_scheduler.steps,
                "scheduler_steps/critic": self.critic_scheduler.steps}

    def load_scalar_state(self, get: Any) -> None:
        self.actor_scheduler.steps = int(get("scheduler_steps/actor"))
        self.critic_scheduler.steps = int(get("scheduler_steps/critic"))

    def buffer_state(self) -> dict[str, np.ndarray]:
        return self.buffer.ordered()

    def load_buffer_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.buffer.load(arrays)
