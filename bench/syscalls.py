"""`python -m bench.trace --strace`: system calls of the engine processes, a cross-check.

`strace -f -c -e trace=futex,sendto,recvfrom,write,read -p PID` is attached to every
engine process (all its threads) for a phase and detached with SIGINT, which makes it
write its summary. The Python-side counters do not depend on it: a thread wake-up or an
executor hand-off is one futex wake (and one wait) at least, a Redis or Postgres round
trip a send and a receive, a WebSocket frame a write. Under strace every one of these
system calls stops the process, so the traced phase runs slower: compare counts, not times.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.cluster import BenchError

SYSCALLS = ("futex", "sendto", "recvfrom", "write", "read")


def strace() -> str | None:
    """The strace executable, if installed."""
    return shutil.which("strace") or ("/usr/bin/strace" if Path("/usr/bin/strace").exists() else None)


def parse_summary(text: str) -> dict[str, int]:
    """{syscall: calls} from `strace -c` output (`% time  seconds  usecs/call  calls  [errors]  syscall`)."""
    calls = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) in (5, 6) and fields[-1] in SYSCALLS and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    return calls


def per_order(idle: tuple[float, dict], traced: tuple[float, dict], orders: int) -> dict[str, dict[str, float]]:
    """Each process's calls in the traced phase net of the idle rate, per traced order."""
    (idle_s, idle_calls), (traced_s, traced_calls) = idle, traced
    return {name: {call: (n - idle_calls.get(name, {}).get(call, 0) / idle_s * traced_s) / orders
                   for call, n in calls.items()}
            for name, calls in traced_calls.items()}


class Strace:
    """strace -c attached to some processes for one phase at a time; `stop()` always detaches."""

    ATTACH_S = 0.5  # strace needs a moment to attach to every thread of a process

    def __init__(self, pids: dict[str, int], out_dir: Path):
        exe = strace()
        if exe is None:
            raise BenchError("--strace needs strace (apt-get install strace)")
        self.exe, self.pids, self.out_dir = exe, dict(pids), out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.started = 0.0

    def start(self, label: str) -> None:
        """Attach to every process; returns once they are (most likely) attached."""
        self.started = time.monotonic()
        for name, pid in self.pids.items():
            out = self.out_dir / f"{label}-{name}.strace"
            proc = subprocess.Popen([self.exe, "-f", "-c", "-e", f"trace={','.join(SYSCALLS)}", "-o", str(out),
                                     "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs[name] = (proc, out)
        time.sleep(self.ATTACH_S)

    def stop(self) -> tuple[float, dict[str, dict[str, int]]]:
        """Detach (SIGINT, by pid); (seconds attached, {process: {syscall: calls}})."""
        seconds = time.monotonic() - self.started
        calls = {}
        for name, (proc, out) in self.procs.items():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            calls[name] = parse_summary(out.read_text()) if out.exists() else {}
        self.procs = {}
        return seconds, calls
