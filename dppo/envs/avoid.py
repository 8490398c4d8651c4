"""D3IL "Avoiding" task as DPPO fine-tunes on it (Avoid M1/M2/M3), as a pure-NumPy kinematic stand-in.

The original is a MuJoCo Panda arm with a rod hanging from the hand that must pass three rows of pillars
(1 + 2 + 3 pillars, 2 x 3 x 4 = 24 paths) travelling in +y; DPPO uses the authors' fork (allenzren/d3il)
whose env id ``avoiding-m5`` rewards one particular row-3 gap. This module keeps everything the policy,
the reward and the plots can see (see ``spec/avoid-task.md``):

* geometry: six pillars, collision when the TCP xy distance to a pillar centre is below r + 0.01
  (0.04 for the first pillar, 0.035 for the others); the collided flag is sticky for the episode;
* start at (0.524928, -0.279737), deterministic reset, obs = [previous desired xy, TCP xy] (raw, not
  normalised: the generic ``d3il_lowdim`` wrapper normalises), action = unclipped delta of the desired xy;
* reward from the **pre-step** TCP and the **pre-step** mode bits: -0.1 for ever after a collision,
  -0.1 when x is outside [0.2, 0.8], otherwise [bit ``reward_mode_bit`` set] + [y > 0.4];
* mode bits: rows 1 and 2 decided at the first post-step TCP within 0.03 of the row, row 3 at the first
  TCP with y >= 0.26, each row latched. **[quirk kept]** the last row-3 branch of the reference tests
  ``x > 0.35`` instead of ``x > 0.65``; because of the else-if order this only adds bit 8 at exactly
  x = 0.5 and x = 0.65, which a continuous path never hits, so there is no switch for it;
* **[quirk kept, switchable]** ``stale_obs=True`` (default): step returns the observation read *before*
  the move ([d_k, c_k]), one step stale, as the fork does; ``stale_obs=False`` returns [d_{k+1}, c_{k+1}];
* episodes never terminate by themselves (DPPO's MultiStep wrapper truncates at 100 env steps).

What the MuJoCo arm does and this port does not: the tracking controller. ``tracker`` picks the model of
spec section 3: ``"second_order"`` (default; spec choice (b), v <- 0.2 (d - c) + 0.7 v, c <- c + v, mean
open-loop error 1.55 cm against the demos), ``"delay"`` (choice (a): the TCP reaches the previous set-point,
1.65 cm) or ``"perfect"`` (c = d, 1.96 cm). ``pillars`` says what a pillar does to the rod: ``"slide"``
(default) stops it at the surface like MuJoCo's contact, keeping the motion along the surface (no friction), and
the contact is seen by the next step's collision test as MuJoCo's contact list would show it; ``"freeze"`` holds
the TCP where the contact was detected; ``"pass"`` lets it through (the port's earlier behaviour). The reward
is the same until the first contact and -0.1 afterwards in every mode; only the states after a contact differ,
which is what the critic sees (in "pass" mode a collided rollout can travel on to the finish line). z,
orientation and the arm's reach are not modelled.

DPPO's success definition
-------------------------
The MultiStep wrapper sums the rewards of the ``act_steps = 4`` env steps of each chunk. Per episode
best = max over chunks of (chunk sum / 4) and an episode is a success when best >= 2
(``best_reward_threshold_for_success: 2``): some full chunk with no collision so far, x inside [0.2, 0.8],
**row 3 passed through the bit-5 gap** (x < 0.35, the far "top" side) and y > 0.4. Only bit 5 counts
because every setting fine-tunes with ``avoiding-m5``; a rollout that reaches the finish line through any
other row-3 gap earns at most 1 per step and is *not* a success. That explains DPPO issue #52, where
evaluating avoid_m1 printed 0 % success while the plotted rollouts clearly reached the goal (through the
bit-6 gap the M1 demonstrations also contain). :func:`episode_metrics` reports both numbers: ``success``
(DPPO's definition) and ``reached_goal`` (y > 0.4 through any gap).

Public API: :class:`AvoidEnv` (gymnasium env, ids ``avoiding-m5/m6/m7/m8/v0`` registered on import),
:class:`AvoidBatch` (the same dynamics for N envs at once, arrays in and out; the env is a batch of one),
:func:`label_modes`, :func:`filter_label`, :func:`filter_keep`, :func:`parse_filter_mode`,
:func:`clearance`, :func:`in_collision`, :func:`episode_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# ---------------------------------------------------------------------------------------------------------
# Geometry (computed with the reference's own expressions so boundary comparisons match bit for bit)
LEVEL_DISTANCE = 0.18
OBSTACLE_OFFSET = 0.075
L1_Y = -0.1
L2_Y = -0.1 + LEVEL_DISTANCE
L3_Y = -0.1 + 2 * LEVEL_DISTANCE
L1_X = 0.5
L2_TOP_X = 0.5 - OBSTACLE_OFFSET
L2_BOTTOM_X = 0.5 + OBSTACLE_OFFSET
L3_TOP_X = 0.5 - 2 * OBSTACLE_OFFSET
L3_MID_X = 0.5
L3_BOTTOM_X = 0.5 + 2 * OBSTACLE_OFFSET

PILLAR_NAMES = ("l1_obs", "l2_top_obs", "l2_bottom_obs", "l3_top_obs", "l3_mid_obs", "l3_bottom_obs")
PILLAR_XY = np.array([
    [L1_X, L1_Y],
    [L2_TOP_X, L2_Y], [L2_BOTTOM_X, L2_Y],
    [L3_TOP_X, L3_Y], [L3_MID_X, L3_Y], [L3_BOTTOM_X, L3_Y],
])
PILLAR_RADIUS = np.array([0.03, 0.025, 0.025, 0.025, 0.025, 0.025])
ROD_RADIUS = 0.01
COLLISION_DIST = PILLAR_RADIUS + ROD_RADIUS  # 0.04 for l1, 0.035 for the others

START_XY = np.array([0.524928, -0.279737])  # TCP after the reset settles (every demo starts here)
X_BOUNDS = (0.2, 0.8)  # reward penalises TCP x outside
FINISH_Y = 0.4  # DPPO's finish line (D3IL's own success line is y > 0.35)
D3IL_GOAL_Y = -0.1 + 2.5 * LEVEL_DISTANCE  # 0.35, D3IL's own success line (context only)
ENV_ROW_TOL = 0.03  # env rule: rows 1/2 decided within +-0.03 of the row
FILTER_ROW_TOL = 0.01  # DPPO filter script: +-0.01
OUT_PENALTY = -0.1

N_BITS = 9
ROW_BITS = ((0, 1), (2, 3, 4), (5, 6, 7, 8))
TRACKERS = ("second_order", "delay", "perfect")
PILLAR_MODES = ("slide", "freeze", "pass")
ENV_IDS = {"avoiding-m5": 5, "avoiding-m6": 6, "avoiding-m7": 7, "avoiding-m8": 8, "avoiding-v0": None}


# ---------------------------------------------------------------------------------------------------------
# Pure functions shared by the env, the batch, the demonstrator and the plots
def clearance(xy: np.ndarray) -> np.ndarray:
    """Distance of TCP point(s) ``xy`` (..., 2) to each pillar minus its collision distance: (..., 6).

    Negative means the rod penetrates that pillar.
    """
    xy = np.asarray(xy, dtype=np.float64)
    d = np.linalg.norm(xy[..., None, :] - PILLAR_XY, axis=-1)
    return d - COLLISION_DIST


def push_out_of_pillars(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move points (N, 2) that are inside a pillar's collision distance radially onto its boundary (the
    frictionless contact of a rod sliding along the pillar); returns them and which ones were moved (N,)."""
    d = xy[:, None, :] - PILLAR_XY  # (N, 6, 2)
    dist = np.linalg.norm(d, axis=-1)
    inside = dist < COLLISION_DIST
    touched = inside.any(axis=1)
    if not touched.any():
        return xy, touched
    j = np.argmax(inside, axis=1)  # pillars are far apart: a point is inside at most one
    rows = np.flatnonzero(touched)
    out = xy.copy()
    offset = d[rows, j[rows]] / np.maximum(dist[rows, j[rows]], 1e-12)[:, None]
    out[rows] = PILLAR_XY[j[rows]] + offset * COLLISION_DIST[j[rows]][:, None]
    return out, touched


