"""The dashboard at `/`, driven in a real headless Chromium (selenium + chromium-driver) against
`engine run`: the form, the live orders table, the timeline, errors in words.

Screenshots go to tests/artifacts/ (git-ignored; TEST_ARTIFACTS_DIR elsewhere)."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool

# On one xdist worker: the module's Chromium and its shared engine start once.
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.xdist_group("dashboard")]

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts"))
# The flags this machine needs (no GPU, no network beyond loopback, no first-run chores).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,1080")
LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]
# The settings of the engine the module's tests share (module_engine_run), each on orders of its
# own: the default (instant venues) with webhooks delivered to loopback, polled every 50 ms.
SHARED = {"WEBHOOK_POLL_SECONDS": "0.05", "WEBHOOK_ALLOW_PRIVATE": "on"}


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """One headless Chromium for the module (a fresh profile); quit at the end of the module.
    Starting one costs ~0.7 s of CPU: each test gets a fresh tab of it instead (`browser`)."""
    chromium, chromedriver = require_tool("Chromium", "chromium", "chromedriver")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium') / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium):
    """The module's Chromium, as a fresh one would be for this test: its one tab on about:blank,
    no sessionStorage (where the page keeps an API key; the dashboard stores nothing else) and no
    cookies left by an earlier test, and the browser log drained, so `console_errors` reads this
    test's page only. Each test's engine is on a port of its own, another origin besides."""
    chromium.delete_all_cookies()
    chromium.get_log("browser")
    try:
        yield chromium
    finally:
        if chromium.current_url.startswith("http"):
            chromium.execute_script("window.sessionStorage.clear();")
        chromium.get("about:blank")  # leave the engine's page (and close its /ws) before the engine stops


class Page:
    """The dashboard in the browser, in the words of the test."""

    def __init__(self, driver, port: int):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.By = driver, By
        self.wait = lambda timeout=20: WebDriverWait(driver, timeout, poll_frequency=0.1)
        driver.get(f"http://127.0.0.1:{port}/")
        self.wait().until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        # The form's token lists come from /api/tokens: the page is usable once they are there.
        self.wait().until(lambda d: d.execute_script("return document.querySelectorAll('#f-tokenIn option').length"))

    def find(self, css: str):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        # Read in the page's own thread: rows are re-rendered as events arrive, so an
        # element found a moment ago may already be gone (stale) when asked for its text.
        return self.driver.execute_script(
            "const el = document.querySelector(arguments[0]); return el ? el.innerText : null;", css)

    def fill(self, **fields) -> None:
        from selenium.webdriver.support.ui import Select

        for name, value in fields.items():
            element = self.find(f"#f-{name}")
            if element.tag_name == "select":  # its options come from /api/tokens: wait for them
                self.wait().until(lambda d: any(o.get_attribute("value") == value for o in Select(element).options))
                Select(element).select_by_value(value)
            else:
                element.clear()
                element.send_keys(value)

    def submit(self) -> None:
        self.find("#submit").click()

    def row_status(self, order_id: str) -> str | None:
        return self.text(f'#orders tr[data-order-id="{order_id}"] td.status')

    def selected_order(self) -> str:
        script = "const row = document.querySelector('#orders tr.selected'); return row && row.dataset.orderId;"
        return self.wait().until(lambda d: d.execute_script(script))

    def timeline(self) -> list[str]:
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#timeline li')].map((li) => li.dataset.status);")

    def console_errors(self) -> list[str]:
        """Script errors and policy violations; API answers of 4xx (logged as failed loads) are expected."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.driver.save_screenshot(str(path))
        return path


