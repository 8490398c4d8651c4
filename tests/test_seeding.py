"""Random streams: independent across seeds and purposes, exactly reproducible for one (seed, purpose)."""

import numpy as np
import pytest
import tensorflow as tf

from dppo.utils.seeding import np_stream, philox_key, tf_stream

N, WINDOW = 4096, 4


def windows(x: np.ndarray) -> set[bytes]:
    return {x[i:i + WINDOW].tobytes() for i in range(len(x) - WINDOW + 1)}


def test_tf_from_seed_streams_of_consecutive_seeds_are_shifted_copies():
    """Why the project does not use ``Generator.from_seed``: the seed lands in Philox's counter."""
    a = tf.random.Generator.from_seed(0).normal((64,)).numpy()
    b = tf.random.Generator.from_seed(1).normal((64,)).numpy()
    np.testing.assert_array_equal(a[4:], b[:60])


def test_streams_of_different_seeds_and_purposes_share_no_subsequence():
    streams = {(s, p): tf_stream(s, p).normal((N,)).numpy() for s in (0, 1, 2) for p in ("sampling", "shuffle")}
    streams["numpy"] = np_stream(0, "sampling").standard_normal(N).astype(np.float32)
    seen: dict[bytes, object] = {}
    for name, x in streams.items():
        for w in windows(x):
            assert seen.setdefault(w, name) == name, f"{name} repeats a run of {seen[w]}"
    assert len({philox_key(s, p) for s in range(100) for p in ("sampling", "training", "shuffle")}) == 300


def test_one_seed_reproduces_exactly_and_restores_from_its_state():
    g1, g2 = tf_stream(7, "training"), tf_stream(7, "training")
    np.testing.assert_array_equal(g1.normal((100,)).numpy(), g2.normal((100,)).numpy())
    state = g1.state.numpy()
    ahead = g1.uniform((50,)).numpy()
    g2.reset(state)
    np.testing.assert_array_equal(g2.uniform((50,)).numpy(), ahead)
    with pytest.raises(ValueError, match="non-negative"):
        tf_stream(-1, "sampling")


def test_diffusion_policies_of_neighbouring_seeds_draw_unrelated_noise():
    from dppo.nets.diffusion_mlp import DiffusionMLP
    from dppo.policies.diffusion import DiffusionModel

    def noise(seed):
        m = DiffusionModel(DiffusionMLP(2, 2, 3, time_dim=8, mlp_dims=[8, 8]), 2, 3, 2, denoising_steps=3, seed=seed)
        return m.rng.normal((256,)).numpy(), m.train_rng.normal((256,)).numpy()

    (s0, t0), (s1, _) = noise(0), noise(1)
    assert not windows(s0) & windows(s1)
    assert not windows(s0) & windows(t0)  # rollout noise and pre-training noise are separate streams
