"""Learning check of DRWR and DAWR (and DPPO for reference) on Avoid M2, at two-core scale.

Pre-trains one diffusion policy on the M2 demonstrations with the demo's recipe (cached in ``<out>/pretrain``),
fine-tunes it with this folder's ``ft_rwr_diffusion_mlp`` / ``ft_awr_diffusion_mlp`` (/ ``ft_ppo_diffusion_mlp``)
configs for ``--itr`` iterations per seed, then compares the methods with ``dppo compare`` on the training
rollouts' success rate (the Avoid configs have no evaluation iterations):

    python script/avoid_weighted.py --out runs/avoid_weighted [--methods rwr awr ppo] [--seeds 0 1 2] [--itr 10]
        [--pretrain-epochs 1500] [--ft-override train.lr=1e-5 ...]

Writes ``<out>/<method>_seed<s>/`` (run folders) and ``<out>/compare.png`` + ``compare.md``. Finished runs are
resumed (so skipped) when the script runs again. Needs the Avoid data (``dppo data avoid --out data/d3il``;
made here when missing).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dppo.run import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFG = ROOT / "cfg" / "d3il"


def pretrain(out: Path, epochs: int) -> Path:
    from dppo.runners.pretrain import TrainDiffusionAgent
    ckpt = out / "pretrain" / "checkpoint" / f"state_{epochs}.npz"
    if not ckpt.is_file():
        cfg = compose_config(CFG / "pretrain" / "avoid_m2", "pre_diffusion_mlp", [
            f"logdir={out / 'pretrain'}", "seed=0", "wandb=null", f"train.n_epochs={epochs}",
            "train.batch_size=128", "train.learning_rate=1e-3", f"train.lr_scheduler.first_cycle_steps={epochs}",
            f"train.lr_scheduler.warmup_steps={min(10, epochs - 1)}", "train.lr_scheduler.min_lr=1e-4",
            f"train.save_model_freq={epochs}", "train.update_ema_freq=1"])
        cfg.resume = True
        TrainDiffusionAgent(cfg).run()
    return ckpt


def finetune(out: Path, method: str, seed: int, itr: int, base: Path, overrides: list[str]) -> Path:
    from hydra.utils import get_class
    run = out / f"{method}_seed{seed}"
    cfg = compose_config(CFG / "finetune" / "avoid_m2", f"ft_{method}_diffusion_mlp", [
        f"logdir={run}", f"base_policy_path={base}", f"seed={seed}", "wandb=null", f"train.n_train_itr={itr}",
        "train.render.freq=5", *overrides])
    cfg.resume = True
    get_class(cfg._target_)(cfg).run()
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/avoid_weighted")
    p.add_argument("--methods", nargs="+", default=["rwr", "awr"], choices=["rwr", "awr", "ppo"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--itr", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=1500)
    p.add_argument("--ft-override", action="append", default=[], help="Hydra override for every fine-tuning run")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    data = Path(os.environ.get("DPPO_DATA_DIR", ROOT / "data"))
    os.environ["DPPO_DATA_DIR"] = str(data)
    if not (data / "d3il" / "avoid_m2" / "train.npz").is_file():
        from dppo.datagen.avoid import cli as make_avoid
        make_avoid(["--out", str(data / "d3il"), "--seed", "0"])
    base = pretrain(out, args.pretrain_epochs)
    groups = {}
    for method in args.methods:
        for seed in args.seeds:
            finetune(out, method, seed, args.itr, base, args.ft_override)
        groups[{"rwr": "DRWR", "awr": "DAWR", "ppo": "DPPO"}[method]] = str(out / f"{method}_seed*")
    from dppo.viz.compare import compare
    _, text = compare(out / "compare.png", groups, metric="train/success_rate", last_k=3)
    print(text)
    print(f"wrote {out / 'compare.png'} and {out / 'compare.md'}")


if __name__ == "__main__":
    main()
