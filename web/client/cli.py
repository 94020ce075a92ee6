"""`engine submit | orders | order | quote | tokens | admin`: the engine's API from a terminal or a script.

`engine admin halt | resume | halts | keys | audit` are the operator's: they send
ENGINE_ADMIN_KEY (one of the engine's ADMIN_KEYS) instead of ENGINE_API_KEY.

Exit codes: 0 done (with --watch: confirmed), 1 the order failed (or was cancelled or
expired), 2 a bad request (the API's message is printed, never a traceback), 3 the
engine cannot be reached or cannot take it now (429, 5xx: retry later).
"""
from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from config import ConfigError
from config.client import CLIENT_VARIABLES, load_client_settings

COMMANDS = ("submit", "orders", "order", "deliveries", "quote", "tokens", "admin")
STATUSES = ("pending", "waiting", "routing", "building", "submitted", "confirmed", "failed", "cancelled", "expired",
            "scheduled", "completed")
ORDER_TYPES = ("market", "limit", "sniper", "stop_loss", "take_profit", "trailing_stop", "oco", "twap", "dca")
DONE = ("confirmed", "completed")  # an order executed; a twap/dca parent whose schedule ran
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
    submit.add_argument("--type", choices=ORDER_TYPES, help="order type (default market)")
    submit.add_argument("--limit-price", help="limit orders: minimum price in TOKEN_OUT per TOKEN_IN; stop_loss and "
                        "oco: the stop's floor (a stop-limit)")
    submit.add_argument("--stop-price", help="stop_loss orders: sell once the price falls to this (TOKEN_OUT per TOKEN_IN)")
    submit.add_argument("--target-price", help="take_profit orders: sell once the price rises to this, never below it")
    submit.add_argument("--trail-percent",
                        help="trailing_stop orders: sell once the price falls this far (%%) below its best")
    submit.add_argument("--trail-amount", help="trailing_stop orders, instead of --trail-percent: sell once the price "
                        "falls this far below its best (TOKEN_OUT per TOKEN_IN)")
    # oco: --target-price is its takeProfit, --stop-price (and --limit-price) its stopLoss
    submit.add_argument("--expires-in", type=int, metavar="SECONDS", help="limit/sniper orders: expiry")
    submit.add_argument("--client-order-id", help="idempotency key: a repeat never creates a second order")
    submit.add_argument("--callback-url", metavar="URL", help="webhook: POST each event of the order here, signed")
    submit.add_argument("--duration", type=int, metavar="SECONDS", help="twap: spread AMOUNT over this long")
    submit.add_argument("--slices", type=int, metavar="N", help="twap: in N equal child orders")
    submit.add_argument("--jitter", type=int, metavar="SECONDS", help="twap: delay each slice by up to this")
    submit.add_argument("--interval", type=int, metavar="SECONDS", help="dca: one child order of AMOUNT this often")
    submit.add_argument("--count", type=int, metavar="N", help="dca: N times in all")
    submit.add_argument("--total", metavar="AMOUNT", help="dca: instead of --count, until this much is spent")
    submit.add_argument("--watch", action="store_true", help="follow the order until it ends (exit code = outcome)")

    orders = command("orders", "list orders, newest first (client)")
    orders.add_argument("--status", choices=STATUSES, help="only orders with this status")
    orders.add_argument("--type", choices=ORDER_TYPES, help="only orders of this type")
    orders.add_argument("--limit", type=int, default=20, help="how many (1..500, default 20)")
    orders.add_argument("--cursor", help="the next page (printed after a full page)")

    order = command("order", "show one order with its timeline (client)")
    order.add_argument("order_id", metavar="ID", help="the orderId")
    order.add_argument("--watch", action="store_true", help="follow the order until it ends (exit code = outcome)")
    order.add_argument("--pause", action="store_true", help="dca: create no more children until --resume")
    order.add_argument("--resume", action="store_true", help="dca: go on with a paused schedule")

    deliveries = command("deliveries", "an order's webhook deliveries and their outcomes (client)")
    deliveries.add_argument("order_id", metavar="ID", nargs="?", help="the orderId")
    deliveries.add_argument("--secret", action="store_true", help="print the secret this key's webhooks are signed with")

    quote = command("quote", "both venues' quotes and the route the engine would take now (client)")
    quote.add_argument("token_in", metavar="TOKEN_IN")
    quote.add_argument("token_out", metavar="TOKEN_OUT")
    quote.add_argument("amount", metavar="AMOUNT")
    quote.add_argument("--slippage-bps", type=int, help="for the minimum output (default 50)")
    quote.add_argument("--watch", action="store_true", help="stream the quote: a line each time it changes "
                       "(at most a few a second), until interrupted")

    command("tokens", "the tokens, their mints and whether they trade (client)")

    admin_help = "operators: halt and resume trading, manage keys, read the audit log (client; sends ENGINE_ADMIN_KEY)"
    admin = sub.add_parser("admin", help=admin_help, description=admin_help + ".", epilog=_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # options go after the ACTION
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help_text, description=help_text + ".",
                                  epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)

    for name, help_text in (("halt", "halt trading: new orders get 503 trading_halted, armed orders do not fire"),
                            ("resume", "resume trading: held and armed orders go on where they were")):
        scoped = action(name, help_text)
        scoped.add_argument("--key-id", help="halt one key's owner (scope key)")
        scoped.add_argument("--pair", help="halt one pair, both directions, e.g. SOL/USDC (scope pair)")
        if name == "halt":
            scoped.add_argument("--reason", help="shown to clients refused while halted")
    action("halts", "the halts in force")
    keys = action("keys", "list trading keys, or create, revoke one, cancel its open orders")
    keys.add_argument("verb", nargs="?", choices=("list", "create", "revoke", "cancel-all"), default="list")
    keys.add_argument("key_id", nargs="?", metavar="KEY_ID", help="revoke, cancel-all: the keyId")
    keys.add_argument("--label", help="create: a name for the key")
    keys.add_argument("--owner", metavar="KEY_ID", help="create: share this key's owner (to rotate a key)")
    audit = action("audit", "operator actions, newest first")
    audit.add_argument("--limit", type=int, default=50, help="how many (1..500, default 50)")
    audit.add_argument("--before", type=int, metavar="ID", help="entries older than this id (the next page)")