def in_collision(xy: np.ndarray) -> np.ndarray:
    """True where the TCP (..., 2) is closer than r + 0.01 to some pillar centre (a MuJoCo contact)."""
    return (clearance(xy) < 0.0).any(axis=-1)


def _row_windows(y: np.ndarray, tol: float) -> np.ndarray:
    """Which rows a point at travel coordinate ``y`` (...) is crossing: (..., 3) bool.

    Rows 1 and 2 within ``tol`` of the row (env rule 0.03, filter script 0.01), row 3 at y >= 0.26; the
    comparisons are written as in the reference's ``check_mode``.
    """
    return np.stack([
        (y - tol <= L1_Y) & (L1_Y <= y + tol),
        (y - tol <= L2_Y) & (L2_Y <= y + tol),
        y >= L3_Y,
    ], axis=-1)


def _bit_candidates(x: np.ndarray) -> np.ndarray:
    """Which bit each row would set at TCP x (...): (..., 9) bool, boundary values set none.

    Row 3 follows the reference's chain `if x < 0.35: 5` / `if 0.35 < x < 0.5: 6 elif 0.5 < x < 0.65: 7
    elif x > 0.35: 8`, whose last test should read 0.65 **[quirk]**: bit 8 also fires at exactly 0.5/0.65.
    """
    b6 = (L3_TOP_X < x) & (x < L3_MID_X)
    b7 = ~b6 & (L3_MID_X < x) & (x < L3_BOTTOM_X)
    b8 = ~b6 & ~b7 & (x > L3_TOP_X)
    return np.stack([
        x < L1_X, x > L1_X,
        x < L2_TOP_X, (L2_TOP_X < x) & (x < L2_BOTTOM_X), x > L2_BOTTOM_X,
        x < L3_TOP_X, b6, b7, b8,
    ], axis=-1)


