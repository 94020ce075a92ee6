"""Market and simulator endpoints: quote, tokens, and the `/api/sim` explorer."""
from __future__ import annotations

from decimal import Decimal

from config import TOKENS
from storage.records import decimal_str, iso
from storage.venues.base import Quote, VenueError
from storage.venues.paths import best_route, quote_all
from web.access import forbidden
from web.admin import AdminHandler
from web.base import ApiHandler
from web.errors import ApiError, ValidationError, not_found
from web.orders import parse_order_id
from web.validation import QuoteRequest, parse_json_object, parse_quote, parse_token, single_params

MAX_LAUNCH_DELAY_S = 7 * 24 * 3600


class QuoteHandler(ApiHandler):
    """`GET /api/quote`: both venues' quotes and the route the engine would take now."""

    async def get(self) -> None:
        await self.services.rate_limits.admit("quotes", self.request, self.owner)  # junk counts too
        request = parse_quote(self.request.query_arguments)
        await require_tradable(self.services, request)
        self.write_json(await self.services.run(quote_now, self.storage.chain, request))


async def require_tradable(services, request: QuoteRequest) -> None:
    """400 `invalid_field` when a token of the quote has not launched yet (IOLoop thread)."""
    for field, token in (("tokenIn", request.token_in), ("tokenOut", request.token_out)):
        if not await services.run(services.storage.chain.is_tradable, token):
            raise ValidationError("invalid_field", f"{token.symbol} is not tradable yet (it has not launched)", field)


def quote_now(chain, request: QuoteRequest) -> dict:
    """The body of `GET /api/quote` (both venues' quotes of the pair and the route the engine would
    take now, direct or through a hub); blocking (an executor thread). The quote stream
    (web/quote_stream.py) pushes the same body. Raises the venue's refusal, or 400 `no_route`,
    when no route can fill it."""
    answers = quote_all(chain.venue, request.token_in, request.token_out, request.amount_base)
    quotes: dict[str, dict] = {}
    usable: list[Quote] = []
    refusals: list[VenueError] = []
    for i, name, result in answers:
        if isinstance(result, VenueError):
            refusals.append(result)
        else:
            usable.append(result)
        if i == 0:  # the pair's own pools: both venues' quotes, as the spec shows them
            quotes[name] = ({"error": {"code": result.code, "message": result.message}}
                            if isinstance(result, VenueError) else result.to_api())
    try:
        route = best_route(usable, request.token_in, request.token_out, request.amount_base,
                           request.slippage_bps)
    except ValueError:
        if refusals:
            raise next((r for r in refusals if r.code != "no_pool"), refusals[0]) from None
        raise ApiError(400, "no_route", "no venue can fill this order") from None
    return {
        "tokenIn": request.token_in.symbol,
        "tokenOut": request.token_out.symbol,
        "amountIn": decimal_str(request.amount),
        "slippageBps": request.slippage_bps,
        "quotes": quotes,
        "route": route.to_api(),
    }


class TokensHandler(ApiHandler):
    """`GET /api/tokens`: every token with its mainnet mint and whether it trades now."""

    async def get(self) -> None:
        chain = self.storage.chain
        tradable = await self.services.run(lambda: [chain.is_tradable(t) for t in TOKENS])
        self.write_json({"tokens": [
            {"symbol": t.symbol, "mint": t.mint, "decimals": t.decimals, "tradable": ok}
            for t, ok in zip(TOKENS, tradable)
        ]})


class SimSwapsHandler(ApiHandler):
    """`GET /api/sim/swaps?orderId=ID`: the swaps the simulated chain executed for an order."""

    async def get(self) -> None:
        params = single_params(self.request.query_arguments, ("orderId",))
        if "orderId" not in params:
            raise ValidationError("missing_field", "orderId is required", "orderId")
        order_id = parse_order_id(params["orderId"])
        owner = self.owner

        def load():
            self.storage.orders.get_order(order_id, owner, with_events=False)  # OrderNotFound -> 404
            return self.storage.chain.swaps_for_order(str(order_id))

        swaps = await self.services.run(load)
        self.write_json({"swaps": [s.to_api() for s in swaps]})


class SimPoolsHandler(ApiHandler):
    """`GET /api/sim/pools`: every simulated pool, priced now."""

    async def get(self) -> None:
        pools = await self.services.run(self.storage.chain.pools)
        self.write_json({"pools": [p.to_api() for p in pools]})


class SimLaunchHandler(AdminHandler):
    """`POST /api/sim/launch {"token", "inSeconds"}`: schedule a token's launch (for snipers).

    It moves the simulator every process shares: where keys are configured only an operator
    key may (audited as `sim.launch`); SIM_CONTROLS=off answers 404."""

    action = "sim.launch"

    def authenticate(self):
        if self.request.method != "OPTIONS" and not self.services.settings.sim_controls:
            raise not_found("the simulator's controls are off on this engine (SIM_CONTROLS=off)")
        return super().authenticate()

    def admit_caller(self, caller) -> None:
        self.caller = caller
        if self.services.keys.enabled and not caller.operator:
            raise forbidden("launching a token moves the shared simulator: an operator key (ADMIN_KEYS) "
                            "is required")

    async def post_json(self) -> None:
        data = parse_json_object(self.body)
        for name in data:
            if name not in ("token", "inSeconds"):
                raise ValidationError("unknown_field", f"unknown field {name[:64]!r}", name[:64])
        for name in ("token", "inSeconds"):
            if name not in data:
                raise ValidationError("missing_field", f"{name} is required", name)
        token = parse_token(data["token"], "token")
        delay = data["inSeconds"]
        if isinstance(delay, bool) or not isinstance(delay, (int, Decimal)) or not 0 <= delay <= MAX_LAUNCH_DELAY_S:
            raise ValidationError("invalid_field", f"inSeconds must be a number from 0 to {MAX_LAUNCH_DELAY_S}",
                                  "inSeconds")
        launch_at = await self.services.run(self.storage.chain.schedule_launch, token.symbol, float(delay))
        self.audit_target = token.symbol
        await self.answer({"token": token.symbol, "launchAt": iso(launch_at)}, 202, data)
