"""The run's envs stepped in worker processes, behind the vector-env contract of :mod:`dppo.envs.vector`.

``env.vector: subprocess`` makes the factory build :class:`SubprocVectorEnv`: ``n_workers`` processes, each
holding a contiguous block of the envs as a :class:`~dppo.envs.vector.SyncVectorEnv` (env i keeps seed + i, so
the envs are the sync path's). A step sends every worker its actions first and then gathers the replies, so the
blocks are stepped in parallel; observations, rewards, flags and the ``final_obs``/``full_obs`` infos are
concatenated into what one SyncVectorEnv over all envs returns (masked-out info rows included).

Workers are started with the ``spawn`` method (forking a process in which TensorFlow runs is unsafe) and talk
over pipes; they import the env modules, never TensorFlow (the env factory and the task modules do not import
it). It pays off for envs whose step is heavy Python/physics work (robosuite: 1.85x measured with 2 workers on
two quiet cores, benchmarks/notes.md), not for cheap envs, where the pipes cost more than the step.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np

from dppo.envs.vector import AutoresetMode, SyncVectorEnv, VectorEnv, concat_obs, env_seeds, merge_infos

__all__ = ["SubprocVectorEnv", "WorkerError"]


class WorkerError(RuntimeError):
    """An env worker raised (the message holds its traceback) or died."""


def _worker(conn: Connection, env_fns: Sequence[Callable[[], gym.Env]],
            autoreset_mode: AutoresetMode | None) -> None:
    """Worker process: build the block's SyncVectorEnv, then serve (command, payload) requests until "close"."""
    venv = None
    try:
        try:
            venv = SyncVectorEnv(env_fns, autoreset_mode)
            conn.send(("ok", (venv.single_observation_space, venv.single_action_space, venv.autoreset_mode)))
        except Exception:
            conn.send(("error", traceback.format_exc()))
            return
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                venv.close()
                venv = None
                conn.send(("ok", None))
                return
            try:
                if cmd == "step":
                    result = venv.step(payload)
                elif cmd == "reset":
                    result = venv.reset(seed=payload[0], options=payload[1])
                elif cmd == "call":
                    result = venv.call(payload[0], *payload[1], **payload[2])
                elif cmd == "imported":
                    result = payload in sys.modules
                else:
                    raise ValueError(f"unknown worker command {cmd!r}")
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # the main process is gone or interrupted: exit quietly
    finally:
        if venv is not None:
            venv.close()
        conn.close()