_BIT_ROW = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])


def _update_mode_bits(bits: np.ndarray, passed: np.ndarray, xy: np.ndarray) -> None:
    """Env labelling rule, in place: bits (N, 9), passed (N, 3), post-step TCP xy (N, 2)."""
    deciding = _row_windows(xy[:, 1], ENV_ROW_TOL) & ~passed  # (N, 3)
    if deciding.any():
        bits |= _bit_candidates(xy[:, 0]) & deciding[:, _BIT_ROW]
        passed |= deciding


def label_modes(xy: np.ndarray) -> tuple[int, int, int]:
    """Bits the env rule sets per row for a TCP path ``xy`` (T, 2), in order; -1 for an undecided row.

    A row is decided at the first point within 0.03 of it (rows 1, 2) or with y >= 0.26 (row 3) and
    latched; a point exactly on a boundary (x = 0.5 in row 1, ...) decides the row without a bit (-1).
    Equivalent to feeding the points one by one to the env's update.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    rows, cand = _row_windows(xy[:, 1], ENV_ROW_TOL), _bit_candidates(xy[:, 0])
    out = []
    for r, row_bits in enumerate(ROW_BITS):
        hit = np.flatnonzero(rows[:, r])
        if len(hit) == 0:
            out.append(-1)
            continue
        chosen = [b for b in row_bits if cand[hit[0], b]]
        out.append(chosen[0] if chosen else -1)
    return out[0], out[1], out[2]


def filter_label(desired_xy: np.ndarray) -> np.ndarray:
    """Bits (9,) bool set by *some* row of a demo under DPPO's dataset filter rule.

    ``desired_xy`` (T, 2) are the observation rows' columns 0-1 (the desired position); tolerance +-0.01
    around rows 1-2, any point with y >= 0.26 counts for row 3, no latching.
    """
    xy = np.asarray(desired_xy, dtype=np.float64).reshape(-1, 2)
    rows, cand = _row_windows(xy[:, 1], FILTER_ROW_TOL), _bit_candidates(xy[:, 0])
    return (cand & rows[:, _BIT_ROW]).any(axis=0)


def parse_filter_mode(mode: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Config ``mode`` string -> (desired, required, avoid) bits: "d57_r12" -> ((5, 7), (1, 2), ()).

    Parts are ``d<bits>`` (desired, at least one must appear), ``r<bits>`` (all must appear) and
    ``a<bits>`` (none may appear), separated by underscores.
    """
    desired: tuple[int, ...] = ()
    required: tuple[int, ...] = ()
    avoid: tuple[int, ...] = ()
    for part in mode.split("_"):
        if len(part) < 2 or part[0] not in "dra" or not part[1:].isdigit():
            raise ValueError(f"bad avoid filter mode {mode!r}: expected parts like 'd57', 'r12', 'a3'")
        bits = tuple(int(c) for c in part[1:])
        if part[0] == "d":
            desired = bits
        elif part[0] == "r":
            required = bits
        else:
            avoid = bits
    if not desired:
        raise ValueError(f"avoid filter mode {mode!r} names no desired bits (a 'd..' part)")
    return desired, required, avoid


