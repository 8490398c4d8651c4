"""Scripted demonstrations for the D3IL Avoid task and DPPO's M1/M2/M3 datasets.

D3IL's 96 human gamepad demonstrations (4 per each of the 24 paths) are replaced by a scripted
demonstrator driven through :class:`dppo.envs.avoid.AvoidEnv`, so the desired point, the TCP tracker,
collisions and mode labels are exactly the env's:

1. gap x-targets at the three rows = the demos' measured mean x of the chosen bits + N(0, 0.015)
   (rows 1, 2) / N(0, 0.012) (row 3); end target y ~ U(0.42, 0.47) at the row-3 x shifted by the demos'
   mean drift (end x means 0.267 / 0.408 / 0.566 / 0.698 for bits 5-8) + N(0, 0.01);
2. reference path x(y) = smoothstep blend between knots (start, rows 1-3, end): vertical at every row, so
   the lateral moves happen between rows, as the humans do;
3. U{0..7} idle steps, then until the desired y reaches the end: forward speed 0.0125 U(0.8, 1), lateral
   command closed-loop on the desired point (forward speed shrunk by 0.8x until |ax| <= 0.0125), plus an
   Ornstein-Uhlenbeck jitter (0.85, sd 0.0015), clipped to [-0.0125, 0.0125] x [0, 0.0125], gamepad dead
   zone (|component| < 0.005 -> 0; an all-zero command becomes ay = 0.005); then U{0..3} idle steps;
4. rejected and redrawn when the TCP comes within 0.003 of a collision distance, the env's mode labels
   differ from the intended combination, the final TCP y <= 0.4 or the TCP x leaves [0.2, 0.8].

Transitions as D3IL/DPPO build them: obs_t = [desired_t, tcp_t], action_t = desired_{t+1} - desired_t,
t = 0..T-2 over the T logged states (the last state is dropped). M-sets use DPPO's filter
(``filter_d3il_avoid_data.py``: M1 d56_r12, M2 d57_r12, M3 d58_r12) on the desired xy of the observation
rows; all kept demos go into ``train.npz`` (no validation split), normalised with the zero-initialised
min/max of the reference **[quirk kept: it sets the published normalisation]**.

Run ``python -m dppo.datagen.avoid --out data/d3il`` (or ``dppo data avoid``); it writes
``<out>/avoid_{m1,m2,m3,all}/{train.npz, normalization.npz, raw.npz, trajs.png}`` and prints statistics
next to the original dataset's. ``--images [--image-size 32]`` then writes the pixel sets
``<out>/avoid_{m1,m2,m3}_img`` from them (:func:`write_avoid_image_dataset`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dppo.data.normalization import Normalization, minmax, normalize, unnormalize
from dppo.data.npz import load_npz, write_dataset
from dppo.envs.avoid import (
    L1_Y,
    L2_Y,
    L3_Y,
    ROW_BITS,
    START_XY,
    X_BOUNDS,
    AvoidEnv,
    clearance,
    filter_keep,
    parse_filter_mode,
)

# measured on the 96 released demos: mean TCP x when each row is crossed, per bit
GAP_X_MEAN = {0: 0.424, 1: 0.587, 2: 0.345, 3: 0.497, 4: 0.659, 5: 0.282, 6: 0.424, 7: 0.572, 8: 0.723}
END_X_MEAN = {5: 0.267, 6: 0.408, 7: 0.566, 8: 0.698}  # mean final x per row-3 bit
ROW_X_STD = (0.015, 0.015, 0.012)
END_X_STD = 0.01
END_Y_RANGE = (0.42, 0.47)
MAX_STEP = 0.0125  # gamepad saturation per axis
DEAD_ZONE = 0.005
SPEED_RANGE = (0.8, 1.0)
OU_DECAY, OU_STD = 0.85, 0.0015
IDLE_START_MAX, IDLE_END_MAX = 7, 3
SAFETY_MARGIN = 0.003
FINAL_Y_MIN = 0.4
MAX_MOVING_STEPS = 400

ALL_COMBOS = tuple((b1, b2, b3) for b1 in ROW_BITS[0] for b2 in ROW_BITS[1] for b3 in ROW_BITS[2])
M_SETS = {"avoid_m1": "d56_r12", "avoid_m2": "d57_r12", "avoid_m3": "d58_r12"}

# the original data (DPPO's M1/M2/M3 sets of D3IL's 96 demos and all of them), printed beside ours
ORIGINAL_STATS = {
    "avoid_m1": {"demos": 8, "transitions": 571, "lengths": "67-91",
                 "obs_min": [0, -0.27974, 0, -0.28194], "obs_max": [0.59942, 0.47532, 0.60219, 0.46474],
                 "action_min": [-0.0125, 0], "action_max": [0.00935, 0.0125]},
    "avoid_m2": {"demos": 8, "transitions": 622, "lengths": "67-91",
                 "obs_min": [0, -0.27974, 0, -0.28194], "obs_max": [0.60330, 0.47532, 0.60578, 0.47726],
                 "action_min": [-0.0125, 0], "action_max": [0.0125, 0.0125]},
    "avoid_m3": {"demos": 8, "transitions": 685, "lengths": "67-102",
                 "obs_min": [0, -0.27974, 0, -0.28194], "obs_max": [0.82192, 0.47532, 0.75607, 0.47134],
                 "action_min": [-0.0125, 0], "action_max": [0.0125, 0.0125]},
    "avoid_all": {"demos": 96, "transitions": 7305, "lengths": "60-106",
                  "obs_min": [0, -0.27974, 0, -0.28246], "obs_max": [0.82474, 0.48715, 0.77085, 0.48838],
                  "action_min": [-0.0125, 0], "action_max": [0.0125, 0.0125]},
}


@dataclass
class AvoidDemo:
    """One demonstration: the logged desired and TCP xy (T, 2) each, T = number of actions + 1."""

    combo: tuple[int, int, int]
    desired: np.ndarray
    tcp: np.ndarray
    attempts: int = 1
    rejections: list[str] = field(default_factory=list)

    @property
    def actions(self) -> np.ndarray:
        return np.diff(self.desired, axis=0)

    def transitions(self) -> dict[str, np.ndarray]:
        """{"states": [desired_t, tcp_t] (T-1, 4), "actions": desired_{t+1} - desired_t (T-1, 2)}."""
        return {"states": np.concatenate([self.desired[:-1], self.tcp[:-1]], axis=1),
                "actions": self.actions}


def smoothstep_path(knots_y: np.ndarray, knots_x: np.ndarray):
    """x(y) through the knots with a smoothstep blend per segment (flat, i.e. vertical, at every knot).

    ``knots_y`` must increase; y outside the knots is clamped to the first/last knot.
    """
    ky = np.asarray(knots_y, dtype=np.float64)
    kx = np.asarray(knots_x, dtype=np.float64)
    if np.any(np.diff(ky) <= 0):
        raise ValueError(f"knot y values must increase, got {ky}")

    def x_of(y):
        y = np.clip(y, ky[0], ky[-1])
        i = np.clip(np.searchsorted(ky, y, side="right") - 1, 0, len(ky) - 2)
        u = (y - ky[i]) / (ky[i + 1] - ky[i])
        return kx[i] + (kx[i + 1] - kx[i]) * (3.0 * u**2 - 2.0 * u**3)

    return x_of


def env_labels(mode_bits: np.ndarray) -> tuple[int, int, int]:
    """The env's 9 mode bits -> the bit set per row (-1 where none)."""
    out = []
    for row in ROW_BITS:
        set_bits = [b for b in row if mode_bits[b]]
        out.append(set_bits[0] if len(set_bits) == 1 else -1)
    return out[0], out[1], out[2]


