"""``dppo compare``: learning curves of several methods over seeds, and a table of final values with
stratified-bootstrap confidence intervals (``rliable``).

Each ``LABEL=RUN_GLOB`` names a method; the glob matches its run folders (each with ``metrics.csv``; a matched
``metrics.csv`` file counts as its folder). Runs are grouped into panels - one per task, by default the env name in
each run's ``config.yaml`` (``env.name``, else ``env_name``), or any dotted key with ``--panel KEY`` (``--panel
none``: one panel). Per panel and label:

* **curve**: every run's metric (default ``eval/avg_episode_reward``) against ``env_steps``, linearly interpolated
  on a common grid over the env steps all of the label's runs cover (runs of different lengths: the curve stops at
  the shortest, and a note says so); the line is the mean over runs, the band the std (``--band std``, default)
  or a 95% t-interval of the mean (``--band ci``);
* **final value** of a run: the mean of its last ``--last-k`` (default 3) points of the metric (its own last
  points, whatever its length); the table gives, over runs, the mean and the interquartile mean (IQM) with 95%
  stratified-bootstrap confidence intervals (``rliable.library.get_interval_estimates``, percentile method,
  ``--reps`` replications, fixed seed). Scores are not normalised, so no aggregate across tasks is reported.

The table is printed and written as Markdown next to the figure (``OUT.md`` for ``OUT.png``).
"""

from __future__ import annotations

import glob
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from dppo.utils.logging import read_metrics

log = logging.getLogger(__name__)

# the off-policy runners log the reference's wandb names; either spelling finds the column
ALIASES = {
    "eval/avg_episode_reward": ("avg episode reward - eval",),
    "eval/success_rate": ("success rate - eval",),
    "eval/avg_best_reward": ("avg best reward - eval",),
    "train/avg_episode_reward": ("avg episode reward - train",),
    "env_steps": ("total env step",),
}


class CompareError(ValueError):
    """A glob that matches no run, a metric no run has, a malformed argument: one line saying which."""


@dataclass
class Run:
    path: Path  # the run folder
    panel: str
    x: np.ndarray  # env steps of the metric's finite points
    y: np.ndarray

    def final(self, k: int) -> float:
        return float(np.mean(self.y[-k:]))


