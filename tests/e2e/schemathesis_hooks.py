"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded with SCHEMATHESIS_HOOKS).

The OpenAPI document states every rule of one value (token lists, amounts, ranges, the
cursor's form, no nulls where none are taken). A few rules tie two values together, which
JSON Schema cannot state for query parameters and Schemathesis cannot generate from for
bodies; the document states them in words, and these filters apply them to generated
requests, so that a request the document calls valid is one the engine must accept:
tokenIn and tokenOut differ, the amount fits tokenIn's decimals and 2^64-1 base units, a
sniper order names at most one token not launched yet, and a quote asks for what the
pools can fill. Each filter only drops requests; it never changes one.
"""
from __future__ import annotations

from decimal import Decimal

import schemathesis

from config import find_token
from web.validation import ValidationError, parse_amount

QUOTE_MAX_USD = Decimal(10_000)  # every listed pool holds millions: a quote of this fills


def _tokens(data) -> tuple:
    names = [data.get(field) for field in ("tokenIn", "tokenOut")]
    return tuple(find_token(n) if isinstance(n, str) else None for n in names)


def _fits(amount, token) -> bool:
    try:
        parse_amount(amount, token)
        return True
    except ValidationError:
        return False


@schemathesis.hook
def filter_body(ctx, body):
    if ctx.operation.path != "/api/orders/execute" or not isinstance(body, dict):
        return True
    token_in, token_out = _tokens(body)
    if token_in is None or token_out is None:
        return True  # not a valid body anyway: nothing of two values to check
    if token_in == token_out or not (token_in.tradable or token_out.tradable):
        return False
    return "amount" not in body or _fits(body["amount"], token_in)


@schemathesis.hook
def filter_query(ctx, query):
    if ctx.operation.path != "/api/quote" or not isinstance(query, dict):
        return True
    token_in, token_out = _tokens(query)
    if token_in is None or token_out is None:
        return True
    if token_in == token_out:
        return False
    amount = query.get("amount")
    if not isinstance(amount, str) or not _fits(amount, token_in):
        return True  # an invalid amount: a negative case, kept
    return Decimal(amount) * token_in.usd_price <= QUOTE_MAX_USD