def _attempt(combo: tuple[int, int, int], rng: np.random.Generator, env: AvoidEnv) -> tuple[AvoidDemo, str]:
    """One scripted run through ``combo``; returns the demo and "" or the reason to reject it."""
    b1, b2, b3 = combo
    gap_x = [GAP_X_MEAN[b] + rng.normal(0.0, s) for b, s in zip(combo, ROW_X_STD)]
    y_end = rng.uniform(*END_Y_RANGE)
    x_end = gap_x[2] + (END_X_MEAN[b3] - GAP_X_MEAN[b3]) + rng.normal(0.0, END_X_STD)
    path = smoothstep_path([START_XY[1], L1_Y, L2_Y, L3_Y, y_end], [START_XY[0], *gap_x, x_end])

    env.reset()
    desired, tcp = [env.desired], [env.tcp]

    def act(a: np.ndarray) -> None:
        env.step(a)
        desired.append(env.desired)
        tcp.append(env.tcp)

    zero = np.zeros(2)
    for _ in range(rng.integers(0, IDLE_START_MAX + 1)):
        act(zero)
    jitter = np.zeros(2)
    for _ in range(MAX_MOVING_STEPS):
        d = desired[-1]
        if d[1] >= y_end:
            break
        vy = MAX_STEP * rng.uniform(*SPEED_RANGE)
        ax = path(d[1] + vy) - d[0]
        for _ in range(30):  # slow down until the lateral correction fits the gamepad range
            if abs(ax) <= MAX_STEP:
                break
            vy *= 0.8
            ax = path(d[1] + vy) - d[0]
        jitter = OU_DECAY * jitter + rng.normal(0.0, OU_STD, size=2)
        a = np.array([ax, vy]) + jitter
        a = np.clip(a, [-MAX_STEP, 0.0], [MAX_STEP, MAX_STEP])
        a[np.abs(a) < DEAD_ZONE] = 0.0
        if not a.any():
            a[1] = DEAD_ZONE  # never stall
        act(a)
    for _ in range(rng.integers(0, IDLE_END_MAX + 1)):
        act(zero)

    demo = AvoidDemo(tuple(combo), np.array(desired), np.array(tcp))
    if clearance(demo.tcp).min() < SAFETY_MARGIN:
        return demo, "too close to a pillar"
    if env_labels(env.mode_bits) != tuple(combo):
        return demo, "wrong env labels"
    if demo.tcp[-1, 1] <= FINAL_Y_MIN:
        return demo, "final y <= 0.4"
    if (demo.tcp[:, 0] < X_BOUNDS[0]).any() or (demo.tcp[:, 0] > X_BOUNDS[1]).any():
        return demo, "x outside [0.2, 0.8]"
    return demo, ""


