"""The per-task hook registry: tasks register their env maker, batched env and path summary; generic code asks by
env name."""

import gymnasium as gym
import numpy as np
import pytest

from dppo.envs import tasks
from dppo.envs.factory import make_env


def test_avoid_registers_its_hooks_when_first_asked():
    task = tasks.get("avoiding-m5")
    from dppo.envs.avoid import make_avoid_env, summarize_eval_paths
    from dppo.envs.avoid_vector import make_batched

    assert (task.make_env, task.batched, task.summarize) == (make_avoid_env, make_batched, summarize_eval_paths)
    assert tasks.get("avoiding-m7") is task  # one family: every avoiding-* id
    assert type(make_env("avoiding-m5")).__name__ == "AvoidEnv"


def test_names_of_no_family_are_gymnasium_ids():
    assert tasks.get("CartPole-v1") is None
    assert isinstance(make_env("CartPole-v1"), gym.Env)
    assert tasks.summary("CartPole-v1", [np.zeros((3, 4))]) == {}


def test_summary_of_avoid_paths_and_of_a_task_without_one():
    y = np.linspace(-0.28, 0.45, 60)
    straight_up = np.stack([np.full_like(y, 0.2), y], axis=1)  # desired xy only (pixel runs): TCP replayed
    s = tasks.summary("avoiding-m5", [straight_up], {"tracker": "perfect", "pillars": "slide"})
    assert s["reached_goal"] == 1.0 and s["collision"] == 0.0
    assert sum(s[k] for k in ("mode5", "mode6", "mode7", "mode8", "mode_none")) == pytest.approx(1.0)
    assert tasks.summary("avoiding-m5", []) == {}
    assert tasks.summary("hopper-medium-v2", [np.zeros((3, 11))]) == {}  # locomotion registers no summary


def test_register_merges_hooks_of_a_family(monkeypatch):
    monkeypatch.setitem(tasks.MODULES, "dppotoy", ())
    monkeypatch.setattr(tasks, "_REGISTRY", {})
    tasks.register("dppotoy", make_env=lambda name, **kw: name)
    tasks.register(["dppotoy"], summarize=lambda paths, kw: {"n": float(len(paths))})
    assert tasks.get("dppotoy-v0").make_env("x") == "x"
    assert tasks.summary("dppotoy-v0", [np.zeros(2)] * 3) == {"n": 3.0}
