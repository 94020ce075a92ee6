"""Retention at size: `engine archive` on a generated history, then a restore of one month.

    python -m bench.archive --orders 1000000 [--days 100] [--retention-days 30]

Builds a fresh database with `orders` finished orders created over `days` (bench/history.py's
generator, the events in their months' partitions), then times, in a process of its own as an
operator runs it, `engine archive` at now - `retention-days` (every month that ended before it:
its orders moved, its partition detached) and `engine archive --restore` of the oldest month.
Prints one JSON line (with the log lines saying how long each DETACH held the events table).
The database is dropped afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import psycopg2

from bench.cluster import REPO, fresh_database, migrated_template
from bench.history import build_history


def _engine(url: str, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine", "archive", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "DATABASE_URL": url, "ORDER_RETENTION_DAYS": "0"}, check=True)
    lines = [line for line in done.stdout.splitlines()  # its outcome, and how long writers waited
             if line.startswith(("archived ", "restored ")) or "was held" in line]
    return round(time.monotonic() - started, 1), "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--retention-days", type=int, default=30)
    args = parser.parse_args()
    from storage.records import utcnow

    with fresh_database(prefix="bench_archive", template=migrated_template()) as url:
        built = build_history(url, args.orders, "bench-key", args.days)
        cutoff = f"{utcnow() - timedelta(days=args.retention_days):%Y-%m-%d}"
        archive_s, archived = _engine(url, "--before", cutoff)
        names = [line.split()[1].rstrip(":") for line in archived.splitlines() if line.startswith("archived ")]
        first = names[0] if names else None
        restore_s, restored = _engine(url, "--restore", first) if first else (0.0, "")
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM orders")
            hot = cur.fetchone()[0]
        conn.close()
    print(json.dumps({"history": built, "archiveSeconds": archive_s, "archived": archived.splitlines(),
                      "restoreSeconds": restore_s, "restored": restored, "hotOrdersAfter": hot}))


if __name__ == "__main__":
    main()
