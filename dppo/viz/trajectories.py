"""Trajectory figures for the D3IL Avoid task (the style of DPPO's ``TrajPlotter`` and paper Fig. 7).

Each trajectory is drawn as grey (0.3, 0.3, 0.3) dots of size 2 joined by grey segments, with the finish
line y = 0.4 in matplotlib's default blue, the six pillars as black dots of radius 0.01 (a marker, not the
physical size), x in [0.2, 0.8], y in [-0.3, 0.5], equal aspect, labels "X pos" / "Y pos".

Figures are drawn on an Agg canvas without pyplot, so nothing here touches the global backend.
:class:`TrajPlotter` has the reference's call signature and can be named as ``train.plotter._target_``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from dppo.data.normalization import Normalization
from dppo.envs.avoid import FINISH_Y, PILLAR_XY

TRAJ_COLOR = (0.3, 0.3, 0.3)
FINISH_COLOR = tuple(np.array([31, 119, 180]) / 255)  # matplotlib's default blue "C0"
PILLAR_MARKER_RADIUS = 0.01
XLIM, YLIM = (0.2, 0.8), (-0.3, 0.5)


def plot_avoid(ax, trajectories: Sequence[np.ndarray], title: str | None = None, color=TRAJ_COLOR,
               max_steps: int | None = None) -> None:
    """Draw raw-xy trajectories (each (T, 2), or (T, >=2) using the first two columns) on ``ax``."""
    for traj in trajectories:
        xy = np.asarray(traj, dtype=np.float64)[:max_steps, :2]
        if len(xy) == 0:
            continue
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, linewidth=1.0, zorder=2)
        ax.scatter(xy[:, 0], xy[:, 1], s=2, marker="o", color=color, zorder=3)
    ax.axhline(y=FINISH_Y, color=FINISH_COLOR, linestyle="-", zorder=1)
    for xy in PILLAR_XY:
        ax.add_patch(Circle(tuple(xy), PILLAR_MARKER_RADIUS, color=(0.0, 0.0, 0.0), fill=True, zorder=4))
    ax.set_xlabel("X pos")
    ax.set_ylabel("Y pos")
    ax.set_xlim(XLIM)
    ax.set_ylim(YLIM)
    ax.set_aspect("equal", adjustable="box")
    ax.set_facecolor("white")
    if title:
        ax.set_title(title, fontsize=9)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi, facecolor="white")
    return path


def save_avoid_plot(path: str | Path, trajectories: Sequence[np.ndarray], title: str | None = None,
                    max_steps: int | None = None, dpi: int = 100) -> Path:
    """One Avoid panel saved as PNG at ``path`` (parents created); returns the path."""
    fig = Figure(figsize=(4.0, 5.0), dpi=dpi, layout="tight")
    plot_avoid(fig.add_subplot(1, 1, 1), trajectories, title=title, max_steps=max_steps)
    return _save(fig, path)


def plot_avoid_grid(path: str | Path, panels: Mapping[tuple[str, str], Sequence[np.ndarray]],
                    rows: Sequence[str] | None = None, cols: Sequence[str] | None = None,
                    max_steps: int | None = None, panel_size: tuple[float, float] = (2.6, 3.4),
                    dpi: int = 100) -> Path:
    """Multi-panel figure: ``panels[(row, col)]`` = trajectories; rows e.g. M-sets, cols policies/stages.

    Row and column order follow first appearance in ``panels`` unless ``rows``/``cols`` are given; a
    missing (row, col) panel stays empty. Row names label the y axis, column names title the top row.
    """
    rows = list(rows) if rows is not None else list(dict.fromkeys(r for r, _ in panels))
    cols = list(cols) if cols is not None else list(dict.fromkeys(c for _, c in panels))
    if not rows or not cols:
        raise ValueError("plot_avoid_grid needs at least one panel")
    fig = Figure(figsize=(panel_size[0] * len(cols), panel_size[1] * len(rows)), dpi=dpi, layout="tight")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = fig.add_subplot(len(rows), len(cols), i * len(cols) + j + 1)
            if (r, c) in panels:
                plot_avoid(ax, panels[(r, c)], title=c if i == 0 else None, max_steps=max_steps)
                if j == 0:
                    ax.set_ylabel(f"{r}\nY pos")
            else:
                ax.axis("off")
    return _save(fig, path)


class TrajPlotter:
    """Drop-in for the reference's ``env.plot_traj.TrajPlotter`` (env_type "avoid"), named by the configs'
    ``train.plotter`` (fine-tuning) and ``plotter`` (evaluation) blocks.

    ``TrajPlotter(env_type="avoid", normalization_path=...)`` then
    ``plotter(obs_full_trajs=(T, N_e, 4) normalised obs, n_render=10, max_episode_steps=100,
    render_dir=..., itr=0)`` unnormalises, plots the desired xy (columns 0-1) of ``n_render`` random envs
    for the first ``max_episode_steps`` rows and writes ``render_dir/traj-<itr>.png`` (``itr`` may also be a
    label such as "eval"), titled ``title`` when given. The envs are drawn with a generator seeded by ``seed``,
    or, without one, by ``itr`` (the same envs for an iteration after a resume). Other env types plot nothing.
    """

    def __init__(self, env_type: str = "avoid", normalization_path: str | None = None, seed: int | None = None):
        self.env_type = env_type
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.normalization = None
        if env_type == "avoid":
            if normalization_path is None:
                raise ValueError("TrajPlotter(env_type='avoid') needs normalization_path")
            self.normalization = Normalization.load(normalization_path)

    def __call__(self, obs_full_trajs: np.ndarray, n_render: int, max_episode_steps: int | None,
                 render_dir: str | Path, itr: int | str, title: str | None = None) -> Path | None:
        if self.env_type != "avoid":
            return None
        obs = self.normalization.unnormalize_obs(np.asarray(obs_full_trajs, dtype=np.float64))
        rng = self.rng if self.rng is not None else np.random.default_rng(itr if isinstance(itr, int) else 0)
        chosen = rng.choice(obs.shape[1], size=min(n_render, obs.shape[1]), replace=False)
        trajs = [obs[:max_episode_steps, i, :2] for i in chosen]
        return save_avoid_plot(Path(render_dir) / f"traj-{itr}.png", trajs, title=title)