def generate_demo(combo: tuple[int, int, int], rng: np.random.Generator, tracker: str = "second_order",
                  max_attempts: int = 100) -> AvoidDemo:
    """An accepted scripted demo through ``combo`` (bits per row), redrawing rejected attempts."""
    if tuple(combo) not in ALL_COMBOS:
        raise ValueError(f"combo must be (row-1 bit, row-2 bit, row-3 bit) in {ROW_BITS}, got {combo}")
    env = AvoidEnv(stale_obs=False, tracker=tracker)
    rejections = []
    for attempt in range(1, max_attempts + 1):
        demo, reason = _attempt(combo, rng, env)
        if not reason:
            demo.attempts, demo.rejections = attempt, rejections
            return demo
        rejections.append(reason)
    raise RuntimeError(f"no acceptable demo for combo {combo} in {max_attempts} attempts: "
                       f"{Counter(rejections).most_common()}")


def generate_demos(per_combo: int = 4, seed: int = 0, combos=ALL_COMBOS,
                   tracker: str = "second_order") -> list[AvoidDemo]:
    """``per_combo`` demos for each combination (default: all 24, i.e. 96 demos like D3IL), seeded."""
    rng = np.random.default_rng(seed)
    return [generate_demo(combo, rng, tracker) for combo in combos for _ in range(per_combo)]


def select_demos(demos: list[AvoidDemo], mode: str) -> list[AvoidDemo]:
    """The demos DPPO's filter keeps for a config ``mode`` string such as "d56_r12"."""
    desired, required, avoid = parse_filter_mode(mode)
    return [d for d in demos if filter_keep(d.transitions()["states"][:, :2], desired, required, avoid)]