class SubprocVectorEnv(VectorEnv):
    """``env_fns`` built and stepped in ``n_workers`` spawned processes (see the module docstring).

    ``autoreset_mode``: SAME_STEP or DISABLED as for :class:`~dppo.envs.vector.SyncVectorEnv` (None: what the
    envs imply); ``n_workers`` defaults to ``min(len(env_fns), os.cpu_count())``. The env fns must be picklable
    and importable in a fresh process (module-level functions, ``functools.partial`` of them, registered
    gymnasium ids). A worker's exception is raised here as :class:`WorkerError` with its traceback; the
    workers are then shut down.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], autoreset_mode: AutoresetMode | str | None = None,
                 n_workers: int | None = None):
        mode = None if autoreset_mode is None else AutoresetMode(autoreset_mode)
        if mode == AutoresetMode.NEXT_STEP:
            raise ValueError("SubprocVectorEnv supports the autoreset modes SameStep and Disabled, not NextStep")
        n_envs = len(env_fns)
        if n_envs == 0:
            raise ValueError("SubprocVectorEnv needs at least one env")
        n_workers = max(1, min(n_envs, int(n_workers or os.cpu_count() or 1)))
        self.sizes = [n_envs // n_workers + (k < n_envs % n_workers) for k in range(n_workers)]
        self.offsets = np.cumsum([0, *self.sizes])
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._broken = False
        ctx = mp.get_context("spawn")
        for k in range(n_workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, name=f"dppo-env-worker-{k}", daemon=True,
                               args=(child, list(env_fns[self.offsets[k]:self.offsets[k + 1]]), mode))
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        specs = self._gather("start")
        modes = {s[2] for s in specs}
        if len(modes) != 1:
            self.close()
            raise ValueError(f"the workers' envs imply different autoreset modes: {sorted(map(str, modes))}")
        self._declare(n_envs, specs[0][0], specs[0][1], modes.pop())

    @property
    def n_workers(self) -> int:
        return len(self._procs)

    def _label(self, k: int) -> str:
        a, b = int(self.offsets[k]), int(self.offsets[k + 1]) - 1
        return f"env worker {k} (env{'s' if b > a else ''} {a}{f'-{b}' if b > a else ''})"

    def _send(self, cmd: str, payloads: Sequence[Any]) -> None:
        if self._broken or self.closed:
            raise WorkerError("SubprocVectorEnv is closed or a worker failed before; build a new one")
        for k, (conn, payload) in enumerate(zip(self._conns, payloads)):
            try:
                conn.send((cmd, payload))
            except (BrokenPipeError, OSError) as e:
                self._fail([f"{self._label(k)} is gone ({self._exit(k)}) and cannot take '{cmd}': {e}"])

    def _gather(self, cmd: str) -> list[Any]:
        """Every worker's reply to ``cmd``; a WorkerError naming each worker that failed (after reading all)."""
        results, errors = [], []
        for k, conn in enumerate(self._conns):
            try:
                status, value = conn.recv()
            except (EOFError, OSError):
                errors.append(f"{self._label(k)} died during '{cmd}' ({self._exit(k)})")
                continue
            if status == "ok":
                results.append(value)
            else:
                errors.append(f"{self._label(k)} raised during '{cmd}':\n{value}")
        if errors:
            self._fail(errors)
        return results

    def _exit(self, k: int) -> str:
        self._procs[k].join(timeout=1.0)
        code = self._procs[k].exitcode
        return "still running" if code is None else f"exit code {code}"

    def _fail(self, errors: list[str]) -> None:
        self._broken = True
        self.close_extras(terminate=True)
        self.closed = True
        raise WorkerError("\n".join(errors))

    def _split(self, x: Any) -> list[Any]:
        """Per-worker blocks of a per-env sequence (or the same value for every worker)."""
        if isinstance(x, (Sequence, np.ndarray)) and not isinstance(x, (str, dict)):
            return [x[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]
        return [x] * self.n_workers

    def reset(self, seed: int | Sequence[int | None] | None = None, options: dict | Sequence[dict] | None = None):
        """As :meth:`SyncVectorEnv.reset`: env i with ``seed + i`` (or ``seed[i]``), ``options`` one dict or
        one per env."""
        seeds = self._split(env_seeds(seed, self.num_envs))
        self._send("reset", list(zip(seeds, self._split(options))))
        out = self._gather("reset")
        return concat_obs([o for o, _ in out]), merge_infos([i for _, i in out], self.sizes)

    def step(self, actions: np.ndarray):
        self._send("step", self._split(np.asarray(actions)))
        out = self._gather("step")
        return (concat_obs([r[0] for r in out]), *(np.concatenate([r[k] for r in out]) for k in (1, 2, 3)),
                merge_infos([r[4] for r in out], self.sizes))

    def call(self, name: str, *args, **kwargs) -> list[Any]:
        self._send("call", [(name, args, kwargs)] * self.n_workers)
        return [x for part in self._gather("call") for x in part]

    def imported_in_workers(self, module: str) -> list[bool]:
        """Whether each worker has imported ``module`` (e.g. to check that none loads TensorFlow)."""
        self._send("imported", [module] * self.n_workers)
        return self._gather("imported")

    def close_extras(self, terminate: bool = False, **kwargs: Any) -> None:
        """Ask the workers to close their envs and exit; terminate those that do not within a few seconds."""
        if not terminate:
            for conn in self._conns:
                try:
                    conn.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
            for conn in self._conns:
                try:
                    if conn.poll(10.0):
                        conn.recv()
                except (EOFError, OSError):
                    pass
        for proc in self._procs:
            proc.join(timeout=0.1 if terminate else 5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __del__(self) -> None:
        if not getattr(self, "closed", True) and getattr(self, "_procs", None):
            try:
                self.close(terminate=True)
            except Exception:
                pass
