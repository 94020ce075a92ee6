"""`python -m bench.run`: benchmark the production topology on fresh servers.

Each run starts its own cluster (fresh Postgres database, leased Redis index, `engine
migrate`, workers and one web), drives one scenario against it over 127.0.0.1, and stops
every process it started. See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from bench.cluster import REPO, BenchError, cluster, machine_info
from bench.cpu import CpuMeter
from bench.profile import Recorder, py_spy, summarize
from bench.triggers import TRIGGERS_ENV, protective, triggers
from bench.scenarios import (DRAIN_ENV, PARALLEL_STAGES, STAGES, THROUGHPUT_ENV, alone, db_commits, drain, event_times,
                              paced, stage_figures, stage_samples, throughput, verify_database)

RESULTS = REPO / "bench" / "results"
_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")

THROUGHPUT_KEYS = ["ordersPerSecond", "latencyP50Ms", "latencyP99Ms", "submitP50Ms", "submitP99Ms",
                   "serverCpuMsPerOrder"]
DRAIN_KEYS = ["actualSeconds", "idealSeconds", "ratio", "quotesInFlightPeak", "firstQuotesOverlapMs"]
LATENCY_KEYS = ["aloneP50Ms", "aloneP99Ms", "aloneMaxMs", "pacedRate", "pacedP50Ms", "pacedP99Ms", "pacedMaxMs",
                "pacedSubmitP50Ms", "pacedSubmitP99Ms", "serverCpuMsPerOrder", "commitsPerOrder"]
ALONE_WARMUP = 5  # orders before the alone ones, left out of the figures


def _run_client(coro):
    """Run the load client's coroutine on uvloop, as the web process runs (a client as lean
    as the engine's own loop: on two shared cores its CPU is the server's loss)."""
    import uvloop

    return uvloop.run(coro)


def _log_problems(procs) -> dict:
    """WARNING/ERROR lines and tracebacks in each process log (the first few of each)."""
    found = {}
    for name, proc in procs.items():
        lines = [line for line in proc.log_text().splitlines() if _PROBLEM.search(line)]
        code = proc.proc.poll()
        if lines or code is not None:
            found[name] = {"count": len(lines), "samples": lines[:5], "exitedDuringRun": code}
    return found


BENCH_KEY = "bench-key-0123456789-0123456789abcd"


def _env(base: dict, args) -> dict:
    """The scenario's settings, with API keys on when asked (their per-key limit lifted, as
    the start rate and queue depth are: the bench measures speed, not limits)."""
    if getattr(args, "keys", False):
        return {**base, "API_KEYS": BENCH_KEY, "KEY_RATE_LIMIT": "1000000"}
    return base


def run_throughput(args, log_dir: Path, profile_dir: Path | None = None) -> dict:
    """One throughput run: one web, `args.workers` workers, instant venues, `args.orders` orders."""
    with cluster(_env(THROUGHPUT_ENV, args), workers=args.workers, log_dir=log_dir) as (port, procs, database_url):
        pids = {name: proc.pid for name, proc in procs.items()}
        recorder = Recorder(profile_dir, args.profile_seconds) if profile_dir else None
        if recorder:
            for name, pid in pids.items():
                recorder.start(name, pid)
            recorder.start("client", os.getpid())
            pids.update(recorder.pids)
        meter = CpuMeter(pids)
        meter.start()
        started = time.monotonic()
        try:
            result = _run_client(asyncio.wait_for(
                throughput(port, args.orders, args.connections, args.listeners, args.timeout), args.timeout))
        finally:
            cpu = meter.stop()
            files = recorder.stop(args.profile_seconds + 30) if recorder else {}
        result["wallSeconds"] = round(time.monotonic() - started, 3)
        result["cpuCores"] = cpu
        result["cpuMsPerOrder"] = meter.ms_per_order(result.get("confirmed") or 0, list(procs))
        result["serverCpuMsPerOrder"] = result["cpuMsPerOrder"].get("server")
        result["db"] = verify_database(database_url, args.orders)
        result["logProblems"] = _log_problems(procs)
        result.pop("orderIds", None)
        if files:
            expected = args.profile_seconds * recorder.rate
            result["profile"] = {name: {"file": str(path), **summarize(path, expected_samples=expected)}
                                 for name, path in files.items()}
        return result


def run_drain(args, log_dir: Path) -> dict:
    """One drain run: one web, one worker, realistic venues, `args.drain_orders` orders at once."""
    concurrency = int(DRAIN_ENV["WORKER_CONCURRENCY"])
    with cluster(DRAIN_ENV, workers=1, log_dir=log_dir) as (port, procs, database_url):
        meter = CpuMeter({name: proc.pid for name, proc in procs.items()})
        meter.start()
        try:
            result = _run_client(asyncio.wait_for(
                drain(port, args.drain_orders, concurrency, args.timeout), args.timeout))
        finally:
            cpu = meter.stop()
        result["cpuCores"] = cpu
        result["db"] = verify_database(database_url, args.drain_orders)
        result["logProblems"] = _log_problems(procs)
        result.pop("orderIds", None)
        return result


TRIGGER_KEYS = ["bytesPerArmedOrder", "pushes", "crossingToFirstRoutingMs", "crossingToLastRoutingMs", "released",
                "executedTwice", "sniperDelayP50Ms", "sniperDelayP99Ms", "sniperDelayMaxMs"]


PROTECTIVE_KEYS = ["armed", "overIdleMb", "bytesPerArmedOrder", "trailEventsPerSecond", "released"]


def run_triggers(args, log_dir: Path) -> dict:
    """One triggers run: one web, one worker holding `args.armed` armed limit orders (or, with
    `--kinds protective`, protective orders); see bench/triggers.py."""
    with cluster(TRIGGERS_ENV, workers=1, log_dir=log_dir) as (port, procs, database_url):
        worker = next(proc for name, proc in procs.items() if name.startswith("worker"))
        if args.kinds == "protective":
            run = protective(port, worker.pid, database_url, args.armed, args.timeout)
        else:
            run = triggers(port, worker.pid, database_url, args.armed, args.crossing, args.snipers, args.timeout)
        result = _run_client(asyncio.wait_for(run, args.timeout))
        result["logProblems"] = _log_problems(procs)
        return result


QUOTE_KEYS = ["subscribers", "subscribed", "errors", "webCores", "clientCores", "framesPerSecond",
              "computationsPerSecond", "pushSubscribers", "pushReached", "pushP50Ms", "pushP99Ms", "pushMaxMs"]


def run_quotes(args, log_dir: Path) -> dict:
    """One quotes run: one web, one worker, subscribers in steps; see bench/quotes.py."""
    from bench.quotes import QUOTES_ENV, quotes

    steps = [int(n) for n in args.subscribers.split(",")]
    with cluster(QUOTES_ENV, workers=1, log_dir=log_dir) as (port, procs, database_url):
        pids = {name: proc.pid for name, proc in procs.items()}
        result = _run_client(asyncio.wait_for(quotes(port, pids, steps, args.window, args.timeout),
                                              args.timeout * (len(steps) + 1)))
        result["logProblems"] = _log_problems(procs)
        result["db"] = {"ok": True}  # nothing to verify: no order is the point here
        return result


def _quotes_table(runs: list[dict]) -> str:
    """One line per step of each run."""
    lines = ["quotes (1 web + 1 worker; subscribers on 4 pairs, one subscription per connection)",
             "  ".join(QUOTE_KEYS)]
    for run in runs:
        for step in run.get("steps", []):
            lines.append("  ".join(str(step.get(k)) for k in QUOTE_KEYS))
        if "error" in run:
            lines.append(f"error: {run['error']}")
    return "\n".join(lines)


def _write_samples(path: Path, samples: list[dict]) -> None:
    """One row per order, in submit order: its id, its send time (s since the part's first),
    then in ms submit -> confirmed frame, the HTTP submit, how late it was sent (paced) and each stage."""
    keys = ["sentAtS", "latency", "submit", "sendLag"] + [key for key, *_ in STAGES + PARALLEL_STAGES]
    lines = [",".join(["orderId"] + keys)]
    lines += [",".join([s["orderId"]] + [f"{s[k]:.4f}" if k in s else "" for k in keys]) for s in samples]
    path.write_text("\n".join(lines) + "\n")


def run_latency(args, log_dir: Path) -> dict:
    """One latency run on the throughput scenario's cluster: orders alone, then an open-loop
    paced load; stages of each order from the stored event timestamps."""
    with cluster(_env(THROUGHPUT_ENV, args), workers=args.workers, log_dir=log_dir) as (port, procs, database_url):
        alone_part = _run_client(asyncio.wait_for(
            alone(port, args.alone_orders, ALONE_WARMUP, args.timeout), args.timeout))
        warmup = args.paced_orders // 10
        meter = CpuMeter({name: proc.pid for name, proc in procs.items()})
        time.sleep(1.1)  # the alone part's commits reach the statistics
        commits = db_commits(database_url)
        meter.start()
        started = time.monotonic()
        try:
            paced_part = _run_client(asyncio.wait_for(
                paced(port, args.rate, args.paced_orders, warmup, args.connections, args.timeout), args.timeout))
        finally:
            cpu = meter.stop()
        time.sleep(1.1)
        # durable commits (each a WAL flush) per paced order: what batching saves, whatever the noise
        commits_per_order = round((db_commits(database_url) - commits) / max(1, paced_part["allConfirmed"]), 2)
        result = {k: v for part in (alone_part, paced_part) for k, v in part.items()
                  if k not in ("results", "warmupResults")}
        result["pacedWallSeconds"] = round(time.monotonic() - started, 3)
        result["cpuCores"] = cpu
        # the whole paced part, its warm-up included, over all its confirmed orders
        result["cpuMsPerOrder"] = meter.ms_per_order(paced_part["allConfirmed"], list(procs))
        result["serverCpuMsPerOrder"] = result["cpuMsPerOrder"].get("server")
        result["commitsPerOrder"] = commits_per_order
        result["incompleteStreams"] = (alone_part["aloneIncompleteStreams"] + alone_part["aloneWarmupIncompleteStreams"]
                                       + paced_part["allIncompleteStreams"])
        every = (alone_part["warmupResults"] + alone_part["results"] + paced_part["warmupResults"]
                 + paced_part["results"])
        times = event_times(database_url, [r["orderId"] for r in every if "orderId" in r])
        for name, part in (("alone", alone_part), ("paced", paced_part)):
            samples = stage_samples(part["results"], times)
            result[f"{name}Stages"] = stage_figures(samples)
            _write_samples(log_dir / f"{name}-samples.csv", samples)
            result[f"{name}SamplesFile"] = str((log_dir / f"{name}-samples.csv").relative_to(REPO))
        result["db"] = verify_database(database_url, len(every))
        result["logProblems"] = _log_problems(procs)
        return result


def _cpu_order(name: str) -> tuple:
    """web first, then the workers, anything else, the servers, and kernel/other last."""
    rank = {"postgres": 3, "redis": 4, "kernel/other": 5}
    return (0 if name.startswith("web") else 1 if name.startswith("worker") else rank.get(name, 2), name)


def cpu_line(per_order: dict[str, float], label: str = "CPU ms per order") -> str:
    """`CPU ms per order: web0 2.50, worker0 1.80, ... | server 7.50 | client 1.00`."""
    apart = ("server", "client")
    parts = [f"{name} {per_order[name]:.2f}" for name in sorted(per_order, key=_cpu_order) if name not in apart]
    return (f"{label}: {', '.join(parts)} | server {per_order.get('server', 0):.2f}"
            f" | client {per_order.get('client', 0):.2f}")


def _median_cpu(runs: list[dict]) -> dict[str, float]:
    """Median of each part of `cpuMsPerOrder` over the runs that have it."""
    per_run = [r["cpuMsPerOrder"] for r in runs if r.get("cpuMsPerOrder")]
    names = {name for per in per_run for name in per}
    return {name: round(statistics.median(per[name] for per in per_run if name in per), 3) for name in names}


def _median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def _table(name: str, runs: list[dict], keys: list[str]) -> str:
    extra = ["incompleteStreams", "dbOk"]
    header = ["run"] + keys + extra
    rows = []
    for i, r in enumerate(runs, 1):
        if "error" in r:
            rows.append([str(i), f"ERROR: {r['error'][:80]}"])
            continue
        rows.append([str(i)] + [str(r.get(k)) for k in keys]
                    + [str(r.get("incompleteStreams")), str(r.get("db", {}).get("ok"))])
    good = [r for r in runs if "error" not in r]
    rows.append(["median"] + [str(_median(good, k)) for k in keys] + ["", ""])
    widths = [max(len(header[c]), *(len(row[c]) for row in rows if c < len(row))) for c in range(len(header))]
    lines = [f"== {name}", "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    for row in rows:
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) if len(row) == len(header)
                     else "  ".join(row))
    return "\n".join(lines)


def _stage_table(runs: list[dict], part: str) -> str:
    """Each stage's p50 / p99 per run and the medians of both over the runs, ms."""
    good = [r for r in runs if "error" not in r and r.get(f"{part}Stages")]
    header = ["stage (ms: p50 / p99)"] + [f"run {i}" for i, r in enumerate(runs, 1) if r in good] + ["median"]
    rows = []
    for key, _, _, label in STAGES + [(None, None, None, None)] + PARALLEL_STAGES:
        if key is None:
            rows.append(["  sum: submit -> confirmed frame"]
                        + [f"{r.get(part + 'P50Ms')} / {r.get(part + 'P99Ms')}" for r in good]
                        + [f"{_median(good, part + 'P50Ms')} / {_median(good, part + 'P99Ms')}"])
            continue
        cells = [r[f"{part}Stages"][key] for r in good]
        p50 = [c["p50"] for c in cells if c["p50"] is not None]
        p99 = [c["p99"] for c in cells if c["p99"] is not None]
        med = (f"{round(statistics.median(p50), 2)} / {round(statistics.median(p99), 2)}" if p50 and p99 else "")
        rows.append([label] + [f"{c['p50']} / {c['p99']}" for c in cells] + [med])
    widths = [max(len(header[c]), *(len(row[c]) for row in rows)) for c in range(len(header))]
    lines = ["  ".join([header[0].ljust(widths[0])] + [h.rjust(w) for h, w in zip(header[1:], widths[1:])])]
    lines += ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]) for row in rows]
    return "\n".join(lines)


