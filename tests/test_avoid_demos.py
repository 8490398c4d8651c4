"""Scripted Avoid demonstrator and the M1/M2/M3 datasets."""

import numpy as np
import pytest

from dppo.data.normalization import Normalization, unnormalize
from dppo.data.npz import load_npz
from dppo.datagen.avoid import (
    DEAD_ZONE,
    M_SETS,
    MAX_STEP,
    SAFETY_MARGIN,
    cli,
    env_labels,
    generate_demos,
    select_demos,
    smoothstep_path,
    write_avoid_datasets,
)
from dppo.envs.avoid import START_XY, AvoidBatch, clearance, filter_label, label_modes

M_COMBOS = [(1, 2, 5), (1, 2, 6), (1, 2, 7), (1, 2, 8)]
OTHER_COMBOS = [(0, 2, 5), (1, 3, 6), (1, 4, 8), (0, 4, 7)]


@pytest.fixture(scope="module")
def demos():
    return generate_demos(per_combo=2, seed=3, combos=M_COMBOS + OTHER_COMBOS)


def test_smoothstep_path_is_vertical_at_knots():
    f = smoothstep_path([0.0, 1.0, 3.0], [0.5, 0.3, 0.7])
    np.testing.assert_allclose(f(np.array([0.0, 1.0, 3.0])), [0.5, 0.3, 0.7])
    np.testing.assert_allclose(f(0.5), 0.4)  # smoothstep(0.5) = 0.5
    for knot in (1.0, 3.0):
        assert abs(f(knot) - f(knot - 1e-4)) < 1e-6  # zero slope at the knot
    assert f(-1.0) == 0.5 and f(5.0) == 0.7
    with pytest.raises(ValueError):
        smoothstep_path([0.0, 0.0], [0.1, 0.2])


def test_demos_follow_the_recipe(demos):
    assert [d.combo for d in demos] == [c for c in M_COMBOS + OTHER_COMBOS for _ in range(2)]
    for d in demos:
        np.testing.assert_allclose(d.desired[0], START_XY)
        np.testing.assert_allclose(d.tcp[0], START_XY)
        a = d.actions
        eps = 1e-12  # actions are differences of logged desired positions: float rounding
        assert (np.abs(a[:, 0]) <= MAX_STEP + eps).all()
        assert (a[:, 1] >= 0).all() and (a[:, 1] <= MAX_STEP + eps).all()
        nz = np.abs(a[a != 0])
        assert nz.min() >= DEAD_ZONE - 1e-12  # gamepad dead zone: nothing in (0, 0.005)
        assert clearance(d.tcp).min() >= SAFETY_MARGIN
        assert d.tcp[-1, 1] > 0.4 and (d.tcp[:, 0] > 0.2).all() and (d.tcp[:, 0] < 0.8).all()
        assert label_modes(d.tcp) == d.combo
        assert 55 <= len(d.desired) <= 150
        # replaying the actions through the env reproduces the TCP path and the intended labels
        env = AvoidBatch(1)
        tcp = [env.tcp[0].copy()]
        for step in a:
            env.step(step[None])
            tcp.append(env.tcp[0].copy())
        np.testing.assert_allclose(np.array(tcp), d.tcp, atol=1e-12)
        assert env_labels(env.mode_bits[0]) == d.combo
        # transitions: obs_t = [desired_t, tcp_t], action_t = desired_{t+1} - desired_t, last state dropped
        tr = d.transitions()
        assert tr["states"].shape == (len(d.desired) - 1, 4) and tr["actions"].shape == (len(d.desired) - 1, 2)
        np.testing.assert_allclose(tr["states"][1:, :2] - tr["states"][:-1, :2], tr["actions"][:-1], atol=1e-15)
    # idle start (zero actions) exists in some demos, and x-components are often exactly zero
    acts = np.concatenate([d.actions for d in demos])
    assert 0.2 < np.mean(acts[:, 0] == 0) < 0.8


def test_generation_is_seeded():
    a = generate_demos(per_combo=1, seed=11, combos=[(0, 3, 7)])
    b = generate_demos(per_combo=1, seed=11, combos=[(0, 3, 7)])
    c = generate_demos(per_combo=1, seed=12, combos=[(0, 3, 7)])
    np.testing.assert_array_equal(a[0].desired, b[0].desired)
    assert a[0].desired.shape != c[0].desired.shape or not np.allclose(a[0].desired, c[0].desired)
    with pytest.raises(ValueError):
        generate_demos(per_combo=1, combos=[(0, 5, 7)])


def test_m_sets_keep_exactly_their_two_modes(demos):
    for name, b3 in [("avoid_m1", 6), ("avoid_m2", 7), ("avoid_m3", 8)]:
        kept = select_demos(demos, M_SETS[name])
        assert sorted({d.combo for d in kept}) == [(1, 2, 5), (1, 2, b3)]
        assert len(kept) == 4
        for d in kept:
            bits = filter_label(d.transitions()["states"][:, :2])
            assert bits[1] and bits[2] and (bits[5] or bits[b3])


def test_written_datasets_round_trip(demos, tmp_path):
    sets = write_avoid_datasets(demos, tmp_path, plots=False)
    assert set(sets) == {"avoid_m1", "avoid_m2", "avoid_m3", "avoid_all"}
    for name, subset in sets.items():
        data = load_npz(tmp_path / name / "train.npz", obs_dim=4, action_dim=2)
        norm = Normalization.load(tmp_path / name / "normalization.npz")
        raw = [d.transitions() for d in subset]
        assert data["traj_lengths"].tolist() == [len(t["actions"]) for t in raw]
        states, actions = np.concatenate([t["states"] for t in raw]), np.concatenate([t["actions"] for t in raw])
        # zero-initialised min/max quirk: x minimum is 0 (not ~0.23) and the y action minimum is 0
        assert norm.obs_min[0] == 0 and norm.obs_min[2] == 0 and norm.action_min[1] == 0
        np.testing.assert_allclose(norm.obs_max, states.max(axis=0), rtol=1e-6)
        np.testing.assert_allclose(norm.action_min[0], actions[:, 0].min(), rtol=1e-6)
        assert np.abs(data["states"]).max() <= 1 + 1e-5 and np.abs(data["actions"]).max() <= 1 + 1e-5
        # (the reference's +1e-6 in the normalising denominator makes the inverse off by ~1e-6 of the range)
        np.testing.assert_allclose(unnormalize(data["states"], norm.obs_min, norm.obs_max), states, atol=3e-6)
        np.testing.assert_allclose(unnormalize(data["actions"], norm.action_min, norm.action_max), actions,
                                   atol=3e-6)
        with np.load(tmp_path / name / "raw.npz") as f:
            assert f["n_states"].sum() == len(f["desired"]) == len(states) + len(subset)


def test_cli_prints_statistics(tmp_path, capsys):
    cli(["--out", str(tmp_path), "--per-combo", "1", "--seed", "1", "--no-plots"])
    out = capsys.readouterr().out
    for text in ("first-try acceptance", "fraction of zero x-components", "avoid_m1 (d56_r12): 2 demos",
                 "avoid_all (all demos): 24 demos", "obs_min", "original"):
        assert text in out
    for name in ("avoid_m1", "avoid_m2", "avoid_m3", "avoid_all"):
        assert (tmp_path / name / "train.npz").is_file() and (tmp_path / name / "normalization.npz").is_file()