def run(args: argparse.Namespace) -> int:
    """Run one client command; every error becomes a message and an exit code."""
    from web.client.api import ClientError, EngineClient, RequestRefused
    from web.client.render import Output

    out = Output.choose(args.json)
    try:
        settings = load_client_settings(url=args.url)
    except ConfigError as exc:
        print(f"engine: {exc}", file=out.stderr)
        return EXIT_BAD_REQUEST
    if args.command == "admin":
        if not settings.admin_key:
            print("engine: set ENGINE_ADMIN_KEY to one of the engine's ADMIN_KEYS", file=out.stderr)
            return EXIT_BAD_REQUEST
        client = EngineClient(settings.url, settings.admin_key)
    else:
        client = EngineClient.from_settings(settings)
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


def _oco_sides(args, body: dict[str, Any]) -> None:
    """An oco's two sides from --target-price, --stop-price and --limit-price (its stop's floor)."""
    stop = {"stopPrice": args.stop_price, "limitPrice": args.limit_price}
    body["takeProfit"] = {"targetPrice": args.target_price}
    body["stopLoss"] = {k: v for k, v in stop.items() if v is not None}
    args.stop_price = args.target_price = args.limit_price = None


def _submit(client, args, out) -> int:
    body: dict[str, Any] = {"tokenIn": args.token_in, "tokenOut": args.token_out, "amount": args.amount}
    if args.type == "oco":
        _oco_sides(args, body)
    for field, value in (("slippageBps", args.slippage_bps), ("type", args.type), ("limitPrice", args.limit_price),
                         ("expiresInSeconds", args.expires_in), ("clientOrderId", args.client_order_id),
                         ("callbackUrl", args.callback_url), ("stopPrice", args.stop_price), ("targetPrice", args.target_price),
                         ("trailPercent", args.trail_percent), ("trailAmount", args.trail_amount),
                         ("durationSeconds", args.duration), ("slices", args.slices), ("jitterSeconds", args.jitter),
                         ("intervalSeconds", args.interval), ("count", args.count), ("totalAmount", args.total)):
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
    return EXIT_OK if final["status"] in DONE else EXIT_FAILED


