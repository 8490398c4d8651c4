"""Run the benchmarks: ``python -m benchmarks.run [--case NAME ...] [--quick] [--tag TAG]``.

Each case prints one JSON record per measurement and appends it to ``benchmarks/results.jsonl``; then
``benchmarks/results.md`` is rewritten from the latest record of every (case, variant) in that file, followed
by ``benchmarks/notes.md`` (counting rules, what --quick means, the optimisation log).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MUJOCO_GL", "egl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--case", action="append", help="case to run (repeatable); default: all, in order "
                   "peak, sample, update, pretrain, rollout, iteration, robosuite (Can: env.vector sync vs "
                   "subprocess); "
                   "'reference' (the reference Hopper iteration with all 5 epochs), 'xla' (XLA against plain "
                   "tf.function) and the speed-and-scale cases 'envpool', 'overlap', 'bf16', 'distribute', 'budget' "
                   "run only when named")
    p.add_argument("--quick", action="store_true", help="smaller sizes (see benchmarks/notes.md)")
    p.add_argument("--tag", default="", help="label stored in each record (e.g. 'before-xla')")
    p.add_argument("--no-md", action="store_true", help="do not rewrite results.md")
    args = p.parse_args(argv)

    from benchmarks import cases, common, report
    known = {**cases.CASES, **cases.OPTIONAL}
    names = args.case or list(cases.CASES)
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"unknown case(s) {unknown}; expected some of {list(known)}")
    common.TAG = args.tag
    common.MODE = "quick" if args.quick else "full"
    start, cpu_start = time.time(), time.process_time()
    for name in names:
        t0, c0 = time.time(), time.process_time()
        print(f"## {name} ({'quick' if args.quick else 'full'} sizes)", file=sys.stderr, flush=True)
        known[name](args.quick)
        print(f"## {name}: {time.time() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU, load "
              f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    print(f"## all: {time.time() - start:.1f} s wall, {time.process_time() - cpu_start:.1f} s CPU",
          file=sys.stderr, flush=True)
    if not args.no_md:
        report.write_results_md()
        print(f"wrote {common.RESULTS_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
