"""``dppo`` console script.

    dppo run --config-name=X --config-dir=cfg/...     same as python script/run.py
    dppo data avoid|robomimic|gym [options]             make demonstration data here
    dppo export <policy.npz or run dir> [--out D]       SavedModel (+ TFLite): raw obs -> raw action
    dppo plot OUT.png LABEL=RUN ... [--keys K ...]       learning curves from runs' metrics.csv
    dppo compare OUT.png LABEL=RUN_GLOB ... [--metric M]  methods over seeds: mean/band curves per task and a
                                                        table of final values with bootstrap CIs (OUT.md)
"""

from __future__ import annotations

import importlib
import sys

DATA_MAKERS = {
    "avoid": "dppo.datagen.avoid",
    "robomimic": "dppo.datagen.robosuite",
    "gym": "dppo.datagen.locomotion",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        from dppo.run import cli_main
        cli_main(rest)
    elif command == "data":
        if not rest or rest[0] not in DATA_MAKERS:
            sys.exit(f"usage: dppo data {{{'|'.join(DATA_MAKERS)}}} [options]")
        importlib.import_module(DATA_MAKERS[rest[0]]).cli(rest[1:])
    elif command == "plot":
        from dppo.viz.curves import cli as plot_cli
        plot_cli(rest)
    elif command == "compare":
        from dppo.viz.compare import cli as compare_cli
        compare_cli(rest)
    elif command == "export":
        from dppo.export import cli as export_cli
        export_cli(rest)
    else:
        sys.exit(f"unknown command '{command}'; expected 'run', 'data', 'plot', 'compare' or 'export' "
                 f"(see dppo --help)")


if __name__ == "__main__":
    main()