def test_an_order_from_the_form_moves_live_to_confirmed_and_its_timeline_lists_every_status(
        start_engine, browser, request):
    # Realistic venues at half their latency, ~1.5 s per order: slow enough to watch it move.
    port = start_engine(VENUE_PROFILE="realistic", VENUE_LATENCY_SCALE="0.5")
    page = Page(browser, port)
    page.fill(tokenIn="SOL", tokenOut="USDC", amount="1.5", slippageBps="100")
    page.wait().until(lambda d: "Route:" in page.text("#quote"))
    quote = page.text("#quote")
    assert "raydium" in quote and "meteora" in quote and "after slippage" in quote

    page.submit()
    order_id = page.selected_order()
    seen = []
    deadline = time.monotonic() + 30
    while (status := page.row_status(order_id)) != "confirmed" and time.monotonic() < deadline:
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        time.sleep(0.05)
    assert page.row_status(order_id) == "confirmed", seen
    # The dashboard never polls orders: a status between submit and confirmed came over /ws.
    assert set(seen) & {"routing", "building", "submitted"}, seen

    page.wait().until(lambda d: page.timeline() == LIFECYCLE)
    timeline = page.text("#timeline")
    assert "chose" in timeline and "minAmountOut" in timeline and "signature" in timeline
    page.wait().until(lambda d: "fill on" in page.text("#timeline-summary"))  # read again when it ended
    row = page.text(f'#orders tr[data-order-id="{order_id}"]')
    assert "SOL → USDC" in row and ("raydium" in row or "meteora" in row)
    page.wait().until(lambda d: "spread" in page.text("#chart-legend"))
    assert page.driver.find_elements(page.By.CSS_SELECTOR, "#chart polyline")
    name = "dashboard.png" if "[engine run]" in request.node.name else "dashboard-production.png"
    assert page.screenshot(name).stat().st_size > 10_000
    assert page.console_errors() == []


def test_api_errors_read_as_sentences_next_to_the_field_and_a_failed_order_shows_why(module_engine_run, browser):
    port = module_engine_run(**SHARED)
    page = Page(browser, port)
    page.fill(amount="0")
    page.wait().until(lambda d: "greater than 0" in page.text("#quote"))
    page.submit()
    page.wait().until(lambda d: page.find("#form-error").is_displayed())
    assert page.text("#form-error") == "Amount must be greater than 0."
    assert "invalid" in page.find("#f-amount").get_attribute("class")

    page.fill(type="limit")
    assert page.find("#f-limitPrice").is_displayed() and page.find("#f-expiresInSeconds").is_displayed()
    page.fill(amount="1", limitPrice="0")
    page.submit()
    page.wait().until(lambda d: page.find("#form-error").is_displayed())
    assert "limit" in page.text("#form-error").lower() and "{" not in page.text("#form-error")
    page.fill(amount="1", limitPrice="100000")  # far above the market: it waits
    page.submit()
    armed = page.selected_order()
    page.wait().until(lambda d: page.row_status(armed) == "waiting")

    page.fill(type="market", tokenIn="BONK", tokenOut="USDC", amount="0.00001")
    page.submit()
    page.wait().until(lambda d: page.selected_order() != armed)
    order_id = page.selected_order()
    page.wait().until(lambda d: page.row_status(order_id) == "failed")
    page.wait().until(lambda d: "insufficient_liquidity" in page.text("#timeline"))
    assert "Too small to buy" in page.text("#timeline") or "too small to buy" in page.text("#timeline")

    # A pair without a pool of its own: the quote and the timeline show the route's hops.
    page.fill(tokenIn="BONK", tokenOut="JUP", amount="1000000")
    page.wait().until(lambda d: re.search(r"Route: BONK → .+ → (SOL|USDC) → .+ → JUP", page.text("#quote")))
    page.submit()
    page.wait().until(lambda d: page.selected_order() != order_id)
    routed = page.selected_order()
    page.wait().until(lambda d: page.row_status(routed) == "confirmed")
    page.wait().until(lambda d: "fill on BONK → " in page.text("#timeline-summary"))
    timeline = page.text("#timeline")
    assert re.search(r"through (SOL|USDC)", timeline) and re.search(r"BONK → (SOL|USDC): (raydium|meteora) ", timeline)
    page.screenshot("dashboard-route.png")

    page.find("#l-inSeconds").clear()
    page.find("#l-inSeconds").send_keys("1")
    page.find("#launch").click()
    page.wait().until(lambda d: "POPCAT launches at" in page.text("#launch-result"))
    page.wait().until(lambda d: "POPCAT (not launched)" not in page.text("#f-tokenOut"))
    page.screenshot("dashboard-errors.png")
    assert page.console_errors() == []


def test_the_cancel_button_cancels_an_order_that_has_not_started(make_engine_run, browser):
    # Instant venues: the second order is held back by the rate limit (one order a minute), not by
    # the first one's latency, so it waits either way.
    _, port = make_engine_run(ORDER_RATE_LIMIT=1)
    page = Page(browser, port)
    page.submit()
    first = page.selected_order()
    page.submit()
    page.wait().until(lambda d: page.selected_order() != first)
    waiting = page.selected_order()  # held back by ORDER_RATE_LIMIT=1: still pending
    page.driver.execute_script(f"document.querySelector('#orders tr[data-order-id=\"{waiting}\"] button').click()")
    page.wait().until(lambda d: page.row_status(waiting) == "cancelled")
    assert page.timeline()[-1] == "cancelled"


