"""The `--watch` view: one progress line that moves through the statuses on a terminal,
one line per event when piped, one JSON event per line with `--json`."""
from __future__ import annotations

from rich.text import Text

from web.client.render import STATUS_STYLE, Output, amount, describe_event, hops_text


class WatchView:
    """Shows one order's events as they arrive, then its outcome."""

    def __init__(self, out: Output, order: dict):
        self.out = out
        self.order_id = order["orderId"]
        self.token_in, self.token_out = order.get("tokenIn", ""), order.get("tokenOut", "")
        self.statuses: list[str] = []
        self.route = ""
        self._status = None

    def __enter__(self) -> "WatchView":
        if self.out.mode == "tty":
            self._status = self.out.console.status(self._line(), spinner="dots")
            self._status.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def event(self, event: dict) -> None:
        """Called for each event, in seq order."""
        self.statuses.append(event["status"])
        meta = event.get("meta") or {}
        if event["status"] == "routing" and meta.get("route"):
            where = hops_text(meta["hops"]) if meta.get("hops") else meta.get("bestDex")
            self.route = f"{where}, min {amount(meta['route']['minAmountOut'])} {self.token_out}"
        if self.out.mode == "json":
            self.out.json(event)
        elif self.out.mode == "plain":
            detail = describe_event(event, self.token_in, self.token_out)
            self.out.line(f"{self.order_id}\t{event['status']}\t{detail}")
        elif self._status is not None:
            self._status.update(self._line())

    def _line(self) -> Text:
        text = Text(f"{self.order_id[:8]}  ")
        for i, status in enumerate(self.statuses or ["waiting for events"]):
            if i:
                text.append(" > ", style="dim")
            text.append(status, style=STATUS_STYLE.get(status, "bold"))
        if self.route:
            text.append(f"   route: {self.route}", style="dim")
        return text

    def finish(self, final: dict) -> None:
        """The outcome line (terminal and plain), after the progress line is gone."""
        self.__exit__()
        if self.out.mode != "tty":
            return
        meta, status = final.get("meta") or {}, final["status"]
        line = Text(f"{status:<10}", style=STATUS_STYLE.get(status, "bold"))
        line.append(f" {self.order_id}  ")
        if status == "confirmed":
            line.append(f"{amount(meta.get('amountIn'))} {self.token_in} -> {amount(meta.get('amountOut'))} "
                        f"{self.token_out} on {meta.get('dex')} at {amount(meta.get('executedPrice'))} "
                        f"{self.token_out}/{self.token_in}")
            line.append(f"\n           tx {meta.get('txHash')}", style="dim")
        else:
            line.append(describe_event(final, self.token_in, self.token_out))
        self.out.console.print(line)
