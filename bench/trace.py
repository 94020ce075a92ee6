"""`python -m bench.trace`: what one market order costs in round trips and thread hand-offs.

On the production topology (bench.cluster's `cluster()` with the throughput settings:
instant venues, one web, `--workers` workers), after a warm-up, it traces one order at a
time from its POST to its WebSocket's close plus a tail for trailing work (acks), and
counts in that window: Postgres statements by kind and durable commits (server statement
log), Redis commands by name (MONITOR), and per engine process the Python-side calls
that hand work between threads or wake them, and JSON encodings (bench/tracehook). An
idle window measured first gives the background rate (idle polls, heartbeats), which is
subtracted. See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.client import engine_client
from bench.cluster import REPO, BenchError, cluster, machine_info
from bench.counters import COLUMNS, PythonCounters, columns, hook_env
from bench.roundtrips import PG_KINDS, PgStatementLog, RedisMonitor, ports_by_process
from bench.scenarios import THROUGHPUT_ENV, submit_and_listen
from bench.syscalls import SYSCALLS, Strace
from bench.syscalls import per_order as syscalls_per_order
from web.client.aio import AsyncEngineClient

RESULTS = REPO / "bench" / "results"


@dataclass
class Snapshot:
    """Where every counter stood at one moment."""

    at: float
    python: Counter
    pg_index: int
    redis_index: int


class Tracer:
    """The three sources of counts on one running cluster, read together."""

    def __init__(self, procs: dict, database_url: str, redis_url: str, dump_dir: Path):
        self.pids = {name: proc.pid for name, proc in procs.items()}
        self.python = PythonCounters(self.pids, dump_dir)
        self.pg = PgStatementLog(database_url)
        self.redis = RedisMonitor(redis_url)
        self.port_names: dict[int, str] = {}  # local TCP port -> engine process
        self.backend_names: dict[int, str] = {}  # Postgres backend pid -> engine process

    def snapshot(self) -> Snapshot:
        """Counters now; the Postgres and Redis positions are exact (markers)."""
        at = time.monotonic()
        python = self.python.snapshot()
        self._learn_owners()
        return Snapshot(at, python, self.pg.mark(), self.redis.mark())

    def _learn_owners(self) -> None:
        # Connections are kept open, so learning at every snapshot sees them all.
        self.port_names.update(ports_by_process(self.pids))
        for backend, port in self.pg.client_ports().items():
            if port in self.port_names:
                self.backend_names[backend] = self.port_names[port]

    def window(self, start: Snapshot, end: Snapshot) -> dict[tuple[str, str, str], float]:
        """{(section, process, counter): n} between two snapshots, and its length in seconds."""
        counts = {("window", "", "seconds"): end.at - start.at}
        for (process, key), n in end.python.items():
            counts[("python", process, key)] = n - start.python.get((process, key), 0)
        for (process, key), n in self.pg.count(start.pg_index, end.pg_index, self.backend_names).items():
            counts[("postgres", process, key)] = n
        for (process, key), n in self.redis.count(start.redis_index, end.redis_index, self.port_names).items():
            counts[("redis", process, key)] = n
        return with_totals(counts)

    def listing(self, start: Snapshot, end: Snapshot) -> list[str]:
        """Every statement and command between two snapshots, in order, with its sender."""
        return (["Postgres:"] + self.pg.listing(start.pg_index, end.pg_index, self.backend_names)
                + ["Redis:"] + self.redis.listing(start.redis_index, end.redis_index, self.port_names))

    def close(self) -> None:
        """Close the log and the monitor connection."""
        self.pg.close()
        self.redis.close()


def with_totals(counts: dict) -> dict:
    """Add the rows `workers` (all worker processes) and `total` (every sender) per section.

    Summed per window, so a median over windows is the median of the totals (the orders
    land on one worker or another: per-worker medians alone would not add up).
    """
    out = dict(counts)
    for (section, process, key), n in counts.items():
        if section == "window" or "/" in process or process == "lua":
            continue  # thread-kind rows repeat their process; Lua's commands are not round trips
        out[(section, "total", key)] = out.get((section, "total", key), 0) + n
        if process.startswith("worker"):
            out[(section, "workers", key)] = out.get((section, "workers", key), 0) + n
    return out


# ---- the load ------------------------------------------------------------------------------

async def _orders(client: AsyncEngineClient, count: int, timeout: float) -> list[dict]:
    """`count` orders submitted at once, each followed to its stream's close."""
    return list(await asyncio.gather(*(submit_and_listen(client, timeout) for _ in range(count))))


