"""Off-policy fine-tuning runners: a replay buffer and the SAC loop (reference
``agent/finetune/train_sac_agent.py``).

One iteration = ``train.n_steps`` (1) vector steps of ``env.n_envs`` (1) envs, then the updates due at
that iteration: a critic step every ``batch_size / critic_replay_ratio`` iterations and ``actor_steps`` (2)
actor + temperature steps every ``batch_size / actor_replay_ratio`` iterations, both on the batch sampled
for that iteration, after ``n_explore_steps`` iterations of uniform random actions. Each update is one
compiled call (:meth:`dppo.algos.sac.SAC.update`).

Differences from the reference, all deliberate:

* **Evaluation [quirk fixed].** The reference's eval branch indexes a reward array of length n_steps = 1 with
  up to 1e5 steps and crashes at the first evaluation. Here every ``val_freq`` iterations
  ``n_eval_episode`` separate envs (seeds offset by 10000) each run one full episode with the deterministic
  action tanh(mean); the training env's episode is not interrupted.
* Time limits: the env reports them as truncated (not terminated), so the TD target bootstraps there
  (the reference's gym stack ended episodes with terminated=True at 1000 steps) [quirk fixed].
* The replay buffer samples with replacement (the reference draws without replacement per batch; with
  buffers of thousands of rows the difference is negligible and sampling stays O(batch)).
* Resume (``resume=true``) restores weights, target critic, log alpha, the three Adam states, the policy
  noise generator, the iteration and (from ``checkpoint/replay_buffer.npz``) the buffer and its sampler;
  episodes in progress at the checkpoint are restarted (env states are not saved).

The replay buffer is a NumPy ring buffer. Measured on the two shared CPU cores (batch 256, Hopper dims):
sampling a batch costs 0.1-0.7 ms against 9-40 ms for an update (idle to heavily loaded machine; the update
is compute-bound at ~0.3-0.7 GFLOP), so a buffer in tf.Variables sampled in-graph could save at most a few
per cent and would still pay a per-step insert call; it was not worth its complexity.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dppo.algos.sac import SAC
from dppo.data.normalization import check_normalization_dims
from dppo.envs.factory import make_env, wrap
from dppo.utils import checkpoint as ckpt
from dppo.utils import validate
from dppo.utils.faults import fault_point
from dppo.utils.guard import DivergenceGuard, GuardSettings, weight_norm
from dppo.utils.logging import MetricLogger, open_run_folder, wandb_config
from dppo.utils.precision import set_policy
from dppo.utils.seeding import np_stream, seed_everything

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10000


# ---------------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """Fixed-capacity ring buffer of (obs, action, reward, next_obs, terminated) rows."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...]):
        if capacity < 1:
            raise ValueError(f"buffer_size must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, *obs_shape), np.float32)
        self.next_obs = np.zeros((self.capacity, *obs_shape), np.float32)
        self.actions = np.zeros((self.capacity, *action_shape), np.float32)
        self.rewards = np.zeros((self.capacity,), np.float32)
        self.terminated = np.zeros((self.capacity,), np.float32)
        self.ptr = 0  # next row to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> None:
        """Append a batch of rows (leading axis = number of transitions), overwriting the oldest when full."""
        n = len(rewards)
        idx = (self.ptr + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.terminated[idx] = next_obs, terminated
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``batch_size`` uniform rows (with replacement) as (obs, actions, rewards, next_obs, terminated)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, batch_size)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the filled rows, the write pointer and ``extra`` scalars atomically to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k)[: self.size] for k in self.FIELDS}
        arrays.update(ptr=np.asarray(self.ptr), size=np.asarray(self.size), capacity=np.asarray(self.capacity))
        arrays.update({f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()})
        return ckpt.write_npz_atomic(path, arrays)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore rows and pointer from :meth:`save`'s file; returns its ``extra`` values."""
        with np.load(path, allow_pickle=False) as f:
            size = int(f["size"])
            if size > self.capacity:
                raise ValueError(f"replay buffer file {path} holds {size} rows but buffer_size is {self.capacity}")
            for k in self.FIELDS:
                rows = f[k]
                if rows.shape[1:] != getattr(self, k).shape[1:]:
                    raise ValueError(f"replay buffer file {path}: '{k}' rows have shape {rows.shape[1:]}, "
                                     f"expected {getattr(self, k).shape[1:]}")
                getattr(self, k)[:size] = rows
            self.size = size
            self.ptr = int(f["ptr"]) if int(f["capacity"]) == self.capacity else size % self.capacity
            return {k[len("extra/"):]: f[k].item() for k in f.files if k.startswith("extra/")}


