"""Cost of DPOER's entropy estimate against the DPPO work it rides on (docs/dpoer.md).

    python -m benchmarks.dpoer_entropy [--states 32] [--samples 32] [--repeats 3]

Hopper-sized networks (the gym actor, K = 20, K' = 10, T_a = 4, D_a = 3): one estimate (``states`` x ``samples``
full denoising chains, then the kNN estimate in T_a x D_a = 12 dims) in a compiled function, against one DPPO
update iteration at the two-core Hopper scale (5000 env steps, batch 1250, 5 epochs = 20 minibatches). Prints
the medians (wall and process-CPU seconds) and the estimate's share of an iteration at ``delay_alpha_update`` 50.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from benchmarks import builders as B  # noqa: E402
from benchmarks.common import timed  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--states", type=int, default=32)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    from dppo.algos.dpoer import DPOERDiffusion
    from dppo.nets.critics import CriticObs

    model = DPOERDiffusion(
        actor=B.diffusion_mlp(), actor_ft=B.diffusion_mlp(),
        critic=CriticObs(11, [256, 256, 256], activation_type="Mish", residual_style=True), ft_denoising_steps=10,
        horizon_steps=4, obs_dim=11, action_dim=3, denoising_steps=20, randn_clip_value=3.0, act_steps=4,
        entropy_num_states=args.states, entropy_num_samples=args.samples)
    cond = {"state": tf.random.normal((1250, 1, 11))}
    estimate = tf.function(model.estimate_entropy)
    est = timed(lambda: estimate(cond).numpy(), repeats=args.repeats)
    dppo = B.ppo_diffusion()
    learner = B.ppo_learner(dppo)
    batch = B.random_batch(learner, 5000)
    upd = timed(lambda: learner.update(batch, True, 1250, 5, 0.5, 0.0, None), repeats=args.repeats)
    share = est["median_s"] * 20 / 50 / upd["median_s"]
    out = {"estimate_s": est["median_s"], "estimate_cpu_s": est["median_cpu_s"], "update_s": upd["median_s"],
           "update_cpu_s": upd["median_cpu_s"], "share_at_delay_50": share, "load": est["load_1min"] + upd["load_1min"],
           "threads": tf.config.threading.get_intra_op_parallelism_threads()}
    print(f"one estimate ({args.states} states x {args.samples} chains): {est['median_s']:.3f} s "
          f"({est['median_cpu_s']:.3f} CPU s); one DPPO update iteration (20 minibatches): {upd['median_s']:.2f} s "
          f"({upd['median_cpu_s']:.2f} CPU s); at delay_alpha_update 50 the estimate adds {share:.1%}")
    return out


if __name__ == "__main__":
    print(main())
