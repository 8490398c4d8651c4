"""SubprocVectorEnv: the sync path's results from worker processes, clear worker errors, clean shutdown.

The envs are gymnasium built-ins (a spawned worker does not see test-only registrations)."""

import multiprocessing as mp
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf  # loaded here, so the workers' TensorFlow check below means something

from dppo.envs.factory import make_from_config, make_vector_env
from dppo.envs.subproc import SubprocVectorEnv, WorkerError
from dppo.envs.vector import AutoresetMode, merge_infos
from dppo.runners.rollout import rollout

_cartpole = partial(gym.make, "CartPole-v1")  # picklable, importable in a fresh process
PENDULUM_CHUNKS = {"multi_step": {"n_obs_steps": 2, "n_action_steps": 2, "max_episode_steps": 6,
                                  "pass_full_observations": True}}


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def run_both(name, wrappers, mode, actions, seed):
    """Reset with ``seed`` and step ``actions`` in the sync and the subprocess vector envs; every output of both."""
    outs = []
    for vector in ("sync", "subprocess"):
        venv = make_vector_env(name, actions.shape[1], wrappers, seed=7, vector=vector, autoreset_mode=mode,
                               n_workers=2)
        trace = [venv.reset(seed=seed)]
        trace += [venv.step(a) for a in actions]
        if vector == "subprocess":
            assert venv.n_workers == 2 and venv.sizes == [2, 1]
            assert venv.imported_in_workers("gymnasium") == [True, True]
            assert venv.imported_in_workers("tensorflow") == [False, False]
            procs = list(venv._procs)
        venv.close()
        outs.append((venv, trace))
    assert all(p.exitcode == 0 for p in procs) and not mp.active_children()  # closed cleanly, reaped
    return outs


@pytest.mark.parametrize("case", ["cartpole SameStep (vector env resets)", "pendulum SameStep (wrapper resets)",
                                  "pendulum Disabled"])
def test_same_results_as_sync(case):
    rng = np.random.default_rng(0)
    if case.startswith("cartpole"):
        name, wrappers, mode, seed = "CartPole-v1", None, "SameStep", 3
        actions = rng.integers(0, 2, (40, 3))
    else:
        name, wrappers, mode, seed = "Pendulum-v1", PENDULUM_CHUNKS, case.split()[1], [5, None, 9]
        actions = rng.uniform(-2, 2, (8, 3, 2, 1)).astype(np.float32)
    (sync, a), (sub, b) = run_both(name, wrappers, mode, actions, seed)
    assert sync.metadata["autoreset_mode"] == sub.metadata["autoreset_mode"] == AutoresetMode(mode)
    assert sync.observation_space == sub.observation_space and sync.action_space == sub.action_space
    ended = 0
    for (obs_a, *rest_a), (obs_b, *rest_b) in zip(a, b):
        assert_same(obs_a, obs_b)
        for x, y in zip(rest_a[:-1], rest_b[:-1]):  # rewards, terminated, truncated
            assert_same(x, y)
        info_a, info_b = rest_a[-1], rest_b[-1]
        assert info_a.keys() == info_b.keys()
        for k in info_a:
            assert_same(info_a[k], info_b[k])
        ended += int(np.sum(info_a.get("_final_obs", 0)))
    assert (ended > 0) == (mode == "SameStep")  # the comparison covered episode ends


def test_worker_exception_names_the_worker_and_keeps_the_traceback():
    venv = SubprocVectorEnv([_cartpole] * 2, "SameStep", n_workers=2)
    venv.reset(seed=0)
    procs = list(venv._procs)
    with pytest.raises(WorkerError, match=r"(?s)env worker 1 \(env 1\) raised during 'step'.*AssertionError"):
        venv.step(np.array([0, 7]))  # 7 is no CartPole action
    assert all(p.exitcode is not None for p in procs) and not mp.active_children()
    with pytest.raises(WorkerError, match="closed"):
        venv.step(np.array([0, 0]))


def test_build_error_surfaces():
    with pytest.raises(WorkerError, match=r"(?s)env worker 0 \(env 0\) raised during 'start'.*NoSuchEnvXyz"):
        make_vector_env("NoSuchEnvXyz-v0", 1, vector="subprocess")
    assert not mp.active_children()


def test_next_step_refused_before_any_worker_starts():
    with pytest.raises(ValueError, match="NextStep"):
        SubprocVectorEnv([_cartpole], AutoresetMode.NEXT_STEP)
    assert not mp.active_children()


def test_factory_vector_validation():
    with pytest.raises(ValueError, match=r"env.vector must be one of \['sync', 'subprocess'\], got 'threads'"):
        make_vector_env("CartPole-v1", 1, vector="threads")
    with pytest.raises(ValueError, match="env.vector must be one of"):
        make_from_config({"name": "CartPole-v1", "n_envs": 1, "vector": "async"}, seed=0)
    with pytest.raises(ValueError, match="envpool.*env.vector=subprocess"):
        make_vector_env("hopper-medium-v2", 1, vector="subprocess", backend="envpool")
    avoid = make_vector_env("avoiding-m5", 2, {"multi_step": {"n_action_steps": 2}}, vector="subprocess")
    assert type(avoid).__name__ == "AvoidVectorEnv"  # the batched env wins over subprocesses


def test_config_keys_build_it():
    venv = make_from_config({"name": "CartPole-v1", "n_envs": 3, "vector": "subprocess", "n_workers": 3}, seed=0)
    try:
        assert isinstance(venv, SubprocVectorEnv) and venv.sizes == [1, 1, 1]
        obs, _ = venv.reset(seed=0)
        assert obs.shape == (3, 4)
    finally:
        venv.close()


def test_merged_infos_fill_masked_rows_as_sync_does():
    """Rows without the key repeat the first valid row of all envs (a worker fills from its own block)."""
    blocks = [{"final_obs": {"state": np.array([[10.0], [10.0]])}, "_final_obs": np.array([True, False])},
              {"final_obs": {"state": np.array([[40.0], [40.0]])}, "_final_obs": np.array([False, True])},
              {}]
    out = merge_infos(blocks, [2, 2, 1])
    np.testing.assert_array_equal(out["_final_obs"], [True, False, False, True, False])
    np.testing.assert_array_equal(out["final_obs"]["state"][:, 0], [10, 10, 10, 40, 10])


def test_rollout_over_subprocesses_matches_sync():
    """The runners' rollout (final values, next observations, full observations) sees the same numbers."""
    def act(cond):
        a = tf.tanh(cond["state"][:, -1:, :1] * 3.0)  # (N, 1, 1) from the latest obs: deterministic
        return tf.concat([a, -a], axis=1), None

    def values(cond):
        return tf.reduce_sum(cond["state"], axis=[1, 2])

    out = {}
    for vector in ("sync", "subprocess"):
        venv = make_vector_env("Pendulum-v1", 3, PENDULUM_CHUNKS, seed=1, vector=vector, autoreset_mode="SameStep",
                               n_workers=2)
        obs, _ = venv.reset(seed=1)
        out[vector] = rollout(venv, act, obs, np.ones(3, np.float32), 7, 2, values, keep_next_obs=True)
        venv.close()
    assert out["sync"]["reset_after"].any()
    assert out["sync"].keys() == out["subprocess"].keys() and out["sync"]["full_obs"] is not None
    for k, v in out["sync"].items():
        if v is None:
            assert out["subprocess"][k] is None
        else:
            assert_same(v, out["subprocess"][k])
