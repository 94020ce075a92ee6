"""Where the time goes: py-spy attached to the engine processes while a scenario runs.

py-spy (`pip install py-spy`) samples without changing the target; `--nonblocking` keeps
it from pausing the process at each sample, so the profiled run slows down only by the
CPU py-spy itself takes (measured, and reported as `py-spy <name>` in its cpuCores).
`--gil` samples only the thread holding the GIL: the profile shows where each process
spends its Python CPU time, not where its threads wait. The profiled run's figures are
reported apart from the others.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.cluster import BenchError


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Recorder:
    """py-spy record on some pids for a fixed duration; `stop()` always ends them (by pid)."""

    def __init__(self, out_dir: Path, seconds: int, rate: int = 100):
        self.out_dir, self.seconds, self.rate = out_dir, seconds, rate
        self.pids: dict[str, int] = {}  # of the py-spy processes, so their CPU can be told apart
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, pid: int) -> None:
        exe = py_spy()
        if exe is None:
            raise BenchError("py-spy is not installed (pip install py-spy)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = self.out_dir / f"{name}.collapsed.txt"
        log = open(self.out_dir / f"{name}.py-spy.log", "wb")
        proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(self.seconds),
                                 "--rate", str(self.rate), "--nonblocking", "--gil", "--threads", "--format", "raw",
                                 "--output", str(raw)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = (proc, raw)
        self.pids[f"py-spy {name}"] = proc.pid

    def stop(self, timeout: float) -> dict[str, Path]:
        """Wait for the recordings (killing any that overrun); the collapsed-stack files."""
        done = {}
        for name, (proc, raw) in self.procs.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if raw.exists():
                done[name] = raw
        return done


_DIGITS = re.compile(r"\d+")


PROJECT = ("actors/", "storage/", "web/", "config/", "bench/", "engine.py")


def _frame_name(frame: str) -> str:
    """`func (pony/orm/core.py:123)` -> `func (pony/orm/core.py)`: lines merged, one function one row."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name


def _is_project(name: str) -> bool:
    return name.rpartition(" (")[2].startswith(PROJECT)


def summarize(raw: Path, top: int = 15, expected_samples: int | None = None) -> dict:
    """Top functions by own (self) samples, by inclusive samples (all, and the engine's own
    code only: where its time goes, callees included), and samples per thread.

    Recorded with `--gil`, a sample is taken only of the thread holding the GIL, so the
    shares are of the process's Python CPU time, and samples / `expected_samples` is
    roughly the share of the wall time the GIL was held.
    """
    own, inclusive, project, threads = Counter(), Counter(), Counter(), Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            # "thread (1234): OrderActor-17 (_actor_loop)": one row per kind of thread.
            threads[_DIGITS.sub("N", frames[0].partition(": ")[2] or frames[0])] += n
            frames = frames[1:]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        names = [_frame_name(f) for f in frames]
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
            if _is_project(name):
                project[name] += n

    def share(counter):
        return [{"function": name, "pct": round(100 * n / total, 1)} for name, n in counter.most_common(top)]

    held = round(100 * total / expected_samples, 1) if expected_samples else None
    return {"samples": total, "gilHeldPct": held, "threads": share(threads), "self": share(own),
            "project": share(project), "inclusive": share(inclusive)}