def write_avoid_datasets(demos: list[AvoidDemo], out: str | Path, plots: bool = True) -> dict[str, list]:
    """Write avoid_m1/m2/m3 (filtered) and avoid_all under ``out``; returns {set name: its demos}.

    Each folder gets ``train.npz`` + ``normalization.npz`` (shared writer, zero-inclusive min/max),
    ``raw.npz`` (logged desired/tcp xy back to back, ``n_states`` per demo, ``combos``) and, with
    ``plots``, ``trajs.png`` (TCP paths, like the reference's filter script).
    """
    out = Path(out)
    sets = {name: select_demos(demos, mode) for name, mode in M_SETS.items()}
    sets["avoid_all"] = list(demos)
    for name, subset in sets.items():
        if not subset:
            raise RuntimeError(f"{name}: the filter kept no demo (generate more per combination)")
        write_dataset(out / name, [d.transitions() for d in subset], include_zero=True)
        np.savez_compressed(out / name / "raw.npz",
                            desired=np.concatenate([d.desired for d in subset]),
                            tcp=np.concatenate([d.tcp for d in subset]),
                            n_states=np.array([len(d.desired) for d in subset]),
                            combos=np.array([d.combo for d in subset]))
        if plots:
            from dppo.viz.trajectories import save_avoid_plot

            save_avoid_plot(out / name / "trajs.png", [d.tcp for d in subset],
                            title=f"{name} ({len(subset)} scripted demos, TCP)")
    return sets


def write_avoid_image_dataset(src: str | Path, out: str | Path, image_size: int = 32) -> Path:
    """The pixel version of an Avoid dataset folder ``src`` (``train.npz`` + ``normalization.npz``) in ``out``.

    ``states`` = the desired xy (the "proprio"), normalised to [-1, 1] with its own zero-inclusive min/max (like
    the state sets); ``images`` uint8 (N, 3, H, W) = ``render_avoid_topdown`` of the raw TCP xy; ``actions`` and
    ``traj_lengths`` copied unchanged. ``normalization.npz`` holds the 2-D obs min/max and the source's action
    min/max, so the ``avoid_image`` + ``d3il_lowdim`` wrappers reproduce these inputs in the env.
    """
    from dppo.envs.raster import render_avoid_topdown

    src, out = Path(src), Path(out)
    data = load_npz(src / "train.npz", obs_dim=4)
    norm = Normalization.load(src / "normalization.npz")
    raw = unnormalize(data["states"].astype(np.float64), norm.obs_min, norm.obs_max)
    desired, tcp = raw[:, :2], raw[:, 2:4]
    lo, hi = minmax(desired, include_zero=True)
    img_norm = Normalization(lo, hi, norm.action_min, norm.action_max)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "train.npz", states=normalize(desired, lo, hi).astype(np.float32),
                        actions=data["actions"], traj_lengths=data["traj_lengths"],
                        images=render_avoid_topdown(tcp, size=image_size).astype(np.uint8))
    img_norm.save(out / "normalization.npz")
    return out / "train.npz"


# ---------------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:8.5f}" for x in np.asarray(v, dtype=np.float64)) + "]"


