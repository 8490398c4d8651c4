"""Learning curves from a run's ``metrics.csv``."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a metrics CSV as float arrays (missing cells are NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = rows[0].keys() if rows else []
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]) for k in keys}


def plot_learning_curves(path: str | Path, runs: Mapping[str, str | Path], keys: Sequence[str],
                         x: str = "env_steps", titles: Sequence[str] | None = None) -> Path:
    """One panel per metric ``key``, one line per run (``runs``: label -> metrics.csv); saved as PNG."""
    fig = Figure(figsize=(4.2 * len(keys), 3.4), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for label, csv_path in runs.items():
        m = read_metrics(csv_path)
        xs = m.get(x, m["step"])
        for ax, key in zip(axes, keys):
            if key in m:
                ok = np.isfinite(m[key])
                ax.plot(xs[ok], m[key][ok], label=label, lw=1.5)
    for i, (ax, key) in enumerate(zip(axes, keys)):
        ax.set_title(titles[i] if titles else key, fontsize=10)
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def cli(argv: list[str] | None = None) -> Path:
    """``dppo plot OUT.png LABEL=RUN [LABEL=RUN ...] [--keys K ...] [--x env_steps]``: learning curves of
    runs (a run folder or its metrics.csv), one panel per key."""
    import argparse
    p = argparse.ArgumentParser(prog="dppo plot", description=cli.__doc__)
    p.add_argument("out")
    p.add_argument("runs", nargs="+", help="LABEL=path to a run folder or metrics.csv")
    p.add_argument("--keys", nargs="+", default=["train/avg_episode_reward", "eval/avg_episode_reward"])
    p.add_argument("--x", default="env_steps")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            p.error(f"'{item}': expected LABEL=PATH")
        csv_path = Path(path) / "metrics.csv" if Path(path).is_dir() else Path(path)
        if not csv_path.is_file():
            p.error(f"{csv_path}: no metrics.csv")
        runs[label] = csv_path
    return plot_learning_curves(args.out, runs, args.keys, x=args.x)
