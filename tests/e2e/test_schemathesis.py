"""Schemathesis (a tool no one here wrote) against a running engine, with every check: what
the OpenAPI document calls valid is accepted, what it calls invalid is refused with a 4xx,
every answer (status, headers, content type, body) is one the document describes, no 5xx,
and its stateful links (submit -> read -> cancel) hold.

Left out of the run, and why: the two WebSocket handshakes (an HTTP client cannot speak the
protocol that follows the 101 its valid requests get; tests/e2e/test_openapi.py checks both
answers), and `POST /api/sim/launch` (it changes which tokens are tradable while the run
goes on, so what the document says of a token would stop being true), and the operator API
(`/api/admin/`: without ADMIN_KEYS every request is a documented 403, which Schemathesis counts
as valid data refused; with an operator key its generated requests would create and revoke keys
and cancel orders under the run's feet; tests/e2e/test_openapi.py and
tests/integration/test_admin_keys.py check its answers). The rules that tie two
query values together are applied by tests/e2e/schemathesis_hooks.py, which also sends each
coverage-phase submit body once per order type rather than once per decimals class where the
body differs only in its tokens and amount (the hooks' docstring says why that loses nothing).
With API keys the document is the same, so that run leaves out the coverage phase (the boundary
values of every schema, already sent without keys) and fuzzes with a key on every request, with
KEYED_EXAMPLES per operation and phase: the same document was fuzzed without keys with EXAMPLES,
and what this run adds (a key accepted on every operation, refused without it: the ignored_auth
check, and the stateful links with a key) holds for any body, so a few per operation prove it.

Each run draws fresh inputs and prints its seed; `SCHEMATHESIS_SEED=N` replays one.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cluster import REPO
from web.openapi import ADMIN_OPERATIONS

pytestmark = pytest.mark.e2e

LEFT_OUT = ("submitOrderOverWebSocket", "listenOverWebSocket", "launchToken", *ADMIN_OPERATIONS)
EXAMPLES = 10  # per operation and phase (the coverage phase adds its boundary values to these)
KEYED_EXAMPLES = 3
KEY = "schemathesis-key-0123456789abcdefghij"
# Schemathesis counts any 5xx as a failure. Its valid orders queue behind ORDER_RATE_LIMIT, and on a
# loaded machine the queue's oldest could pass QUEUE_MAX_WAIT_SECONDS: a documented 503
# `overloaded` (proven by its own tests), not a disagreement between the document and the engine.
NEVER_OVERLOADED = {"QUEUE_MAX_WAIT_SECONDS": 0}


def run_schemathesis(port: int, workdir: Path, *extra: str, examples: int = EXAMPLES) -> subprocess.CompletedProcess:
    seed = os.environ.get("SCHEMATHESIS_SEED") or str(random.getrandbits(64))
    print(f"schemathesis seed {seed}: replay with SCHEMATHESIS_SEED={seed}")
    command = [str(Path(sys.executable).parent / "st"), "run", f"http://127.0.0.1:{port}/api/openapi.json",
               "--checks", "all", "--max-examples", str(examples), "--workers", "1", "--seed", seed,
               "--output-sanitize", "false", *extra]
    for operation_id in LEFT_OUT:
        command += ["--exclude-operation-id", operation_id]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "NO_COLOR": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def assert_clean(done: subprocess.CompletedProcess) -> None:
    """Schemathesis exits non-zero on any failure or error (a warning, such as an operation
    whose random ids all answered 404, is neither); and it did test something."""
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]
    assert " generated, " in done.stdout and " passed" in done.stdout, done.stdout[-5000:]


def test_schemathesis_with_every_check_finds_nothing_the_document_and_the_engine_disagree_on(
        make_engine_run, tmp_path):
    _, port = make_engine_run(**NEVER_OVERLOADED)
    done = run_schemathesis(port, tmp_path)
    assert_clean(done)


def test_schemathesis_with_api_keys_finds_nothing_either(make_engine_run, tmp_path):
    _, port = make_engine_run(API_KEYS=KEY, KEY_RATE_LIMIT=1_000_000, **NEVER_OVERLOADED)
    done = run_schemathesis(port, tmp_path, "--header", f"Authorization: Bearer {KEY}",
                            "--phases", "examples,fuzzing,stateful", examples=KEYED_EXAMPLES)
    assert_clean(done)