def _problems(results: list[dict]) -> list[str]:
    return [r.get("error") or f"{r.get('orderId')}: incomplete stream ({r['stream'].error})"
            for r in results if "error" in r or not r["stream"].complete]


async def _traced(tracer: Tracer, client: AsyncEngineClient, orders: int, tail: float, timeout: float) -> dict:
    """One window: `orders` orders at once, then `tail` seconds for trailing work."""
    start = tracer.snapshot()
    results = await _orders(client, orders, timeout)
    await asyncio.sleep(tail)
    end = tracer.snapshot()
    return {"orders": orders, "counts": tracer.window(start, end), "problems": _problems(results),
            "listing": tracer.listing(start, end)}


async def _idle(tracer: Tracer, seconds: float) -> dict:
    """A window with no order in flight: the background (polls, heartbeats, periodic checks)."""
    start = tracer.snapshot()
    await asyncio.sleep(seconds)
    return tracer.window(start, tracer.snapshot())


def _rate(idle: dict) -> dict:
    """An idle window's counts per second."""
    seconds = idle[("window", "", "seconds")]
    return {key: n / seconds for key, n in idle.items() if key[0] != "window"}


def per_order(window: dict, idle_rate: dict) -> dict:
    """A window's counts net of the idle background, divided by its orders."""
    counts, orders = window["counts"], window["orders"]
    length = counts[("window", "", "seconds")]
    keys = (set(counts) | set(idle_rate)) - {("window", "", "seconds")}
    return {key: (counts.get(key, 0) - idle_rate.get(key, 0.0) * length) / orders for key in keys}


async def _phase(strace: Strace | None, label: str, work):
    """Await `work`, with strace attached around it when asked: (result, syscalls or None)."""
    if strace is None:
        return await work, None
    strace.start(label)
    try:
        result = await work
    finally:
        calls = strace.stop()
    return result, calls


async def _windows(tracer: Tracer, client: AsyncEngineClient, args) -> list[dict]:
    if args.concurrent:
        return [await _traced(tracer, client, args.concurrent, args.tail, args.timeout)]
    return [await _traced(tracer, client, 1, args.tail, args.timeout) for _ in range(args.orders)]


async def run_trace(args, tracer: Tracer, port: int, run_dir: Path) -> dict:
    """Warm up, let the warm-up's after-effects pass, measure the idle background, trace."""
    strace = Strace(tracer.pids, run_dir / "strace") if args.strace else None
    client = engine_client(port, max(args.warmup, args.concurrent, 1))
    try:
        warm = await _orders(client, args.warmup, args.timeout)
        if _problems(warm):
            raise BenchError(f"warm-up failed: {_problems(warm)[:3]}")
        # What the warm-up sets off later (acks, one-off start-up work, timers that come due
        # some seconds after their order) must stay out of the idle and traced windows.
        # The idle window comes before the traced ones: after them, it would catch their
        # own late timers (an order's cancelled watchdogs still come due 10 s and more later).
        await asyncio.sleep(args.settle)
        idle, idle_calls = await _phase(strace, "idle", _idle(tracer, args.idle_seconds))
        windows, traced_calls = await _phase(strace, "traced", _windows(tracer, client, args))
    finally:
        client.close()
    idle_rate = _rate(idle)
    result = {"idleRate": idle_rate, "windows": windows, "perOrder": [per_order(w, idle_rate) for w in windows]}
    if strace is not None:
        result["syscallsPerOrder"] = syscalls_per_order(idle_calls, traced_calls, sum(w["orders"] for w in windows))
    return result


# ---- the report ----------------------------------------------------------------------------

def summarize(per_orders: list[dict], stat: str) -> dict:
    """Mean or median over the windows of each counter (absent = 0)."""
    keys = set().union(*per_orders)
    pick = statistics.mean if stat == "mean" else statistics.median
    return {key: pick([p.get(key, 0.0) for p in per_orders]) for key in keys}


