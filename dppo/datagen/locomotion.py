"""D4RL-"medium"-style data sets for Hopper, Walker2d and HalfCheetah, made here with our own SAC.

D4RL's ``<task>-medium-v2`` data (1M transitions from a SAC policy stopped at roughly a third of expert
performance, rolled out with its own stochasticity) cannot be downloaded here (no network access), so
``dppo data gym --task hopper`` rebuilds the recipe on gymnasium's v5 envs (raw observations/actions):

1. train SAC (:class:`dppo.runners.off_policy.TrainSACAgent`, reference hyperparameters: 2x256 ReLU
   actor/critics, batch 256, lr 3e-4/1e-3, 5000 random steps, auto-temperature) and keep a snapshot every
   ``--snapshot-freq`` env steps; training stops early once the last 10 training episodes average more
   than ``--stop-factor`` (1.5) x the target, since better policies are not needed;
2. score the snapshots (the ``--max-scored`` whose deterministic evaluation during training was closest to
   the target) by the mean return of ``--select-episodes`` episodes with their *stochastic* policy (the
   policy that will make the data) and choose the one closest to the target return:
   D4RL's medium level, Hopper 1400, Walker2d 3000, HalfCheetah 4700 (approximate mean returns of
   hopper/walker2d/halfcheetah-medium-v2; v5 returns are on the same scale, see dppo/envs/locomotion.py);
3. roll the chosen snapshot out stochastically (sampled tanh-Gaussian actions) for ``--transitions`` steps
   (default sized so that ``train.npz`` stays under 10 MB: far fewer than D4RL's 1M, plenty for
   behaviour cloning), marking env terminations as ``terminals`` and time limits / the final cut as
   ``timeouts``;
4. process as the reference's ``get_d4rl_dataset.py`` (:mod:`dppo.datagen.d4rl`): split at terminals or
   timeouts, min/max over the whole data, drop trajectories with non-positive return, normalise to [-1, 1]; write
   ``<out>/<task>-medium-v2/{train.npz, normalization.npz, README.md}`` (train.npz also holds rewards and
   terminals for Q-learning methods).

``dppo data gym --task hopper --from-shipped`` copies the data sets shipped in the repository
(``data_shipped/gym/<task>-medium-v2``) into ``<out>`` instead, so pre-training can start at once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dppo.datagen.d4rl import process_d4rl, split_d4rl

TASKS = ("hopper", "walker2d", "halfcheetah")
TARGET_RETURN = {"hopper": 1400.0, "walker2d": 3000.0, "halfcheetah": 4700.0}
DEFAULT_SAC_STEPS = {"hopper": 200_000, "walker2d": 300_000, "halfcheetah": 200_000}
# sized for train.npz <= 10 MB (float32 states/actions/rewards + bool terminals, zip-compressed)
DEFAULT_TRANSITIONS = {"hopper": 150_000, "walker2d": 100_000, "halfcheetah": 100_000}
RAW_WRAPPERS = {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "max_episode_steps": 1000,
                               "reset_within_step": True}}
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data_shipped" / "gym"


def dataset_name(task: str) -> str:
    return f"{task}-medium-v2"


# ---------------------------------------------------------------------------------------------------------
def sac_config(task: str, steps: int, seed: int, workdir: Path, snapshot_freq: int, batch_size: int = 256,
               resume: bool = False) -> DictConfig:
    """A reference-valued SAC config on the raw v5 env (no normalisation wrapper)."""
    from dppo.envs.locomotion import ACTION_DIMS, OBS_DIMS

    return OmegaConf.create({
        "seed": seed, "logdir": str(workdir), "resume": resume,
        "obs_dim": OBS_DIMS[task], "action_dim": ACTION_DIMS[task],
        "cond_steps": 1, "horizon_steps": 1, "act_steps": 1,
        "env": {"name": dataset_name(task), "n_envs": 1, "max_episode_steps": 1000, "wrappers": RAW_WRAPPERS},
        "train": {"n_train_itr": steps, "n_steps": 1, "gamma": 0.99, "actor_lr": 3e-4, "critic_lr": 1e-3,
                  "batch_size": batch_size, "critic_replay_ratio": batch_size, "actor_replay_ratio": batch_size / 2,
                  "n_explore_steps": 5000, "target_ema_rate": 0.005, "scale_reward_factor": 1.0,
                  "buffer_size": steps, "init_temperature": 1.0, "val_freq": snapshot_freq,
                  "save_model_freq": snapshot_freq, "n_eval_episode": 5, "log_freq": 1000},
        "model": {"randn_clip_value": 10,
                  "actor": {"mlp_dims": [256, 256], "activation_type": "ReLU", "std_min": 0.0067, "std_max": 7.3891},
                  "critic": {"mlp_dims": [256, 256], "activation_type": "ReLU"}},
    })


def snapshots(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in checkpoint_dir.glob("state_*.npz"):
        try:
            out.append((int(p.stem.split("_")[1]), p))
        except ValueError:
            continue
    return sorted(out)


def load_actor(agent: Any, path: Path) -> None:
    from dppo.utils import checkpoint as ckpt

    state = ckpt.load_checkpoint(path)
    ckpt.restore_group(state, "actor", agent.sac.actor.weights, path)


def rollout(agent: Any, task: str, n_transitions: int, n_envs: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Stochastic rollouts of ``agent``'s current actor on raw envs until ``n_transitions`` steps of finished
    episodes exist; returns flat D4RL-style arrays cut at exactly ``n_transitions`` rows (last row: timeout)."""
    from dppo.runners.off_policy import replay_envs, state, step_states

    envs = replay_envs(dataset_name(task), n_envs, RAW_WRAPPERS, seed)
    obs = state(envs.reset(seed=seed)[0])
    current: list[dict[str, list]] = [{k: [] for k in ("obs", "act", "rew", "term", "tout")} for _ in range(n_envs)]
    done: list[dict[str, np.ndarray]] = []
    total = 0
    while total < n_transitions:
        actions = agent.policy_action(obs, False)
        new_obs, rewards, term, trunc, _ = step_states(envs, actions)
        for i in range(n_envs):
            c = current[i]
            c["obs"].append(obs[i, -1])
            c["act"].append(actions[i, 0])
            c["rew"].append(rewards[i])
            c["term"].append(term[i])
            c["tout"].append(trunc[i] and not term[i])
            if term[i] or trunc[i]:
                done.append({k: np.asarray(v) for k, v in c.items()})
                total += len(c["rew"])
                current[i] = {k: [] for k in c}
        obs = new_obs
    envs.close()
    flat = {k: np.concatenate([d[k] for d in done])[:n_transitions] for k in done[0]}
    flat["tout"][-1] = not flat["term"][-1]
    return {"observations": flat["obs"].astype(np.float32), "actions": flat["act"].astype(np.float32),
            "rewards": flat["rew"].astype(np.float32), "terminals": flat["term"].astype(bool),
            "timeouts": flat["tout"].astype(bool)}


