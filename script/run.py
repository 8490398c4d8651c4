"""Entry point, as in the reference:

    python script/run.py --config-name=<name> --config-dir=cfg/<suite>/<stage>/<task>
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dppo.run import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()