def _processes(summary: dict, section: str, engine: list[str]) -> list[str]:
    """Rows of a section's table: each engine process, any unmapped sender, then the sums."""
    seen = {process for (sec, process, _) in summary if sec == section}
    extra = sorted(p for p in seen - set(engine) if "/" not in p and p not in ("lua", "workers", "total"))
    workers = ["workers"] if sum(name.startswith("worker") for name in engine) > 1 else []
    return engine + extra + workers + ["total"]


def _grid(title: str, rows: list[str], cols: list[str], value) -> str:
    """A right-aligned table of `value(row, col)`, one decimal."""
    cells = [["process"] + cols] + [[row] + [f"{value(row, col):.1f}" for col in cols] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols) + 1)]
    text = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join([f"-- {title}"] + text)


def _postgres_table(summary: dict, engine: list[str]) -> str:
    """Statements by kind per sender, with totals and durable commits."""
    cols = list(PG_KINDS) + ["round trips", "durable commits"]
    rows = _processes(summary, "postgres", engine)
    return _grid("Postgres statements by kind, and round trips (several statements may share one)", rows, cols,
                 lambda row, col: summary.get(("postgres", row, col), 0.0))


def _redis_table(summary: dict, engine: list[str]) -> str:
    """Commands by name per sender, most frequent first; Lua's own commands on a line apart."""
    totals = Counter()
    for (section, process, key), n in summary.items():
        if section == "redis" and process == "total" and key != "total":
            totals[key] += n
    cols = [key for key, n in totals.most_common() if abs(n) >= 0.05] + ["total"]
    rows = _processes(summary, "redis", engine)
    table = _grid("Redis commands (MULTI..EXEC is one round trip for the commands inside)", rows, cols,
                  lambda row, col: summary.get(("redis", row, col), 0.0))
    lua = {key: n for (section, process, key), n in summary.items() if section == "redis" and process == "lua"}
    if any(abs(n) >= 0.05 for n in lua.values()):
        table += "\n   inside Lua scripts (not round trips): " + ", ".join(
            f"{key[4:]} {n:.1f}" for key, n in sorted(lua.items(), key=lambda kv: -kv[1]) if abs(n) >= 0.05)
    return table


def _python_table(summary: dict, rows: list[str], title: str) -> str:
    """The COLUMNS of bench.counters for each row (a process or a kind of thread)."""
    raw = {row: {key: n for (section, process, key), n in summary.items() if section == "python" and process == row}
           for row in rows}
    return _grid(title, rows, list(COLUMNS), lambda row, col: columns(raw[row])[col])


def _detail(summary: dict, engine: list[str]) -> list[str]:
    """Per kind of thread, and the messages told or asked, per process."""
    kinds = sorted({process for (section, process, _) in summary if section == "python" and "/" in process})
    kinds = [k for k in kinds if any(abs(n) >= 0.05 for (s, p, _), n in summary.items() if s == "python" and p == k)]
    lines = [_python_table(summary, kinds, "Python calls per kind of thread (who made the call)")]
    for process in engine:
        messages = sorted(((key[4:], n) for (section, p, key), n in summary.items()
                           if section == "python" and p == process and key.startswith("msg:") and abs(n) >= 0.05),
                          key=lambda kv: -kv[1])
        if messages:
            lines.append(f"-- messages sent by {process}: " + ", ".join(f"{m} {n:.1f}" for m, n in messages))
    return lines


