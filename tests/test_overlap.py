"""env.overlap: the split vector env steps like the unsplit one, and the pipelined rollout (one half's env step in a
worker thread while the policy samples for the other half) records exactly what the plain rollout records."""

import numpy as np
import tensorflow as tf
from test_envpool import assert_same, loco_norm, loco_wrappers  # noqa: F401 (fixture)

from dppo.envs import factory
from dppo.envs.split import SplitVectorEnv
from dppo.envs.vector import SyncVectorEnv
from dppo.runners.rollout import rollout


def envs(norm, n=5, overlap=False, **kw):
    return factory.make_vector_env("hopper-medium-v2", n, loco_wrappers(norm, **kw), seed=3, overlap=overlap)


def test_split_env_steps_like_the_unsplit_one(loco_norm):  # noqa: F811
    norm = loco_norm("hopper")
    one, two = envs(norm, max_steps=9, full=True), envs(norm, overlap=True, max_steps=9, full=True)
    assert isinstance(one, SyncVectorEnv) and isinstance(two, SplitVectorEnv) and two.sizes == [2, 3]
    assert two.num_envs == 5 and two.single_observation_space == one.single_observation_space
    assert_same(one.reset(seed=7)[0], two.reset(seed=7)[0], "reset")  # env i seeded 7 + i in both
    rng = np.random.default_rng(0)
    for t in range(12):
        a = rng.uniform(-1, 1, (5, 4, 3)).astype(np.float32)
        for what, x, y in zip(("obs", "reward", "terminated", "truncated", "info"), one.step(a), two.step(a)):
            assert_same(x, y, f"step {t} {what}")
    two.close()


def test_overlapped_rollout_records_what_the_plain_rollout_records(loco_norm):  # noqa: F811
    """A deterministic policy (actions and stored samples a fixed function of the observation) and a value
    function: obs, samples, rewards, flags, bootstrap values at the 9-step time limit, full observations."""
    norm = loco_norm("hopper")
    w = tf.constant(np.random.default_rng(1).uniform(-1, 1, (11, 12)).astype(np.float32))

    def act(cond):
        s = cond["state"][:, -1]
        chunk = tf.reshape(tf.tanh(s @ w), (-1, 4, 3))
        return chunk, tf.stack([chunk, 0.5 * chunk], axis=1)

    def value_fn(cond):
        assert cond["state"].shape[0] == 6  # always n_envs rows (one traced shape)
        return tf.reduce_sum(cond["state"][:, -1], axis=-1)

    out = {}
    for overlap in (False, True):
        venv = envs(norm, n=6, overlap=overlap, max_steps=9, full=True)
        obs, _ = venv.reset(seed=5)
        out[overlap] = rollout(venv, act, obs, np.ones(6, np.float32), 7, 4, value_fn)
        venv.close()
    assert out[True]["reset_after"].any()  # truncations at the time limit were bootstrapped
    for key in out[False]:
        assert_same(out[False][key], out[True][key], key)
