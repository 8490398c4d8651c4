"""``make demo``: the main job on the Avoid M2 task, end to end, in one run folder.

1. make the Avoid demonstrations (``data/d3il``, once);
2. pre-train a diffusion policy on M2 (scaled down from the reference's 15 000 epochs to fit two cores);
3. evaluate it (100 episodes);
4. fine-tune it with DPPO using the reference's ``ft_ppo_diffusion_mlp`` config for avoid_m2;
5. evaluate the fine-tuned policy (100 episodes);
6. write trajectory figures before/after, the learning curve, metrics and a summary.

    python -m dppo.demo [--out runs/demo] [--pretrain-epochs 3000] [--ft-itr 51] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from omegaconf import DictConfig  # noqa: E402

from dppo.run import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFG = ROOT / "cfg" / "d3il"


def load_cfg(stage: str, name: str, overrides: list[str]) -> DictConfig:
    """Compose ``cfg/d3il/<stage>/avoid_m2/<name>.yaml`` with overrides, resolved, reference targets mapped."""
    return compose_config(CFG / stage / "avoid_m2", name, overrides)


def evaluate(run: Path, tag: str, checkpoint: Path, n_episodes: int, seed: int) -> dict:
    from dppo.runners.evaluate import EvalDiffusionAgent
    cfg = load_cfg("eval", "eval_diffusion_mlp", [
        f"logdir={run / f'eval_{tag}'}", f"base_policy_path={checkpoint}", f"env.n_envs={n_episodes}",
        f"render_num={n_episodes}", f"seed={seed}"])
    agent = EvalDiffusionAgent(cfg)
    result = agent.run()
    result["paths"] = [p[:, :2] for p in agent.paths]
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="run folder (default runs/demo_<time>)")
    p.add_argument("--data", default="data/d3il")
    p.add_argument("--pretrain-epochs", type=int, default=3000)
    p.add_argument("--ft-itr", type=int, default=51, help="fine-tuning iterations (the reference config's 51)")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    start = time.time()
    run = Path(args.out or f"runs/demo_{time.strftime('%Y%m%d_%H%M%S')}").resolve()
    run.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    os.environ["DPPO_DATA_DIR"] = str(data.parent)

    print(f"[1/5] Avoid demonstrations -> {data}", flush=True)
    if not (data / "avoid_m2" / "train.npz").is_file():
        from dppo.datagen.avoid import cli as make_avoid
        make_avoid(["--out", str(data), "--seed", "0"])

    print(f"[2/5] pre-training a diffusion policy on M2 ({args.pretrain_epochs} epochs)", flush=True)
    from dppo.runners.pretrain import TrainDiffusionAgent
    e = args.pretrain_epochs
    pre_cfg = load_cfg("pretrain", "pre_diffusion_mlp", [
        f"logdir={run / 'pretrain'}", f"seed={args.seed}", "wandb=null", f"train.n_epochs={e}",
        "train.batch_size=128", "train.learning_rate=1e-3", f"train.lr_scheduler.first_cycle_steps={e}",
        "train.lr_scheduler.warmup_steps=10", "train.lr_scheduler.min_lr=1e-4", f"train.save_model_freq={e}",
        "train.update_ema_freq=1"])
    pre_ckpt = run / "pretrain" / "checkpoint" / f"state_{e}.npz"
    pre_cfg.resume = True  # a re-run of the demo in the same folder continues where it stopped
    pre_result = TrainDiffusionAgent(pre_cfg).run()

    print("[3/5] evaluating the pre-trained policy", flush=True)
    before = evaluate(run, "pretrained", pre_ckpt, args.eval_episodes, args.seed)

    print(f"[4/5] DPPO fine-tuning ({args.ft_itr} iterations of 50 envs x 100 steps)", flush=True)
    from dppo.runners.ppo import TrainPPODiffusionAgent
    ft_cfg = load_cfg("finetune", "ft_ppo_diffusion_mlp", [
        f"logdir={run / 'finetune'}", f"base_policy_path={pre_ckpt}", f"seed={args.seed}", "wandb=null",
        f"train.n_train_itr={args.ft_itr}", "train.render.freq=5", "+resume=true"])
    ft = TrainPPODiffusionAgent(ft_cfg)
    ft.run()
    from dppo.viz.curves import plot_learning_curves, read_metrics
    curve = read_metrics(run / "finetune" / "metrics.csv")
    ft_ckpt = run / "finetune" / "checkpoint" / f"state_{args.ft_itr - 1}.npz"

    print("[5/5] evaluating the fine-tuned policy", flush=True)
    after = evaluate(run, "finetuned", ft_ckpt, args.eval_episodes, args.seed)

    from dppo.viz.trajectories import plot_avoid_grid
    plot_avoid_grid(run / "trajectories.png", {
        ("M2", f"pre-trained: success {before['success_rate']:.0%}"): before.pop("paths"),
        ("M2", f"DPPO fine-tuned: success {after['success_rate']:.0%}"): after.pop("paths")})
    plot_learning_curves(run / "learning_curve.png", {"DPPO": run / "finetune" / "metrics.csv"},
                         ["train/success_rate", "train/avg_episode_reward", "loss/approx_kl"],
                         titles=["success rate (training rollouts)", "episode return", "approx. KL"])
    summary = {
        "pretrain_loss": pre_result["loss"], "pretrain_seconds": pre_result["wall_time"],
        "before": before, "after": after,
        "train_success_per_itr": curve["train/success_rate"].round(3).tolist(),
        "env_steps": ft.env_steps, "wall_seconds": time.time() - start, "run": str(run),
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n=== dppo-tf demo: DPPO on Avoid M2 (reward: row-3 gap 5 and y > 0.4) ===")
    print(f"success rate   {before['success_rate']:6.1%}  ->  {after['success_rate']:6.1%}   "
          f"({args.eval_episodes} eval episodes each)")
    print(f"reached goal   {before['reached_goal']:6.1%}  ->  {after['reached_goal']:6.1%}   (any gap)")
    print(f"gap 5 / gap 7  {before['mode5']:.0%} / {before['mode7']:.0%}  ->  {after['mode5']:.0%} / "
          f"{after['mode7']:.0%}")
    print(f"env steps {ft.env_steps}, wall time {summary['wall_seconds'] / 60:.1f} min")
    print(f"run folder: {run}  (trajectories.png, learning_curve.png, finetune/metrics.csv, */checkpoint/)")
    return summary


if __name__ == "__main__":
    main()
