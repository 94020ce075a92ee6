"""The plan of a twap or dca schedule: amounts, due times and progress, from stored records only."""
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from storage import schedule_plan as plan
from storage.records import OrderRecord

T0 = datetime(2026, 12, 4, 12, 0, 0)


def order(type_="twap", amount="1", schedule=None, status="scheduled", created=T0, fills=(), **extra) -> OrderRecord:
    return OrderRecord(id=uuid4(), owner="", status=status, type=type_, token_in="SOL", token_out="USDC",
                       amount=Decimal(amount), slippage_bps=50, limit_price=None, expires_in_seconds=None,
                       client_order_id=None, created_at=created, updated_at=created, attempts=1, attempt=1,
                       last_seq=1, route=None, fills=list(fills), error=None, schedule=schedule, **extra)


def test_a_twap_splits_its_amount_in_equal_slices_the_last_taking_what_rounding_leaves():
    parent = order(amount="1", schedule={"durationSeconds": 30, "slices": 3})
    amounts = [plan.slice_amount(parent, i) for i in range(3)]
    assert amounts == [Decimal("0.333333333"), Decimal("0.333333333"), Decimal("0.333333334")]
    assert sum(amounts) == parent.amount


def test_twap_slices_are_due_evenly_from_its_creation():
    parent = order(schedule={"durationSeconds": 30, "slices": 3})
    kids = []
    for i in range(3):
        assert plan.due_at(parent, kids) == T0 + timedelta(seconds=10 * i)
        kids.append(order(type_="market", created=T0 + timedelta(seconds=10 * i + 7), parent_id=parent.id,
                          slice_index=i))
    assert plan.due_at(parent, kids) is None


def test_a_dca_slice_is_due_an_interval_after_the_previous_child_so_a_resumed_one_does_not_burst():
    parent = order(type_="dca", amount="5", schedule={"intervalSeconds": 60, "count": 3})
    assert plan.due_at(parent, []) == T0
    late = order(type_="market", created=T0 + timedelta(hours=2))  # resumed two hours late
    assert plan.due_at(parent, [order(type_="market"), late]) == T0 + timedelta(hours=2, minutes=1)
    assert plan.slice_amount(parent, 2) == Decimal(5) and plan.total_amount(parent) == Decimal(15)


def test_progress_counts_only_what_the_confirmed_children_filled():
    parent = order(amount="1", schedule={"durationSeconds": 30, "slices": 3})
    fill = {"dex": "raydium", "amountIn": "0.5", "amountOut": "75", "txHash": "x"}
    kids = [order(type_="market", status="confirmed", fills=[fill]), order(type_="market", status="expired"),
            order(type_="market", status="pending")]
    figures = plan.progress(parent, kids)
    assert figures == {"filled": "0.5", "received": "75", "remaining": "0.5", "averagePrice": "150", "slices": 3,
                       "created": 3, "settled": 2, "confirmed": 1}
    assert plan.progress(parent, [])["averagePrice"] is None


def test_jitter_delays_each_twap_slice_by_less_than_a_step_the_same_for_every_worker():
    parent = order(schedule={"durationSeconds": 50, "slices": 5, "jitterSeconds": 9})
    dues = []
    for i in range(5):
        due = plan.due_at(parent, [order(type_="market")] * i)
        assert T0 + timedelta(seconds=10 * i) <= due < T0 + timedelta(seconds=10 * i + 9)
        assert due == plan.due_at(replace(parent), [order(type_="market")] * i)  # a successor computes the same
        dues.append(due)
    assert dues == sorted(dues) and len({d - T0 - timedelta(seconds=10 * i) for i, d in enumerate(dues)}) > 1


def test_a_dca_up_to_a_total_buys_its_amount_then_what_is_left():
    parent = order(type_="dca", amount="10", schedule={"intervalSeconds": 60, "count": 3, "totalAmount": "25"})
    assert [plan.slice_amount(parent, i) for i in range(3)] == [Decimal(10), Decimal(10), Decimal(5)]
    assert plan.total_amount(parent) == Decimal(25) and plan.progress(parent, [])["remaining"] == "25"
