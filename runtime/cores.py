"""How many CPU cores this process may use: its CPU affinity, within its container's CPU quota.

os.cpu_count() counts the machine's cores. In a container limited by a quota (Docker `--cpus`, a Kubernetes
CPU limit) the process sees every core but may run only the quota's worth, and a thread pool sized to all
of them contends and is throttled. The PNG writer's pool and the CPU backends' thread counts use this.
"""

from __future__ import annotations

import os

from runtime.cgroup import cpu_quota


def usable_cores() -> int:
    """Cores this process may run on (its affinity, where the OS has one: Linux), at most its CPU quota
    rounded up (runtime/cgroup.py); at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(count, quota) if quota else count)
