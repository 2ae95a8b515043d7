"""This process's container limits, read from its cgroup: the CPU quota and the memory it may still use.

Both cgroup versions are read, since hosts mount one or the other: v2 (`cpu.max`, `memory.max` and
`memory.current` at the root of the mount) and v1 (`cpu/cpu.cfs_quota_us` and `cpu.cfs_period_us`,
`memory/memory.limit_in_bytes` and `memory.usage_in_bytes`). A container sees its own cgroup at the root
of the mount; outside a container the root holds no limit, and None is returned.
"""

from __future__ import annotations

import math
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# cgroup v1 reports "no memory limit" as a huge number (LONG_MAX rounded down to the page size).
_V1_UNLIMITED = 1 << 60


def _read(*parts: str) -> str | None:
    try:
        return ROOT.joinpath(*parts).read_text().strip()
    except OSError:
        return None


def cpu_quota() -> int | None:
    """The CPU quota in whole cores (rounded up), None where there is none or it cannot be read."""
    try:
        if (v2 := _read("cpu.max")) is not None:
            quota, period = v2.split()[:2]
            return None if quota == "max" else math.ceil(int(quota) / int(period))
        for folder in ("cpu", "cpu,cpuacct"):
            quota, period = _read(folder, "cpu.cfs_quota_us"), _read(folder, "cpu.cfs_period_us")
            if quota is not None and period is not None:
                return None if int(quota) < 0 else math.ceil(int(quota) / int(period))
    except (ValueError, ZeroDivisionError):
        return None
    return None


def memory_room() -> int | None:
    """Bytes left under the memory limit, None where there is no limit or it cannot be read."""
    try:
        if (limit := _read("memory.max")) is not None:
            used = _read("memory.current")
            return None if limit == "max" or used is None else max(int(limit) - int(used), 0)
        limit, used = _read("memory", "memory.limit_in_bytes"), _read("memory", "memory.usage_in_bytes")
        if limit is not None and used is not None and int(limit) < _V1_UNLIMITED:
            return max(int(limit) - int(used), 0)
    except ValueError:
        return None
    return None
