"""Avoid trajectory figures (DPPO TrajPlotter / Fig. 7 style)."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from dppo.envs.avoid import PILLAR_XY
from dppo.viz.trajectories import TrajPlotter, plot_avoid, plot_avoid_grid, save_avoid_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), len(data)


def _trajs(n=3, t=50):
    y = np.linspace(-0.28, 0.45, t)
    return [np.stack([0.3 + 0.1 * i + 0.02 * np.sin(8 * y), y], axis=1) for i in range(n)]


def test_plot_avoid_draws_the_reference_elements():
    ax = Figure().add_subplot(1, 1, 1)
    plot_avoid(ax, _trajs(2), title="M2")
    assert ax.get_xlim() == (0.2, 0.8) and ax.get_ylim() == (-0.3, 0.5)
    assert ax.get_xlabel() == "X pos" and ax.get_ylabel() == "Y pos" and ax.get_title() == "M2"
    assert ax.get_aspect() == 1.0
    pillars = [p for p in ax.patches if isinstance(p, Circle)]
    assert len(pillars) == 6
    np.testing.assert_allclose(sorted(p.center for p in pillars), sorted(map(tuple, PILLAR_XY)))
    assert all(p.radius == 0.01 for p in pillars)
    lines = ax.get_lines()
    finish = [ln for ln in lines if np.allclose(ln.get_ydata(), 0.4)]
    assert len(finish) == 1
    np.testing.assert_allclose(finish[0].get_color(), np.array([31, 119, 180]) / 255)
    paths = [ln for ln in lines if ln not in finish]
    assert len(paths) == 2 and all(ln.get_color() == (0.3, 0.3, 0.3) for ln in paths)
    dots = ax.collections
    assert len(dots) == 2 and all(np.allclose(c.get_sizes(), 2) for c in dots)


def test_save_avoid_plot_writes_png(tmp_path):
    path = save_avoid_plot(tmp_path / "sub" / "avoid.png", _trajs(), title="demo")
    w, h, n = _png_size(path)
    assert n > 5000 and w > 100 and h > w  # taller than wide: y spans 0.8, x 0.6


def test_grid_and_trajplotter(tmp_path):
    panels = {(m, c): _trajs(2) for m in ("M1", "M2") for c in ("pre-trained", "fine-tuned", "Gaussian")}
    del panels[("M2", "Gaussian")]
    w, h, _ = _png_size(plot_avoid_grid(tmp_path / "grid.png", panels))
    w1, h1, _ = _png_size(plot_avoid_grid(tmp_path / "one.png", {("M1", "a"): _trajs(1)}))
    assert w > 2.5 * w1 and h > 1.7 * h1  # 2 rows x 3 columns
    # reference-compatible plotter: unnormalises obs and draws columns 0-1 of n_render envs
    lo, hi = np.array([0.0, -0.28, 0.0, -0.28]), np.array([0.6, 0.48, 0.6, 0.48])
    np.savez(tmp_path / "normalization.npz", obs_min=lo, obs_max=hi, action_min=np.zeros(2),
             action_max=np.ones(2))
    obs = np.random.default_rng(0).uniform(-1, 1, size=(101, 6, 4))
    plotter = TrajPlotter(env_type="avoid", normalization_path=str(tmp_path / "normalization.npz"), seed=0)
    out = plotter(obs_full_trajs=obs, n_render=3, max_episode_steps=100, render_dir=tmp_path, itr=7)
    assert out == tmp_path / "traj-7.png" and _png_size(out)[2] > 5000
    # without a seed the envs are drawn per itr: the same figure again for the same itr; a label names the file
    again = TrajPlotter(env_type="avoid", normalization_path=str(tmp_path / "normalization.npz"))
    a = again(obs_full_trajs=obs, n_render=3, max_episode_steps=100, render_dir=tmp_path / "a", itr=3).read_bytes()
    b = again(obs_full_trajs=obs, n_render=3, max_episode_steps=100, render_dir=tmp_path / "b", itr=3).read_bytes()
    assert a == b
    out = again(obs_full_trajs=obs, n_render=2, max_episode_steps=100, render_dir=tmp_path, itr="eval", title="x")
    assert out == tmp_path / "traj-eval.png"
    assert TrajPlotter(env_type="toy")(obs_full_trajs=obs, n_render=1, max_episode_steps=100,
                                       render_dir=tmp_path, itr=0) is None


def test_plot_cli_draws_curves_of_runs(tmp_path):
    from dppo.viz.curves import cli, read_metrics
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text(
            "step,env_steps,train/avg_episode_reward,eval/avg_episode_reward\n0,0,,1.5\n1,100,2.0,\n2,200,3.0,\n")
    m = read_metrics(tmp_path / "a" / "metrics.csv")
    assert np.isnan(m["train/avg_episode_reward"][0]) and m["eval/avg_episode_reward"][0] == 1.5
    out = cli([str(tmp_path / "c.png"), f"seed 0={tmp_path / 'a'}", f"seed 1={tmp_path / 'b' / 'metrics.csv'}"])
    assert out.stat().st_size > 1000
    with pytest.raises(SystemExit):
        cli([str(tmp_path / "d.png"), f"x={tmp_path / 'missing'}"])
