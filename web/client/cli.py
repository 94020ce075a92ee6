"""`engine submit | orders | order | quote | tokens`: the engine's API from a terminal or a script.

Exit codes: 0 done (with --watch: confirmed), 1 the order failed (or was cancelled or
expired), 2 a bad request (the API's message is printed, never a traceback), 3 the
engine cannot be reached or cannot take it now (429, 5xx: retry later).
"""
from __future__ import annotations

import argparse
import asyncio
from typing import Any

from config import ConfigError
from config.client import CLIENT_VARIABLES, load_client_settings

COMMANDS = ("submit", "orders", "order", "quote", "tokens")
STATUSES = ("pending", "waiting", "routing", "building", "submitted", "confirmed", "failed", "cancelled", "expired")
EXIT_OK, EXIT_FAILED, EXIT_BAD_REQUEST, EXIT_UNAVAILABLE = 0, 1, 2, 3

EXIT_CODES = """exit codes: 0 done (with --watch: confirmed), 1 the order failed, was cancelled or
expired, 2 bad request (the API's message on stderr), 3 engine unreachable or busy (retry)"""


def _epilog(with_exit_codes: bool = True) -> str:
    lines = ["environment variables:"]
    lines += [f"  {name:<16} {meaning}" for name, meaning in CLIENT_VARIABLES.items()]
    lines.append("  (a .env file in the working directory is read too)")
    if with_exit_codes:
        lines += ["", EXIT_CODES]
    return "\n".join(lines)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the client's commands to the `engine` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the engine's address (default: $ENGINE_URL, else http://localhost:$PORT)")
    common.add_argument("--json", action="store_true", help="print the API's JSON (one document per line)")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text + ".",
                              epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)

    submit = command("submit", "submit an order (client: talks to a running engine)")
    submit.add_argument("token_in", metavar="TOKEN_IN", help="symbol or mint sold, e.g. SOL")
    submit.add_argument("token_out", metavar="TOKEN_OUT", help="symbol or mint bought, e.g. USDC")
    submit.add_argument("amount", metavar="AMOUNT", help="amount of TOKEN_IN in whole tokens, e.g. 1.5")
    submit.add_argument("--slippage-bps", type=int, help="worst acceptable output below the quote (default 50)")
    submit.add_argument("--type", choices=("market", "limit", "sniper"), help="order type (default market)")
    submit.add_argument("--limit-price", help="limit orders: minimum price in TOKEN_OUT per TOKEN_IN")
    submit.add_argument("--expires-in", type=int, metavar="SECONDS", help="limit/sniper orders: expiry")
    submit.add_argument("--client-order-id", help="idempotency key: a repeat never creates a second order")
    submit.add_argument("--watch", action="store_true", help="follow the order until it ends (exit code = outcome)")

    orders = command("orders", "list orders, newest first (client)")
    orders.add_argument("--status", choices=STATUSES, help="only orders with this status")
    orders.add_argument("--type", choices=("market", "limit", "sniper"), help="only orders of this type")
    orders.add_argument("--limit", type=int, default=20, help="how many (1..500, default 20)")
    orders.add_argument("--cursor", help="the next page (printed after a full page)")

    order = command("order", "show one order with its timeline (client)")
    order.add_argument("order_id", metavar="ID", help="the orderId")
    order.add_argument("--watch", action="store_true", help="follow the order until it ends (exit code = outcome)")

    quote = command("quote", "both venues' quotes and the route the engine would take now (client)")
    quote.add_argument("token_in", metavar="TOKEN_IN")
    quote.add_argument("token_out", metavar="TOKEN_OUT")
    quote.add_argument("amount", metavar="AMOUNT")
    quote.add_argument("--slippage-bps", type=int, help="for the minimum output (default 50)")

    command("tokens", "the tokens, their mints and whether they trade (client)")


def run(args: argparse.Namespace) -> int:
    """Run one client command; every error becomes a message and an exit code."""
    from web.client.api import ClientError, EngineClient, RequestRefused
    from web.client.render import Output

    out = Output.choose(args.json)
    try:
        client = EngineClient.from_settings(load_client_settings(url=args.url))
    except ConfigError as exc:
        print(f"engine: {exc}", file=out.stderr)
        return EXIT_BAD_REQUEST
    try:
        return HANDLERS[args.command](client, args, out)
    except RequestRefused as exc:
        out.error(exc)
        return EXIT_UNAVAILABLE if exc.retryable else EXIT_BAD_REQUEST
    except ClientError as exc:  # unreachable, or the stream could not be resumed
        out.error(exc)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _submit(client, args, out) -> int:
    body: dict[str, Any] = {"tokenIn": args.token_in, "tokenOut": args.token_out, "amount": args.amount}
    for field, value in (("slippageBps", args.slippage_bps), ("type", args.type), ("limitPrice", args.limit_price),
                         ("expiresInSeconds", args.expires_in), ("clientOrderId", args.client_order_id)):
        if value is not None:
            body[field] = value
    accepted = client.submit(body)
    if not args.watch:
        if out.mode == "json":
            out.json(accepted)
        else:
            out.line(f"{accepted['orderId']}\t{accepted['status']}" if out.mode == "plain"
                     else f"order {accepted['orderId']} {accepted['status']}")
        return EXIT_OK
    if out.mode == "json":
        out.json(accepted)
    return _watch(client, client.order(accepted["orderId"]), out)


