"""How many CPU cores this process may use: its CPU affinity, within its container's CPU quota.

os.cpu_count() counts the machine's cores. In a container limited by a quota (Docker `--cpus`, a Kubernetes
CPU limit) the process sees every core but may run only the quota's worth, and a thread pool sized to all
of them contends and is throttled. The PNG writer's pool and the CPU backends' thread counts use this.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# cgroup v2: "<quota> <period>" in microseconds, or "max <period>" without a limit.
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """Cores this process may run on (its affinity, where the OS has one: Linux), at most its CPU quota
    rounded up; at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(count, quota) if quota else count)


def _cgroup_quota() -> int | None:
    """This container's CPU quota in whole cores (rounded up), None where there is none."""
    try:
        quota, period = CPU_MAX.read_text().split()[:2]
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):
        return None
