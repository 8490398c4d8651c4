"""Summarise Avoid fine-tuning runs of ``script/avoid_figure7.py`` (one output folder per setting) as a markdown
table: evaluation success after fine-tuning (mean +- std over seeds), training success in the last 3 iterations,
the peak training success, and how many seeds ended collapsed (last-iteration training success < 0.2).

    python script/avoid_collapse_table.py NAME=OUT_DIR [NAME=OUT_DIR ...] [--tasks m1 m2 m3] [--family diffusion]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="NAME=folder written by avoid_figure7.py")
    p.add_argument("--tasks", nargs="+", default=["m1", "m2", "m3"])
    p.add_argument("--family", default="diffusion")
    args = p.parse_args(argv)
    print("| setting | task | seeds | iterations | eval success after | training success, last 3 itr | peak | "
          "collapsed |\n|---|---|---|---|---|---|---|---|")
    for spec in args.runs:
        name, folder = spec.split("=", 1)
        for task in args.tasks:
            files = sorted(Path(folder, f"{task}_{args.family}").glob("ft_seed*.json"))
            if not files:
                continue
            runs = [json.loads(f.read_text()) for f in files]
            after = np.array([r["eval"]["success_rate"] for r in runs])
            curves = np.array([r["train_success"] for r in runs], dtype=float)
            last3 = curves[:, -3:].mean(1)
            print(f"| {name} | {task.upper()} | {len(runs)} | {curves.shape[1]} | {after.mean():.0%} +- "
                  f"{after.std():.0%} | {last3.mean():.2f} +- {last3.std():.2f} | {curves.max(1).mean():.2f} | "
                  f"{int((curves[:, -1] < 0.2).sum())} / {len(runs)} |")


if __name__ == "__main__":
    main()
