"""The machine a benchmark ran on, for the first line of its output (BENCHMARKS.md names it)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> str:
    """``machine: <n> cores, <cpu>, Python <v>; load <l>`` (load: the 1-minute average now)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; "
        f"load {load:.1f}"
    )
