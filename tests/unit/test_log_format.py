"""LOG_FORMAT=json: one JSON object a line, the order id in a field of its own where there is one."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import uuid

import pytest

from config.logs import TEXT_FORMAT, JsonFormatter, OrderLog, about_order


@pytest.fixture
def captured():
    """A logger of its own whose records go to a string, formatted as JSON; (logger, lines)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test-json-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, lambda: stream.getvalue().splitlines()
    logger.removeHandler(handler)


def test_a_record_about_an_order_is_one_json_line_with_its_order_id(captured):
    logger, lines = captured
    order_id = uuid.uuid4()
    logger.info("order %s attempt %d routed to %s", order_id, 2, "raydium", extra=about_order(order_id))
    (line,) = lines()
    entry = json.loads(line)
    assert entry["orderId"] == str(order_id)
    assert entry["message"] == f"order {order_id} attempt 2 routed to raydium"
    assert (entry["level"], entry["logger"], entry["pid"]) == ("INFO", logger.name, os.getpid())
    assert "exception" not in entry
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry["time"]


def test_a_record_about_no_order_has_no_order_id_field(captured):
    logger, lines = captured
    logger.warning("web listening on port %s", 8000)
    entry = json.loads(lines()[0])
    assert "orderId" not in entry and entry["message"] == "web listening on port 8000"
    assert entry["level"] == "WARNING"


def test_an_exception_stays_on_the_records_one_line_as_text(captured):
    logger, lines = captured
    order_id = str(uuid.uuid4())
    try:
        raise ValueError("a bad\nmultiline thing")
    except ValueError:
        logger.exception("order %s: cannot start its actor", order_id, extra=about_order(order_id))
    (line,) = lines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["orderId"] == order_id
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: a bad\nmultiline thing" in entry["exception"]


def test_an_order_log_puts_its_order_id_on_every_record(captured):
    logger, lines = captured
    order_id = uuid.uuid4()
    order_log = OrderLog(logger, order_id)
    order_log.info("order %s: resuming", order_id)
    order_log.warning("order %s: quotes missing from %s", order_id, {"meteora"})
    assert [json.loads(line)["orderId"] for line in lines()] == [str(order_id)] * 2


def test_a_message_json_cannot_encode_as_utf8_is_still_one_json_line(captured):
    logger, lines = captured
    logger.info("a path from the file system: %s", "caf\udce9")
    (line,) = lines()
    assert json.loads(line)["message"] == "a path from the file system: caf\udce9"


def test_the_text_format_is_the_one_it_always_was():
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