def report_text(result: dict, args, engine: list[str]) -> str:
    """The tables of one trace."""
    summary = summarize(result["perOrder"], args.stat)
    what = (f"{args.concurrent} orders submitted at once" if args.concurrent
            else f"{len(result['windows'])} single orders, one at a time")
    seconds = statistics.mean(w["counts"][("window", "", "seconds")] for w in result["windows"])
    workers = f"{args.workers} worker{'s' if args.workers != 1 else ''}"
    head = (f"== trace: {what}; 1 web + {workers}, instant venues; per order, "
            f"{args.stat} over the windows (each {seconds:.2f} s, tail {args.tail} s included), "
            f"idle background ({args.idle_seconds} s measured before them) subtracted")
    if len(result["windows"]) > 9:
        head += ("\n   (more than 9 windows: the first orders' cancelled watchdogs come due inside the "
                 "later windows, 10 s on, and count there as timer wake-ups)")
    parts = [head, _postgres_table(summary, engine), _redis_table(summary, engine),
             _python_table(summary, _processes(summary, "python", engine),
                           "Python calls per process (bench/tracehook counters)")]
    if args.detail:
        parts += _detail(summary, engine)
    if args.log:
        parts.append("-- the last window, in order (background included)\n" + "\n".join(result["windows"][-1]["listing"]))
    if "syscallsPerOrder" in result:
        calls = result["syscallsPerOrder"]
        parts.append(_grid("strace -f -c (cross-check; the traced phase as a whole, net of idle)",
                           [p for p in engine if p in calls], list(SYSCALLS),
                           lambda row, col: calls[row].get(col, 0.0)))
    problems = [p for w in result["windows"] for p in w["problems"]]
    if problems:
        parts.append(f"!! {len(problems)} traced orders did not complete: {problems[:3]}")
    return "\n\n".join(parts)


def _jsonable(result: dict) -> dict:
    def flat(counts: dict) -> dict:
        return {"|".join(key): round(n, 4) for key, n in sorted(counts.items())}
    return {"idleRatePerSecond": flat(result["idleRate"]),
            "windows": [{"orders": w["orders"], "problems": w["problems"], "counts": flat(w["counts"]),
                         "listing": w["listing"]}
                        for w in result["windows"]],
            "perOrder": [flat(p) for p in result["perOrder"]],
            "mean": flat(summarize(result["perOrder"], "mean")),
            "median": flat(summarize(result["perOrder"], "median")),
            "syscallsPerOrder": result.get("syscallsPerOrder")}


def _engine_order(names) -> list[str]:
    return sorted(names, key=lambda n: (not n.startswith("web"), n))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, start the cluster, trace, print the tables, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.trace", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5, help="single orders traced one after another (5)")
    parser.add_argument("--concurrent", type=int, default=0,
                        help="instead, trace K orders submitted at once (one window), per order")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--warmup", type=int, default=20, help="orders submitted at once before tracing (20)")
    parser.add_argument("--idle-seconds", type=float, default=4.0,
                        help="idle window before the traced ones, for the background rate (4)")
    parser.add_argument("--settle", type=float, default=11.0,
                        help="seconds between the warm-up and the first idle window (11)")
    parser.add_argument("--tail", type=float, default=1.0, help="seconds a window goes on after the streams close (1)")
    parser.add_argument("--stat", choices=["mean", "median"], default="mean", help="over the windows (mean)")
    parser.add_argument("--detail", action="store_true", help="also per kind of thread and every message sent")
    parser.add_argument("--log", action="store_true", help="also every statement and command of the last window")
    parser.add_argument("--strace", action="store_true",
                        help="also count futex/send/recv/read/write calls with strace -f -c (a cross-check)")
    parser.add_argument("--timeout", type=float, default=60, help="limit for one window's orders, seconds (60)")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.workers < 1 or args.concurrent < 0:
        parser.error("--orders and --workers must be at least 1, --concurrent at least 0")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / "logs" / stamp / "trace"
    env = {**THROUGHPUT_ENV, **hook_env(run_dir / "counters")}
    with cluster(env, workers=args.workers, log_dir=run_dir,
                 database_settings={"log_statement": "all"}) as (port, procs, database_url):
        tracer = Tracer(procs, database_url, procs["web0"].env["REDIS_URL"], run_dir / "counters")
        try:
            result = asyncio.run(run_trace(args, tracer, port, run_dir))
        finally:
            tracer.close()
    text = report_text(result, args, _engine_order(procs))
    out = RESULTS / f"trace-{stamp}.json"
    out.write_text(json.dumps({"machine": machine_info(), "command": " ".join(["bench.trace", *(argv or sys.argv[1:])]),
                               "settings": {**vars(args), "env": THROUGHPUT_ENV}, **_jsonable(result)}, indent=1))
    print(text + f"\n\nresults: {out.relative_to(REPO)}")
    return 1 if any(w["problems"] for w in result["windows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
