"""The command-line client (`engine submit | orders | order | quote | tokens`) against `engine run`,
run as a user runs it: a separate process, piped (plain and --json) or on a terminal (a pty)."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from bench.cluster import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("cli")]  # on one worker: the shared engines start once
SHARE_ENGINE_RUN = True  # start_engine's `engine run` is module_engine_run: each test asserts on its own orders

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def engine(port: int, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `engine ARGS...` against the engine on `port` (ENGINE_URL), piped: plain output."""
    environ = {k: v for k, v in os.environ.items() if k not in ("ENGINE_API_KEY", "ENGINE_URL", "PORT")}
    environ.update({"ENGINE_URL": f"http://127.0.0.1:{port}", **(env or {})})
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=timeout)


def test_submit_watch_follows_the_order_to_confirmed_with_its_route_and_price_and_exits_0(start_engine):
    port = start_engine(VENUE_PROFILE="realistic", VENUE_LATENCY_SCALE="0.5")  # the realistic steps, twice as fast
    done = engine(port, "submit", "SOL", "USDC", "1.5", "--slippage-bps", "100", "--watch")
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[1] for line in lines] == ["pending", "routing", "building", "submitted", "confirmed"]
    assert len({line[0] for line in lines}) == 1 and re.fullmatch(UUID, lines[0][0])
    assert re.search(r"-> (raydium|meteora) \(min [0-9.]+ USDC\)", lines[1][2])
    assert re.match(r"1\.5 SOL -> [0-9.]+ USDC on (raydium|meteora) at 1[0-9]{2}\.[0-9]+ tx \w{80,}", lines[4][2])
    assert done.stderr == ""

    order = json.loads(engine(port, "order", lines[0][0], "--json").stdout)
    assert order["status"] == "confirmed" and len(order["events"]) == 5
    shown = engine(port, "order", lines[0][0])
    assert shown.returncode == 0 and "Timeline" not in shown.stdout  # plain: tables without titles
    assert "confirmed" in shown.stdout and order["fills"][0]["txHash"] in shown.stdout


def test_watch_exits_1_when_the_order_fails_and_2_with_the_apis_message_on_a_bad_request(module_engine_run):
    port = module_engine_run()  # the default, shared: each test asserts on its own orders
    failed = engine(port, "submit", "BONK", "USDC", "0.00001", "--watch")
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1].split("\t")[1:] == [
        "failed", "insufficient_liquidity: the amount is too small to buy one base unit (attempts: 1)"]

    bad = engine(port, "submit", "SOL", "SOL", "1", "--watch")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "engine: tokenIn and tokenOut are both SOL [tokenOut] (same_token)"
    bad_json = engine(port, "submit", "SOL", "USDC", "0", "--json")
    assert bad_json.returncode == 2 and json.loads(bad_json.stderr)["error"]["code"] == "invalid_amount"
    unknown = engine(port, "order", "00000000-0000-0000-0000-000000000000", "--watch")
    assert unknown.returncode == 2 and "no such order" in unknown.stderr and "Traceback" not in unknown.stderr

    nowhere = engine(port, "tokens", "--url", "http://127.0.0.1:9")  # nothing listens on port 9
    assert nowhere.returncode == 3 and "cannot reach the engine" in nowhere.stderr


def test_orders_order_quote_and_tokens_print_tables_or_the_apis_json(module_engine_run):
    port = module_engine_run()  # the default, shared: none of the module's orders expires
    accepted = json.loads(engine(port, "submit", "SOL", "USDC", "0.25", "--json", "--client-order-id", "cli-1").stdout)
    assert accepted["status"] == "pending" and accepted["clientOrderId"] == "cli-1"
    engine(port, "order", accepted["orderId"], "--watch")  # wait for it, quietly

    listing = engine(port, "orders", "--status", "confirmed")
    header, *rows = [line.split("\t") for line in listing.stdout.splitlines()]
    assert header == ["orderId", "status", "pair", "amount", "venue", "price", "age"]
    assert rows[0][:4] == [accepted["orderId"], "confirmed", "SOL/USDC", "0.25"]
    # none expired on this engine (the failing test's order failed: a status that may be there)
    assert json.loads(engine(port, "orders", "--status", "expired", "--json").stdout)["orders"] == []

    quote = engine(port, "quote", "SOL", "USDC", "1.5", "--slippage-bps", "100")
    assert quote.returncode == 0
    assert {line.split("\t")[0] for line in quote.stdout.splitlines()} >= {"venue", "raydium", "meteora"}
    assert re.search(r"route: (raydium|meteora) -> [0-9.]+ USDC \(min [0-9.]+ at 100 bps slippage\)", quote.stdout)
    quote_json = json.loads(engine(port, "quote", "SOL", "USDC", "1.5", "--json").stdout)
    assert set(quote_json["quotes"]) == {"raydium", "meteora"}

    tokens = engine(port, "tokens").stdout.splitlines()
    assert tokens[0] == "symbol\tmint\tdecimals\ttradable"
    assert "POPCAT\t7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr\t9\tnot yet" in tokens


