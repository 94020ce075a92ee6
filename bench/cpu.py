"""Where the machine's CPU went during a run, per process, from /proc.

Each bench-started process (web, workers, the client itself) is read from its own
`/proc/<pid>/stat` (utime + stime, all threads) at the start and at the end.

Postgres and Redis are groups of processes found by their command name (`postgres`,
`redis-server`), and Postgres starts and reaps backends while a run goes on: a backend
that exits mid-run is gone from /proc by the end, so reading every pid at both ends
would lose its time. The group's CPU in the window is therefore

    sum over pids alive at the end      (own time at the end - own time at the start, 0 if new)
  + growth of the roots' cutime+cstime  (children reaped in the window: their whole lifetime)
  - own time at the start of the pids that were alive then and are gone at the end
                                        (the part of their lifetime before the window)

where a root is a group member whose parent is not in the group (the postmaster). The
kernel reports a reaped child's utime+stime (and its own reaped children's) in its
parent's cutime+cstime, so nothing that ran in the window is lost, and nothing that ran
before it is counted. The servers are shared: Postgres' figure includes every database's
backends and its background processes (checkpointer, WAL writer, autovacuum).

`kernel/other` is the rest of the machine's busy time (/proc/stat): loopback networking
in softirq, other processes on the machine.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# (report name, command name as /proc/<pid>/stat shows it)
SERVER_GROUPS = (("postgres", "postgres"), ("redis", "redis-server"))


@dataclass(frozen=True)
class ProcCpu:
    """One process's CPU seconds so far: its own and its reaped children's."""

    pid: int
    comm: str
    ppid: int
    own: float
    children: float


def read_proc(pid: int) -> ProcCpu | None:
    """utime+stime and cutime+cstime of one process; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may itself contain ')' or spaces: it ends at the last ')'.
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 1:].split()
    return ProcCpu(pid, comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK,
                   (int(fields[13]) + int(fields[14])) / TICK)


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (all its threads), from /proc; None once it is gone."""
    proc = read_proc(pid)
    return proc.own if proc else None


def all_processes() -> dict[int, ProcCpu]:
    """Every process on the machine, by pid."""
    procs = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                procs[proc.pid] = proc
    return procs


def system_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICK, sum(values[:8]) / TICK


@dataclass(frozen=True)
class GroupSample:
    """A process group at one moment: each member's own time, and each root's reaped children."""

    own: dict[int, float]
    reaped: dict[int, float]


def sample_group(procs: dict[int, ProcCpu], comm: str) -> GroupSample:
    """The members of the group named `comm` (and its roots) among `procs`."""
    members = {pid: p for pid, p in procs.items() if p.comm == comm}
    roots = {pid: p.children for pid, p in members.items() if p.ppid not in members}
    return GroupSample({pid: p.own for pid, p in members.items()}, roots)


def group_seconds(before: GroupSample, after: GroupSample) -> float:
    """CPU seconds the group used between two samples, exited members included (see module doc)."""
    alive = sum(own - before.own.get(pid, 0.0) for pid, own in after.own.items())
    reaped = sum(after.reaped[pid] - before.reaped[pid] for pid in after.reaped if pid in before.reaped)
    exited_before = sum(own for pid, own in before.own.items() if pid not in after.own)
    return max(alive + reaped - exited_before, 0.0)


class CpuMeter:
    """CPU used between `start()` and `stop()` by each named process, the bench client,
    Postgres, Redis, and the rest of the machine (kernel/other)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = dict(pids)
        self.seconds: dict[str, float] = {}  # CPU seconds per name, filled by stop()
        self.wall = 0.0

    def _sample(self):
        own = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        own["client"] = process_cpu_seconds(os.getpid())
        procs = all_processes()
        groups = {name: sample_group(procs, comm) for name, comm in SERVER_GROUPS}
        return time.monotonic(), own, groups, system_cpu_seconds()[0]

    def start(self) -> None:
        """Take the first sample."""
        self.before = self._sample()

    def stop(self) -> dict:
        """Cores used by each on average (1.0 = one core busy all the time); CPU seconds in `seconds`."""
        t1, own1, groups1, busy1 = self._sample()
        t0, own0, groups0, busy0 = self.before
        self.wall = max(t1 - t0, 1e-9)
        seconds = {name: own1[name] - own0[name]
                   for name in own1 if own1[name] is not None and own0.get(name) is not None}
        for name, _ in SERVER_GROUPS:
            seconds[name] = group_seconds(groups0[name], groups1[name])
        seconds["kernel/other"] = max((busy1 - busy0) - sum(seconds.values()), 0.0)
        self.seconds = seconds
        cores = {name: round(s / self.wall, 3) for name, s in seconds.items()}
        cores["machine busy"] = round((busy1 - busy0) / self.wall, 3)
        cores["machine cores"] = os.cpu_count()
        return cores

    def ms_per_order(self, orders: int, engine_names: list[str]) -> dict[str, float]:
        """CPU ms per order of each part, plus `server` = engine processes + postgres + redis."""
        if orders <= 0:
            return {}
        per = {name: round(s * 1000 / orders, 3) for name, s in self.seconds.items()}
        server_parts = [*engine_names, *(name for name, _ in SERVER_GROUPS)]
        per["server"] = round(sum(per.get(name, 0.0) for name in server_parts), 3)
        return per
