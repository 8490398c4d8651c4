"""Evaluation of a pre-trained or fine-tuned policy: deterministic rollouts, episode metrics, ``result.npz``,
the task's path summary (registered by the task, :func:`dppo.envs.tasks.summary`) and a trajectory figure from
the config's ``plotter`` when there is one.

Fix of a reference quirk: given a DPPO fine-tuning checkpoint, the reference's eval configs load only the frozen
pre-trained ``network``; here the fine-tuned ``actor_ft`` runs the last ``ft_denoising_steps`` steps, as it did
during fine-tuning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from dppo.data.normalization import Normalization, check_normalization_dims
from dppo.envs import tasks
from dppo.envs.factory import make_from_config
from dppo.policies.diffusion import DiffusionModel
from dppo.runners.episodes import episode_stats, first_episode_returns
from dppo.runners.rollout import full_states, raw_paths, rollout
from dppo.utils import checkpoint as ckpt
from dppo.utils import validate
from dppo.utils.logging import save_config
from dppo.utils.precision import set_policy
from dppo.utils.seeding import seed_everything


def load_for_eval(model: Any, network_cfg: DictConfig, path: str | Path) -> str:
    """Load ``path`` into ``model``; returns which weights were used ("pre-trained" or "fine-tuned")."""
    state = ckpt.load_checkpoint(path)
    if "actor_ft" not in ckpt.groups_in(state):
        ckpt.load_policy_weights(model, path)
        return "pre-trained"
    if not isinstance(model, DiffusionModel):  # Gaussian / GMM PPO fine-tunes the whole policy network
        ckpt.restore_group(state, "actor_ft", model.network.weights, path)
        return "fine-tuned"
    actor_ft = validate.instantiate(network_cfg)
    model.build_network(actor_ft)
    ckpt.restore_group(state, "network", model.network.weights, path)
    ckpt.restore_group(state, "actor_ft", actor_ft.weights, path)
    model.actor_ft = actor_ft
    model.ft_denoising_steps = int(ckpt.meta(state, "ft_denoising_steps", model.n_steps))
    return "fine-tuned"


class EvalDiffusionAgent:
    """Roll out ``n_steps`` chunks per env from a reset with deterministic sampling and report."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        validate.validate_config(cfg, "eval")
        self.seed = int(cfg.get("seed", 42))
        seed_everything(self.seed)
        set_policy(cfg.get("mixed_precision"))  # the networks' dtype policy (float32 unless opted in)
        self.logdir = Path(cfg.logdir)
        path = cfg.get("base_policy_path") or cfg.model.get("network_path")
        if path:  # a policy trained with other dims or denoising steps is refused before anything is built
            validate.check_base_checkpoint(cfg, path)
        check_normalization_dims(cfg)
        self.n_steps, self.act_steps = int(cfg.n_steps), int(cfg.act_steps)
        self.render_num = int(cfg.get("render_num", 0))
        self.plotter = validate.instantiate(cfg.plotter) if cfg.get("plotter") else None
        self.venv = make_from_config(cfg.env, self.seed)
        self.success_threshold = float(cfg.env.get("best_reward_threshold_for_success", 1.0))
        self.normalization = Normalization.load(cfg.normalization_path) if cfg.get("normalization_path") else None
        self.model = validate.instantiate(
            cfg.model, network_path=None, seed=self.seed,
            **validate.inherited(cfg, "model", ("cond_steps",), validate.target_accepts(cfg.model._target_)))
        self.weights = load_for_eval(self.model, cfg.model.network, path) if path else "random"
        self.deterministic = bool(cfg.get("deterministic", True))
        save_config(cfg, self.logdir)  # every check has passed

    def video_options(self) -> list[dict] | None:
        """With ``env.save_video``, the first ``render_num`` envs record their first episode to
        ``<logdir>/render/eval_env<i>.mp4`` (envs that support it: the robosuite tasks)."""
        if not (self.cfg.env.get("save_video") and self.render_num):
            return None
        render_dir = self.logdir / "render"
        render_dir.mkdir(parents=True, exist_ok=True)
        return [{"video_path": str(render_dir / f"eval_env{i}.mp4")} if i < self.render_num else {}
                for i in range(self.venv.num_envs)]

    def run(self) -> dict[str, float]:
        start = time.time()
        obs, _ = self.venv.reset(seed=self.seed, options=self.video_options())
        ro = rollout(self.venv, lambda c: (self.model.sample(c, deterministic=self.deterministic), None), obs,
                     np.ones(self.venv.num_envs, np.float32), self.n_steps, self.act_steps)
        self.venv.close()
        stats = episode_stats(ro["rewards"], ro["firsts"], self.act_steps, self.success_threshold)
        self.paths = raw_paths(ro, self.normalization)
        first = first_episode_returns(ro["rewards"], ro["firsts"])
        result = {**stats, "first_episodes": len(first),
                  "first_episode_reward_mean": float(first.mean()) if len(first) else float("nan"),
                  "first_episode_reward_std": float(first.std()) if len(first) else float("nan"),
                  "weights": self.weights, "time": time.time() - start}
        result.update(tasks.summary(str(self.cfg.env.name), self.paths, self.cfg.env.get("specific")))
        states = full_states(ro)
        if self.plotter is not None and self.render_num > 0 and states is not None:
            # the first render_num envs, all drawn: render/traj-eval.png
            self.plotter(obs_full_trajs=states[:self.render_num].transpose(1, 0, 2), n_render=self.render_num,
                         max_episode_steps=states.shape[1], render_dir=self.logdir / "render", itr="eval",
                         title=f"eval ({self.weights})")
        self.logdir.mkdir(parents=True, exist_ok=True)
        np.savez(self.logdir / "result.npz", num_episode=stats["num_episode"],
                 eval_success_rate=stats["success_rate"], eval_episode_reward=stats["avg_episode_reward"],
                 eval_best_reward=stats["avg_best_reward"], time=result["time"])
        (self.logdir / "result.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return result


EvalGaussianAgent = EvalDiffusionAgent
