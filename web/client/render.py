"""What the client prints: rich tables and a live progress line on a terminal, plain
tab-separated text when piped, the API's own JSON with `--json`."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from web.client.api import ClientError, RequestRefused

STATUS_STYLE = {"confirmed": "green", "failed": "red", "expired": "red", "cancelled": "dim",
                "pending": "blue", "waiting": "blue", "routing": "yellow", "building": "yellow",
                "submitted": "yellow"}


class Output:
    """Where and how to print: `tty` (rich), `plain` (text for pipes) or `json`."""

    def __init__(self, mode: str, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.mode = mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.console = Console(file=self.stdout, force_terminal=mode == "tty", highlight=False)

    @classmethod
    def choose(cls, as_json: bool) -> "Output":
        """`--json`, else rich on a terminal, else plain."""
        return cls("json" if as_json else "tty" if sys.stdout.isatty() else "plain")

    def json(self, data: Any) -> None:
        """One JSON document on one line (an NDJSON stream when called repeatedly)."""
        print(json.dumps(data, ensure_ascii=False), file=self.stdout, flush=True)

    def line(self, text: str, style: str | None = None) -> None:
        """One line of text (styled on a terminal)."""
        if self.mode == "tty":
            self.console.print(Text(text, style=style or ""))
        else:
            print(text, file=self.stdout, flush=True)

    def table(self, columns: list[str], rows: Iterable[list[Any]], title: str | None = None,
              status_column: int | None = None) -> None:
        """A table: rich on a terminal, a header line and tab-separated rows otherwise."""
        rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
        if self.mode != "tty":
            print("\t".join(columns), file=self.stdout)
            for row in rows:
                print("\t".join(row), file=self.stdout)
            self.stdout.flush()
            return
        table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      collapse_padding=True, pad_edge=False)
        for i, column in enumerate(columns):  # free text wraps; an id stays whole (people copy it)
            longest = max([len(column)] + [len(row[i]) for row in rows])
            table.add_column(column, no_wrap=column not in ("details", "value"),
                             min_width=longest if column == "orderId" else min(longest, 10))
        for row in rows:
            cells = [Text(cell, style=STATUS_STYLE.get(cell, "") if i == status_column else "")
                     for i, cell in enumerate(row)]
            table.add_row(*cells)
        self.console.print(table)

    def error(self, exc: ClientError) -> None:
        """The API's refusal as a sentence on stderr (its JSON body with `--json`)."""
        if self.mode == "json" and isinstance(exc, RequestRefused):
            print(json.dumps(exc.body, ensure_ascii=False), file=self.stderr)
            return
        print(f"engine: {error_sentence(exc)}", file=self.stderr)


def error_sentence(exc: ClientError) -> str:
    """What went wrong, and what to do where there is something to do."""
    if not isinstance(exc, RequestRefused):
        return f"{exc} (is the engine running? --url or ENGINE_URL says where it is)"
    field = f" [{exc.field}]" if exc.field else ""
    hint = {
        "unauthorized": " (set ENGINE_API_KEY to one of the engine's API_KEYS)",
        "forbidden": " (operator commands send ENGINE_ADMIN_KEY, one of the engine's ADMIN_KEYS; trading needs "
                     "a trading key)",
        "trading_halted": " (an operator halted trading: retry once it is resumed)",
        "overloaded": f" (retry in {exc.retry_after or 'a few'} s)",
        "rate_limited": f" (retry in {exc.retry_after or 'a few'} s)",
        "queue_full": " (retry later)",
        "not_ready": " (retry later)",
    }.get(exc.code, "")
    return f"{exc.message}{field} ({exc.code}){hint}"


# ---- formatting ---------------------------------------------------------------------------