def _order(client, args, out) -> int:
    from web.client.render import describe_event, venue_of

    if args.pause or args.resume:
        order = client.pause_schedule(args.order_id) if args.pause else client.resume_schedule(args.order_id)
    else:
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
    facts += _schedule_facts(order)
    out.table(["field", "value"], [list(f) for f in facts], title="Order", status_column=1)
    if "children" in order:
        out.table(["slice", "orderId", "status", "amount", "venue"],
                  [[c["sliceIndex"], c["orderId"], c["status"], c["amount"], venue_of(c)] for c in order["children"]],
                  title="Children", status_column=2)
    out.table(["seq", "time", "status", "attempt", "details"],
              [[e["seq"], e["timestamp"][11:23], e["status"], e["attempt"],
                describe_event(e, order["tokenIn"], order["tokenOut"])] for e in order.get("events", [])],
              title="Timeline", status_column=2)
    return EXIT_OK


def _schedule_facts(order: dict) -> list[tuple[str, Any]]:
    """A twap/dca parent's schedule and progress; a child's parent."""
    facts: list[tuple[str, Any]] = []
    if order.get("parentId"):
        facts.append(("parent", f"{order['parentId']} (slice {order['sliceIndex']})"))
    if order["type"] == "twap" and "slices" in order:
        facts.append(("schedule", f"{order['slices']} slices over {order['durationSeconds']} s"))
    elif order["type"] == "dca" and "count" in order:
        facts.append(("schedule", f"{order['count']} times every {order['intervalSeconds']} s"
                      + (" (paused)" if order.get("paused") else "")))
    progress = order.get("progress")
    if progress:
        facts.append(("progress", f"{progress['settled']}/{progress['slices']} settled, filled {progress['filled']}, "
                      f"remaining {progress['remaining']}, average price {progress['averagePrice'] or '-'}"))
    return facts


def _deliveries(client, args, out) -> int:
    if args.secret:
        answer = client.webhook_secret()
        if out.mode == "json":
            out.json(answer)
        else:
            out.line(answer["secret"])
        return EXIT_OK
    if not args.order_id:
        print("engine: deliveries needs the order ID (or --secret)", file=out.stderr)
        return EXIT_BAD_REQUEST
    answer = client.deliveries(args.order_id)
    if out.mode == "json":
        out.json(answer)
        return EXIT_OK
    out.table(["seq", "status", "attempts", "response", "deliveredAt", "error"],
              [[d["seq"], d["status"], d["attempts"], d["responseStatus"] or "", d["deliveredAt"] or "",
                d["error"] or ""] for d in answer["deliveries"]], title="Deliveries", status_column=1)
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
    from web.client.render import amount, first_dex, route_text

    if args.watch:
        return _watch_quote(client, args, out)
    quote = client.quote(args.token_in, args.token_out, args.amount, args.slippage_bps)
    if out.mode == "json":
        out.json(quote)
        return EXIT_OK
    route = quote["route"]
    best = "" if route.get("hops") else first_dex(route)  # through a hub: neither venue's own quote
    rows = []
    for dex, q in quote["quotes"].items():
        if "error" in q:
            rows.append([dex, "", "", "", q["error"]["message"]])
        else:
            rows.append([dex, amount(q["amountOut"]), q["feeRate"], q["priceImpactBps"], "best" if dex == best else ""])
    out.table(["venue", "amountOut", "feeRate", "impactBps", "route"], rows,
              title=f"{quote['amountIn']} {quote['tokenIn']} -> {quote['tokenOut']}")
    out.line(f"route: {route_text(route) if route.get('hops') else first_dex(route)} -> "
             f"{amount(route['amountOut'])} {quote['tokenOut']} "
             f"(min {amount(route['minAmountOut'])} at {quote.get('slippageBps', 50)} bps slippage)")
    return EXIT_OK


def _watch_quote(client, args, out) -> int:
    """`engine quote ... --watch`: a line per streamed quote (`subscribeQuote` on /ws), until Ctrl-C."""
    from web.client.aio import AsyncEngineClient
    from web.client.render import amount

    async def watch() -> None:
        async with AsyncEngineClient(client.url, client.api_key, client.timeout) as streams:
            async for frame in streams.watch_quote(args.token_in, args.token_out, args.amount, args.slippage_bps):
                if out.mode == "json":
                    out.json(frame)
                    continue
                now = time.strftime("%H:%M:%S")
                if frame["type"] == "error":
                    out.line(f"{now}\t{frame['error']['code']}\t{frame['error']['message']}")
                    continue
                route = frame["route"]
                venues = ", ".join(f"{dex} {amount(q['amountOut'])}" for dex, q in frame["quotes"].items()
                                   if "amountOut" in q)
                dexes = "+".join(leg["dex"] for leg in route["legs"])
                out.line(f"{now}\t{frame['amountIn']} {frame['tokenIn']} -> {amount(route['amountOut'])} "
                         f"{frame['tokenOut']}\tvia {dexes}\tmin {amount(route['minAmountOut'])}\t{venues}"
                         if out.mode == "plain" else
                         f"{now}  {frame['amountIn']} {frame['tokenIn']} -> {amount(route['amountOut'])} "
                         f"{frame['tokenOut']} via {dexes} (min {amount(route['minAmountOut'])}; {venues})")

    asyncio.run(watch())
    return EXIT_OK


