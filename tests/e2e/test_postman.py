"""The Postman collection (docs/postman/) run with newman against `engine run`, and its shape."""
from __future__ import annotations

import json
import subprocess

import pytest

from bench.cluster import REPO
from tests.conftest import require_tool

pytestmark = pytest.mark.e2e

POSTMAN = REPO / "docs" / "postman"
COLLECTION = POSTMAN / "dex-engine.postman_collection.json"
ENVIRONMENT = POSTMAN / "embedded-default.postman_environment.json"
OPERATORS_ENVIRONMENT = POSTMAN / "operators.postman_environment.json"
READY_FOLDERS = ["Market", "Orders", "Errors", "Simulator", "Operations"]
CANCEL_FOLDERS = ["Cancel"]  # run after the ready folders (it refuses to cancel an order of Orders)
OPERATOR_FOLDERS = ["Operators"]  # on an engine with API_KEYS, ADMIN_KEYS and a risk limit
API_KEY, ADMIN_KEY = "postman-trading-key-0123456789abcdef", "postman-operator-key-0123456789abcdef"


def requests_of(folder: dict) -> list[dict]:
    return [item for item in folder["item"] if "request" in item]


def test_the_collection_has_tested_requests_for_every_area_and_an_environment_for_the_default():
    collection = json.loads(COLLECTION.read_text())
    folders = {folder["name"]: folder for folder in collection["item"]}
    assert list(folders) == READY_FOLDERS + CANCEL_FOLDERS + OPERATOR_FOLDERS
    items = [item for folder in folders.values() for item in requests_of(folder)]
    assert len(items) >= 12
    for item in items:
        tests = "\n".join(line for event in item["event"] if event["listen"] == "test"
                          for line in event["script"]["exec"])
        assert "pm.test(" in tests and ("to.have.status(" in tests or "pm.response.code" in tests), item["name"]
        assert item["request"]["url"]["raw"].startswith("{{baseUrl}}/"), item["name"]
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["baseUrl"] == "http://localhost:8000"
    paths = {item["request"]["url"]["raw"].split("?")[0] for item in items}
    for path in ("/api/orders/execute", "/api/orders/{{orderId}}", "/api/orders", "/api/quote", "/api/tokens",
                 "/api/orders/{{cancelOrderId}}/cancel", "/api/sim/pools", "/api/sim/swaps", "/api/sim/launch",
                 "/api/admin/halt", "/api/admin/resume", "/api/admin/halts", "/api/admin/keys",
                 "/api/admin/keys/{{newKeyId}}", "/api/admin/keys/{{newKeyId}}/cancel-all", "/api/admin/audit",
                 "/api/orders/{{hookOrderId}}/deliveries", "/api/webhooks/secret",
                 "/api/orders/{{twapOrderId}}", "/api/orders/{{dcaOrderId}}/pause", "/api/orders/{{dcaOrderId}}/resume"):
        assert "{{baseUrl}}" + path in paths
    environment = json.loads(ENVIRONMENT.read_text())
    assert {v["key"]: v["value"] for v in environment["values"]}["baseUrl"] == "http://localhost:8000"


def run_newman(port: int, folders: list[str], tmp_path, environment=ENVIRONMENT, **variables: str) -> dict:
    """newman over the given folders; the JSON report's run section."""
    (newman,) = require_tool("newman (npm install -g newman)", "newman")
    report = tmp_path / "newman.json"
    command = [newman, "run", str(COLLECTION), "-e", str(environment), "--env-var", f"baseUrl=http://127.0.0.1:{port}",
               "--reporters", "cli,json", "--reporter-json-export", str(report), "--color", "off"]
    for name, value in variables.items():
        command += ["--env-var", f"{name}={value}"]
    for folder in folders:
        command += ["--folder", folder]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(report.read_text())["run"]
    failures = [(f["source"]["name"], f["error"]["message"]) for f in run["failures"]]
    assert done.returncode == 0 and not failures, failures or done.stdout[-3000:]
    return run


def test_newman_runs_the_collection_and_every_assertion_holds_and_cancels_a_waiting_limit_order(
        start_engine, tmp_path):
    """The ready folders, then the Cancel folder after them on the same engine: every request
    passes every assertion; in Cancel, a limit order out of reach waits, is cancelled (200) and
    reads back cancelled, and every one of its requests ran and passed an assertion."""
    port = start_engine()
    run = run_newman(port, READY_FOLDERS + CANCEL_FOLDERS, tmp_path)
    stats = run["stats"]
    assert stats["requests"]["total"] >= 25 and stats["requests"]["failed"] == 0
    assert stats["assertions"]["total"] >= 80 and stats["assertions"]["failed"] == 0
    ran = [execution["item"]["name"] for execution in run["executions"]]
    collection = json.loads(COLLECTION.read_text())
    folders = {folder["name"]: folder for folder in collection["item"]}
    orders_last = max(ran.index(item["name"]) for item in requests_of(folders["Orders"]))
    (cancel,) = [folders[name] for name in CANCEL_FOLDERS]
    assert min(ran.index(item["name"]) for item in requests_of(cancel)) > orders_last  # Cancel runs after Orders
    passed: dict[str, set[str]] = {}
    for execution in run["executions"]:
        names = {a["assertion"] for a in execution.get("assertions", []) if not a.get("error")}
        passed.setdefault(execution["item"]["name"], set()).update(names)
    for item in requests_of(cancel):
        assert passed.get(item["name"]), f"{item['name']} ran no passing assertion"
    assert "the limit order is waiting, untouched" in passed["Read it until it waits for its trigger"]
    assert "the order is cancelled, right after waiting" in passed["Cancel the waiting order: 200 cancelled"]
    assert "it stays cancelled, never routed" in passed["Read it back: cancelled"]


def test_newman_halts_resumes_manages_a_key_and_reads_the_audit_log(make_engine_run, tmp_path):
    """The Operators folder: every request ran and every one of its assertions passed."""
    _, port = make_engine_run(API_KEYS=API_KEY, ADMIN_KEYS=ADMIN_KEY, RISK_MAX_ORDER_USD="1000")
    run = run_newman(port, OPERATOR_FOLDERS, tmp_path, OPERATORS_ENVIRONMENT, apiKey=API_KEY, adminKey=ADMIN_KEY)
    collection = json.loads(COLLECTION.read_text())
    (operators,) = [folder for folder in collection["item"] if folder["name"] == "Operators"]
    ran = {execution["item"]["name"] for execution in run["executions"]
           if any(not a.get("error") for a in execution.get("assertions", []))}
    assert {item["name"] for item in requests_of(operators)} <= ran