def amount(text: Any, digits: int = 9) -> str:
    """A decimal string shortened to `digits` significant digits, exactly otherwise."""
    if text is None:
        return ""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return str(text)
    if value.adjusted() >= digits:
        return f"{value:f}".split(".")[0]
    return f"{round(value, digits - 1 - value.adjusted()).normalize():f}"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """How long ago an ISO `...Z` timestamp was: `42 s`, `3 min`, `2 h`, `5 d`."""
    if not timestamp:
        return ""
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    seconds = max(0, ((now or datetime.now(timezone.utc)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def clock(timestamp: str) -> str:
    """HH:MM:SS.mmm of an ISO timestamp."""
    return timestamp[11:23]


def venue_of(order: dict) -> str:
    """The venue that filled the order, else the one it was routed to."""
    if order.get("fills"):
        return order["fills"][0]["dex"]
    return first_dex(order["route"]) if order.get("route") else ""


def first_dex(route: dict) -> str:
    """The route's first venue: its first leg's, or its first hop's."""
    legs = route["hops"][0]["legs"] if route.get("hops") else route.get("legs") or [{}]
    return legs[0].get("dex", "")


def hops_text(hops: list[dict]) -> str:
    """A route through an intermediate token in a line: `BONK -raydium-> SOL -meteora+raydium-> JUP`."""
    text = hops[0]["tokenIn"]
    for hop in hops:
        text += f" -{'+'.join(leg['dex'] for leg in hop['legs'])}-> {hop['tokenOut']}"
    return text


def route_text(route: dict) -> str:
    """The venue(s) of a direct route (`raydium`, `meteora+raydium`), or its hops."""
    if route.get("hops"):
        return hops_text(route["hops"])
    return "+".join(leg["dex"] for leg in route.get("legs", ()))


def executed_price(order: dict) -> str:
    """amountOut / amountIn over the fills, like the confirmed event's executedPrice."""
    fills = order.get("fills") or []
    amount_in = sum(Decimal(f["amountIn"]) for f in fills)
    if not amount_in:
        return ""
    return amount(sum(Decimal(f["amountOut"]) for f in fills) / amount_in)


def describe_event(event: dict, token_in: str = "", token_out: str = "") -> str:
    """One event in a line: the quotes and the choice, minAmountOut, the signature, the fill."""
    meta, status = event.get("meta") or {}, event["status"]
    if status == "routing":
        quotes = meta.get("quotes") or {}
        offers = ", ".join(f"{dex} {amount(q.get('amountOut'))}" for dex, q in quotes.items() if "amountOut" in q)
        text = f"{offers} -> {meta.get('bestDex', '?')}"
        if meta.get("hops"):
            text = f"{offers + ' -> ' if offers else ''}{hops_text(meta['hops'])}"
        if meta.get("route"):
            text += f" (min {amount(meta['route']['minAmountOut'])} {token_out})".rstrip()
        if meta.get("retryReason"):
            text = f"retry {event['attempt']}: {meta['retryReason']}; {text}"
        return text
    if status == "building":
        return f"minAmountOut {amount(meta.get('minAmountOut'))} {token_out} on {meta.get('dex', '?')}"
    if status == "submitted":
        return f"tx {meta.get('txHash', '')}"
    if status == "confirmed":
        where = hops_text(meta["hops"]) if meta.get("hops") else meta.get("dex")
        return (f"{amount(meta.get('amountIn'))} {token_in} -> {amount(meta.get('amountOut'))} {token_out} "
                f"on {where} at {amount(meta.get('executedPrice'))} tx {meta.get('txHash', '')}")
    if status == "failed":
        error = meta.get("error") or {}
        return f"{error.get('code')}: {error.get('message')} (attempts: {meta.get('attempts', '?')})"
    if status == "waiting" and meta.get("fired"):  # a protective order's side fired: it alone executes
        cancelled = f"; its {meta['cancelled']} is cancelled" if meta.get("cancelled") else ""
        return f"its {meta['fired']} fired at {amount(meta.get('price'))} {token_out}{cancelled}"
    if status == "waiting" and meta.get("trigger") == "trail":
        below = f"{meta['trailAmount']} {token_out}" if "trailAmount" in meta else f"{meta.get('trailPercent')}%"
        return (f"trailing {amount(meta.get('highWater'))} {token_out}: sells at {amount(meta.get('stopPrice'))} "
                f"({below} below)")
    if status == "waiting" and meta.get("trigger") == "halt":
        reason = meta.get("reason")
        return "held: trading is halted" + (f" ({reason})" if reason else "")
    return {"pending": "accepted and queued", "waiting": "waiting for its trigger",
            "cancelled": "cancelled by its owner", "expired": "not triggered in time"}.get(status, "")
