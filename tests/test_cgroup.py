"""runtime/cgroup.py, runtime/cores.py and runtime/memory.py: the cores and memory a process may use within
its container's limits, read from cgroup v2 or v1 (a fake cgroup mount in a temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import cgroup, cores, memory

AFFINITY = len(os.sched_getaffinity(0))
GIB = 1 << 30


@pytest.fixture
def mount(tmp_path: Path, monkeypatch) -> Path:
    """An empty cgroup mount the module reads instead of /sys/fs/cgroup."""
    monkeypatch.setattr(cgroup, "ROOT", tmp_path)
    return tmp_path


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "50000 100000\n"}, 1),  # half a core: rounded up to one thread
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "150000 100000\n"}, min(AFFINITY, 2)),
        ({"cpu.max": "6400000 100000\n"}, AFFINITY),  # a quota above the cores this process may run on
        ({"cpu.max": "max 100000\n"}, AFFINITY),  # no limit
        ({"cpu.max": "garbage\n"}, AFFINITY),
        ({"cpu.max": "100000 0\n"}, AFFINITY),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        ({"cpu,cpuacct/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, AFFINITY),  # v1, no limit
        ({}, AFFINITY),  # no cgroup files: the affinity counts
    ],
    ids=["v2-half", "v2-one", "v2-1.5", "v2-above", "v2-max", "v2-garbage", "v2-zero-period", "v1-half",
         "v1-cpuacct", "v1-unlimited", "none"],
)  # fmt: skip
def test_the_cpu_quota_caps_the_affinity(mount: Path, files: dict[str, str], expected: int) -> None:
    _write(mount, files)
    assert cores.usable_cores() == expected


@pytest.mark.parametrize(
    ("files", "room"),
    [
        ({"memory.max": f"{2 * GIB}\n", "memory.current": f"{GIB // 2}\n"}, GIB + GIB // 2),
        ({"memory.max": "max\n", "memory.current": "1000\n"}, None),
        ({"memory/memory.limit_in_bytes": f"{GIB}\n", "memory/memory.usage_in_bytes": f"{GIB // 4}\n"}, 3 * GIB // 4),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "5\n"}, None),
        ({"memory/memory.limit_in_bytes": f"{GIB}\n", "memory/memory.usage_in_bytes": f"{2 * GIB}\n"}, 0),
        ({}, None),
    ],
    ids=["v2", "v2-max", "v1", "v1-unlimited", "v1-over", "none"],
)
def test_the_memory_limit_is_read_from_either_cgroup_version(mount: Path, files: dict[str, str], room: int | None) -> None:
    _write(mount, files)
    assert cgroup.memory_room() == room
    if room is not None:  # what the memory checks plan from is capped by it
        assert memory.available_bytes() <= room


def test_affinity_is_followed() -> None:
    """A process pinned to one core (taskset, a scheduler) gets one thread."""
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})
        assert cores.usable_cores() == 1
    finally:
        os.sched_setaffinity(0, saved)
