"""The Grafana dashboard and the Prometheus alert rules name only metrics the app really exports:
every metric name in every PromQL expression (docs/grafana/*.json, docs/prometheus/alerts.yml)
is found in a real /metrics scrape, after the known events of tests/integration/test_metrics.py."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml  # PyYAML, which schemathesis (a test dependency) installs
from prometheus_client.parser import text_string_to_metric_families
from tornado.testing import gen_test

from tests.integration import test_metrics  # the module: its test classes are not collected here again
from tests.integration.test_web import WebTestCase

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "docs" / "grafana").glob("*.json"))
ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"

# PromQL words that are not metric names: functions and aggregations (also followed by "("),
# operators and modifiers.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values query) reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, templates
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges ([5m], [$__rate_interval])
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # groupings
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group() in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        if match.start() and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # a number's exponent or suffix (1e3, 5m)
        names.add(match.group())
    names.discard("label_values")
    return names


def test_metric_names_are_read_out_of_promql():
    expr = ('histogram_quantile(0.99, sum by (instance, le) (rate(engine_a_bucket{instance=~"$instance"}'
            '[$__rate_interval]))) / on (instance) max without (venue) (engine_b) > 1e3 and absent(engine_c)')
    assert metric_names(expr) == {"engine_a_bucket", "engine_b", "engine_c"}
    assert metric_names("label_values(engine_queue_depth, instance)") == {"engine_queue_depth", "instance"}


def dashboard_expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_every_dashboard_is_importable_with_its_datasource_as_an_input():
    assert DASHBOARDS, "docs/grafana has a dashboard"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
            ("DS_PROMETHEUS", "datasource", "prometheus")]
        assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "panel ids are unique"
        for panel in dashboard["panels"]:
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
            assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"


class ExportedNamesTest(WebTestCase):
    store = test_metrics.MetricsTest.store
    play_three_orders = test_metrics.MetricsTest.play_three_orders

    async def scrape_names(self) -> set[str]:
        """Every sample name of a real scrape, and every name a family may show (a counter's
        _total, a histogram's _bucket, _count, _sum), with no sample yet or not."""
        response = await self.http_client.fetch(self.get_url("/metrics"))
        names = set()
        for family in text_string_to_metric_families(response.body.decode()):
            names.update(s.name for s in family.samples)
            names.update({"counter": [family.name + "_total"], "gauge": [family.name],
                          "histogram": [family.name + s for s in ("_bucket", "_count", "_sum")]}
                         .get(family.type, [family.name]))
        return names

    @gen_test
    async def test_every_metric_the_dashboards_and_the_alert_rules_read_is_exported(self):
        probe = await self.play_three_orders()
        assert (await self.call("/api/nowhere"))[0] == 404  # an error answer
        exported = await self.scrape_names()
        probe.close()
        read = {}
        for path in DASHBOARDS:
            for expr in dashboard_expressions(json.loads(path.read_text())):
                read.update(dict.fromkeys(metric_names(expr) - {"instance"}, path.name))
        for expr in alert_expressions():
            read.update(dict.fromkeys(metric_names(expr), ALERTS.name))
        assert {"engine_queue_oldest_age_seconds", "engine_venue_skipped_total", "engine_ready",
                "engine_halts_active", "engine_event_dispatch_lag_seconds_bucket"} <= set(read)
        missing = {name: where for name, where in read.items() if name not in exported}
        assert not missing, f"read but not exported: {missing}"
