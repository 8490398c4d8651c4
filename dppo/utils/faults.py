"""Fault injection for the crash tests: ``DPPO_FAULT=<event>`` makes the process SIGKILL itself at that event.

Events (``step`` = epoch or iteration):

* ``metrics:<step>`` - the metrics row of ``step`` is on disk, its checkpoint (if one is due) is not yet written;
* ``checkpoint:<step>`` - the end of ``step``, after its row and checkpoint;
* ``write:<file name>`` - inside an atomic write of ``<file name>``: the temporary file is complete, not yet renamed.

Unset (always, outside tests) it costs one environment lookup per event, a few per iteration.
"""

from __future__ import annotations

import os
import signal

ENV = "DPPO_FAULT"


def fault_point(event: str) -> None:
    """Kill this process, as ``kill -9`` would, when ``DPPO_FAULT`` names ``event``."""
    if os.environ.get(ENV) == event:
        os.kill(os.getpid(), signal.SIGKILL)
