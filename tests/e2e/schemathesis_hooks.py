"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded with SCHEMATHESIS_HOOKS).

The OpenAPI document states every rule of one value (token lists, amounts by the token
sold, ranges, the cursor's form, no nulls where none are taken), and most of the submit
body's rules between two values too (one kind of body per decimals of the token sold). What
JSON Schema cannot state is a rule between two query parameters, one that depends on the
market, or the few of a submit body listed below: the document states those in words, and
this filter applies them to generated requests, so that a request the document calls valid
is one the engine must accept: a quote's tokenIn and tokenOut differ, its amount fits
tokenIn's decimals and 2^64-1 base units, and the pools can fill it.
`filter_case` is the hook every phase applies (the coverage phase too); it only drops
requests, it never changes one.

It also drops, in the coverage phase only, a submit body that repeats an earlier one but for the
token pair and amount. The submit body is one schema per order type and per decimals of the token
sold (or two per type for trailing_stop and dca): the kinds of one type differ in tokenIn, tokenOut
and amount only, and the coverage phase walks every property of every kind, so each boundary value
or wrong value of another property (slices, limitPrice, clientOrderId, ...) was sent once per
decimals class with the same rest of the body. One of those proves what the others do: the rule of
that property on that order type does not depend on the token pair. Cases about tokenIn, tokenOut or
amount themselves (the part that does depend on the decimals) are all kept, except that a value of
the wrong JSON type for one of them (a list, an object, a boolean...) is wrong whatever the other
two are, so it too is sent once per order type.
"""
from __future__ import annotations

import json
from decimal import Decimal

import schemathesis

from config import find_token
from web.validation import ValidationError, parse_amount, parse_order

QUOTE_MAX_USD = Decimal(10_000)  # every listed pool holds millions: a quote of this fills
_BY_DECIMALS = ("tokenIn", "tokenOut", "amount")  # what the submit body's kinds of one order type differ in
_coverage_bodies_sent: set[tuple] = set()  # one `st run` process: one run


# Rules of a submit body between two of its values that JSON Schema cannot state (the document
# says them in words): tokenIn and tokenOut differ (one kind of body serves the tokens of equal
# decimals); a twap's amount gives each slice a base unit, its jitter is under a step; a dca's
# totalAmount is between its amount and 1000 times it; a stop-limit's floor is not above its stop.
_TWO_VALUE_RULES = ("same_token", "too small to split", "at least amount and at most",
                    "less than durationSeconds / slices", "must not be above the stop price")


def _breaks_a_rule_between_two_values(body) -> bool:
    if not isinstance(body, dict):
        return False
    try:
        parse_order(json.dumps(body))
    except ValidationError as exc:
        return exc.code in _TWO_VALUE_RULES or any(rule in exc.message for rule in _TWO_VALUE_RULES)
    except (TypeError, ValueError):
        return False
    return False


def _repeats_a_coverage_body_but_for_the_tokens(case) -> bool:
    phase = getattr(case.meta, "phase", None)
    if phase is None or getattr(phase.name, "value", phase.name) != "coverage" or not isinstance(case.body, dict):
        return False
    scenario = str(getattr(phase.data, "scenario", ""))
    description = getattr(phase.data, "description", "") or ""
    about = {name for name in _BY_DECIMALS if description.startswith(name + ":") or f"'{name}'" in description}
    if about and not scenario.endswith("incorrect_type"):
        return False  # a boundary of a token or of the amount: it depends on the decimals, always sent
    rest = json.dumps({k: v for k, v in case.body.items() if k not in _BY_DECIMALS or k in about},
                      sort_keys=True, default=str)
    key = (scenario, description, rest)
    if key in _coverage_bodies_sent:
        return True
    _coverage_bodies_sent.add(key)
    return False


@schemathesis.hook
def filter_case(ctx, case):
    if case.operation.path == "/api/orders/execute" and (
            _breaks_a_rule_between_two_values(case.body) or _repeats_a_coverage_body_but_for_the_tokens(case)):
        return False
    query = case.query
    if case.operation.path != "/api/quote" or not isinstance(query, dict):
        return True
    names = [query.get("tokenIn"), query.get("tokenOut")]
    token_in, token_out = (find_token(n) if isinstance(n, str) else None for n in names)
    if token_in is None or token_out is None:
        return True  # an invalid token: a negative case, kept
    if token_in == token_out:
        return False
    try:
        amount, _ = parse_amount(query.get("amount"), token_in)
    except ValidationError:
        return True  # an invalid amount: a negative case, kept
    return amount * token_in.usd_price <= QUOTE_MAX_USD
