"""Webhooks without a network: which callbacks are refused (at submit and after resolution),
the signature a receiver checks, the backoff, and the dispatcher's bookkeeping fed by hand."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from actors.webhook_dispatcher import WebhookDispatcher, retry_delay
from config import Settings
from storage.records import EventRecord, utcnow
from storage.webhook_http import Outcome, post_event
from storage.webhooks import Delivery, signature
from web.errors import ValidationError
from web.validation import parse_order

REFUSED = ["http://127.0.0.1/hook", "http://127.1.2.3:8080/", "http://10.0.0.8/x", "http://192.168.1.1/",
           "http://172.16.5.5/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[fe80::1]/",
           "http://224.0.0.1/", "http://0.0.0.0/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/",
           "http://localhost:9000/", "http://api.localhost/", "ftp://hooks.example.com/", "hooks.example.com/x",
           "https://user:pw@hooks.example.com/", "https:///nohost", "http://hooks.example.com:99999/",
           "https://hooks.example.com/#frag", "https://hooks.example.com/" + "a" * 2048, 42, ""]


def submit(url, allow_private=False):
    body = json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "callbackUrl": url})
    return parse_order(body, allow_private_callbacks=allow_private)


@pytest.mark.parametrize("url", REFUSED)
def test_a_callback_url_to_a_private_address_or_not_http_is_refused_at_submit_without_the_allowance(url):
    with pytest.raises(ValidationError) as refused:
        submit(url)
    assert (refused.value.code, refused.value.field, refused.value.status) == ("invalid_field", "callbackUrl", 400)


def test_a_public_callback_url_is_kept_and_the_allowance_lets_loopback_through():
    assert submit("https://hooks.example.com/engine?k=1").callback_url == "https://hooks.example.com/engine?k=1"
    assert submit("http://127.0.0.1:8123/hook", allow_private=True).callback_url == "http://127.0.0.1:8123/hook"
    assert submit(None).callback_url is None  # an explicit null: none


def delivery(url="http://hooks.example.com/h", created_at=None, attempt=1):
    event = EventRecord(uuid4(), 3, "routing", 1, utcnow(), {"bestDex": "raydium"})
    return Delivery(event.order_id, 3, url, "o1", attempt, created_at or utcnow(), "t", event)


def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery_for_good(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "",
                                                                 ("10.1.2.3", 80))])
    outcome = post_event(delivery(), "s", 1.0, allow_private=False)
    assert outcome.permanent and outcome.status is None and "10.1.2.3" in outcome.error


def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body_under_the_owners_secret():
    body = b'{"orderId":"x","seq":1}'
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("secret", 1700000000, body) == "sha256=" + expected


def test_the_wait_between_tries_doubles_from_a_second_up_to_its_ceiling():
    assert [retry_delay(n, 300, rng=lambda: 1.0) for n in (1, 2, 3, 10, 100)] == [1, 2, 4, 300, 300]
    assert retry_delay(3, 300, rng=lambda: 0.0) == 2  # jittered within the upper half


class FakeWebhooks:
    def __init__(self):
        self.settled = []

    def settle(self, d, state, next_at=None, response_status=None, error=None):
        self.settled.append((d.seq, state, next_at, response_status, error))
        return True


def dispatcher(**settings):
    actor = WebhookDispatcher(FakeWebhooks(), None, Settings(**{"webhook_retry_s": 60.0, **settings}))
    actor.senders.shutdown()
    return actor


def test_the_dispatcher_delivers_on_2xx_retries_later_and_gives_up_after_the_retry_bound():
    actor = dispatcher(webhook_backoff_max_s=5.0)
    actor._record(delivery(), Outcome(204))
    actor._record(delivery(attempt=3), Outcome(None, "connection refused"))
    actor._record(delivery(created_at=utcnow() - timedelta(seconds=61)), Outcome(503, "answered 503"))
    actor._record(delivery(), Outcome(None, "10.0.0.1 is a private address", permanent=True))
    (d1, d2, d3, d4) = actor.webhooks.settled
    assert d1[1] == "delivered" and d1[3] == 204
    assert d2[1] == "pending" and timedelta(seconds=1.9) < d2[2] - utcnow() <= timedelta(seconds=4)
    assert d3[1] == "failed" and d3[3] == 503
    assert d4[1] == "failed" and "private" in d4[4]
    assert Decimal(actor.lease_s) == Decimal(3 * actor.settings.webhook_timeout_s + 1)


def test_a_stopping_dispatcher_records_the_send_in_flight_instead_of_leaving_it_to_a_resend():
    import threading

    from actors.timers import Timers

    store, started, release = FakeWebhooks(), threading.Event(), threading.Event()
    pending = [delivery()]
    store.claim = lambda now, lease_s, limit: [pending.pop()] if pending else []
    store.secret_for = lambda owner: "s"

    def post(d, secret, timeout_s, allow_private):
        started.set()
        release.wait(5)
        return Outcome(200)

    timers = Timers().start()
    try:
        ref = WebhookDispatcher.start(store, timers, Settings(webhook_poll_s=0.01), post=post)
        assert started.wait(5)
        threading.Timer(0.1, release.set).start()  # the answer comes while the dispatcher stops
        ref.stop(timeout=5)
    finally:
        timers.stop()
    assert [(seq, state, status) for seq, state, _, status, _ in store.settled] == [(3, "delivered", 200)]