def filter_keep(desired_xy: np.ndarray, desired: Sequence[int], required: Sequence[int] = (),
                avoid: Sequence[int] = ()) -> bool:
    """DPPO's ``filter_d3il_avoid_data.py`` decision for one demo (observation rows' desired xy)."""
    bits = filter_label(desired_xy)
    return bool(any(bits[b] for b in desired) and all(bits[b] for b in required)
                and not any(bits[b] for b in avoid))


def episode_metrics(rewards: np.ndarray, tcp: np.ndarray | None = None, act_steps: int = 4,
                    success_threshold: float = 2.0) -> dict:
    """Per-episode metrics as DPPO computes them, plus what the plots show.

    ``rewards`` (T,) are the env-step rewards of one episode; chunks are consecutive groups of
    ``act_steps`` (a trailing partial chunk counts as one chunk, like an episode ending mid-chunk).
    ``best_reward`` = max chunk sum / act_steps and ``success`` = best_reward >= threshold (DPPO; for
    avoiding-m5 that means bit 5 and y > 0.4 for a whole chunk). With the TCP path ``tcp`` (T', 2) also:
    ``reached_goal`` (y > 0.4 at some point, any gap), ``collision`` (some point inside a pillar's
    collision distance) and ``modes`` (:func:`label_modes`).
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    n_chunks = -(-len(r) // act_steps)
    padded = np.zeros(n_chunks * act_steps)
    padded[:len(r)] = r
    chunk = padded.reshape(n_chunks, act_steps).sum(axis=1)
    best = float(chunk.max() / act_steps) if n_chunks else 0.0
    out = {"episode_reward": float(r.sum()), "best_reward": best, "success": best >= success_threshold}
    if tcp is not None:
        tcp = np.asarray(tcp, dtype=np.float64).reshape(-1, 2)
        out["reached_goal"] = bool((tcp[:, 1] > FINISH_Y).any())
        out["collision"] = bool(in_collision(tcp).any())
        out["modes"] = label_modes(tcp)
    return out


# ---------------------------------------------------------------------------------------------------------
class AvoidBatch:
    """N independent Avoid envs stepped together with NumPy; the single source of the task's dynamics.

    ``reset()`` -> obs (N, 4) float32; ``step(actions (N, 2))`` -> obs (N, 4), reward (N,), terminated (N,)
    (always False), truncated (N,) (``elapsed >= max_episode_steps`` when that is set), info dict of arrays
    ``mode_bits`` (N, 9) bool, ``collided`` (N,), ``reached_goal`` (N,), ``tcp`` (N, 2), ``desired`` (N, 2).
    No auto-reset: call ``reset(mask)`` for the envs to restart. Arguments as :class:`AvoidEnv`.
    """

    def __init__(self, n_envs: int = 1, reward_mode_bit: int | None = 5, stale_obs: bool = True,
                 tracker: str = "second_order", max_episode_steps: int | None = None,
                 pillars: str = "slide", tracker_gains: tuple[float, float] = (0.2, 0.7)):
        if tracker not in TRACKERS:
            raise ValueError(f"tracker must be one of {TRACKERS}, got {tracker!r}")
        if reward_mode_bit is not None and not 0 <= int(reward_mode_bit) < N_BITS:
            raise ValueError(f"reward_mode_bit must be in 0..8 or None, got {reward_mode_bit}")
        self.n_envs = int(n_envs)
        self.reward_mode_bit = None if reward_mode_bit is None else int(reward_mode_bit)
        self.stale_obs = bool(stale_obs)
        self.tracker = tracker
        self.max_episode_steps = max_episode_steps
        if pillars not in PILLAR_MODES:
            raise ValueError(f"pillars must be one of {PILLAR_MODES}, got {pillars!r}")
        self.pillars = pillars
        self.kp, self.damping = map(float, tracker_gains)
        n = self.n_envs
        self.desired = np.zeros((n, 2))
        self.tcp = np.zeros((n, 2))
        self.vel = np.zeros((n, 2))
        self.collided = np.zeros(n, dtype=bool)
        self.touching = np.zeros(n, dtype=bool)  # "slide": the rod rests against a pillar after the last move
        self.passed = np.zeros((n, 3), dtype=bool)
        self.mode_bits = np.zeros((n, N_BITS), dtype=bool)
        self.reached_goal = np.zeros(n, dtype=bool)
        self.elapsed = np.zeros(n, dtype=np.int64)
        self.reset()

    def observe(self) -> np.ndarray:
        """Current [desired xy, TCP xy] (N, 4) float32 (the reset observation, or the unstale one)."""
        return np.concatenate([self.desired, self.tcp], axis=1).astype(np.float32)

    def reset(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Reset all envs (or those where ``mask`` is True) to the fixed start; returns obs of all envs."""
        m = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self.desired[m] = START_XY  # the fork sets "previous desired" := TCP at reset
        self.tcp[m] = START_XY
        self.vel[m] = 0.0
        self.collided[m] = False
        self.touching[m] = False
        self.passed[m] = False
        self.mode_bits[m] = False
        self.reached_goal[m] = False
        self.elapsed[m] = 0
        return self.observe()

    def info(self) -> dict[str, np.ndarray]:
        return {"mode_bits": self.mode_bits.copy(), "collided": self.collided.copy(),
                "reached_goal": self.reached_goal.copy(), "tcp": self.tcp.copy(),
                "desired": self.desired.copy()}

    def step(self, actions: np.ndarray, with_info: bool = True):
        """Advance every env one step; ``with_info=False`` leaves out the info dict (4-tuple)."""
        a = np.asarray(actions, dtype=np.float64).reshape(self.n_envs, 2)
        d, c = self.desired, self.tcp
        obs_pre = self.observe()
        # reward from the pre-step TCP, pre-step contacts and pre-step mode bits (fork's order)
        self.collided |= in_collision(c) | self.touching
        x, y = c[:, 0], c[:, 1]
        gain = (y > FINISH_Y).astype(np.float64)
        if self.reward_mode_bit is not None:
            gain += self.mode_bits[:, self.reward_mode_bit]
        reward = np.where(self.collided | (x < X_BOUNDS[0]) | (x > X_BOUNDS[1]), OUT_PENALTY, gain)
        # new set-point: previous desired + unclipped delta; then the arm moves for 35 ms
        d_new = d + a
        if self.tracker == "second_order":
            v_new = self.kp * (d_new - c) + self.damping * self.vel
            c_new = c + v_new
        elif self.tracker == "delay":
            c_new, v_new = d.copy(), d - c
        else:
            c_new, v_new = d_new.copy(), d_new - c
        if self.pillars == "freeze":  # the contact was detected on c: the pillar holds the rod there
            c_new[self.collided], v_new[self.collided] = c[self.collided], 0.0
        elif self.pillars == "slide":
            c_new, self.touching = push_out_of_pillars(c_new)
            v_new = np.where(self.touching[:, None], c_new - c, v_new)  # the normal velocity is stopped
        self.tcp, self.vel, self.desired = c_new, v_new, d_new
        _update_mode_bits(self.mode_bits, self.passed, c_new)
        self.reached_goal |= c_new[:, 1] > FINISH_Y
        self.elapsed += 1
        obs = obs_pre if self.stale_obs else self.observe()
        terminated = np.zeros(self.n_envs, dtype=bool)
        if self.max_episode_steps is None:
            truncated = np.zeros(self.n_envs, dtype=bool)
        else:
            truncated = self.elapsed >= self.max_episode_steps
        if not with_info:
            return obs, reward, terminated, truncated
        return obs, reward, terminated, truncated, self.info()


