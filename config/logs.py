"""Log lines on stdout: text for people (the default) or, with LOG_FORMAT=json, one JSON object a
line for log drains, with the order id in a field of its own on every line about an order.

Code that logs about an order says which one at the source, not in the message alone:
`log.info("order %s: ...", order_id, extra=about_order(order_id))`, or through an `OrderLog`
(a LoggerAdapter) that holds the id. The text format shows the message as it always has.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
ORDER_ID = "orderId"  # the LogRecord attribute, and the JSON field


def about_order(order_id: Any) -> dict[str, str]:
    """The `extra` of a log call about one order."""
    return {ORDER_ID: str(order_id)}


class OrderLog(logging.LoggerAdapter):
    """A logger whose every record is about one order (its id in `extra`). Cheap to make once
    per order: the id becomes text only for a record that is actually written."""

    def __init__(self, logger: logging.Logger, order_id: Any):
        super().__init__(logger)
        self.order_id = order_id

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = about_order(self.order_id)
        return msg, kwargs


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (ISO 8601 UTC, milliseconds, `Z`), level,
    logger, pid, message, orderId where the record is about an order, and exception (the
    traceback's text) where there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        order_id = getattr(record, ORDER_ID, None)
        if order_id:
            entry[ORDER_ID] = str(order_id)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry).decode()
        except TypeError:  # a str orjson refuses (a lone surrogate): the standard library escapes it
            return json.dumps(entry)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Every record of the process to stdout, one line each, as `fmt` says: "text" or "json"."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    # One line per request costs real CPU at hundreds of orders/s; errors are still logged.
    logging.getLogger("tornado.access").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
