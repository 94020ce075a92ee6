"""The spec's status rules, as enforced where a status is written."""
import pytest

from storage.status import StatusRuleError, check_transition


@pytest.mark.parametrize("current,new", [
    ("pending", "routing"), ("routing", "building"), ("building", "submitted"),
    ("submitted", "confirmed"), ("pending", "waiting"), ("waiting", "routing"),
    ("pending", "failed"), ("submitted", "failed"), ("pending", "cancelled"), ("waiting", "cancelled"),
    ("waiting", "expired"), ("waiting", "waiting"),
])
def test_lifecycle_moves_down_within_an_attempt(current, new):
    check_transition(current, 1, new, 1)


@pytest.mark.parametrize("current,new", [
    ("routing", "pending"), ("building", "routing"), ("submitted", "building"), ("routing", "routing"),
    ("building", "confirmed"), ("pending", "confirmed"), ("building", "cancelled"), ("routing", "expired"),
])
def test_lifecycle_never_moves_up_or_skips_to_an_impossible_end(current, new):
    with pytest.raises(StatusRuleError):
        check_transition(current, 1, new, 1)


@pytest.mark.parametrize("terminal", ["confirmed", "failed", "cancelled", "expired"])
def test_terminal_status_never_changes(terminal):
    for new, attempt in (("routing", 2), ("failed", 1), ("confirmed", 1)):
        with pytest.raises(StatusRuleError):
            check_transition(terminal, 1, new, attempt)


@pytest.mark.parametrize("current", ["routing", "building", "submitted"])
def test_an_owner_cancels_only_before_the_execution_starts(current):
    """Cancel only while `pending` or `waiting`: once `routing` is stored the execution has begun."""
    with pytest.raises(StatusRuleError):
        check_transition(current, 1, "cancelled", 1)
    with pytest.raises(StatusRuleError):
        check_transition(current, 2, "cancelled", 2)


def test_retry_starts_a_new_attempt_with_routing_only():
    check_transition("submitted", 1, "routing", 2)
    with pytest.raises(StatusRuleError):
        check_transition("submitted", 1, "building", 2)
    with pytest.raises(StatusRuleError):
        check_transition("routing", 1, "routing", 3)
    with pytest.raises(StatusRuleError):
        check_transition("routing", 2, "failed", 1)


def test_unknown_status_is_refused():
    with pytest.raises(StatusRuleError):
        check_transition("pending", 1, "exploded", 1)


def test_a_parent_is_scheduled_reports_as_often_as_it_likes_then_completes_fails_or_is_cancelled():
    check_transition("pending", 1, "scheduled", 1)
    check_transition("scheduled", 1, "scheduled", 1)
    for end in ("completed", "failed", "cancelled"):
        check_transition("scheduled", 1, end, 1)
    for current, new in (("pending", "completed"), ("scheduled", "routing"), ("scheduled", "waiting"),
                         ("waiting", "scheduled"), ("routing", "scheduled"), ("scheduled", "expired"),
                         ("scheduled", "confirmed"), ("completed", "scheduled")):
        with pytest.raises(StatusRuleError):
            check_transition(current, 1, new, 1)
