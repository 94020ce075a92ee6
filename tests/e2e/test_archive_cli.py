"""`engine archive` as an operator runs it: a process of its own on the engine's Postgres."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from bench.cluster import REPO
from config import load_settings
from storage.runtime import open_storage
from tests.integration.test_retention import CUTOFF, NAME, OLD, _backdate, _order
from storage import retention

pytestmark = pytest.mark.e2e


def engine_archive(database_url: str, *args: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DATABASE_URL": database_url, "ORDER_RETENTION_DAYS": "0"}
    return subprocess.run([sys.executable, "-m", "engine", "archive", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=60)


def test_engine_archive_says_what_it_would_do_archives_and_restores_a_month(postgres_url):
    storage = open_storage(load_settings({"DATABASE_URL": postgres_url, "REDIS_URL": ""}, dotenv=None))
    try:
        orders = storage.orders
        retention.ensure_partition(orders.direct.get(), OLD)
        done, armed = [_order(orders), _order(orders)], _order(orders, status="waiting")
        _backdate(orders, done + [armed], OLD + timedelta(days=2))
        before = f"{CUTOFF:%Y-%m-%d}"
        plan = engine_archive(postgres_url, "--before", before, "--dry-run")
        assert (plan.returncode, plan.stdout) == (0, f"would archive {NAME}: 2 orders, 4 events\n"), plan.stderr
        assert orders.get_order(done[0])  # a dry run changes nothing
        done_run = engine_archive(postgres_url, "--before", before)
        lines = done_run.stdout.splitlines()  # a log line says how long the events table was held
        assert lines[-1] == f"archived {NAME}: 2 orders, 4 events (partition detached)", done_run.stderr
        assert "the events table was held" in lines[0]
        assert orders.get_order(armed).status == "waiting"
        back = engine_archive(postgres_url, "--restore", NAME)
        assert (back.returncode, back.stdout) == (0, f"restored {NAME}: 2 orders, 4 events\n"), back.stderr
        assert [e.status for e in orders.get_order(done[0]).events] == ["pending", "cancelled"]
        refused = engine_archive(postgres_url)  # ORDER_RETENTION_DAYS=0: keep everything unless told
        assert refused.returncode == 2 and "ORDER_RETENTION_DAYS" in refused.stderr
    finally:
        storage.close()