def _latency_text(args, runs: list[dict]) -> str:
    """The run table, the targets, and the stage breakdown of the alone and the paced orders."""
    workers = f"{args.workers} worker{'s' if args.workers != 1 else ''}"
    good = [r for r in runs if "error" not in r]
    text = _table(f"latency ({args.alone_orders} orders alone; {args.paced_orders} paced at {args.rate:g}/s, "
                  f"first {args.paced_orders // 10} a warm-up; 1 web + {workers}, instant venues)", runs, LATENCY_KEYS)
    if not good:
        return text
    text += "\n" + cpu_line(_median_cpu(good), "CPU ms per order of the paced part (medians)")
    text += (f"\ntargets (medians): paced p99 {_median(good, 'pacedP99Ms')} ms (< 100); alone p50 "
             f"{_median(good, 'aloneP50Ms')}, p99 {_median(good, 'aloneP99Ms')}, max {_median(good, 'aloneMaxMs')} ms"
             f" (< 20); send lag p99 {_median(good, 'pacedSendLagP99Ms')} ms")
    text += f"\n-- stages of the paced orders (measured part)\n{_stage_table(runs, 'paced')}"
    text += f"\n-- stages of the orders alone\n{_stage_table(runs, 'alone')}"
    return text


def _profile_text(run: dict, top: int = 8) -> str:
    """Per process: cores used, GIL held, threads and the top functions by own Python CPU."""
    if "error" in run:
        return f"== profiled throughput run: ERROR {run['error'][:200]}"
    lines = [f"== profiled throughput run (py-spy --gil attached; slower than the others): "
             f"{run.get('ordersPerSecond')} orders/s; cores used: {run.get('cpuCores')}"]
    for name, prof in run.get("profile", {}).items():
        lines.append(f"-- {name}: {prof['samples']} samples, GIL held ~{prof['gilHeldPct']}% of the time; threads: "
                     + ", ".join(f"{t['function']} {t['pct']}%" for t in prof["threads"][:5]))
        lines += [f"   self {f['pct']:5.1f}%  {f['function']}" for f in prof["self"][:top]]
        lines += [f"   incl {f['pct']:5.1f}%  {f['function']}" for f in prof["project"][:top] if name != "client"]
    return "\n".join(lines)