def test_with_api_keys_the_page_asks_for_a_key_and_then_works_and_refusals_read_as_sentences(
        make_engine_run, browser):
    """With API_KEYS the page asks for a key, then works with it (quotes, an order to confirmed).
    Refusals a trader meets from operators' controls, in words: a risk limit names the limit
    and the figures, a halt its reason and what happens to the orders already placed."""
    import json
    import urllib.request

    key, operator = "dash-key-0123456789-0123456789abcd", "dash-operator-0123456789-0123456789"
    _, port = make_engine_run(API_KEYS=key, ADMIN_KEYS=operator, RISK_MAX_ORDER_USD="100")

    def admin(path, body):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {operator}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status

    browser.get(f"http://127.0.0.1:{port}/")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: "needs an API key" in d.find_element(By.ID, "notice").text)
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    page = Page(browser, port)  # reloads: the key is kept in the session
    page.wait().until(lambda d: "Route:" in page.text("#quote"))  # the page works with the key: quotes...
    page.fill(tokenIn="SOL", tokenOut="USDC", amount="10")  # ~1,500 USDC, over 100
    page.submit()
    page.wait().until(lambda d: page.find("#form-error").is_displayed())
    refused = page.text("#form-error")
    assert refused.startswith("Over this key's risk limit (largest order): ") and "{" not in refused, refused
    assert "100" in refused, refused

    assert admin("/api/admin/halt", {"scope": "all", "reason": "exchange maintenance"}) == 201
    page.fill(amount="0.1")
    page.submit()
    page.wait().until(lambda d: "halted" in (page.text("#form-error") or ""))
    assert page.text("#form-error") == ("Trading is halted by an operator: exchange maintenance. New orders are "
                                        "refused until it resumes; orders already placed wait and go on then.")
    page.screenshot("dashboard-halted.png")

    assert admin("/api/admin/resume", {"scope": "all"}) == 200
    page.submit()
    order_id = page.selected_order()
    page.wait().until(lambda d: page.row_status(order_id) == "confirmed")  # ...and orders
    # The one expected: the first page, before the key was entered, had its /ws refused (401).
    assert [e for e in page.console_errors() if "Authentication failed" not in e] == []


def test_an_order_with_a_webhook_shows_its_deliveries_and_a_bad_url_is_refused_next_to_the_field(
        module_engine_run, browser):
    from tests.e2e.test_webhooks import Receiver, free_port

    port = module_engine_run(**SHARED)
    receiver = Receiver(free_port())
    receiver.start()
    try:
        page = Page(browser, port)
        page.fill(tokenIn="SOL", tokenOut="USDC", amount="0.1", callbackUrl="ftp://hooks.example.com/")
        page.submit()
        page.wait().until(lambda d: "http or https" in (page.text("#form-error") or ""))
        assert "invalid" in page.find("#f-callbackUrl").get_attribute("class")
        page.fill(callbackUrl=f"http://127.0.0.1:{receiver.port}/hook")
        page.submit()
        page.selected_order()
        page.wait().until(lambda d: "fill on" in page.text("#timeline-summary"))

        def all_delivered(driver):
            # Read them again (by script: the list is drawn anew as events arrive, and a button
            # found a moment before the click could be the one just replaced).
            driver.execute_script("const b = document.querySelector('#deliveries button'); if (b) b.click();")
            return page.text("#deliveries").count("delivered") == 5
        page.wait().until(all_delivered)
        assert "#1 delivered" in page.text("#deliveries") and "#5 delivered" in page.text("#deliveries")
        assert page.console_errors() == []
    finally:
        receiver.stop()