def test_on_a_terminal_watch_shows_one_progress_line_then_the_outcome(module_engine_run):
    port = module_engine_run(VENUE_PROFILE="realistic", VENUE_LATENCY_SCALE="0.5")  # a swap of 1-1.5 s to watch
    environ = {k: v for k, v in os.environ.items() if k != "ENGINE_API_KEY"}
    environ.update({"ENGINE_URL": f"http://127.0.0.1:{port}", "COLUMNS": "160", "TERM": "xterm-256color"})
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "submit", "SOL", "USDC", "1", "--watch"], cwd=REPO,
                            env=environ, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert proc.wait(10) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", output.decode("utf-8", "replace"))
    assert "pending > routing > building > submitted" in text  # the line grew in place...
    assert "\r" in text  # ...rewritten, not printed again on new lines
    last = [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-2:]
    assert re.match(r"confirmed\s+" + UUID + r"\s+1 SOL -> [0-9.]+ USDC on (raydium|meteora) at", last[0]), last
    assert "Traceback" not in text


TRADING_KEY, OPERATOR_KEY = "cli-trading-key-0123456789abcdefgh", "cli-operator-key-0123456789abcdefg"


def test_the_key_comes_from_ENGINE_API_KEY_and_a_missing_key_exits_2_with_the_reason(module_engine_run):
    port = module_engine_run(API_KEYS=TRADING_KEY, ADMIN_KEYS=OPERATOR_KEY)  # shared with the admin test
    missing = engine(port, "tokens")
    assert missing.returncode == 2 and "ENGINE_API_KEY" in missing.stderr
    done = engine(port, "submit", "SOL", "USDC", "0.1", "--watch",
                  env={"ENGINE_API_KEY": TRADING_KEY})
    assert done.returncode == 0 and done.stdout.splitlines()[-1].split("\t")[1] == "confirmed"


def test_engine_admin_halts_resumes_manages_keys_and_reads_the_audit_log(module_engine_run):
    trading, operator = TRADING_KEY, OPERATOR_KEY
    port = module_engine_run(API_KEYS=trading, ADMIN_KEYS=operator)  # the key test makes no admin action
    admin = {"ENGINE_ADMIN_KEY": operator}

    unset = engine(port, "admin", "halts")
    assert unset.returncode == 2 and "ENGINE_ADMIN_KEY" in unset.stderr
    wrong = engine(port, "admin", "halts", env={"ENGINE_ADMIN_KEY": trading})
    assert wrong.returncode == 2 and "(forbidden)" in wrong.stderr and "ENGINE_ADMIN_KEY" in wrong.stderr

    halted = engine(port, "admin", "halt", "--pair", "SOL/USDC", "--reason", "depeg drill", env=admin)
    assert halted.returncode == 0 and halted.stdout.strip() == "halted: pair SOL/USDC", halted.stderr
    listed = engine(port, "admin", "halts", env=admin)
    assert listed.returncode == 0 and "pair SOL/USDC\tdepeg drill\t" in listed.stdout
    refused = engine(port, "submit", "USDC", "SOL", "10", env={"ENGINE_API_KEY": trading})
    assert refused.returncode == 3, refused  # retry later: 503
    assert "depeg drill" in refused.stderr and "(trading_halted)" in refused.stderr
    assert engine(port, "admin", "resume", "--pair", "SOL/USDC", env=admin).stdout.strip() == "resumed: pair SOL/USDC"
    assert engine(port, "submit", "USDC", "SOL", "10", env={"ENGINE_API_KEY": trading}).returncode == 0

    created = json.loads(engine(port, "admin", "keys", "create", "--label", "cli", "--json", env=admin).stdout)
    assert len(created["key"]) >= 32
    keys = engine(port, "admin", "keys", env=admin).stdout
    assert created["keyId"] in keys and "cli" in keys and created["key"] not in keys
    placed = engine(port, "submit", "SOL", "USDC", "0.1", "--type", "limit", "--limit-price", "100000",
                    env={"ENGINE_API_KEY": created["key"]})
    assert placed.returncode == 0, placed.stderr
    cancelled = engine(port, "admin", "keys", "cancel-all", created["keyId"], env=admin)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith("cancelled 1,"), cancelled.stdout
    assert engine(port, "admin", "keys", "revoke", created["keyId"], env=admin).returncode == 0
    revoked = engine(port, "orders", env={"ENGINE_API_KEY": created["key"]})
    assert revoked.returncode == 2 and "(unauthorized)" in revoked.stderr

    audit = engine(port, "admin", "audit", env=admin).stdout.splitlines()
    actions = [line.split("\t")[3] for line in audit[1:]]
    assert actions == ["keys.revoke", "keys.cancel_all", "keys.create", "resume", "halt"], audit


def test_a_twap_is_submitted_and_watched_to_completed_and_a_dca_paused_and_resumed(module_engine_run):
    port = module_engine_run()  # the default: instant venues
    done = engine(port, "submit", "SOL", "USDC", "1", "--type", "twap", "--duration", "2", "--slices", "2",
                  "--slippage-bps", "5000", "--watch")
    assert done.returncode == 0, done.stderr + done.stdout
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert lines[0][1] == "pending" and lines[-1][1] == "completed", lines
    shown = engine(port, "order", lines[0][0])
    assert "2 slices over 2 s" in shown.stdout and "2/2 settled, filled 1," in shown.stdout, shown.stdout
    dca = engine(port, "submit", "USDC", "SOL", "1", "--type", "dca", "--interval", "3600", "--count", "2")
    parent = dca.stdout.split("\t")[0]
    paused = engine(port, "order", parent, "--pause", "--json")
    assert paused.returncode == 0 and json.loads(paused.stdout)["paused"] is True, paused.stderr
    resumed = engine(port, "order", parent, "--resume")
    assert resumed.returncode == 0 and "(paused)" not in resumed.stdout and "2 times every 3600 s" in resumed.stdout
    refused = engine(port, "order", lines[0][0], "--pause")
    assert refused.returncode == 2 and "only a dca order" in refused.stderr
