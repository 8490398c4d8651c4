"""The iteration loop every online fine-tuning runner shares (PPO, replay-based baselines, weighted regression).

One iteration: reset when due, roll out ``n_steps`` chunks in all envs (deterministic every ``val_freq``
iterations unless ``force_train``), record the episode statistics, train on the rollout (training iterations
only), step the schedules, plot, log, checkpoint. What differs between methods is in three hooks of the runner:

* ``collect(obs, firsts0, deterministic) -> rollout dict`` (``dppo.runners.rollout.rollout``);
* ``train_iteration(ro, itr) -> metrics`` (the update and its ``loss/*``);
* ``end_iteration(itr, trained) -> metrics`` (schedulers, ``lr/*``).

The runner also provides the attributes named in :meth:`OnlineLoop.run` (set by its constructor) and ``save()``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from dppo.runners.episodes import episode_stats
from dppo.runners.rollout import full_states, raw_paths
from dppo.utils import metrics as metric_names
from dppo.utils.faults import fault_point
from dppo.utils.guard import RolloutError, weight_norm
from dppo.utils.logging import MetricLogger, wandb_config


class OnlineLoop:
    """``run()`` and the trajectory plots of an online fine-tuning runner (mixin; see the module docstring)."""

    guard_loss_key = "loss/loss"  # the logged loss the divergence guard watches
    plotter: Any = None
    render_freq = render_num = 0
    normalization: Any = None

    def trained_variables(self) -> list:
        raise NotImplementedError

    def run(self) -> list[dict[str, float]]:
        """Iterations ``itr`` .. ``n_train_itr - 1``; returns the logged rows."""
        logger = MetricLogger(self.logdir, wandb_config(self.cfg), OmegaConf.to_container(self.cfg, resolve=True))
        logger.truncate(self.itr - 1)  # rows past the checkpoint resumed from (all rows for a fresh start)
        key = self.guard_loss_key
        self.guard.seed([float(r[key]) for r in logger.rows if r.get(key) not in (None, "", "nan")],
                        [weight_norm(self.trained_variables())])
        env_name = str(self.cfg.env.name)
        start = time.time()
        obs, done = None, np.ones(self.n_envs, np.float32)
        bar = tqdm(range(self.itr, self.n_train_itr), desc="fine-tune", unit="itr", initial=self.itr,
                   total=self.n_train_itr, dynamic_ncols=True)
        for itr in bar:
            self.itr = itr
            t0 = time.time()
            eval_mode = itr % self.val_freq == 0 and not self.force_train
            if obs is None or self.reset_at_iteration or eval_mode:
                obs, _ = self.venv.reset(seed=self.seed + itr if self.reset_at_iteration else None)
                done = np.ones(self.n_envs, np.float32)
            try:
                ro = self.collect(obs, done, eval_mode)
            except Exception as e:  # an env (or wrapper) that raised: name the iteration and the env
                raise RolloutError(f"the rollout of iteration {itr} (env.name={env_name}) raised "
                                   f"{type(e).__name__}: {e}; {self.guard.kept()}") from e
            self.guard.check_rollout(itr, ro, env_name)
            obs, done = ro["last_obs"], ro["firsts"][-1]
            stats = episode_stats(ro["rewards"], ro["firsts"], self.act_steps, self.success_threshold)
            self.last_trajectories = raw_paths(ro, self.normalization)
            self.last_states = full_states(ro)
            prefix = "eval" if eval_mode else "train"
            metrics = metric_names.episode_metrics(prefix, stats)
            metrics["time/rollout"] = time.time() - t0
            if not eval_mode:
                self.env_steps += self.n_envs * self.n_steps * self.act_steps
                t1 = time.time()
                metrics.update(self.train_iteration(ro, itr))
                metrics["time/update"] = time.time() - t1
            metrics.update(self.end_iteration(itr, not eval_mode))
            metrics.update({metric_names.ENV_STEPS: self.env_steps, metric_names.WALL: time.time() - start})
            if self.plot_due(itr):
                self.plot(itr)
            if itr % self.log_freq == 0:
                logger.log(itr, metrics)  # durable before the checkpoint that includes this iteration
            fault_point(f"metrics:{itr}")
            if itr % self.save_model_freq == 0 or itr == self.n_train_itr - 1:
                self.save()
            fault_point(f"checkpoint:{itr}")
            self.history.append({"itr": itr, **metrics})
            bar.set_postfix({"succ": f"{stats['success_rate']:.2f}", "ret": f"{stats['avg_episode_reward']:.1f}",
                             "mode": prefix})
        logger.close()
        self.venv.close()
        return self.history

    def plot_due(self, itr: int) -> bool:
        """A plotter is configured, ``train.render`` asks for ``num`` > 0 paths at this iteration, and the
        envs passed their full observations (``env.save_full_observations``)."""
        return (self.plotter is not None and self.render_freq > 0 and self.render_num > 0
                and itr % self.render_freq == 0 and self.last_states is not None)

    def plot(self, itr: int) -> Any:
        """Hand the last rollout's states to ``train.plotter`` with the reference's keywords (normalised
        ``obs_full_trajs`` (T, N, D), ``n_render``, ``max_episode_steps`` = rows to draw, ``render_dir``, ``itr``)
        and a title; the plotter picks the envs and writes ``<render_dir>/traj-<itr>.png``."""
        states = self.last_states
        return self.plotter(obs_full_trajs=states.transpose(1, 0, 2), n_render=self.render_num,
                            max_episode_steps=states.shape[1], render_dir=self.logdir / "render", itr=itr,
                            title=f"iteration {itr}")
