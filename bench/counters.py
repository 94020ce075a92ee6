"""The Python-side counts of the engine processes, for `python -m bench.trace`.

The engine processes of a trace run import bench/tracehook/sitecustomize.py (through
PYTHONPATH), which counts calls per thread and writes them to `<dir>/<pid>.json` on
SIGUSR1. `PythonCounters.snapshot()` asks every process for its counts and sums them
per process and per kind of thread; `COLUMNS` turns the raw counters into the table's.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

from bench.cluster import REPO, BenchError

HOOK_DIR = REPO / "bench" / "tracehook"
_DIGITS = re.compile(r"\d+")

# Table column -> the raw counters it adds up (see bench/tracehook/sitecustomize.py).
COLUMNS = {
    "tell": ("pykka.tell",),
    "tell self": ("pykka.tell_self",),
    "ask": ("pykka.ask",),
    "submit": ("executor.submit",),
    "call_soon_ts": ("loop.call_soon_threadsafe",),
    "hand-offs": ("pykka.tell", "pykka.ask", "executor.submit", "loop.call_soon_threadsafe"),
    "thread starts": ("thread.start",),
    "wake-ups": ("condition.woken",),
    "timer wake-ups": ("timer.wait_expired", "timer.loop_fired", "timer.sleep"),
    "JSON enc": ("json.encode", "orjson.dumps"),
    "JSON dec": ("json.decode", "orjson.loads"),
}


def hook_env(out_dir: Path) -> dict[str, str]:
    """What the engine processes' environment needs for the counters to be kept and dumped."""
    path = os.pathsep.join(p for p in (str(HOOK_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_TRACE_DIR": str(out_dir)}


def thread_kind(name: str) -> str:
    """`OrderActor-17` -> `OrderActor-N`: one row per kind of thread."""
    return _DIGITS.sub("N", name)


class PythonCounters:
    """Snapshots of the counters of some engine processes (by name and pid)."""

    def __init__(self, pids: dict[str, int], out_dir: Path):
        self.pids = dict(pids)
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)

    def snapshot(self, timeout: float = 5.0) -> Counter:
        """{(process, counter): n} and {(process + '/' + thread kind, counter): n}, now."""
        files = {name: self.out_dir / f"{pid}.json" for name, pid in self.pids.items()}
        for name, path in files.items():
            path.unlink(missing_ok=True)
            os.kill(self.pids[name], signal.SIGUSR1)
        counts = Counter()
        for name, path in files.items():
            for thread in self._wait_for(path, name, timeout)["threads"]:
                for key, n in thread["counts"].items():
                    counts[(name, key)] += n
                    counts[(f"{name}/{thread_kind(thread['name'])}", key)] += n
        return counts

    @staticmethod
    def _wait_for(path: Path, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return json.loads(path.read_text())
            time.sleep(0.002)
        raise BenchError(f"{name} wrote no counters to {path}: was bench/tracehook on its PYTHONPATH?")


def columns(raw: dict[str, float]) -> dict[str, float]:
    """The table's columns for one process, from its raw counters."""
    return {column: sum(raw.get(key, 0.0) for key in keys) for column, keys in COLUMNS.items()}