def _tokens(client, args, out) -> int:
    data = client.tokens()
    if out.mode == "json":
        out.json(data)
        return EXIT_OK
    out.table(["symbol", "mint", "decimals", "tradable"],
              [[t["symbol"], t["mint"], t["decimals"], "yes" if t["tradable"] else "not yet"] for t in data["tokens"]])
    return EXIT_OK


def _admin(client, args, out) -> int:
    from web.client.render import age

    verb = args.admin_command
    if verb in ("halt", "resume"):
        scope = "key" if args.key_id else "pair" if args.pair else "all"
        if args.key_id and args.pair:
            print("engine: give --key-id or --pair, not both", file=out.stderr)
            return EXIT_BAD_REQUEST
        answer = (client.halt(scope, args.key_id, args.pair, args.reason) if verb == "halt"
                  else client.resume(scope, args.key_id, args.pair))
        if out.mode == "json":
            out.json(answer)
        else:
            out.line(f"{'halted' if verb == 'halt' else 'resumed'}: {_scope_text(answer.get('halt', answer))}")
        return EXIT_OK
    if verb == "halts":
        answer = client.halts()
        if out.mode == "json":
            out.json(answer)
        else:
            out.table(["scope", "reason", "since", "by"],
                      [[_scope_text(h), h.get("reason", ""), age(h.get("createdAt")), h.get("createdBy", "")]
                       for h in answer["halts"]])
        return EXIT_OK
    if verb == "keys":
        return _admin_keys(client, args, out)
    page = client.audit(limit=args.limit, before=args.before)
    if out.mode == "json":
        out.json(page)
        return EXIT_OK
    out.table(["id", "at", "actor", "action", "target", "status"],
              [[e["id"], e["at"], e["actor"], e["action"], e["target"], e["status"]] for e in page["entries"]])
    if page.get("nextBefore") and out.mode == "tty":
        out.line(f"more: engine admin audit --before {page['nextBefore']}", style="dim")
    return EXIT_OK


def _admin_keys(client, args, out) -> int:
    if args.verb in ("revoke", "cancel-all") and not args.key_id:
        print(f"engine: admin keys {args.verb} needs the KEY_ID", file=out.stderr)
        return EXIT_BAD_REQUEST
    if args.verb == "list":
        answer = client.keys()
        if out.mode != "json":
            out.table(["keyId", "owner", "label", "source", "created", "revoked"],
                      [[k["keyId"], k.get("owner", ""), k.get("label", ""), k.get("source", ""),
                        k.get("createdAt", ""), k.get("revokedAt") or ""] for k in answer["keys"]])
            return EXIT_OK
    elif args.verb == "create":
        answer = client.create_key(label=args.label, owner=args.owner)
        if out.mode != "json":
            out.line(f"keyId {answer['keyId']} owner {answer['owner']}")
            out.line(f"key {answer['key']}  (shown once: keep it now)")
            return EXIT_OK
    elif args.verb == "revoke":
        answer = client.revoke_key(args.key_id)
        if out.mode != "json":
            out.line(f"revoked {args.key_id}")
            return EXIT_OK
    else:
        answer = client.cancel_all(args.key_id)
        if out.mode != "json":
            out.line(f"cancelled {len(answer.get('cancelled', []))}, "
                     f"not cancellable {len(answer.get('notCancelled', []))}")
            return EXIT_OK
    out.json(answer)
    return EXIT_OK


def _scope_text(halt: dict) -> str:
    scope = halt.get("scope", "all")
    if scope == "key":
        return f"key {halt.get('keyId', '')}"
    if scope == "pair":
        return f"pair {halt.get('pair', '')}"
    return "all trading"


HANDLERS = {"admin": _admin, "submit": _submit, "orders": _orders, "order": _order, "deliveries": _deliveries,
            "quote": _quote, "tokens": _tokens}
