"""Robosuite Can: env steps/s of the project's vector envs, random actions, no policy: ``env.vector: sync`` (all
envs stepped in this process) against ``env.vector: subprocess`` with 2 and 4 workers (``SubprocVectorEnv``).

    python -m benchmarks.can_vector [--n-envs 4] [--steps 50] [--rounds 4] [--workers 2 4]

Rounds are interleaved, so every variant sees the same load. Prints one line per round (env steps/s and the main
process's CPU seconds); ``python -m benchmarks.run --case robosuite`` records the medians. Results:
benchmarks/notes.md, "Robosuite Can: one process or subprocesses".
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from dppo.envs.factory import make_vector_env  # noqa: E402


def robosuite_available() -> bool:
    return importlib.util.find_spec("robosuite") is not None


def timed(venv: Any, steps: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(wall s, main-process CPU s, 1-minute load) of ``steps`` vector steps after an untimed reset."""
    venv.reset(seed=0)
    dim = venv.single_action_space.shape[0]
    acts = rng.uniform(-1, 1, (steps, venv.num_envs, dim)).astype(np.float32)
    t, c = time.perf_counter(), time.process_time()
    for a in acts:
        venv.step(a)
    return time.perf_counter() - t, time.process_time() - c, os.getloadavg()[0]


def measure(n_envs: int = 4, steps: int = 50, rounds: int = 4, workers: tuple[int, ...] = (2, 4),
            verbose: bool = True) -> dict[str, dict[str, Any]]:
    """Per variant (``sync``, ``subprocess-<w>``): env steps/s, main-process CPU s and load of every round."""
    venvs = {"sync": make_vector_env("can", n_envs, autoreset_mode="SameStep")}
    for w in workers:
        venvs[f"subprocess-{w}"] = make_vector_env("can", n_envs, autoreset_mode="SameStep", vector="subprocess",
                                                   n_workers=w)
    rng = np.random.default_rng(0)
    res: dict[str, dict[str, Any]] = {k: {"env_steps_per_s": [], "main_cpu_s": [], "load_1min": []} for k in venvs}
    try:
        for venv in venvs.values():  # warm-up (first steps build caches)
            timed(venv, 2, rng)
        for r in range(rounds):
            line = []
            for name, venv in venvs.items():
                wall, cpu, load = timed(venv, steps, rng)
                res[name]["env_steps_per_s"].append(n_envs * steps / wall)
                res[name]["main_cpu_s"].append(cpu)
                res[name]["load_1min"].append(round(load, 2))
                line.append(f"{name} {n_envs * steps / wall:.0f} env steps/s (main CPU {cpu:.2f} s)")
            if verbose:
                print(f"round {r}: " + ", ".join(line) + f"; load {os.getloadavg()[0]:.1f}", flush=True)
        for name, venv in venvs.items():
            if name != "sync":
                res[name]["tensorflow_in_workers"] = any(venv.imported_in_workers("tensorflow"))
    finally:
        for venv in venvs.values():
            venv.close()
    for v in res.values():
        v["median_env_steps_per_s"] = statistics.median(v["env_steps_per_s"])
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    args = p.parse_args(argv)
    res = measure(args.n_envs, args.steps, args.rounds, tuple(args.workers))
    base = res["sync"]["median_env_steps_per_s"]
    print("median: " + ", ".join(f"{k} {v['median_env_steps_per_s']:.0f} env steps/s "
                                 f"({v['median_env_steps_per_s'] / base:.2f}x)" for k, v in res.items()))


if __name__ == "__main__":
    main()
