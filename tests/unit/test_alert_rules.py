"""docs/prometheus/alerts.yml is valid for Prometheus (`promtool check rules`) and fires when it
should (`promtool test rules` with alerts.test.yml). promtool comes with Debian's `prometheus`
package, which .ci/run installs: missing, these tests skip on a laptop and fail under CI=true."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool

RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    (path,) = require_tool("promtool (Debian package prometheus)", "promtool")
    return subprocess.run([path, *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_the_alert_rules_pass_promtools_check():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_fire_as_their_unit_tests_expect():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
