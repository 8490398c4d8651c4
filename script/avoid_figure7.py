"""The paper's Figure 7 at this project's scale: diffusion, Gaussian and GMM policies on Avoid M1, M2, M3.

For every (task, family): pre-train one policy (seed 0) with the demo's recipe, sample it, then fine-tune it with
PPO (the reference's ``ft_ppo_<family>_mlp`` config, fewer iterations) for each seed, keeping the training
rollouts of the first iteration (the exploration the paper's figure shows) and evaluating the result.

    python script/avoid_figure7.py --out runs/fig7 [--tasks m1 m2 m3] [--families diffusion gaussian gmm]
        [--seeds 0 1 2] [--pretrain-epochs 1500] [--ft-itr 20] [--episodes 50] [--pillars slide|freeze|pass]
    python script/avoid_figure7.py --out runs/fig7 --plot-only     # redraw from the saved results

Each finished step writes ``<out>/<task>_<family>/...`` (``pretrained.json``, ``ft_seed<s>.json``, paths in
``.npz``) and is skipped when the script runs again, so several processes can share the work (split by
``--tasks``) and an interrupted run continues. The grid is ``<out>/figure7.png``, the table ``<out>/figure7.md``,
training success and approximate KL per iteration (mean and spread over seeds) ``<out>/curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from dppo.run import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"m1": "M1", "m2": "M2", "m3": "M3"}
FAMILIES = {"diffusion": "diffusion", "gaussian": "Gaussian", "gmm": "GMM"}
N_DRAWN = 20  # trajectories per panel


def cfg_dir(stage: str, task: str) -> Path:
    return ROOT / "cfg" / "d3il" / stage / f"avoid_{task}"


def save_paths(path: Path, paths: list[np.ndarray]) -> None:
    np.savez_compressed(path, **{f"p{i}": p[:, :2] for i, p in enumerate(paths)})


def load_paths(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"p{i}"] for i in range(len(f.files))]


def pretrain(run: Path, task: str, family: str, epochs: int) -> Path:
    from dppo.runners.pretrain import TrainDiffusionAgent
    ckpt = run / "pretrain" / "checkpoint" / f"state_{epochs}.npz"
    if not ckpt.is_file():
        cfg = compose_config(cfg_dir("pretrain", task), f"pre_{family}_mlp", [
            f"logdir={run / 'pretrain'}", "seed=0", "wandb=null", f"train.n_epochs={epochs}",
            "train.batch_size=128", "train.learning_rate=1e-3", f"train.lr_scheduler.first_cycle_steps={epochs}",
            f"train.lr_scheduler.warmup_steps={min(10, epochs - 1)}", "train.lr_scheduler.min_lr=1e-4",
            f"train.save_model_freq={epochs}", "train.update_ema_freq=1"])
        cfg.resume = True
        TrainDiffusionAgent(cfg).run()
    return ckpt


def evaluate(run: Path, task: str, family: str, checkpoint: Path, tag: str, episodes: int, seed: int,
             deterministic: bool, pillars: str) -> dict:
    """Roll out ``checkpoint`` (pre-trained or fine-tuned) for ``episodes`` episodes with the eval config."""
    from dppo.runners.evaluate import EvalDiffusionAgent
    cfg = compose_config(cfg_dir("eval", task), "eval_diffusion_mlp", [
        f"logdir={run / f'eval_{tag}'}", f"base_policy_path={checkpoint}", f"env.n_envs={episodes}",
        "render_num=0", f"seed={seed}", f"+deterministic={deterministic}", f"+env.specific.pillars={pillars}"])
    cfg.model = compose_config(cfg_dir("pretrain", task), f"pre_{family}_mlp").model
    agent = EvalDiffusionAgent(cfg)
    result = agent.run()
    save_paths(run / f"paths_{tag}.npz", agent.paths)
    return result


def finetune(run: Path, task: str, family: str, base: Path, seed: int, n_itr: int,
             pillars: str, overrides: list[str], config: str | None = None) -> tuple[Path, list, dict]:
    """PPO fine-tuning; returns the last checkpoint, the first iteration's training trajectories and the
    training-rollout success rate and approximate KL per iteration."""
    from dppo.runners.ppo import TrainPPODiffusionAgent
    from dppo.runners.ppo_gaussian import TrainPPOGaussianAgent
    logdir = run / f"ft_seed{seed}"
    cfg = compose_config(cfg_dir("finetune", task), config or f"ft_ppo_{family}_mlp", [
        f"logdir={logdir}", f"base_policy_path={base}", f"seed={seed}", "wandb=null",
        f"train.n_train_itr={n_itr}", f"train.render.freq={n_itr}", f"train.save_model_freq={n_itr}",
        f"+env.specific.pillars={pillars}", *overrides])
    agent = (TrainPPODiffusionAgent if family == "diffusion" else TrainPPOGaussianAgent)(cfg)
    first: list[np.ndarray] = []
    agent.plot = lambda itr: first.extend(agent.last_trajectories) if itr == 0 else None
    history = agent.run()
    curves = {"train_success": [h["train/success_rate"] for h in history],
              "approx_kl": [h.get("loss/approx_kl", float("nan")) for h in history]}
    return logdir / "checkpoint" / f"state_{n_itr - 1}.npz", first, curves


def run_one(out: Path, task: str, family: str, args: argparse.Namespace) -> None:
    run = out / f"{task}_{family}"
    run.mkdir(parents=True, exist_ok=True)
    base = pretrain(run, task, family, args.pretrain_epochs)
    if not (run / "pretrained.json").is_file():
        det = evaluate(run, task, family, base, "pretrained_det", args.episodes, 0, True, args.pillars)
        sto = evaluate(run, task, family, base, "pretrained", args.episodes, 0, False, args.pillars)
        (run / "pretrained.json").write_text(json.dumps({"deterministic": det, "stochastic": sto}, indent=2))
    for seed in args.seeds:
        if (run / f"ft_seed{seed}.json").is_file():
            continue
        ckpt, first, curves = finetune(run, task, family, base, seed, args.ft_itr, args.pillars, args.ft_override,
                                       args.ft_config)
        save_paths(run / f"paths_itr0_seed{seed}.npz", first)
        det = evaluate(run, task, family, ckpt, f"ft_seed{seed}", args.episodes, seed, True, args.pillars)
        (run / f"ft_seed{seed}.json").write_text(json.dumps({**curves, "eval": det}, indent=2))


def summarize(out: Path, args: argparse.Namespace) -> None:
    from dppo.viz.trajectories import plot_avoid_grid
    panels = {}
    rows = ["| task | policy | pre-trained success (det. / sampled) | first-iteration training success | "
            "fine-tuned success, " + " / ".join(f"seed {s}" for s in args.seeds) + " | mean |", "|---" * 6 + "|"]
    for task, task_name in TASKS.items():
        for family, fam_name in FAMILIES.items():
            run = out / f"{task}_{family}"
            if not (run / "pretrained.json").is_file():
                continue
            pre = json.loads((run / "pretrained.json").read_text())
            pre_paths = load_paths(run / "paths_pretrained.npz")[:N_DRAWN]
            panels[(task_name, f"{fam_name}: pre-trained")] = pre_paths
            fts = [json.loads((run / f"ft_seed{s}.json").read_text()) for s in args.seeds
                   if (run / f"ft_seed{s}.json").is_file()]
            if (run / f"paths_itr0_seed{args.seeds[0]}.npz").is_file():
                panels[(task_name, f"{fam_name}: fine-tuning, itr 0")] = load_paths(
                    run / f"paths_itr0_seed{args.seeds[0]}.npz")[:N_DRAWN]
            after = [f["eval"]["success_rate"] for f in fts]
            itr0 = [f["train_success"][0] for f in fts]
            mean = f"{np.mean(after):.0%} +- {np.std(after):.0%}" if after else ""
            rows.append(f"| {task_name} | {fam_name} | {pre['deterministic']['success_rate']:.0%} / "
                        f"{pre['stochastic']['success_rate']:.0%} | " + " / ".join(f"{x:.0%}" for x in itr0)
                        + " | " + " / ".join(f"{x:.0%}" for x in after) + f" | {mean} |")
    if panels:
        plot_avoid_grid(out / "figure7.png", panels, rows=list(dict.fromkeys(r for r, _ in panels)),
                        cols=list(dict.fromkeys(c for _, c in panels)), max_steps=100, panel_size=(2.2, 2.9))
    (out / "figure7.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    plot_curves(out, args.seeds)


def plot_curves(out: Path, seeds: list[int]) -> None:
    """Training success and approximate KL per iteration: mean and min-max band over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(TASKS), figsize=(4.2 * len(TASKS), 6), squeeze=False)
    for col, (task, task_name) in enumerate(TASKS.items()):
        for family, fam_name in FAMILIES.items():
            runs = [json.loads(p.read_text()) for s in seeds
                    if (p := out / f"{task}_{family}" / f"ft_seed{s}.json").is_file()]
            if not runs or "approx_kl" not in runs[0]:
                continue
            for row, key in enumerate(("train_success", "approx_kl")):
                y = np.array([r[key] for r in runs], dtype=float)
                x = np.arange(y.shape[1])
                line, = axes[row, col].plot(x, np.nanmean(y, 0), label=f"{fam_name} ({len(runs)} seeds)")
                axes[row, col].fill_between(x, np.nanmin(y, 0), np.nanmax(y, 0), alpha=0.2, color=line.get_color())
        axes[0, col].set_title(f"Avoid {task_name}")
        axes[0, col].set_ylabel("training success")
        axes[1, col].set_ylabel("approx. KL")
        axes[1, col].set_yscale("log")
        axes[1, col].set_xlabel("iteration")
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fig7")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pretrain-epochs", type=int, default=1500)
    p.add_argument("--ft-itr", type=int, default=20)
    p.add_argument("--pillars", default="slide", choices=["slide", "freeze", "pass"],
                   help="what a pillar does to the rod (dppo/envs/avoid.py)")
    p.add_argument("--ft-override", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override of the fine-tuning config (repeatable), e.g. train.actor_lr=3e-6")
    p.add_argument("--ft-config", default=None, metavar="NAME",
                   help="fine-tuning config name (default ft_ppo_<family>_mlp; e.g. ft_ppo_ent_diffusion_mlp)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--data", default="data/d3il", help="Avoid data (made with `dppo data avoid` when missing)")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    os.environ["DPPO_DATA_DIR"] = str(data.parent)
    if not args.plot_only:
        if not (data / "avoid_m1" / "train.npz").is_file():
            from dppo.datagen.avoid import cli as make_avoid
            make_avoid(["--out", str(data), "--seed", "0"])
        for task in args.tasks:
            for family in args.families:
                run_one(out, task, family, args)
    summarize(out, args)


if __name__ == "__main__":
    main()
