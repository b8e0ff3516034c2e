"""What every bench needs besides its own measurement: the machine it ran on, CPU accounting,
percentiles, and an ICE configuration that stays on loopback. Import after the bench has put
the repository root on `sys.path` (each bench does, before anything else)."""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = [
    "machine",
    "machine_busy",
    "percentile",
    "process_cpu_s",
    "rtc_config",
    "schedstat",
]

PACKAGES = ("aiortc", "av", "numpy", "discord.py", "discord-ext-voice-recv", "davey")


def machine() -> str:
    """One line: cores, CPU model, RAM, load, Python and the packages that set the figures."""
    cpu, mem_kb = "?", 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        pass
    packages = []
    for package in PACKAGES:
        try:
            packages.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            continue
    return (
        f"nproc={os.cpu_count()} cpu={cpu!r} ram={mem_kb / 1024 / 1024:.1f} GiB "
        f"loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"python={platform.python_version()} {' '.join(packages)}"
    )


def process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of process `pid` (all its threads; this process when None);
    NaN once it has gone."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on CPU, seconds runnable but waiting for a CPU), summed over the threads."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def machine_busy() -> tuple[int, int]:
    """(busy jiffies, total jiffies) over all CPUs so far: everyone's load, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, linear between ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rtc_config() -> Any:
    """No ICE servers: aiortc's default would resolve and query stun.l.google.com."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])