class AvoidEnv(gym.Env):
    """D3IL Avoiding task, ``avoiding-m5`` semantics by default (see the module docstring).

    Args:
        reward_mode_bit: row-3 bit that earns +1 (5 = avoiding-m5 ... 8 = m8); None = avoiding-v0 (only
            the finish line pays).
        stale_obs: return the pre-step observation from ``step`` (reference behaviour, default).
        tracker: TCP model, "second_order" (default), "delay" or "perfect" (spec section 3).
        max_episode_steps: truncate after this many steps; None (default) never ends an episode (DPPO's
            MultiStep wrapper truncates at 100).
        pillars: what a pillar does to the rod: "slide" (default: stopped at the surface, free to move
            along it), "freeze" (held where the contact was detected) or "pass" (no effect on the motion).
            The reward is the same in every mode.
        tracker_gains: (kp, damping) of the second-order tracker.

    Observation: float32 [previous desired x, y, TCP x, y], raw units. Action: delta of the desired xy,
    raw units, never clipped; the declared box is the reference's +-0.01, which demonstrations exceed
    (their steps reach 0.0125), so do not clip to it.
    """

    metadata = {"render_modes": []}

    def __init__(self, reward_mode_bit: int | None = 5, stale_obs: bool = True, tracker: str = "second_order",
                 max_episode_steps: int | None = None, pillars: str = "slide",
                 tracker_gains: tuple[float, float] = (0.2, 0.7), render_mode: str | None = None):
        super().__init__()
        self.sim = AvoidBatch(1, reward_mode_bit=reward_mode_bit, stale_obs=stale_obs, tracker=tracker,
                              max_episode_steps=max_episode_steps, pillars=pillars,
                              tracker_gains=tracker_gains)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Box(-0.01, 0.01, shape=(2,), dtype=np.float32)

    # read-only views of the state (single env)
    @property
    def desired(self) -> np.ndarray:
        return self.sim.desired[0].copy()

    @property
    def tcp(self) -> np.ndarray:
        return self.sim.tcp[0].copy()

    @property
    def mode_bits(self) -> np.ndarray:
        return self.sim.mode_bits[0].copy()

    @property
    def collided(self) -> bool:
        return bool(self.sim.collided[0])

    def _info(self) -> dict:
        sim = self.sim
        return {"mode_bits": sim.mode_bits[0].copy(), "collided": bool(sim.collided[0]),
                "reached_goal": bool(sim.reached_goal[0]), "tcp": sim.tcp[0].copy(),
                "desired": sim.desired[0].copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # the task has no randomness; seeding only sets self.np_random
        obs = self.sim.reset()[0]
        return obs, self._info()

    def step(self, action):
        obs, reward, _, truncated = self.sim.step(np.asarray(action, dtype=np.float64).reshape(1, 2),
                                                  with_info=False)
        return obs[0], float(reward[0]), False, bool(truncated[0]), self._info()


def register_envs() -> None:
    """Register ``avoiding-m5/m6/m7/m8/v0`` (idempotent)."""
    for env_id, bit in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="dppo.envs.avoid:AvoidEnv", kwargs={"reward_mode_bit": bit})