def print_statistics(demos: list[AvoidDemo], sets: dict[str, list], out: Path | None = None) -> None:
    n = len(demos)
    first_try = sum(d.attempts == 1 for d in demos)
    total_attempts = sum(d.attempts for d in demos)
    reasons = Counter(r for d in demos for r in d.rejections)
    print(f"scripted Avoid demos: {n} accepted, {total_attempts} attempts; first-try acceptance "
          f"{first_try}/{n} = {first_try / n:.1%} (the recipe's prototype: 96%); rejections: "
          f"{dict(reasons.most_common()) or 'none'}")
    combo_counts = Counter(d.combo for d in demos)
    print("demos per combination (row1, row2, row3 bits):")
    line = []
    for i, combo in enumerate(ALL_COMBOS):
        line.append(f"{combo}: {combo_counts.get(combo, 0)}")
        if i % 6 == 5:
            print("   " + "  ".join(line))
            line = []
    if line:
        print("   " + "  ".join(line))
    bit_counts = Counter(b for d in demos for b in d.combo)
    print("demos per mode bit: " + "  ".join(f"{b}: {bit_counts.get(b, 0)}" for b in range(9)))
    n_states = np.array([len(d.desired) for d in demos])
    acts = np.concatenate([d.actions for d in demos])
    print(f"logged states per demo: min {n_states.min()} mean {n_states.mean():.1f} max {n_states.max()} "
          f"(std {n_states.std():.1f}; original 61 / 77.1 / 107, std 12.0); total states {n_states.sum()}, "
          f"transitions {len(acts)} (original 7401 / 7305)")
    print(f"actions: x in [{acts[:, 0].min():.5f}, {acts[:, 0].max():.5f}], y in [{acts[:, 1].min():.5f}, "
          f"{acts[:, 1].max():.5f}] (original [-0.0125, 0.0125] x [0, 0.0125])")
    nz = np.abs(acts[acts != 0])
    sat = MAX_STEP - 1e-9  # actions are differences of logged positions: allow float rounding
    print(f"fraction of zero x-components {np.mean(acts[:, 0] == 0):.1%} (original 44%), all-zero steps "
          f"{np.mean((acts == 0).all(axis=1)):.1%} (10%), y saturated {np.mean(acts[:, 1] >= sat):.1%} "
          f"(48%), |x| saturated {np.mean(np.abs(acts[:, 0]) >= sat):.1%} (7%), smallest non-zero "
          f"|component| {nz.min():.5f} (0.005), mean desired step {np.linalg.norm(acts, axis=1).mean():.4f} "
          f"(0.0117)")
    min_clear = min(float(clearance(d.tcp).min()) for d in demos)
    print(f"minimum TCP clearance to a collision distance: {min_clear:.4f} (original 0.0019)")
    for name, subset in sets.items():
        orig = ORIGINAL_STATS[name]
        lengths = np.array([len(d.actions) for d in subset])
        combos = Counter(d.combo for d in subset)
        print(f"\n{name} ({M_SETS.get(name, 'all demos')}): {len(subset)} demos (original {orig['demos']}), "
              f"{lengths.sum()} transitions (original {orig['transitions']}), transitions per demo "
              f"{lengths.min()}-{lengths.max()} (original {orig['lengths']}); combinations "
              f"{dict(sorted(combos.items()))}")
        if out is not None:
            with np.load(Path(out) / name / "normalization.npz") as f:
                norm = {k: f[k] for k in f.files}
            for key in ("obs_min", "obs_max", "action_min", "action_max"):
                print(f"   {key:10s} ours {_fmt(norm[key])}   original {_fmt(orig[key])}")


def cli(argv: list[str] | None = None) -> None:
    """``dppo data avoid``: generate the scripted Avoid demos and write the M1/M2/M3/all datasets."""
    p = argparse.ArgumentParser(prog="dppo data avoid", description=cli.__doc__)
    p.add_argument("--out", default="data/d3il", help="output folder (default data/d3il)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--per-combo", type=int, default=4,
                   help="demos per each of the 24 gap combinations (default 4 = D3IL's 96 demos)")
    p.add_argument("--tracker", default="second_order", choices=("second_order", "delay", "perfect"),
                   help="TCP tracking model of the env (default second_order)")
    p.add_argument("--no-plots", action="store_true", help="do not draw trajs.png per dataset")
    p.add_argument("--images", action="store_true",
                   help="instead, write the pixel sets <out>/avoid_m{1,2,3}_img from the existing <out>/avoid_m{1,2,3}")
    p.add_argument("--image-size", type=int, default=32, help="raster size of --images (default 32)")
    args = p.parse_args(argv)
    if args.per_combo < 1:
        p.error("--per-combo must be >= 1")
    if args.images:
        if args.image_size < 8:
            p.error("--image-size must be >= 8")
        for name in M_SETS:
            path = write_avoid_image_dataset(Path(args.out) / name, Path(args.out) / f"{name}_img", args.image_size)
            with np.load(path) as f:
                print(f"wrote {path}: states {f['states'].shape}, images {f['images'].shape} {f['images'].dtype}, "
                      f"{len(f['traj_lengths'])} trajectories")
        return
    demos = generate_demos(args.per_combo, args.seed, tracker=args.tracker)
    out = Path(args.out)
    sets = write_avoid_datasets(demos, out, plots=not args.no_plots)
    print_statistics(demos, sets, out)
    print(f"\nwrote {', '.join(str(out / name) for name in sets)} (train.npz, normalization.npz, raw.npz"
          f"{'' if args.no_plots else ', trajs.png'})")


if __name__ == "__main__":
    cli()
