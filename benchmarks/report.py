"""``benchmarks/results.md``: the latest record of every (case, variant) in results.jsonl, then notes.md."""

from __future__ import annotations

from benchmarks.common import NOTES_MD, RESULTS_MD, load_records

ORDER = ("peak", "sample", "update", "pretrain", "ceiling", "rollout", "iteration", "reference", "xla", "envpool",
         "overlap", "bf16", "distribute", "budget", "robosuite")


def latest_records() -> list[dict]:
    """For each case, the records of the latest run that measured it (so sizes never mix within a case)."""
    records = [r for r in load_records() if "run" in r]
    last_run = {}
    for rec in records:
        last_run[rec["case"]] = rec["run"]
    chosen = [r for r in records if r["run"] == last_run[r["case"]]]
    return sorted(chosen, key=lambda r: (ORDER.index(r["case"]) if r["case"] in ORDER else 99, r["timestamp"]))


def _load(rec: dict) -> str:
    figs = rec["figures"]
    loads = figs.get("load_1min")
    if loads is None and figs.get("iterations"):
        loads = [i["load_1min"] for i in figs["iterations"]]
    if loads is None:  # records with several timings (rollout: rollout/floor/policy; xla: plain/xla)
        loads = [x for v in figs.values() if isinstance(v, dict) for x in v.get("load_1min", [])]
    if not loads:
        loads = [rec["machine"]["loadavg"][0]]
    return ", ".join(f"{x:.1f}" for x in loads)


def table(records: list[dict]) -> str:
    lines = ["| case | variant | result | 1-min load at each repeat | sizes | when (UTC) |",
             "|---|---|---|---|---|---|"]
    for r in records:
        result = r["notes"].replace("|", "/")
        lines.append(f"| {r['case']} | {r['variant']} | {result} | {_load(r)} | {r.get('sizes', 'full')} | "
                     f"{r['timestamp'][:16].replace('T', ' ')} |")
    return "\n".join(lines)


def tracing_table(records: list[dict]) -> str:
    rows = [r for r in records if r["case"] in ("iteration", "reference")]
    if not rows:
        return ""
    lines = ["| iteration config | tracing counts after each iteration (sample, values+log-probs, values, update) "
             "| constant after the first |", "|---|---|---|"]
    for r in rows:
        counts = " / ".join("(" + ", ".join(str(v) for v in i["tracing"].values()) + ")"
                            for i in r["figures"]["iterations"])
        lines.append(f"| {r['variant']} | {counts} | {r['figures']['tracing_constant_after_first']} |")
    return "\n".join(lines)


def goals_table(records: list[dict]) -> str:
    """The speed goals, checked against the latest records (the 90% and 80% goals next to the ceiling case's rate
    of the actor's matmuls alone at the same rows, which bounds them)."""
    ceiling = {r["config"]["rows"]: r["figures"]["fraction_of_peak_cpu"] for r in records
               if r["case"] == "ceiling" and "rows" in r["config"]}

    def bound(rows: int) -> str:
        return f"; the matmuls alone at {rows} rows: {ceiling[rows]:.0%}" if rows in ceiling else ""

    lines = ["| goal | measured | met |", "|---|---|---|"]
    for r in records:
        f = r["figures"]
        if r["case"] == "update" and "epoch" in r["variant"]:
            frac = f["fraction_of_peak_cpu"]
            lines.append(f"| PPO update ({r['variant']}) at >= 80% of the matmul probe | {frac:.0%} (CPU time) | "
                         f"{'yes' if frac >= 0.8 else 'no'} |")
            if "batch 50000" in r["variant"]:
                lines.append(f"| PPO update ({r['variant']}) at >= 90% of the matmul probe | {frac:.0%} (CPU time)"
                             f"{bound(50000)} | {'yes' if frac >= 0.9 else 'no'} |")
        if r["case"] == "pretrain" and r["variant"] == "batch 128":
            frac = f["fraction_of_peak_cpu"]
            lines.append(f"| pre-training at batch 128 at >= 80% of the matmul probe | {frac:.0%} (CPU time)"
                         f"{bound(128)} | {'yes' if frac >= 0.8 else 'no'} |")
        if r["case"] in ("reference", "budget") and r["variant"].endswith(("in full", "default")):
            total = f.get("extrapolated", f["median_steady"])["total_s"]
            lines.append(f"| Hopper reference iteration <= 35 s on two cores ({r['variant']}) | {total:.1f} s | "
                         f"{'yes' if total <= 35 else 'no'} |")
        if r["case"] == "rollout":
            t, floor, pol = (f[k]["median_s"] for k in ("rollout", "floor", "policy_only"))
            budget = 1.3 * floor + pol
            lines.append(f"| rollout ({r['variant']}) <= 1.3 x random-action floor + the sampler's time | "
                         f"{t:.2f} s vs 1.3 x {floor:.2f} + {pol:.2f} = {budget:.2f} s ({t / budget:.2f} of it) | "
                         f"{'yes' if t <= budget else 'no'} |")
        if r["case"] in ("iteration", "reference"):
            ok = f["tracing_constant_after_first"]
            lines.append(f"| no retracing after the first iteration ({r['variant']}) | see Tracing | "
                         f"{'yes' if ok else 'no'} |")
    return "\n".join(lines)


def write_results_md() -> None:
    records = latest_records()
    machine = records[-1]["machine"] if records else {}
    vers = records[-1]["versions"] if records else {}
    parts = [
        "# dppo-tf benchmarks",
        "",
        "Written by `python -m benchmarks.run` (`make bench`) from `benchmarks/results.jsonl`: for each case, the "
        "records of the latest run that measured it. The machine is shared: every figure is the median of at "
        "least 3 repeats after an untimed warm-up, and the 1-minute load average at each repeat is listed (2 "
        "cores: a load above 2 means other jobs were competing for them). Fractions of peak are given in wall "
        "time and in CPU time; read the CPU-time one (see Counting rules below).",
        "",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores; "
        + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "",
        table(records),
        "",
        "## Goals",
        "",
        goals_table(records),
        "",
        "## Tracing",
        "",
        tracing_table(records),
        "",
    ]
    if NOTES_MD.exists():
        parts.append(NOTES_MD.read_text())
    RESULTS_MD.write_text("\n".join(parts).rstrip() + "\n")