register_envs()


def paths_with_tcp(desired_paths: Sequence[np.ndarray], tracker: str = "second_order",
                   tracker_gains: tuple[float, float] = (0.2, 0.7), **_) -> list[np.ndarray]:
    """[desired xy, TCP xy] (T, 4) paths from desired-only (T, 2) paths starting at a reset, for pixel runs whose
    state is the desired point only: the TCP is a deterministic function of the set-points, so it is replayed
    with the tracker. Row j's TCP follows row j's desired one step, which holds with stale observations too
    (their first two rows repeat the reset, and a zero step from rest stays put)."""
    out = []
    for p in desired_paths:
        p = np.asarray(p, dtype=np.float64)[:, :2]
        sim = AvoidBatch(1, tracker=tracker, tracker_gains=tuple(tracker_gains))
        sim.desired[:] = p[0]
        sim.tcp[:] = p[0]
        tcp = [p[0]]
        for a in np.diff(p, axis=0):
            sim.step(a[None], with_info=False)
            tcp.append(sim.tcp[0].copy())
        out.append(np.concatenate([p, np.array(tcp)], axis=1))
    return out


def summarize_paths(states: Sequence[np.ndarray]) -> dict[str, float]:
    """Rates over raw rollout paths (T, 4) = [desired xy, TCP xy]: reached_goal (TCP y > 0.4 through any gap),
    collision, and the frequency of each row-3 gap (``mode5`` ... ``mode8``, ``mode_none`` if row 3 was not
    crossed)."""
    counts = {"reached_goal": 0, "collision": 0, **{f"mode{b}": 0 for b in (5, 6, 7, 8)}, "mode_none": 0}
    for s in states:
        tcp = np.asarray(s)[:, 2:4]
        counts["reached_goal"] += int((tcp[:, 1] > FINISH_Y).any())
        counts["collision"] += int(in_collision(tcp).any())
        row3 = label_modes(tcp)[2]
        counts[f"mode{row3}" if row3 >= 5 else "mode_none"] += 1
    return {k: v / max(len(states), 1) for k, v in counts.items()}
