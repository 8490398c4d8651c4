"""Off-policy fine-tuning runner: the SAC loop (reference
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

The replay buffer is the shared NumPy ring buffer of :mod:`dppo.runners.replay`, sampled here with a NumPy
generator: SAC runs one minibatch per compiled update call (one env step per iteration), and measured on the
two shared CPU cores (batch 256, Hopper dims) sampling a batch costs 0.1-0.7 ms against 9-40 ms for an update,
so in-graph sampling (which the diffusion baselines use for their many minibatches per iteration) would save
at most a few per cent here.
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
from dppo.envs.factory import make_vector_env
from dppo.envs.vector import AutoresetMode, VectorEnv
from dppo.runners.replay import ReplayBuffer
from dppo.runners.start import restore, start_run
from dppo.utils import checkpoint as ckpt
from dppo.utils import metrics as metrics_names
from dppo.utils import validate
from dppo.utils.faults import fault_point
from dppo.utils.guard import DivergenceGuard, GuardSettings, weight_norm
from dppo.utils.logging import MetricLogger, open_run_folder, wandb_config
from dppo.utils.seeding import np_stream

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10000


# ---------------------------------------------------------------------------------------------------------
def replay_envs(name: str, n: int, wrappers: Mapping | None, seed: int,
                env_kwargs: Mapping | None = None) -> VectorEnv:
    """``n`` wrapped envs (env i seeded ``seed + i``) that reset within the step an episode ends in
    (autoreset mode SameStep), the true last observation in ``infos["final_obs"]``."""
    return make_vector_env(name, n, wrappers, seed, env_kwargs=env_kwargs, autoreset_mode=AutoresetMode.SAME_STEP)


def state(obs: Any) -> np.ndarray:
    """The ``state`` array (n, T_o, D_o) of a vector env's observation."""
    return np.asarray(obs["state"] if isinstance(obs, dict) else obs, np.float32)


def step_states(venv: VectorEnv, actions: np.ndarray) -> tuple[np.ndarray, ...]:
    """One step of a SameStep vector env as states: (obs after any reset, reward, terminated, truncated, the
    true next obs: the ended episode's last obs where one ended)."""
    obs, rewards, term, trunc, info = venv.step(actions)
    obs = state(obs)
    next_obs = obs.copy()
    if "final_obs" in info:
        rows = info["_final_obs"]
        next_obs[rows] = state(info["final_obs"])[rows]
    return obs, rewards, term, trunc, next_obs


def evaluate_policy(envs: VectorEnv, policy: Callable[[np.ndarray], np.ndarray], seed: int | None = None,
                    max_steps: int = 100000) -> np.ndarray:
    """One full episode per env (all in lockstep, env i reset with ``seed + i``); returns the returns (n,)."""
    obs = state(envs.reset(seed=seed)[0])
    returns = np.zeros(envs.num_envs)
    running = np.ones(envs.num_envs, bool)
    for _ in range(max_steps):
        obs, rewards, term, trunc, _ = step_states(envs, policy(obs))
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
        self.seed, self.logdir, self.checkpoint_dir, state = start_run(cfg, "sac")  # before envs and networks
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
        self.envs = replay_envs(env_cfg.name, self.n_envs, wrappers, self.seed, env_kwargs)
        self.eval_envs = replay_envs(env_cfg.name, self.n_eval_episode, wrappers, self.seed + EVAL_SEED_OFFSET,
                                     env_kwargs) if self.n_eval_episode > 0 else None
        self.action_shape = tuple(self.envs.single_action_space.shape)  # (T_a, D_a)
        space = self.envs.single_observation_space
        self.obs_shape = tuple((space["state"] if isinstance(space, gym.spaces.Dict) else space).shape)  # (T_o, D_o)
        if self.obs_shape[-1] != int(cfg.obs_dim) or self.action_shape[-1] != int(cfg.action_dim):
            raise ValueError(f"env {env_cfg.name} has obs dim {self.obs_shape[-1]} and action dim "
                             f"{self.action_shape[-1]}, but the config says obs_dim={cfg.obs_dim}, "
                             f"action_dim={cfg.action_dim}")
        self.sac = sac_from_config(cfg, self.seed)
        self.buffer = ReplayBuffer(int(train.get("buffer_size", 1_000_000)), self.obs_shape, self.action_shape,
                                   seed=self.seed)
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
        state = restore(self.checkpoint_dir, self.checkpoint_groups(), state)
        if state is None:
            return
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
                                  seed=self.seed + EVAL_SEED_OFFSET + self.itr)
        return float(returns.mean()), float(returns.std())

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        logger = MetricLogger(self.logdir, wandb_config(self.cfg), OmegaConf.to_container(self.cfg, resolve=True))
        logger.truncate(self.itr)  # rows past the checkpoint resumed from (all rows for a fresh start)
        self.guard.seed(norms=[weight_norm(self.trained_variables())])
        env_name = str(self.cfg.env.name)
        start = time.time()
        obs = state(self.envs.reset(seed=self.seed + self.itr)[0])
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
                next_obs_reset, reward, term, trunc, next_obs = step_states(self.envs, action)
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
                row = {metrics_names.ENV_STEPS: self.env_steps, metrics_names.WALL: time.time() - start,
                       "buffer_size": len(self.buffer), "loss/alpha": float(self.sac.alpha)}
                for key, name in (("loss_critic", "critic"), ("q", "q"), ("loss_actor", "actor"),
                                  ("loss_alpha", "temperature"), ("entropy", "entropy")):
                    if key in metrics:
                        row[f"loss/{name}"] = float(metrics[key])
                if finished:
                    row.update(metrics_names.episode_metrics(
                        "train", {"avg_episode_reward": float(np.mean(finished)), "num_episode": len(finished)}))
                    finished = []
                if evaluated:
                    row.update(metrics_names.episode_metrics(
                        "eval", {"avg_episode_reward": eval_mean, "std_episode_reward": eval_std,
                                 "num_episode": self.n_eval_episode}))
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