def _watch(client, order: dict, out) -> int:
    from web.client.aio import AsyncEngineClient
    from web.client.progress import WatchView

    async def follow(view: WatchView) -> dict:
        final: dict = {}
        async with AsyncEngineClient(client.url, client.api_key, client.timeout) as streams:
            async for final in streams.follow(order["orderId"]):  # ends with the terminal event
                view.event(final)
        return final

    with WatchView(out, order) as view:
        final = asyncio.run(follow(view))
        view.finish(final)
    return EXIT_OK if final["status"] == "confirmed" else EXIT_FAILED


def _order(client, args, out) -> int:
    from web.client.render import describe_event, venue_of

    order = client.order(args.order_id)
    if args.watch:
        return _watch(client, order, out)
    if out.mode == "json":
        out.json(order)
        return EXIT_OK
    facts = [("orderId", order["orderId"]), ("status", order["status"]), ("type", order["type"]),
             ("pair", f"{order['tokenIn']} -> {order['tokenOut']}"), ("amount", order["amount"]),
             ("slippageBps", order["slippageBps"]), ("venue", venue_of(order)), ("attempts", order["attempts"]),
             ("createdAt", order["createdAt"])]
    if order.get("error"):
        facts.append(("error", f"{order['error']['code']}: {order['error']['message']}"))
    for fill in order.get("fills") or []:
        facts.append(("fill", f"{fill['amountIn']} -> {fill['amountOut']} on {fill['dex']} tx {fill['txHash']}"))
    out.table(["field", "value"], [list(f) for f in facts], title="Order", status_column=1)
    out.table(["seq", "time", "status", "attempt", "details"],
              [[e["seq"], e["timestamp"][11:23], e["status"], e["attempt"],
                describe_event(e, order["tokenIn"], order["tokenOut"])] for e in order.get("events", [])],
              title="Timeline", status_column=2)
    return EXIT_OK


def _orders(client, args, out) -> int:
    from web.client.render import age, amount, executed_price, venue_of

    page = client.orders(status=args.status, type=args.type, limit=args.limit, cursor=args.cursor)
    if out.mode == "json":
        out.json(page)
        return EXIT_OK
    out.table(["orderId", "status", "pair", "amount", "venue", "price", "age"],
              [[o["orderId"], o["status"], f"{o['tokenIn']}/{o['tokenOut']}", amount(o["amount"]), venue_of(o),
                executed_price(o), age(o["createdAt"])] for o in page["orders"]], status_column=1)
    if page.get("nextCursor") and out.mode == "tty":
        out.line(f"more: engine orders --cursor {page['nextCursor']}", style="dim")
    return EXIT_OK


def _quote(client, args, out) -> int:
    from web.client.render import amount

    quote = client.quote(args.token_in, args.token_out, args.amount, args.slippage_bps)
    if out.mode == "json":
        out.json(quote)
        return EXIT_OK
    route = quote["route"]
    best = route["legs"][0]["dex"]
    rows = []
    for dex, q in quote["quotes"].items():
        if "error" in q:
            rows.append([dex, "", "", "", q["error"]["message"]])
        else:
            rows.append([dex, amount(q["amountOut"]), q["feeRate"], q["priceImpactBps"], "best" if dex == best else ""])
    out.table(["venue", "amountOut", "feeRate", "impactBps", "route"], rows,
              title=f"{quote['amountIn']} {quote['tokenIn']} -> {quote['tokenOut']}")
    out.line(f"route: {best} -> {amount(route['amountOut'])} {quote['tokenOut']} "
             f"(min {amount(route['minAmountOut'])} at {quote.get('slippageBps', 50)} bps slippage)")
    return EXIT_OK


def _tokens(client, args, out) -> int:
    data = client.tokens()
    if out.mode == "json":
        out.json(data)
        return EXIT_OK
    out.table(["symbol", "mint", "decimals", "tradable"],
              [[t["symbol"], t["mint"], t["decimals"], "yes" if t["tradable"] else "not yet"] for t in data["tokens"]])
    return EXIT_OK


HANDLERS = {"submit": _submit, "orders": _orders, "order": _order, "quote": _quote, "tokens": _tokens}