def test_the_form_creates_each_protective_kind_and_the_summary_shows_its_prices_and_trailed_price(
        make_engine_run, browser):
    # An engine of its own: its trailing stops stay armed and keep streaming trailing events,
    # which would reach the pages of the tests after it on a shared engine.
    _, port = make_engine_run()
    page = Page(browser, port)
    page.fill(type="trailing_stop", trailPercent="20", amount="0.1")
    assert page.find("#f-trailPercent").is_displayed() and not page.find("#f-targetPrice").is_displayed()
    page.submit()
    trailing = page.selected_order()
    page.wait().until(lambda d: page.row_status(trailing) == "waiting")
    page.wait().until(lambda d: "trailing price" in (page.text("#timeline-summary") or ""))
    # the trail comes with the order's read, which may land after its first trailing event
    page.wait().until(lambda d: "20% below the best price" in (page.text("#timeline-summary") or ""))
    assert "trailing" in page.text("#timeline")  # its waiting event says the price it trails
    page.fill(trailPercent="", trailAmount="5")  # a trail in price instead
    assert page.find("#f-trailAmount").is_displayed()
    page.submit()
    page.wait().until(lambda d: page.selected_order() != trailing)
    by_amount = page.selected_order()
    page.wait().until(lambda d: page.row_status(by_amount) == "waiting")
    page.wait().until(lambda d: "trailing price" in (page.text("#timeline-summary") or ""))
    page.wait().until(lambda d: "5 below the best price" in (page.text("#timeline-summary") or ""))
    assert "(5 below)" in page.text("#timeline")
    trailing = by_amount
    page.fill(type="oco", targetPrice="100000", stopPrice="", limitPrice="")
    page.submit()  # no stop price: refused next to the field
    page.wait().until(lambda d: "invalid" in (page.find("#f-stopPrice").get_attribute("class") or ""))
    page.fill(stopPrice="1", limitPrice="0.9")
    page.submit()
    page.wait().until(lambda d: page.selected_order() != trailing)
    oco = page.selected_order()
    page.wait().until(lambda d: page.row_status(oco) == "waiting")
    page.wait().until(lambda d: "take profit" in (page.text("#timeline-summary") or ""))
    summary = page.text("#timeline-summary")
    assert "100000" in summary and "1, floor 0.9" in summary, summary
    page.wait().until(lambda d: "whichever comes first" in (page.text("#timeline") or ""))
    page.fill(type="stop_loss", stopPrice="1", limitPrice="0.9")
    page.submit()
    page.wait().until(lambda d: page.selected_order() != oco)
    stop_limit = page.selected_order()
    page.wait().until(lambda d: page.row_status(stop_limit) == "waiting")
    page.wait().until(lambda d: "stop price" in (page.text("#timeline-summary") or ""))
    page.screenshot("dashboard-protective.png")


def test_a_twap_from_the_form_shows_its_children_and_progress_and_a_dca_pauses(module_engine_run, browser):
    port = module_engine_run(**SHARED)
    page = Page(browser, port)
    assert not page.find("#f-slices").is_displayed()  # the schedule's fields only for twap and dca
    page.fill(tokenIn="SOL", tokenOut="USDC", amount="1", slippageBps="500", type="twap")
    page.fill(durationSeconds="2", slices="2", jitterSeconds="0", childLimitPrice="0.01")  # a floor far below
    page.submit()
    parent = page.selected_order()
    page.wait(30).until(lambda d: page.row_status(parent) == "completed")
    page.wait().until(lambda d: "2/2 settled" in (page.text("#schedule") or ""))
    assert "2 slices over 2 s" in page.text("#schedule") and "average price" in page.text("#schedule")
    children = page.driver.execute_script(
        "return [...document.querySelectorAll('#schedule .children li')].map((li) => li.dataset.orderId);")
    assert len(children) == 2
    assert page.timeline()[:2] == ["pending", "scheduled"] and page.timeline()[-1] == "completed"
    page.driver.execute_script("document.querySelector('#schedule .children button').click()")
    page.wait().until(lambda d: "limit price" in (page.text("#timeline-summary") or ""))  # a limit child
    # Its parent, by the link in the child's summary. Clicked again until the parent shows: the
    # summary is drawn again when the child's read or an event arrives, and a click can land on
    # the link of the drawing that is being replaced (seen under load: the parent never showed).
    page.wait().until(lambda d: d.execute_script(
        "const link = document.querySelector('#timeline-summary button.link'); if (link) link.click();") or
        "2 slices over 2 s" in (page.text("#schedule") or ""))

    page.fill(tokenIn="USDC", tokenOut="SOL", amount="1", type="dca")
    page.fill(intervalSeconds="3600", count="2", totalAmount="2.5")  # up to a total: its count is derived
    page.submit()
    page.wait().until(lambda d: page.selected_order() != parent)
    page.wait().until(lambda d: "Pause" in (page.text("#schedule") or ""))
    page.driver.execute_script("document.querySelector('#schedule button.small').click()")
    page.wait().until(lambda d: "(paused)" in (page.text("#schedule") or ""))
    assert "3 times every 3600 s" in page.text("#schedule")
    page.driver.execute_script("document.querySelector('#schedule .children button').click()")
    page.wait().until(lambda d: "slice 0 of parent" in (page.text("#timeline-summary") or ""))
    assert page.console_errors() == []