def _run_many(label: str, count: int, runner, stamp: str) -> list[dict]:
    runs = []
    for i in range(1, count + 1):
        log_dir = RESULTS / "logs" / stamp / f"{label}-{i}"
        print(f"[{label} {i}/{count}] starting (logs in {log_dir.relative_to(REPO)})", flush=True)
        try:
            result = runner(log_dir)
        except (BenchError, asyncio.TimeoutError, OSError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
        brief = {k: result.get(k) for k in dict.fromkeys(THROUGHPUT_KEYS + DRAIN_KEYS + LATENCY_KEYS
                                                         + ["incompleteStreams", "error"])
                 if result.get(k) is not None}
        print(f"[{label} {i}/{count}] {brief}", flush=True)
        if result.get("cpuMsPerOrder"):
            print(f"[{label} {i}/{count}] {cpu_line(result['cpuMsPerOrder'])}", flush=True)
        runs.append(result)
    return runs


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the scenarios, print a table and write JSON results."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["throughput", "drain", "latency", "triggers", "history", "quotes", "all"],
                        default="all", help="all = throughput, drain and latency (triggers, history and quotes run "
                        "alone)")
    parser.add_argument("--orders", type=int, default=2000, help="orders per throughput run (2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of a throughput or latency run (2)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each scenario (3); medians reported (0 with --profile: the profiled run only)")
    parser.add_argument("--drain-orders", type=int, default=100, help="orders of a drain run (100)")
    parser.add_argument("--connections", type=int, default=50, help="HTTP keep-alive connections (50)")
    parser.add_argument("--listeners", type=int, default=200,
                        help="throughput: most orders in flight, i.e. WebSocket listeners open at once (200)")
    parser.add_argument("--alone-orders", type=int, default=50,
                        help="latency: orders submitted one after another, each alone (50)")
    parser.add_argument("--paced-orders", type=int, default=2500,
                        help="latency: orders of the open-loop paced load, the first 10%% a warm-up (2500)")
    parser.add_argument("--rate", type=float, default=250, help="latency: orders/s of the paced load (250)")
    parser.add_argument("--keys", action="store_true",
                        help="throughput and latency with API_KEYS set: every request carries a key")
    parser.add_argument("--armed", type=int, default=10000, help="triggers: limit orders armed on one worker (10000)")
    parser.add_argument("--crossing", type=int, default=1000, help="triggers: how many of them the push crosses (1000)")
    parser.add_argument("--snipers", type=int, default=100, help="triggers: sniper orders waiting for a launch (100)")
    parser.add_argument("--kinds", choices=["limit", "protective"], default="limit",
                        help="triggers: arm limit orders (and run the crossing and snipers), or protective orders "
                             "(stop-limit, trailing_stop, oco, stop_loss: memory and trail events only)")
    parser.add_argument("--history-orders", type=int, default=10_000_000,
                        help="history: finished orders generated in the database (10,000,000; ~4.6 events each)")
    parser.add_argument("--read-samples", type=int, default=200, help="history: requests per read (200)")
    parser.add_argument("--subscribers", default="1000,5000,10000",
                        help="quotes: quote subscribers in all at each step (1000,5000,10000)")
    parser.add_argument("--window", type=float, default=10, help="quotes: seconds of each step's steady window (10)")
    parser.add_argument("--timeout", type=float, default=300, help="hard limit of one run's load, seconds (300)")
    parser.add_argument("--profile", action="store_true",
                        help="one extra throughput run with py-spy on every process (reported apart)")
    parser.add_argument("--profile-seconds", type=int, default=10)
    args = parser.parse_args(argv)
    if args.keys:
        from bench import client

        client.API_KEY = BENCH_KEY
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.alone_orders < 1 or args.paced_orders < 10 or args.rate <= 0:
        parser.error("--alone-orders must be at least 1, --paced-orders at least 10 and --rate above 0")
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    history_failed = False
    report = {"machine": machine_info(), "command": " ".join([os.path.basename(sys.executable), "-m", "bench.run"]
                                                              + (argv if argv is not None else sys.argv[1:])),
              "startedAt": stamp, "scenarios": {},
              "settings": {"throughput": THROUGHPUT_ENV, "drain": DRAIN_ENV, "latency": THROUGHPUT_ENV}}
    print(f"machine: {report['machine']}", flush=True)
    tables = []
    if args.scenario in ("throughput", "all") and args.runs > 0:
        runs = _run_many("throughput", args.runs, lambda d: run_throughput(args, d), stamp)
        good = [r for r in runs if "error" not in r]
        report["scenarios"]["throughput"] = {
            "orders": args.orders, "workers": args.workers, "connections": args.connections,
            "listeners": args.listeners, "median": {k: _median(good, k) for k in THROUGHPUT_KEYS},
            "medianCpuMsPerOrder": _median_cpu(good), "runs": runs}
        workers = f"{args.workers} worker{'s' if args.workers != 1 else ''}"
        table = _table(f"throughput ({args.orders} orders, 1 web + {workers}, instant venues)", runs, THROUGHPUT_KEYS)
        if good:
            table += "\n" + cpu_line(_median_cpu(good), "CPU ms per order (medians)")
        tables.append(table)
    if args.scenario in ("drain", "all") and args.runs > 0:
        runs = _run_many("drain", args.runs, lambda d: run_drain(args, d), stamp)
        good = [r for r in runs if "error" not in r]
        report["scenarios"]["drain"] = {"orders": args.drain_orders,
                                        "median": {k: _median(good, k) for k in DRAIN_KEYS}, "runs": runs}
        tables.append(_table(f"drain ({args.drain_orders} orders at once, 1 web + 1 worker, realistic venues)",
                             runs, DRAIN_KEYS))
    if args.scenario in ("latency", "all") and args.runs > 0:
        runs = _run_many("latency", args.runs, lambda d: run_latency(args, d), stamp)
        good = [r for r in runs if "error" not in r]
        report["scenarios"]["latency"] = {
            "aloneOrders": args.alone_orders, "aloneWarmupOrders": ALONE_WARMUP, "pacedOrders": args.paced_orders,
            "pacedWarmupOrders": args.paced_orders // 10, "rate": args.rate, "workers": args.workers,
            "connections": args.connections, "median": {k: _median(good, k) for k in LATENCY_KEYS},
            "medianCpuMsPerOrder": _median_cpu(good), "runs": runs}
        tables.append(_latency_text(args, runs))
    if args.scenario == "triggers" and args.runs > 0:
        runs = _run_many("triggers", args.runs, lambda d: run_triggers(args, d), stamp)
        good = [r for r in runs if "error" not in r]
        report["scenarios"]["triggers"] = {"armed": args.armed, "crossing": args.crossing, "snipers": args.snipers,
                                           "kinds": args.kinds, "runs": runs, "median": {
                                               k: _median(good, k) for k in (
                                                   PROTECTIVE_KEYS if args.kinds == "protective" else TRIGGER_KEYS)}}
        if args.kinds == "protective":
            tables.append(_table(f"triggers ({args.armed} armed protective orders on 1 worker)", runs,
                                 PROTECTIVE_KEYS))
        else:
            tables.append(_table(f"triggers ({args.armed} armed limit orders on 1 worker, {args.crossing} crossed; "
                                 f"{args.snipers} sniper orders)", runs, TRIGGER_KEYS))
    if args.scenario == "history" and args.runs > 0:
        from bench.reads import history_table, run_history

        empty, full = [], []
        for i in range(args.runs):  # interleaved: empty, history, empty, history, ...
            empty += _run_many(f"history-empty-{i + 1}", 1, lambda d: run_history(args, d, 0, BENCH_KEY), stamp)
            full += _run_many(f"history-full-{i + 1}", 1,
                              lambda d: run_history(args, d, args.history_orders, BENCH_KEY), stamp)
        report["scenarios"]["history"] = {"historyOrders": args.history_orders, "empty": empty, "history": full,
                                          "runs": []}  # checked here: no `db` check applies
        history_failed = any("error" in r or r.get("incompleteStreams") for r in empty + full)
        tables.append(history_table([r for r in empty if "error" not in r], [r for r in full if "error" not in r],
                                    args.history_orders))
    if args.scenario == "quotes" and args.runs > 0:
        runs = _run_many("quotes", args.runs, lambda d: run_quotes(args, d), stamp)
        report["scenarios"]["quotes"] = {"subscribers": args.subscribers, "window": args.window, "runs": runs}
        tables.append(_quotes_table(runs))
    if args.profile:
        profile_dir = RESULTS / "profiles" / stamp
        [profiled] = _run_many("profiled-throughput", 1, lambda d: run_throughput(args, d, profile_dir), stamp)
        report["profiledThroughput"] = profiled

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    if args.profile:
        tables.append(_profile_text(report["profiledThroughput"]))
    print("\n" + "\n\n".join(tables))
    print(f"\nmachine: {report['machine']['nproc']} x {report['machine']['cpuModel']}, "
          f"Python {report['machine']['python']}\nresults: {out.relative_to(REPO)}")
    runs = [r for s in report["scenarios"].values() for r in s["runs"]]
    runs += [report["profiledThroughput"]] if args.profile else []
    failed = any("error" in r or r.get("incompleteStreams") or not r.get("db", {}).get("ok")
                 for r in runs)
    return 1 if failed or history_failed else 0


if __name__ == "__main__":
    sys.exit(main())