@dataclass
class Row:
    panel: str
    label: str
    runs: int
    final_steps: tuple[float, float]  # min and max env steps of the runs' last points
    mean: float
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    finals: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ reading
def column(columns: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    for name in (key, *ALIASES.get(key, ())):
        if name in columns:
            return columns[name]
    return None


def read_columns(csv_path: Path) -> dict[str, np.ndarray]:
    header, rows, _ = read_metrics(csv_path)

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {k: np.array([number(r.get(k)) for r in rows], np.float64) for k in header}


def config_value(run_dir: Path, key: str | None) -> str:
    """The panel of a run: ``key`` (dotted) in its ``config.yaml``; default ``env.name``, else ``env_name``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return "(no config.yaml)"
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(path)
    keys = [key] if key else ["env.name", "env_name"]
    for k in keys:
        value = OmegaConf.select(cfg, k, default=None, throw_on_resolution_failure=False)
        if value is not None and not isinstance(value, (dict, list)) and not OmegaConf.is_config(value):
            return str(value)
    return f"(no {keys[0]})"


def match_runs(pattern: str) -> list[Path]:
    """Run folders matched by ``pattern`` (folders with a metrics.csv, or metrics.csv files), sorted."""
    hits = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
    runs = []
    for hit in map(Path, hits):
        if hit.is_dir() and (hit / "metrics.csv").is_file():
            runs.append(hit)
        elif hit.is_file() and hit.name == "metrics.csv":
            runs.append(hit.parent)
    if not hits:
        raise CompareError(f"'{pattern}' matches nothing")
    if not runs:
        raise CompareError(f"'{pattern}' matches {len(hits)} path(s) (e.g. {hits[0]}) but none is a run folder with a "
                           f"metrics.csv")
    return sorted(set(runs))


def load_runs(groups: Mapping[str, str], metric: str, x_key: str = "env_steps",
              panel_key: str | None = None, max_x: float | None = None) -> dict[str, list[Run]]:
    """label -> its runs (those with at least one finite point of ``metric``, up to ``max_x`` if given)."""
    out: dict[str, list[Run]] = {}
    for label, pattern in groups.items():
        runs, missing = [], []
        for run_dir in match_runs(pattern):
            cols = read_columns(run_dir / "metrics.csv")
            y, x = column(cols, metric), column(cols, x_key)
            if x is None:
                x = cols.get("step")
            if y is None or x is None or not np.isfinite(y).any():
                missing.append((run_dir, sorted(cols)))
                continue
            ok = np.isfinite(y) & np.isfinite(x)
            if max_x is not None:
                ok &= x <= max_x
            panel = "all" if panel_key == "none" else config_value(run_dir, panel_key)
            runs.append(Run(run_dir, panel, x[ok], y[ok]))
        if not runs:
            run_dir, cols = missing[0]
            hint = [c for c in cols if c.startswith(("eval/", "train/"))] or cols
            raise CompareError(f"{label}={pattern}: no run has a value of '{metric}' (e.g. {run_dir}/metrics.csv has "
                               f"{', '.join(hint[:8])}); choose one with --metric")
        for run_dir, _ in missing:
            log.warning("%s: %s has no value of '%s'; left out", label, run_dir, metric)
        out[label] = runs
    return out


# ------------------------------------------------------------------------------------------------ statistics
def common_grid(runs: Sequence[Run], points: int = 200) -> np.ndarray:
    """Env steps all runs cover: from the latest first point to the earliest last point."""
    lo, hi = max(r.x[0] for r in runs), min(r.x[-1] for r in runs)
    if hi <= lo:
        return np.array([hi])
    return np.linspace(lo, hi, points)


def curves(runs: Sequence[Run], grid: np.ndarray) -> np.ndarray:
    """(runs, grid) values interpolated linearly on ``grid``."""
    return np.stack([np.interp(grid, r.x, r.y) for r in runs])


def band(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and the band: mean +- std, or a 95% t-interval of the mean."""
    mean = values.mean(0)
    n = values.shape[0]
    if n < 2 or kind == "none":
        return mean, mean, mean
    std = values.std(0, ddof=1)
    if kind == "ci":
        from scipy import stats
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    else:
        half = std
    return mean, mean - half, mean + half


def bootstrap(finals: Sequence[float], reps: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """{"mean"|"iqm": (point, lo, hi)}: 95% stratified-bootstrap CIs (rliable) over runs of one task."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(finals, np.float64).reshape(-1, 1)  # (runs, tasks = 1)
    funcs = {"mean": lambda s: np.array([metrics.aggregate_mean(s)]),
             "iqm": lambda s: np.array([metrics.aggregate_iqm(s)])}
    out = {}
    for name, func in funcs.items():
        point = float(func(scores)[0])
        if len(finals) < 2:  # nothing to resample
            out[name] = (point, point, point)
            continue
        with warnings.catch_warnings():  # rliable 1.2 hands arch a RandomState, which arch deprecates
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = rly.get_interval_estimates({"x": scores}, func, reps=reps,
                                                           random_state=np.random.RandomState(seed))
        out[name] = (float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0]))
    return out


def final_table(runs_by_label: Mapping[str, Sequence[Run]], last_k: int = 3, reps: int = 2000,
                seed: int = 0) -> list[Row]:
    rows = []
    for panel in panels(runs_by_label):
        for label, runs in runs_by_label.items():
            mine = [r for r in runs if r.panel == panel]
            if not mine:
                continue
            finals = [r.final(last_k) for r in mine]
            est = bootstrap(finals, reps, seed)
            ends = [float(r.x[-1]) for r in mine]
            rows.append(Row(panel, label, len(mine), (min(ends), max(ends)), est["mean"][0], est["mean"][1:],
                            est["iqm"][0], est["iqm"][1:], finals))
    return rows


def panels(runs_by_label: Mapping[str, Sequence[Run]]) -> list[str]:
    seen: dict[str, None] = {}
    for runs in runs_by_label.values():
        for r in runs:
            seen.setdefault(r.panel, None)
    return list(seen)


# ------------------------------------------------------------------------------------------------ output
def _num(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


def markdown(rows: Sequence[Row], metric: str, last_k: int, reps: int) -> str:
    lines = [f"Final `{metric}` (mean of each run's last {last_k} point(s)); 95% stratified-bootstrap CIs over runs "
             f"(rliable, {reps} replications, percentile).", "",
             "| task | method | runs | final env steps | mean | 95% CI | IQM | 95% CI |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = _num(r.final_steps[0]) if r.final_steps[0] == r.final_steps[1] else \
            f"{_num(r.final_steps[0])}-{_num(r.final_steps[1])}"
        lines.append(f"| {r.panel} | {r.label} | {r.runs} | {steps} | {_num(r.mean)} | "
                     f"[{_num(r.mean_ci[0])}, {_num(r.mean_ci[1])}] | {_num(r.iqm)} | "
                     f"[{_num(r.iqm_ci[0])}, {_num(r.iqm_ci[1])}] |")
    return "\n".join(lines) + "\n"


def plot(path: str | Path, runs_by_label: Mapping[str, Sequence[Run]], metric: str, x_key: str = "env_steps",
         band_kind: str = "std") -> tuple[Path, list[str]]:
    """One panel per task, one line (mean) and band per label; returns the PNG path and notes (shortened curves)."""
    names = panels(runs_by_label)
    cols = min(len(names), 3)
    rows_n = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.5 * rows_n), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    notes = []
    for ax, panel in zip(axes, names):
        for i, (label, runs) in enumerate(runs_by_label.items()):
            mine = [r for r in runs if r.panel == panel]
            if not mine:
                continue
            grid = common_grid(mine)
            mean, lo, hi = band(curves(mine, grid), band_kind)
            color = f"C{i % 10}"
            ax.plot(grid, mean, color=color, lw=1.6, label=f"{label} (n={len(mine)})")
            if len(mine) > 1 and band_kind != "none":
                ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
            longest = max(r.x[-1] for r in mine)
            if grid[-1] < longest:
                notes.append(f"{panel} / {label}: runs end between {_num(grid[-1])} and {_num(longest)} env steps; "
                             f"the curve stops at the shortest")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(x_key.replace("_", " "))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 50k, 1M
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path, notes


def compare(out: str | Path, groups: Mapping[str, str], metric: str = "eval/avg_episode_reward",
            last_k: int = 3, panel_key: str | None = None, band_kind: str = "std", reps: int = 2000,
            x_key: str = "env_steps", seed: int = 0, max_x: float | None = None) -> tuple[list[Row], str]:
    """Figure ``out``, table ``out`` with suffix .md; returns the rows and the Markdown. ``max_x`` keeps only the
    points up to that x (an equal env-step budget for runs of different lengths)."""
    if last_k < 1:
        raise CompareError(f"--last-k must be >= 1, got {last_k}")
    runs = load_runs(groups, metric, x_key, panel_key, max_x)
    png, notes = plot(out, runs, metric, x_key, band_kind)
    rows = final_table(runs, last_k, reps, seed)
    text = markdown(rows, metric, last_k, reps)
    if notes:
        text += "\n" + "\n".join(f"Note: {n}." for n in notes) + "\n"
    png.with_suffix(".md").write_text(text)
    return rows, text


def parse_groups(items: Sequence[str]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for item in items:
        label, sep, pattern = item.partition("=")
        if not sep or not label or not pattern:
            raise CompareError(f"'{item}': expected LABEL=RUN_GLOB")
        if label in groups:
            raise CompareError(f"label '{label}' is given twice")
        groups[label] = pattern
    return groups


def cli(argv: list[str] | None = None) -> list[Row]:
    """``dppo compare OUT.png LABEL=RUN_GLOB [LABEL=RUN_GLOB ...]``: curves (mean and band over seeds, one panel
    per task) and a table of final values with 95% bootstrap CIs of the mean and IQM (printed, and written to
    OUT.md)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="dppo compare", description=cli.__doc__)
    p.add_argument("out", help="the figure (PNG); the table goes beside it with suffix .md")
    p.add_argument("runs", nargs="+", help="LABEL=RUN_GLOB: the label's run folders (quote the glob)")
    p.add_argument("--metric", default="eval/avg_episode_reward",
                   help="metrics.csv column (default eval/avg_episode_reward; e.g. eval/success_rate)")
    p.add_argument("--last-k", type=int, default=3, help="final value = mean of each run's last K points (default 3)")
    p.add_argument("--panel", default=None,
                   help="config.yaml key that names a run's task (default env.name); 'none': one panel")
    p.add_argument("--band", choices=("std", "ci", "none"), default="std",
                   help="band around the mean: std over runs (default) or a 95%% t-interval of the mean")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default 2000)")
    p.add_argument("--x", default="env_steps", help="x-axis column (default env_steps)")
    p.add_argument("--max-x", type=float, default=None,
                   help="only the points up to this x (compare runs of different lengths at one budget)")
    args = p.parse_args(argv)
    try:
        rows, text = compare(args.out, parse_groups(args.runs), args.metric, args.last_k, args.panel, args.band,
                             args.reps, args.x, max_x=args.max_x)
    except CompareError as e:
        sys.exit(f"error: {e}")
    print(text, end="")
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return rows
