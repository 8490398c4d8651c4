"""Robosuite Can: env steps/s of 4 envs stepped in this process (the project's SyncVectorEnv) against 4
subprocesses (gymnasium's AsyncVectorEnv), random actions, no policy.

    python -m benchmarks.can_vector [--n-envs 4] [--steps 50] [--rounds 4]

Prints one line per round: env steps/s of each and the main process's CPU seconds. Results: benchmarks/notes.md,
"Robosuite Can: one process or subprocesses".
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from dppo.envs.factory import make_env  # noqa: E402
from dppo.envs.vector import SyncVectorEnv  # noqa: E402


def make_can() -> gym.Env:
    return make_env("can")


def timed(venv, n_envs: int, action_dim: int, steps: int, rng: np.random.Generator) -> tuple[float, float]:
    """(wall s, main-process CPU s) of ``steps`` vector steps after a reset."""
    venv.reset(seed=0)
    t, c = time.time(), time.process_time()
    for _ in range(steps):
        venv.step(rng.uniform(-1, 1, (n_envs, action_dim)).astype(np.float32))
    return time.time() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    env = make_can()
    action_dim = env.action_space.shape[0]
    env.close()
    rng = np.random.default_rng(0)
    sync = SyncVectorEnv([make_can] * args.n_envs, "SameStep")
    subproc = gym.vector.AsyncVectorEnv([make_can] * args.n_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    total = args.n_envs * args.steps
    for r in range(args.rounds):  # interleaved, so both see the same load
        ws, cs = timed(sync, args.n_envs, action_dim, args.steps, rng)
        wa, ca = timed(subproc, args.n_envs, action_dim, args.steps, rng)
        print(f"round {r}: one process {total / ws:.0f} env steps/s (CPU {cs:.2f} s), {args.n_envs} subprocesses "
              f"{total / wa:.0f} env steps/s (main CPU {ca:.2f} s)", flush=True)
    sync.close()
    subproc.close()


if __name__ == "__main__":
    main()