# ---------------------------------------------------------------------------------------------------------
class EnvGroup:
    """``n`` wrapped envs stepped in this process (no vector-env autoreset bookkeeping): obs are stacked
    ``state`` arrays (n, T_o, D_o); envs without ``reset_within_step`` are reset here at episode end."""

    def __init__(self, name: str, n: int, wrappers: Mapping | None, seed: int,
                 env_kwargs: Mapping | None = None):
        self.envs: list[gym.Env] = [wrap(make_env(name, **dict(env_kwargs or {})), wrappers) for _ in range(n)]
        self.seed = seed
        self.n = n

    @property
    def action_shape(self) -> tuple[int, ...]:
        return tuple(self.envs[0].action_space.shape)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        space = self.envs[0].observation_space
        return tuple((space["state"] if isinstance(space, gym.spaces.Dict) else space).shape)

    @staticmethod
    def _state(obs: Any) -> np.ndarray:
        return np.asarray(obs["state"] if isinstance(obs, dict) else obs, np.float32)

    def reset(self, seed_offset: int = 0) -> np.ndarray:
        return np.stack([self._state(e.reset(seed=self.seed + seed_offset + i)[0]) for i, e in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Returns obs after any reset, reward, terminated, truncated and the true next obs (pre-reset)."""
        obs, next_obs = [], []
        rewards = np.zeros(self.n, np.float32)
        term = np.zeros(self.n, bool)
        trunc = np.zeros(self.n, bool)
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(actions[i])
            rewards[i], term[i], trunc[i] = r, te, tr
            o = self._state(o)
            if te or tr:
                if "final_obs" in info:  # the multi-step wrapper already reset itself
                    next_obs.append(self._state(info["final_obs"]))
                else:
                    next_obs.append(o)
                    o = self._state(env.reset()[0])
            else:
                next_obs.append(o)
            obs.append(o)
        return np.stack(obs), rewards, term, trunc, np.stack(next_obs)

    def close(self) -> None:
        for e in self.envs:
            e.close()


def evaluate_policy(envs: EnvGroup, policy: Callable[[np.ndarray], np.ndarray], seed_offset: int = 0,
                    max_steps: int = 100000) -> np.ndarray:
    """One full episode per env (all in lockstep); returns the episode returns (n,)."""
    obs = envs.reset(seed_offset)
    returns = np.zeros(envs.n)
    running = np.ones(envs.n, bool)
    for _ in range(max_steps):
        obs, rewards, term, trunc, _ = envs.step(policy(obs))
        returns += rewards * running
        running &= ~(term | trunc)
        if not running.any():
            break
    return returns


# ---------------------------------------------------------------------------------------------------------
def _plain(node: Any) -> dict:
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def sac_from_config(cfg: DictConfig, seed: int) -> SAC:
    """Build :class:`SAC` from a reference-style config (``model.actor``/``model.critic`` blocks; their
    ``_target_`` entries are ignored: the actor is always the tanh-Gaussian MLP, the critic CriticObsAct)."""
    model, train = cfg.get("model") or {}, cfg.train
    actor, critic = _plain(model.get("actor")), _plain(model.get("critic"))
    action_dim = int(cfg.action_dim)
    target_entropy = train.get("target_entropy")
    return SAC(
        obs_dim=int(cfg.obs_dim), action_dim=action_dim, horizon_steps=int(cfg.get("horizon_steps", 1)),
        cond_steps=int(cfg.get("cond_steps", 1)),
        actor_mlp_dims=tuple(actor.get("mlp_dims", (256, 256))),
        actor_activation_type=actor.get("activation_type", "ReLU"),
        std_min=float(actor.get("std_min", 0.0067)), std_max=float(actor.get("std_max", 7.3891)),
        critic_mlp_dims=tuple(critic.get("mlp_dims", (256, 256))),
        critic_activation_type=critic.get("activation_type", "ReLU"),
        critic_use_layernorm=bool(critic.get("use_layernorm", False)),
        randn_clip_value=float(model.get("randn_clip_value", 10.0)), gamma=float(train.get("gamma", 0.99)),
        target_ema_rate=float(train.get("target_ema_rate", 0.005)), actor_lr=float(train.get("actor_lr", 3e-4)),
        critic_lr=float(train.get("critic_lr", 1e-3)), init_temperature=float(train.get("init_temperature", 1.0)),
        target_entropy=None if target_entropy is None else float(target_entropy),
        actor_steps=int(train.get("actor_steps", 2)), seed=seed)


class TrainSACAgent:
    """SAC on a (normalised) env from a reference ``sac`` config; ``run()`` trains, evaluates, checkpoints."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        validate.validate_config(cfg, "sac")
        self.seed = int(cfg.get("seed", 42))
        seed_everything(self.seed)
        set_policy(cfg.get("mixed_precision"))  # the networks' dtype policy (float32 unless opted in)
        self.logdir = Path(cfg.logdir)
        self.checkpoint_dir = self.logdir / "checkpoint"
        state = ckpt.latest_state(self.checkpoint_dir) if cfg.get("resume", False) else None
        if state is not None:  # before building envs and networks
            validate.check_resume(cfg, "sac", state, state.path)
        check_normalization_dims(cfg)
        train, env_cfg = cfg.train, cfg.env
        self.n_train_itr = int(train.n_train_itr)
        self.n_steps = int(train.get("n_steps", 1))
        self.batch_size = int(train.batch_size)
        self.critic_update_freq = max(1, int(self.batch_size / float(train.get("critic_replay_ratio", 256))))
        self.actor_update_freq = max(1, int(self.batch_size / float(train.get("actor_replay_ratio", 128))))
        self.n_explore_steps = int(train.get("n_explore_steps", 5000))
        self.scale_reward_factor = float(train.get("scale_reward_factor", 1.0))
        self.val_freq = int(train.get("val_freq", 10000))
        self.n_eval_episode = int(train.get("n_eval_episode", 10))
        self.save_model_freq = int(train.get("save_model_freq", self.n_train_itr))
        self.log_freq = int(train.get("log_freq", 200))
        self.n_envs = int(env_cfg.get("n_envs", 1))
        self.act_steps = int(cfg.get("act_steps", 1))
        wrappers = _plain(env_cfg.get("wrappers"))
        env_kwargs = _plain(env_cfg.get("specific"))
        self.envs = EnvGroup(env_cfg.name, self.n_envs, wrappers, self.seed, env_kwargs)
        self.eval_envs = EnvGroup(env_cfg.name, self.n_eval_episode, wrappers, self.seed + EVAL_SEED_OFFSET,
                                  env_kwargs) if self.n_eval_episode > 0 else None
        self.action_shape = self.envs.action_shape  # (T_a, D_a)
        self.obs_shape = self.envs.obs_shape  # (T_o, D_o)
        if self.obs_shape[-1] != int(cfg.obs_dim) or self.action_shape[-1] != int(cfg.action_dim):
            raise ValueError(f"env {env_cfg.name} has obs dim {self.obs_shape[-1]} and action dim "
                             f"{self.action_shape[-1]}, but the config says obs_dim={cfg.obs_dim}, "
                             f"action_dim={cfg.action_dim}")
        self.sac = sac_from_config(cfg, self.seed)
        self.buffer = ReplayBuffer(int(train.get("buffer_size", 1_000_000)), self.obs_shape, self.action_shape)
        self.rng = np_stream(self.seed, "replay")  # minibatch draws and warm-up actions
        self.itr = 0
        self.env_steps = 0
        self.eval_history: list[tuple[int, float, float]] = []  # (itr, mean, std)
        self.recent_train_returns: deque[float] = deque(maxlen=20)
        # optional hook, checked after every evaluation: return True to end training early
        self.stop_fn: Callable[[TrainSACAgent], bool] | None = None
        if int(cfg.get("horizon_steps", 1)) != self.act_steps:
            raise ValueError(f"SAC needs horizon_steps == act_steps (got {cfg.get('horizon_steps', 1)} and "
                             f"{self.act_steps})")
        if state is not None:
            self.resume(state)
        elif cfg.get("resume", False):
            log.warning("resume=true but no checkpoint in %s; starting from scratch", self.checkpoint_dir)
        self.guard = DivergenceGuard(
            "SAC", "iteration", f"an update too large - lower train.actor_lr ({float(train.get('actor_lr', 3e-4)):g}) "
            f"/ train.critic_lr ({float(train.get('critic_lr', 1e-3)):g}), or train.scale_reward_factor",
            lambda: ckpt.latest_checkpoint(self.checkpoint_dir),
            GuardSettings.from_config(train.get("divergence_guard"), "divergence_guard" in train))
        open_run_folder(cfg, self.logdir)  # every check has passed: from here on the run may write

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_groups(self) -> dict[str, list[tf.Variable]]:
        return {**self.sac.checkpoint_groups(), "rng": [self.sac.rng.state]}

    @property
    def buffer_path(self) -> Path:
        return self.checkpoint_dir / "replay_buffer.npz"

    def save(self) -> Path:
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(self.checkpoint_dir, self.itr), self.checkpoint_groups(),
            {"itr": self.itr, "env_steps": self.env_steps, **validate.run_record(self.cfg, "sac")})
        self.buffer.save(self.buffer_path, {"itr": self.itr, "rng": json.dumps(self.rng.bit_generator.state)})
        return path

    def resume(self, state: ckpt.CheckpointState | None = None) -> None:
        state = state if state is not None else ckpt.latest_state(self.checkpoint_dir)
        if state is None:
            log.warning("resume=true but no checkpoint in %s; starting from scratch", self.checkpoint_dir)
            return
        ckpt.restore_groups(state, self.checkpoint_groups())
        self.itr = ckpt.meta(state, "itr", kind=int)
        self.env_steps = ckpt.meta(state, "env_steps", kind=int)
        if self.buffer_path.is_file():
            try:
                extra = self.buffer.load(self.buffer_path)
            except Exception as e:  # unreadable or mismatched file: say which, and that it can be moved aside
                raise ckpt.CheckpointError(f"replay buffer {self.buffer_path} could not be restored "
                                           f"({type(e).__name__}: {e}); move it away to resume with an empty "
                                           f"buffer") from e
            if int(extra.get("itr", -1)) != self.itr:
                log.warning("replay buffer %s is from iteration %s, the checkpoint from %d", self.buffer_path,
                            extra.get("itr"), self.itr)
            if "rng" in extra:
                self.rng.bit_generator.state = json.loads(extra["rng"])
        else:
            log.warning("no replay buffer at %s: resuming with an empty buffer", self.buffer_path)
        log.info("resumed at iteration %d (%d transitions in the buffer)", self.itr, len(self.buffer))

    def trained_variables(self) -> list[tf.Variable]:
        return [*self.sac.actor.trainable_variables, *self.sac.critic.trainable_variables]

    # ------------------------------------------------------------------------------------------ acting
    def explore_action(self) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, (self.n_envs, *self.action_shape)).astype(np.float32)

    def policy_action(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return self.sac.act(obs, deterministic).numpy()[:, : self.action_shape[0]]

    def evaluate(self) -> tuple[float, float]:
        """Mean and std of ``n_eval_episode`` deterministic (tanh of mean) episode returns."""
        returns = evaluate_policy(self.eval_envs, lambda o: self.policy_action(o, True),
                                  seed_offset=self.itr)
        return float(returns.mean()), float(returns.std())

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        logger = MetricLogger(self.logdir, wandb_config(self.cfg), OmegaConf.to_container(self.cfg, resolve=True))
        logger.truncate(self.itr)  # rows past the checkpoint resumed from (all rows for a fresh start)
        self.guard.seed(norms=[weight_norm(self.trained_variables())])
        env_name = str(self.cfg.env.name)
        start = time.time()
        obs = self.envs.reset(seed_offset=self.itr)
        episode_return = np.zeros(self.n_envs)
        finished: list[float] = []
        metrics: dict[str, tf.Tensor] = {}
        eval_mean = eval_std = float("nan")
        bar = tqdm(total=self.n_train_itr, initial=self.itr, desc="sac", unit="itr", dynamic_ncols=True,
                   mininterval=2.0)
        while self.itr < self.n_train_itr:
            i = self.itr
            for _ in range(self.n_steps):
                action = self.explore_action() if i < self.n_explore_steps else self.policy_action(obs, False)
                next_obs_reset, reward, term, trunc, next_obs = self.envs.step(action)
                if not (np.isfinite(reward).all() and np.isfinite(next_obs).all()):  # before it enters the buffer
                    self.guard.check_rollout(i, {"obs": {"state": next_obs[None]}, "rewards": reward[None],
                                                 "last_obs": {}}, env_name, first_step=i)
                self.buffer.add(obs, action, reward * self.scale_reward_factor, next_obs, term.astype(np.float32))
                episode_return += reward
                for k in np.flatnonzero(term | trunc):
                    finished.append(float(episode_return[k]))
                    self.recent_train_returns.append(float(episode_return[k]))
                    episode_return[k] = 0.0
                obs = next_obs_reset
                self.env_steps += self.n_envs * self.act_steps
            if i > self.n_explore_steps:
                do_critic = i % self.critic_update_freq == 0
                do_actor = i % self.actor_update_freq == 0
                if do_critic or do_actor:
                    # keep the latest value of every metric (critic and actor steps may alternate)
                    metrics.update(self.sac.update(*self.buffer.sample(self.batch_size, self.rng), do_critic,
                                                   do_actor))
            self.itr += 1
            bar.update(1)
            evaluated = (self.eval_envs is not None and self.itr % self.val_freq == 0
                         and self.itr > self.n_explore_steps)
            if evaluated:
                eval_mean, eval_std = self.evaluate()
                self.eval_history.append((self.itr, eval_mean, eval_std))
                bar.set_postfix(eval=f"{eval_mean:.1f}")
            saving = self.itr % self.save_model_freq == 0 or self.itr == self.n_train_itr
            if saving or self.itr % self.log_freq == 0:  # once per logged row / checkpoint, not per step
                self.guard.check_update(self.itr, None, weight_norm(self.trained_variables()),
                                        "the SAC update (the env's observations and rewards were finite)")
                for key in ("loss_critic", "loss_actor", "loss_alpha"):
                    if key in metrics and not np.isfinite(float(metrics[key])):
                        self.guard.fail(self.itr, f"{key} is {float(metrics[key])}", "the SAC update",
                                        self.guard.cause)
            if self.itr % self.log_freq == 0 or evaluated or self.itr == self.n_train_itr:
                row = {"total env step": self.env_steps, "wall_time": time.time() - start,
                       "buffer size": len(self.buffer)}
                if "loss_critic" in metrics:
                    row["loss - critic"] = float(metrics["loss_critic"])
                    row["q"] = float(metrics["q"])
                if "loss_actor" in metrics:
                    row.update({"loss - actor": float(metrics["loss_actor"]),
                                "loss - alpha": float(metrics["loss_alpha"]),
                                "entropy": float(metrics["entropy"])})
                row["entropy coeff"] = float(self.sac.alpha)
                if finished:
                    row["avg episode reward - train"] = float(np.mean(finished))
                    row["num episode - train"] = len(finished)
                    finished = []
                if evaluated:
                    row.update({"avg episode reward - eval": eval_mean, "std episode reward - eval": eval_std,
                                "num episode - eval": self.n_eval_episode})
                logger.log(self.itr, row)  # durable before the checkpoint that includes this iteration
            fault_point(f"metrics:{self.itr}")
            if saving:
                self.save()
            fault_point(f"checkpoint:{self.itr}")
            if evaluated and self.stop_fn is not None and self.stop_fn(self):
                log.info("stopping early at iteration %d (stop_fn)", self.itr)
                if self.itr % self.save_model_freq != 0:
                    self.save()
                break
        bar.close()
        logger.close()
        return {"itr": self.itr, "env_steps": self.env_steps, "eval_return": eval_mean,
                "eval_return_std": eval_std, "wall_time": time.time() - start}