def score_snapshots(agent: Any, task: str, n_episodes: int, seed: int, max_scored: int | None = None,
                    history: list[dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Mean/std of stochastic-policy returns of the snapshots: all of them, or the ``max_scored`` whose
    logged deterministic evaluation (``history``) is closest to the target return."""
    from dppo.runners.off_policy import evaluate_policy, replay_envs

    candidates = snapshots(agent.checkpoint_dir)
    det = {int(e["step"]): e["mean"] for e in history or []}
    if max_scored is not None and len(candidates) > max_scored and det:
        target = TARGET_RETURN[task]
        candidates = sorted(sorted(candidates, key=lambda c: abs(det.get(c[0], -1e9) - target))[:max_scored])
    envs = replay_envs(dataset_name(task), n_episodes, RAW_WRAPPERS, seed)
    scores = []
    for step, path in candidates:
        load_actor(agent, path)
        r = evaluate_policy(envs, lambda o: agent.policy_action(o, False), seed=seed)
        scores.append({"step": step, "mean": float(r.mean()), "std": float(r.std())})
        print(f"  snapshot {step:>7d}: stochastic return {r.mean():8.1f} +- {r.std():6.1f}", flush=True)
    envs.close()
    return scores


def make_dataset(task: str, out: Path, steps: int, seed: int, snapshot_freq: int, n_transitions: int,
                 select_episodes: int, stop_factor: float, workdir: Path, resume: bool,
                 n_explore_steps: int = 5000, batch_size: int = 256, max_minutes: float | None = None,
                 max_scored: int | None = 12) -> dict[str, Any]:
    """Train SAC with snapshots, pick the one closest to the medium target, roll it out, process and write
    ``<out>/<task>-medium-v2``; returns the statistics written to its ``info.json``."""
    from dppo.runners.off_policy import TrainSACAgent

    target = TARGET_RETURN[task]
    cfg = sac_config(task, steps, seed, workdir, snapshot_freq, batch_size=batch_size, resume=resume)
    cfg.train.n_explore_steps = n_explore_steps
    agent = TrainSACAgent(cfg)
    t0 = time.time()

    def stop(a: TrainSACAgent) -> bool:
        recent = list(a.recent_train_returns)[-10:]
        if len(recent) >= 5 and float(np.mean(recent)) >= stop_factor * target:
            return True
        return max_minutes is not None and time.time() - t0 > 60 * max_minutes

    agent.stop_fn = stop
    result = agent.run()
    sac_wall = sac_wall_seconds(workdir / "metrics.csv") or time.time() - t0
    print(f"SAC: {result['env_steps']} env steps in {sac_wall / 60:.1f} min; scoring snapshots", flush=True)
    history = eval_history(workdir / "metrics.csv")
    scores = score_snapshots(agent, task, select_episodes, seed + 20000, max_scored, history)
    best = min(scores, key=lambda s: abs(s["mean"] - target))
    print(f"chosen snapshot: {best['step']} (stochastic return {best['mean']:.1f}, target {target:.0f})", flush=True)
    load_actor(agent, workdir / "checkpoint" / f"state_{best['step']}.npz")
    raw = rollout(agent, task, n_transitions, seed=seed + 30000)
    np.savez_compressed(workdir / "raw_rollouts.npz", **raw)
    out_dir = out / dataset_name(task)
    stats = process_d4rl(split_d4rl(**raw), out_dir)
    from dppo.envs.locomotion import gymnasium_id

    info = {"task": task, "env": gymnasium_id(task),
            "seed": seed, "sac_env_steps": int(result["env_steps"]), "sac_wall_min": sac_wall / 60,
            "sac_batch_size": batch_size,
            "target_return": target, "chosen_snapshot": best, "snapshots": scores,
            "eval_history": history, **stats}
    (out_dir / "info.json").write_text(json.dumps(info, indent=1))
    write_readme(out_dir, info)
    print(json.dumps({k: v for k, v in info.items() if k not in ("snapshots", "eval_history")}, indent=1))
    return info


def eval_history(metrics_csv: Path) -> list[dict[str, float]]:
    """The deterministic evaluations logged by the SAC run (all of them, across resumes)."""
    import csv

    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as f:
        return [{"step": int(float(r["step"])), "mean": float(r["eval/avg_episode_reward"]),
                 "std": float(r.get("eval/std_episode_reward") or "nan")}
                for r in csv.DictReader(f) if r.get("eval/avg_episode_reward")]


def sac_wall_seconds(metrics_csv: Path) -> float:
    """Wall time of the SAC run summed over its resumed segments (``time/wall`` restarts at each resume)."""
    import csv

    if not metrics_csv.is_file():
        return 0.0
    with open(metrics_csv, newline="") as f:
        walls = [float(r["time/wall"]) for r in csv.DictReader(f) if r.get("time/wall")]
    total, prev = 0.0, 0.0
    for w in walls:
        if w < prev:
            total += prev
        prev = w
    return total + prev


def write_readme(out_dir: Path, info: dict[str, Any]) -> None:
    rows = "\n".join(f"| {s['step']} | {s['mean']:.1f} +- {s['std']:.1f} |" for s in info["snapshots"])
    det = "\n".join(f"| {e['step']} | {e['mean']:.1f} +- {e['std']:.1f} |" for e in info["eval_history"])
    b = info["chosen_snapshot"]
    text = f"""# {dataset_name(info['task'])} (made here, not D4RL's)

Made by `dppo data gym --task {info['task']} --seed {info['seed']} --batch-size {info.get('sac_batch_size', 256)}`
(dppo/datagen/locomotion.py; otherwise the reference's SAC settings) on gymnasium `{info['env']}`
(raw observations and actions), in the format of the reference's
`get_d4rl_dataset.py` output: `train.npz` (states, actions normalised to [-1, 1]; rewards; terminals;
traj_lengths) and `normalization.npz` (obs_min, obs_max, action_min, action_max).

| what | value |
|---|---|
| seed | {info['seed']} |
| SAC env steps (training) | {info['sac_env_steps']} ({info['sac_wall_min']:.1f} min wall on 2 shared CPU cores) |
| target return (D4RL medium level, approx.) | {info['target_return']:.0f} |
| chosen snapshot | SAC step {b['step']}: stochastic return {b['mean']:.1f} +- {b['std']:.1f} |
| data set returns (kept trajectories) | {info['return_mean']:.1f} +- {info['return_std']:.1f} \
(min {info['return_min']:.1f}, max {info['return_max']:.1f}) |
| trajectories | {info['n_traj']} kept ({info['n_dropped']} dropped for non-positive return), \
mean length {info['length_mean']:.0f} |
| transitions | {info['n_transitions']} |
| train.npz size | {info['size_mb']:.2f} MB |

Actions are the sampled (stochastic) tanh-Gaussian actions the policy executed, as in D4RL's medium
data. D4RL's data sets have 1M transitions; these are smaller to keep the repository light.

Snapshots scored with the stochastic policy (mean +- std over episodes):

| SAC step | return |
|---|---|
{rows}

Deterministic (tanh of mean) evaluation during SAC training:

| SAC step | return |
|---|---|
{det}
"""
    (out_dir / "README.md").write_text(text)


def copy_shipped(task: str, out: Path) -> Path:
    src = SHIPPED_DIR / dataset_name(task)
    if not (src / "train.npz").is_file():
        raise SystemExit(f"no shipped data set at {src}; make one with `dppo data gym --task {task}`")
    dst = out / dataset_name(task)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    print(f"copied {src} -> {dst}")
    return dst


def cli(argv: list[str] | None = None) -> None:
    """``dppo data gym``: make (or copy the shipped) D4RL-medium-style data for gym locomotion tasks."""
    p = argparse.ArgumentParser(prog="dppo data gym", description=cli.__doc__)
    p.add_argument("--task", default="hopper", choices=(*TASKS, "all"), help="robot (default hopper)")
    p.add_argument("--out", default="data/gym", help="output folder (default data/gym)")
    p.add_argument("--from-shipped", action="store_true",
                   help="copy the data sets shipped in data_shipped/gym instead of making new ones")
    p.add_argument("--steps", type=int, default=None,
                   help="max SAC env steps (default hopper 200k, walker2d 300k, halfcheetah 200k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transitions", type=int, default=None,
                   help="transitions in the data set (default hopper 150k, others 100k: train.npz <= 10 MB)")
    p.add_argument("--snapshot-freq", type=int, default=5000, help="SAC snapshot/eval period in env steps")
    p.add_argument("--select-episodes", type=int, default=10,
                   help="stochastic episodes per snapshot to pick the one closest to the target")
    p.add_argument("--max-scored", type=int, default=12,
                   help="score only the snapshots whose deterministic eval is closest to the target (0: all)")
    p.add_argument("--stop-factor", type=float, default=1.5,
                   help="stop SAC once recent training returns exceed this x the target return")
    p.add_argument("--batch-size", type=int, default=256, help="SAC batch size (reference 256)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget for SAC training; the snapshots so far are used when it runs out")
    p.add_argument("--workdir", default=None, help="SAC run folder (default log/gym-data/<task>-medium-v2)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted SAC run in --workdir")
    args = p.parse_args(argv)
    out = Path(args.out)
    for task in TASKS if args.task == "all" else (args.task,):
        if args.from_shipped:
            if args.task == "all" and not (SHIPPED_DIR / dataset_name(task) / "train.npz").is_file():
                print(f"no shipped {dataset_name(task)}; skipped (make it with `dppo data gym --task {task}`)")
                continue
            copy_shipped(task, out)
            continue
        workdir = Path(args.workdir or f"log/gym-data/{dataset_name(task)}")
        make_dataset(task, out, args.steps or DEFAULT_SAC_STEPS[task], args.seed, args.snapshot_freq,
                     args.transitions or DEFAULT_TRANSITIONS[task], args.select_episodes, args.stop_factor,
                     workdir, args.resume, batch_size=args.batch_size, max_minutes=args.max_minutes,
                     max_scored=args.max_scored or None)


if __name__ == "__main__":
    cli()
