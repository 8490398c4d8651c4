"""What every benchmark record carries (machine, versions, load), timing helpers and the result files."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_JSONL = HERE / "results.jsonl"
RESULTS_MD = HERE / "results.md"
NOTES_MD = HERE / "notes.md"
TAG = ""  # set by run.py --tag
MODE = "full"  # or "quick", set by run.py
RUN_ID = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")  # one per process: groups a run's records


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, cores this process may use, load average now (1, 5, 15 min)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "loadavg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("tensorflow", "keras", "numpy", "gymnasium", "mujoco"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001  (a missing optional package is reported, not fatal)
            out[mod] = "missing"
    return out


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; wall seconds of each run, their median and
    min, the process CPU seconds (all threads) of each run, and the 1-minute load average seen at each run (the
    machine may be shared: CPU seconds are less sensitive to other jobs than wall time)."""
    for _ in range(warmup):
        fn()
    secs, cpu, loads = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        secs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        loads.append(round(os.getloadavg()[0], 2))
    return {"seconds": [round(s, 4) for s in secs], "median_s": statistics.median(secs), "min_s": min(secs),
            "cpu_seconds": [round(s, 4) for s in cpu], "median_cpu_s": statistics.median(cpu), "load_1min": loads}


def record(case: str, variant: str, config: dict[str, Any], figures: dict[str, Any],
           notes: str = "") -> dict[str, Any]:
    """Print one record and append it to results.jsonl."""
    rec = {"case": case, "variant": variant, "run": RUN_ID, "tag": TAG, "sizes": MODE, "config": config,
           "figures": figures,
           "notes": notes,
           "machine": machine_info(), "versions": versions(),
           "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    line = json.dumps(rec, default=_jsonable)
    print(line, flush=True)
    with open(RESULTS_JSONL, "a") as f:
        f.write(line + "\n")
    return rec


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def load_records() -> list[dict[str, Any]]:
    if not RESULTS_JSONL.exists():
        return []
    out = []
    for line in RESULTS_JSONL.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
