"""How busy the machine is with other work while a benchmark runs.

Linux counts every core's busy time in /proc/stat (user, nice, system, interrupts and, on a
virtual machine, the time the host gave to other guests: steal). This process's own CPU time,
all its threads included, comes from ``getrusage``. Their difference over an interval, divided by
the interval, is the number of cores that other work kept busy: 1.0 is one core fully taken.

A benchmark whose numbers moved because of that work cannot be compared with one that ran alone;
`gradcheck.benchmarks` uses this reading to say so. Where /proc/stat is missing (macOS,
Windows) the reading is None: unknown, and reported as such.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_STAT = "/proc/stat"
#: /proc/stat's fields on the aggregate "cpu" line that count a core as busy: user, nice,
#: system, irq, softirq, steal (not idle, iowait, or guest, which user already includes).
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def _busy_seconds() -> float | None:
    """Seconds every core of the machine has been busy since boot, or None without /proc/stat."""
    try:
        with open(_STAT) as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    ticks = sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process, every thread, and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class LoadMeter:
    """Started on creation; `other_cores` reads the average number of cores that other
    processes kept busy since then."""

    wall: float
    busy: float | None
    own: float

    @classmethod
    def start(cls) -> LoadMeter:
        return cls(time.perf_counter(), _busy_seconds(), _own_seconds())

    def other_cores(self) -> float | None:
        busy = _busy_seconds()
        wall = time.perf_counter() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            return None
        others = (busy - self.busy) - (_own_seconds() - self.own)
        # the two clocks tick at different resolutions (1/CLK_TCK against microseconds), so a
        # short interval can read slightly below zero
        return max(others, 0.0) / wall


#: `settle`'s window, and the share of one core this process may use in it and count as idle.
SETTLE_WINDOW = 0.005
SETTLE_IDLE = 0.1


def settle(limit: float = 0.5) -> bool:
    """Wait, at most ``limit`` seconds, until this process's threads are idle: no window of
    `SETTLE_WINDOW` in which they used more than `SETTLE_IDLE` of a core. OpenBLAS's threads
    spin for up to about 0.1 s after a product, on the cores the next computation needs: a
    digits-CNN step of Numba's took 5.3 ms right after NumPy's product-heavy round and 2.7 ms
    0.1 s later (float32). Returns whether they went idle in time."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        before = time.process_time()
        time.sleep(SETTLE_WINDOW)
        if time.process_time() - before <= SETTLE_IDLE * SETTLE_WINDOW:
            return True
    return False
