"""CPU use of local processes, read from ``/proc`` (Linux): a process's ``utime + stime`` over a
wall-clock window, with its descendants counted in (DynamoDB Local is a JVM under a launcher, a
devserver may fork), as a share of one core.

The restart tests use it to prove the local system goes idle: a replaying relay keeps moto and
DynamoDB Local busy for minutes, an idle one costs a few percent at most.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime + stime in clock ticks), or None for a process that is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _tree(root: int) -> set[int]:
    """``root`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = stat[0]
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _ticks(pids: Iterable[int]) -> int:
    return sum(stat[1] for pid in pids if (stat := _stat(pid)) is not None)


def cpu_shares(roots: Mapping[str, int], seconds: float = 2.0) -> dict[str, float]:
    """Each named process tree's CPU over the next ``seconds``, as a fraction of one core
    (0.05 is 5%). A process that starts or ends inside the window counts only the ticks seen."""
    trees = {name: _tree(pid) for name, pid in roots.items()}
    before = {name: _ticks(pids) for name, pids in trees.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {
        name: (_ticks(pids) - before[name]) / TICKS / elapsed for name, pids in trees.items()
    }


def wait_idle(
    roots: Mapping[str, int], limit: float, within: float, window: float = 2.0
) -> tuple[bool, dict[str, float]]:
    """Measure ``window`` after ``window`` until every tree is under ``limit`` of a core, or
    ``within`` seconds have passed. Returns (idle, the last measurement)."""
    deadline = time.monotonic() + within
    while True:
        shares = cpu_shares(roots, window)
        if all(share < limit for share in shares.values()):
            return True, shares
        if time.monotonic() + window > deadline:
            return False, shares
