"""D3IL Avoid env: geometry, reward timing, mode labels, quirks, registration."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dppo.data.normalization import normalize
from dppo.envs.avoid import (
    COLLISION_DIST,
    PILLAR_XY,
    START_XY,
    AvoidBatch,
    AvoidEnv,
    clearance,
    episode_metrics,
    filter_keep,
    filter_label,
    in_collision,
    label_modes,
    parse_filter_mode,
    push_out_of_pillars,
    register_envs,
)

# DPPO's M-set obs min/max and the normalised initial observation
REFERENCE_NORM = {
    "m1": ([0, -0.27974, 0, -0.28194], [0.59942, 0.47532, 0.60219, 0.46474], [0.75145, -0.99999, 0.74340, -0.99410]),
    "m2": ([0, -0.27974, 0, -0.28194], [0.60330, 0.47532, 0.60578, 0.47726], [0.74019, -0.99999, 0.73306, -0.99420]),
    "m3": ([0, -0.27974, 0, -0.28194], [0.82192, 0.47532, 0.75607, 0.47134], [0.27732, -0.99999, 0.38857, -0.99415]),
}

# a collision-free path through bits (1, 2, 5) with the "perfect" tracker (TCP = desired)
WAYPOINTS_125 = np.array([[0.587, -0.10], [0.345, 0.08], [0.28, 0.30], [0.28, 0.45]])


def _run(env, waypoints, n_idle):
    """Jump to each waypoint with one (unclipped) action, then idle; returns rewards, obs list, TCP path."""
    obs0, info = env.reset(seed=0)
    pos = START_XY.copy()
    rewards, obs, tcp = [], [obs0], [info["tcp"]]
    actions = [w - p for p, w in zip(np.vstack([pos, waypoints[:-1]]), waypoints)] + [np.zeros(2)] * n_idle
    for a in actions:
        o, r, term, trunc, info = env.step(a)
        assert not term and not trunc
        rewards.append(r)
        obs.append(o)
        tcp.append(info["tcp"])
    return np.array(rewards), obs, np.array(tcp), info


def test_reset_observation_and_reference_normalised_vectors():
    env = AvoidEnv()
    obs, info = env.reset(seed=123)
    assert obs.dtype == np.float32 and obs.shape == (4,)
    np.testing.assert_allclose(obs, [0.524928, -0.279737, 0.524928, -0.279737], atol=1e-7)
    for lo, hi, expected in REFERENCE_NORM.values():
        np.testing.assert_allclose(normalize(obs.astype(np.float64), np.array(lo), np.array(hi)), expected,
                                   atol=2e-5)
    assert not info["mode_bits"].any() and not info["collided"] and not info["reached_goal"]


def test_collision_distance_is_r_plus_rod_radius():
    # first pillar (r 0.03): 0.04; the others (r 0.025): 0.035
    l1, l2_top = np.array([0.5, -0.1]), np.array([0.425, 0.08])
    assert in_collision(l1 + [0.039, 0.0])
    assert not in_collision(l1 + [0.0405, 0.0])
    assert not in_collision(l2_top + [0.0, 0.036])
    assert in_collision(l2_top + [0.0, 0.0345])
    assert in_collision(np.array([0.65, 0.26]) + [0.0247, 0.0247])  # diagonal, |d| = 0.0349
    # through the env: a hand-placed TCP 0.038 from l1 collides, 0.038 from l3_mid does not
    for xy, hit in [(l1 + [0.0, 0.038], True), (np.array([0.5, 0.26]) + [0.038, 0.0], False)]:
        env = AvoidEnv(tracker="perfect")
        env.reset()
        env.sim.tcp[0] = env.sim.desired[0] = xy
        _, r, *_ , info = env.step(np.zeros(2))
        assert info["collided"] == hit
        assert r == (-0.1 if hit else 0.0)


def test_collision_is_sticky_until_reset():
    env = AvoidEnv(tracker="perfect")
    env.reset()
    # straight up from the start at x = 0.525 passes 0.025 from the first pillar's centre
    rewards = []
    for _ in range(70):
        _, r, _, _, info = env.step(np.array([0.0, 0.0125]))
        rewards.append(r)
    assert info["collided"] and info["tcp"][1] > 0.5  # passed through and beyond the finish line
    first = rewards.index(-0.1)
    assert all(r == -0.1 for r in rewards[first:])  # permanent, even far from the pillar and past y 0.4
    _, info = env.reset()
    assert not info["collided"]
    _, r, *_ = env.step(np.zeros(2))
    assert r == 0.0


def test_x_outside_workspace_penalised_per_step_only():
    env = AvoidEnv(tracker="perfect")
    env.reset()
    env.sim.tcp[0] = env.sim.desired[0] = [0.19, 0.45]  # out of [0.2, 0.8] but past the finish line
    r = [env.step(np.array([0.01, 0.0]))[1] for _ in range(3)]
    # x 0.19 -> penalty although y > 0.4; then x 0.2 is inside (strict test) and pays 2: the first move
    # decided row 3 at x 0.2 < 0.35 (bit 5) and y > 0.4
    assert r == [-0.1, 2.0, 2.0]
    env.reset()
    env.sim.tcp[0] = env.sim.desired[0] = [0.805, 0.0]
    r = [env.step(np.array([-0.01, 0.0]))[1] for _ in range(2)]
    assert r == [-0.1, 0.0]
    assert not env.collided


@pytest.mark.parametrize("env_id, expected", [
    ("avoiding-m5", [0, 0, 0, 1, 2, 2, 2, 2]),
    ("avoiding-m6", [0, 0, 0, 0, 1, 1, 1, 1]),
    ("avoiding-v0", [0, 0, 0, 0, 1, 1, 1, 1]),
])
def test_reward_uses_pre_step_tcp_and_pre_step_bits(env_id, expected):
    env = gym.make(env_id, tracker="perfect").unwrapped
    rewards, _, tcp, info = _run(env, WAYPOINTS_125, n_idle=4)
    # post-step evaluation would give [0, 0, 1, 2, 2, 2, 2, 2] (return 11) under m5
    np.testing.assert_array_equal(rewards, expected)
    assert label_modes(tcp) == (1, 2, 5)
    np.testing.assert_array_equal(np.flatnonzero(info["mode_bits"]), [1, 2, 5])
    m = episode_metrics(rewards, tcp, act_steps=4)
    assert m["episode_reward"] == sum(expected)
    assert m["reached_goal"] and not m["collision"] and m["modes"] == (1, 2, 5)
    # DPPO success needs a whole chunk at 2 per step: only the bit-5 reward (m5) achieves it
    assert m["success"] == (env_id == "avoiding-m5")
    assert m["best_reward"] == (2.0 if env_id == "avoiding-m5" else 1.0)


def test_success_counts_only_bit5_gap():
    # reaching the goal through the bit-6 gap (DPPO issue #52): reached_goal but no success under m5
    env = AvoidEnv(tracker="perfect")
    wp = np.array([[0.587, -0.10], [0.345, 0.08], [0.424, 0.30], [0.424, 0.45]])
    rewards, _, tcp, _ = _run(env, wp, n_idle=8)
    m = episode_metrics(rewards, tcp)
    assert m["modes"] == (1, 2, 6) and m["reached_goal"] and not m["success"] and m["best_reward"] == 1.0


def test_stale_observation_flag():
    stale, fresh = AvoidEnv(tracker="perfect"), AvoidEnv(tracker="perfect", stale_obs=False)
    _, obs_s, tcp_s, _ = _run(stale, WAYPOINTS_125, n_idle=1)
    _, obs_f, tcp_f, _ = _run(fresh, WAYPOINTS_125, n_idle=1)
    np.testing.assert_array_equal(tcp_s, tcp_f)  # the flag changes only what is returned
    np.testing.assert_array_equal(obs_s[1], obs_s[0])  # first step returns the reset observation
    assert not np.allclose(obs_f[1], obs_f[0])
    for k in range(1, len(obs_s)):  # step k returns the state before it: [d_{k-1}, c_{k-1}]
        np.testing.assert_allclose(obs_s[k], obs_f[k - 1], atol=1e-7)
        np.testing.assert_allclose(obs_f[k][2:], tcp_f[k], atol=1e-7)


def test_trackers():
    a = np.array([0.01, 0.0125])
    second, delay = AvoidEnv(), AvoidEnv(tracker="delay")
    for env in (second, delay):
        env.reset()
    tcp2 = [second.step(a)[4]["tcp"] for _ in range(2)]
    tcpd = [delay.step(a)[4]["tcp"] for _ in range(2)]
    # v <- 0.2 (d - c) + 0.7 v ; c <- c + v
    np.testing.assert_allclose(tcp2[0], START_XY + [0.002, 0.0025], atol=1e-12)
    np.testing.assert_allclose(tcp2[1], START_XY + [0.007, 0.00875], atol=1e-12)
    # one-step delay: TCP reaches the set-point from before the step
    np.testing.assert_allclose(tcpd[0], START_XY, atol=1e-12)
    np.testing.assert_allclose(tcpd[1], START_XY + a, atol=1e-12)
    with pytest.raises(ValueError, match="tracker"):
        AvoidEnv(tracker="pid")


def _gap_path(xs, n=400):
    """Dense vertical-at-the-rows path through row x-targets xs (3,) ending at y = 0.45."""
    ky = np.array([START_XY[1], -0.1, 0.08, 0.26, 0.45])
    kx = np.array([START_XY[0], *xs, xs[-1]])
    y = np.linspace(ky[0], ky[-1], n)
    i = np.clip(np.searchsorted(ky, y, side="right") - 1, 0, 3)
    u = (y - ky[i]) / (ky[i + 1] - ky[i])
    return np.stack([kx[i] + (kx[i + 1] - kx[i]) * (3 * u**2 - 2 * u**3), y], axis=1)


GAP_X = {0: 0.424, 1: 0.587, 2: 0.345, 3: 0.497, 4: 0.659, 5: 0.282, 6: 0.424, 7: 0.572, 8: 0.723}


@pytest.mark.parametrize("b1", [0, 1])
@pytest.mark.parametrize("b2", [2, 3, 4])
def test_mode_labels_of_paths_through_each_gap(b1, b2):
    for b3 in (5, 6, 7, 8):
        path = _gap_path([GAP_X[b1], GAP_X[b2], GAP_X[b3]])
        assert label_modes(path) == (b1, b2, b3)
        bits = filter_label(path)
        np.testing.assert_array_equal(np.flatnonzero(bits), [b1, b2, b3])
        # the env, fed the same TCP points (perfect tracker), sets the same latched bits
        batch = AvoidBatch(1, tracker="perfect")
        for step in np.diff(path, axis=0):
            batch.step(step[None])
        np.testing.assert_array_equal(np.flatnonzero(batch.mode_bits[0]), [b1, b2, b3])
        assert not in_collision(path).any()


def test_rows_latch_for_env_but_not_for_filter():
    # decided at y = -0.12 on the left (bit 0, within the env's 0.03 window), then x crosses to the right
    # still inside the window; the filter (+-0.01 window, no latching) sees only the right side
    path = np.array([[0.45, -0.12], [0.55, -0.10], [0.55, -0.095]])
    assert label_modes(path)[0] == 0
    np.testing.assert_array_equal(np.flatnonzero(filter_label(path)), [1])
    # a row crossed on a boundary value decides the row without a bit
    assert label_modes(np.array([[0.5, -0.1], [0.45, -0.09]]))[0] == -1


@pytest.mark.parametrize("x, bit", [(0.34, 5), (0.35, -1), (0.425, 6), (0.5, 8), (0.57, 7), (0.65, 8),
                                    (0.7, 8)])
def test_row3_labels_and_065_quirk(x, bit):
    # the reference's last row-3 branch tests x > 0.35: x = 0.5 and x = 0.65 exactly give bit 8
    path = np.array([[x, 0.25], [x, 0.26], [0.3, 0.3]])  # decided at the first y >= 0.26, then latched
    assert label_modes(path)[2] == bit
    batch = AvoidBatch(1, tracker="perfect")
    batch.tcp[0] = batch.desired[0] = path[0]
    for step in np.diff(path, axis=0):
        batch.step(step[None])
    expected = [] if bit < 0 else [bit]
    np.testing.assert_array_equal(np.flatnonzero(batch.mode_bits[0, 5:]) + 5, expected)
    assert batch.passed[0, 2]


def test_filter_keep_and_mode_strings():
    assert parse_filter_mode("d57_r12") == ((5, 7), (1, 2), ())
    assert parse_filter_mode("d5_r12_a3") == ((5,), (1, 2), (3,))
    with pytest.raises(ValueError):
        parse_filter_mode("r12")
    with pytest.raises(ValueError):
        parse_filter_mode("d5x")
    path = _gap_path([GAP_X[1], GAP_X[2], GAP_X[7]])
    assert filter_keep(path, (5, 7), (1, 2)) and not filter_keep(path, (5, 6), (1, 2))
    assert not filter_keep(_gap_path([GAP_X[0], GAP_X[2], GAP_X[7]]), (5, 7), (1, 2))  # row 1 left
    assert not filter_keep(path, (5, 7), (1, 2), avoid=(2,))


def test_batch_matches_single_envs_and_truncation():
    rng = np.random.default_rng(0)
    actions = rng.uniform([-0.0125, 0.0], [0.0125, 0.0125], size=(30, 3, 2))
    batch = AvoidBatch(3, max_episode_steps=30)
    envs = [AvoidEnv(max_episode_steps=30) for _ in range(3)]
    for e in envs:
        e.reset()
    for t in range(30):
        obs, rew, term, trunc, info = batch.step(actions[t])
        for i, e in enumerate(envs):
            o, r, te, tr, inf = e.step(actions[t, i])
            np.testing.assert_array_equal(o, obs[i])
            assert r == rew[i] and te == term[i] == False and tr == trunc[i]  # noqa: E712
            np.testing.assert_array_equal(inf["mode_bits"], info["mode_bits"][i])
    assert trunc.all() and not term.any()
    obs = batch.reset(mask=np.array([True, False, False]))
    np.testing.assert_allclose(obs[0], np.r_[START_XY, START_XY], atol=1e-7)
    assert batch.elapsed.tolist() == [0, 30, 30]


def test_pillar_modes_after_a_head_on_contact():
    """Straight up +y from the start hits the first pillar (centre x 0.5, distance 0.04 to the TCP axis)."""
    ends = {}
    for mode in ("freeze", "slide", "pass"):
        env = AvoidEnv(tracker="perfect", pillars=mode)
        env.reset()
        rewards = []
        for _ in range(60):
            _, r, *_, info = env.step(np.array([0.0, 0.0125]))
            rewards.append(r)
        assert info["collided"] and rewards[-1] == pytest.approx(-0.1)
        ends[mode] = (info["tcp"], rewards)
    assert ends["freeze"][0][1] < -0.05  # held at the first pillar
    assert ends["pass"][0][1] > 0.3  # went through it
    tcp = ends["slide"][0]  # stopped at the surface: never inside, and (off-centre) slid around it
    assert np.linalg.norm(tcp - PILLAR_XY[0]) >= COLLISION_DIST[0] - 1e-9
    assert ends["slide"][1] == ends["pass"][1] == ends["freeze"][1]  # same rewards in every mode


def test_slide_keeps_the_tcp_out_of_every_pillar_and_reports_the_contact():
    rng = np.random.default_rng(0)
    batch = AvoidBatch(64, pillars="slide")
    for _ in range(100):
        batch.step(rng.uniform([-0.0125, 0.0], [0.0125, 0.0125], size=(64, 2)))
        assert (clearance(batch.tcp) >= -1e-9).all()
    touched = batch.touching.copy()
    batch.step(np.zeros((64, 2)))
    assert batch.collided[touched].all()  # a resting contact is a collision on the next step
    xy, moved = push_out_of_pillars(np.array([[0.5, -0.1 + 0.01], [0.2, 0.0]]))
    np.testing.assert_allclose(xy[0], PILLAR_XY[0] + [0.0, COLLISION_DIST[0]])
    assert moved.tolist() == [True, False] and xy[1].tolist() == [0.2, 0.0]


@pytest.mark.filterwarnings("ignore:.*infinity")  # the observation box is unbounded, as in the reference
def test_env_checker_and_registration():
    check_env(AvoidEnv(), skip_render_check=True)
    register_envs()  # idempotent
    for env_id, bit in [("avoiding-m5", 5), ("avoiding-m6", 6), ("avoiding-m7", 7), ("avoiding-m8", 8),
                        ("avoiding-v0", None)]:
        assert gym.spec(env_id).entry_point == "dppo.envs.avoid:AvoidEnv"
        env = gym.make(env_id)
        assert env.unwrapped.sim.reward_mode_bit == bit
        env.close()
