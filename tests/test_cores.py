"""runtime/cores.py: the cores a process may use, within a container's CPU quota (cgroup v2 cpu.max)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("50000 100000\n", 1),  # half a core: rounded up to one thread
        ("100000 100000\n", 1),
        ("150000 100000\n", min(AFFINITY, 2)),
        ("6400000 100000\n", AFFINITY),  # a quota above the cores this process may run on
        ("max 100000\n", AFFINITY),  # no limit
        ("garbage\n", AFFINITY),
        ("100000 0\n", AFFINITY),
    ],
)
def test_quota_caps_the_affinity(tmp_path: Path, monkeypatch, cpu_max: str, expected: int) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(cores, "CPU_MAX", tmp_path / "cpu.max")
    assert cores.usable_cores() == expected


def test_without_a_cgroup_file_the_affinity_counts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cores, "CPU_MAX", tmp_path / "absent")
    assert cores.usable_cores() == AFFINITY


def test_affinity_is_followed() -> None:
    """A process pinned to one core (taskset, a scheduler) gets one thread."""
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})
        assert cores.usable_cores() == 1
    finally:
        os.sched_setaffinity(0, saved)
