"""The live status page at the controller's ``/``, driven in a real headless chromium.

A real ensemble (Redis, controller, reducer, three workers, a STINS ingester) runs a scan
while selenium reads the page: the counts it shows must be the REST API's, a parameter set
on the page must reach the workers, a worker's class error must show. A second controller,
in this process, wants a bearer token for every API request (``DFAST_REST_TOKEN``,
``DFAST_REST_AUTH=all``): the page must ask for it and show the REST error text of a refused
request.

Needs Debian's ``chromium`` and ``chromium-driver`` (``bash scripts/test.sh`` installs them)
and ``selenium`` (the test extra). Outside CI the tests skip without them; under ``CI=true``
they fail instead. ``DFAST_STATUS_PAGE_PNG=docs/status-page.png`` writes the screenshot
taken during the scan there (and makes the scan longer, for fuller plots).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dranspose_fast.api.server import HttpThread
from dranspose_fast.controller.routes import create_app
from dranspose_fast.runtime.settings import RestSettings
from tests.conftest import free_port
from tests.controller_sim import settings_for
from tests.ensemble import Ensemble, uniform
from tests.stins_source import StinsSource

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "s3cret-token"
SCREENSHOT = os.environ.get("DFAST_STATUS_PAGE_PNG")


def _browser_missing() -> str | None:
    if not CHROMEDRIVER.exists() or not Path(CHROMIUM).exists():
        return "Debian's chromium and chromium-driver are not installed (scripts/test.sh does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1150", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium's sandbox refuses to run as root
    # the driver is named, so selenium's manager never looks one up on the network
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# === reading the page ===


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    value: str = driver.find_element(By.CSS_SELECTOR, css).text
    return value


def number(driver: Any, css: str) -> int:
    """A count as the page shows it (``1,234``)."""
    return int(text(driver, css).replace(",", ""))


def until(driver: Any, what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` (page and REST reads) until it returns something true."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # the page may be between two renders
            last = exc
        time.sleep(0.1)
    path = Path(os.environ.get("PYTEST_TMP", "/tmp")) / "status-page-failure.png"
    driver.save_screenshot(str(path))
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}; screenshot {path})")


def polls(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.polls || 0)"))


def next_polls(driver: Any, n: int = 2) -> None:
    """Wait until the page has rendered ``n`` more fast polls."""
    start = polls(driver)
    until(driver, f"{n} more polls", lambda: polls(driver) >= start + n)


def set_parameter(driver: Any, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    row = driver.find_element(By.ID, f"param-{name}")
    box = row.find_element(By.CSS_SELECTOR, ".new-value")
    box.clear()
    box.send_keys(value)
    row.find_element(By.CSS_SELECTOR, "button.set").click()


def message(driver: Any, name: str) -> str:
    return text(driver, f"#param-{name} .message")


# === a scan, watched on the page ===


def page_matches_rest(driver: Any, ens: Ensemble) -> bool:
    """Every count on the page equals the REST API's (read after the page's last render)."""
    progress = ens.get("/api/v1/progress").json()
    status = ens.get("/api/v1/status").json()
    assert number(driver, "#progress-completed") == progress["completed_events"]
    assert number(driver, "#progress-total") == progress["total_events"]
    assert number(driver, "#progress-assigned") == progress["last_assigned"]
    assert number(driver, "#progress-known") == status["known_events"]
    assert number(driver, "#progress-reduced") == status["reducer"]["reduced"]
    for name, w in status["workers"].items():
        row = f"#worker-{name}"
        assert number(driver, f"{row} .processed") == w["processed"]
        assert number(driver, f"{row} .results") == w["results"]
        assert number(driver, f"{row} .reduced") == w["reduced"]
        assert number(driver, f"{row} .errors") == w["errors"]
        assert number(driver, f"{row} .credit") == w["credit"]
        assert number(driver, f"{row} .qnum") == w["outstanding"]
    for key, counters in status["components"].items():
        if key.startswith("ingester:"):
            row = f"#stream-{key.split(':', 1)[1]}"
            assert number(driver, f"{row} .forwarded") == counters["counters.forwarded"]
    assert number(driver, "#losses-total") == status["dropped_total"]
    return True


def start_ensemble(ens: Ensemble, source: StinsSource) -> None:
    ens.controller()
    ens.reducer()
    ens.worker("w0")
    ens.worker("w1")
    ens.worker("w2", cls="tests.e2e_classes:NoSuchWorker")  # its class cannot be loaded
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], ["w0", "w1", "w2"])


def test_the_page_shows_a_scan_and_sets_parameters(ens: Ensemble, browser: Any,
                                                   tmp_path: Path) -> None:
    events, pace = (6000, 0.004) if SCREENSHOT else (300, 0.012)  # >= 3.6 s of frames
    with StinsSource("tcp://127.0.0.1:0", shape=(16, 16), n=events) as source:
        start_ensemble(ens, source)
        assert ens.post("/api/v1/parameter/delay_ms", content=b"3").status_code == 200
        browser.get(ens.controller_url + "/")
        until(browser, "the workers' parameters on the page",
              lambda: "int" in text(browser, "#param-delay_ms .dtype"))
        ens.sequence(uniform(["eiger"], events))
        sender = source.send_series_in_thread(delay=pace)

        # during the scan: the page's count lies between two REST reads around its render
        until(browser, "the scan running on the page",
              lambda: text(browser, "#scan-state") == "running"
              and number(browser, "#progress-completed") > 0)
        before = ens.get("/api/v1/progress").json()
        next_polls(browser)
        shown = number(browser, "#progress-completed")
        after = ens.get("/api/v1/progress").json()
        assert not before["finished"]
        assert before["completed_events"] <= shown <= after["completed_events"]
        assert number(browser, "#progress-total") == events + 2  # plus the start and end events
        time.sleep(1.5 if not SCREENSHOT else 20.0)  # a few plot samples
        browser.save_screenshot(str(tmp_path / "status-page.png"))
        if SCREENSHOT:
            browser.save_screenshot(SCREENSHOT)
        sender.join()
        ens.wait_finished(120)

        # after it: every count equals the REST API's, the class error shows
        until(browser, "the completed scan on the page",
              lambda: text(browser, "#scan-state") == "completed")
        until(browser, "the page's counts to equal the REST API's",
              lambda: page_matches_rest(browser, ens))
        error = next(w for w in ens.get("/api/v1/config").json()["workers"]
                     if w["name"] == "w2")["class_error"]
        assert "NoSuchWorker" in error
        until(browser, "w2's class error", lambda: text(browser, "#errors tr[data-key='worker w2']"
                                                    " .message") == error)
        assert text(browser, "#losses-none") == "nothing lost"

        # a parameter set on the page reaches the workers
        set_parameter(browser, "roi1", "set on the page")
        shown_hash = until(browser, "the parameter set",
                           lambda: re.fullmatch(r"set; hash ([0-9a-f]{12})",
                                                message(browser, "roi1")))
        # /api/v1/config is cached for config_cache (0.3 s): wait for it to show the new hash
        ens.wait("the config to show the page's hash", lambda: ens.get(
            "/api/v1/config").json()["parameters_hash"].startswith(shown_hash.group(1)),
                 timeout=10)
        assert ens.get("/api/v1/parameter/roi1").content == b"set on the page"
        until(browser, "the workers to take the parameters",
              lambda: text(browser, "#params-applied").startswith("in use by 3 of 3 workers"))
        until(browser, "the new value in the value column",
              lambda: text(browser, "#param-roi1 .value") == "set on the page")
        ens.sequence(uniform(["eiger"], 10))
        source.send_series(10)
        ens.wait_finished()
        records = ens.published()["records"]
        assert records and {r["roi1"] for r in records} == {"set on the page"}
        until(browser, "the second scan's counts", lambda: page_matches_rest(browser, ens))
        assert number(browser, "#progress-total") == 12

    link = browser.find_element("id", "reducer-link").get_attribute("href")
    assert link.startswith("http://127.0.0.1:") and link.endswith("/")
    docs = browser.find_element("css selector", "a[href='docs']").get_attribute("href")
    assert httpx.get(docs).status_code == 200  # the API docs stay reachable


# === controllers served in this process, one of them wanting a token ===


@pytest.fixture
def serve(redis_url: str, tmp_path: Path) -> Iterator[Callable[[RestSettings], str]]:
    """Serve a controller with the given REST settings, with one real worker process (its
    class describes the parameters ``roi1`` and ``delay_ms``); returns its URL."""
    ens = Ensemble(redis_url, tmp_path)
    servers: list[HttpThread] = []

    def start(rest: RestSettings) -> str:
        app = create_app(None, settings_for(redis_url), rest=rest)
        servers.append(HttpThread(app, port=free_port()).start())
        url = servers[-1].url.rstrip("/")
        auth = {"Authorization": f"Bearer {rest.token}"} if rest.token else {}
        if "w0" not in ens.procs:
            ens.worker("w0")
        ens.wait("the worker's parameter descriptions", lambda: "delay_ms" in [
            p["name"] for p in httpx.get(url + "/api/v1/parameters", headers=auth).json()])
        return url

    try:
        yield start
    finally:
        codes = ens.stop_all()
        for server in servers:
            server.stop()
    assert codes == {"w0": 0}, ens.all_logs()


def dialog_open(driver: Any) -> bool:
    return bool(driver.execute_script("return document.getElementById('token-dialog').open"))


def answer_token(driver: Any, token: str | None) -> None:
    """Type ``token`` into the page's token dialog, or press its cancel button (None)."""
    from selenium.webdriver.common.by import By

    if token is None:
        driver.find_element(By.ID, "token-cancel").click()
        return
    box = driver.find_element(By.ID, "token-input")
    box.clear()
    box.send_keys(token)
    driver.find_element(By.ID, "token-submit").click()


NEEDED = "401: a bearer token is required (Authorization: Bearer <token>)"


def test_the_page_asks_for_the_token(serve: Callable[[RestSettings], str],
                                     browser: Any) -> None:
    url = serve(RestSettings(dfast_rest_token=TOKEN, dfast_rest_auth="all"))
    browser.get(url + "/")  # the page itself needs no token, its API calls do
    until(browser, "the token dialog", lambda: dialog_open(browser))
    assert text(browser, "#token-reason") == NEEDED
    answer_token(browser, "wrong")
    until(browser, "the dialog asking again", lambda: dialog_open(browser)
          and text(browser, "#token-reason") == "403: the bearer token is not valid")
    answer_token(browser, TOKEN)
    until(browser, "the page filled with the token",
          lambda: not dialog_open(browser) and text(browser, "#scan-state") == "no scan"
          and text(browser, "#param-delay_ms .dtype") == "int")
    assert browser.execute_script("return sessionStorage.getItem('dfast-token')") == TOKEN

    set_parameter(browser, "roi1", "with the token")
    until(browser, "the parameter set", lambda: message(browser, "roi1").startswith("set; hash"))
    got = httpx.get(url + "/api/v1/parameter/roi1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.content == b"with the token"

    # the token gone and the question declined: a set is refused with the REST's text
    browser.execute_script("sessionStorage.removeItem('dfast-token')")
    until(browser, "the token dialog", lambda: dialog_open(browser))
    answer_token(browser, None)
    until(browser, "the refusal in the header", lambda: NEEDED in text(browser, "#connection"))
    set_parameter(browser, "roi1", "without a token")
    until(browser, "the token dialog for the set", lambda: dialog_open(browser))
    answer_token(browser, None)
    until(browser, "the REST error text", lambda: message(browser, "roi1")
          == "refused: " + NEEDED)
    assert got.content == b"with the token"
    again = httpx.get(url + "/api/v1/parameter/roi1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.content == b"with the token"


def test_a_refused_value_shows_the_rest_error(serve: Callable[[RestSettings], str],
                                              browser: Any) -> None:
    url = serve(RestSettings())
    browser.get(url + "/")
    until(browser, "the parameters", lambda: text(browser, "#param-delay_ms .dtype") == "int")
    set_parameter(browser, "delay_ms", "not a number")
    shown = until(browser, "an answer", lambda: message(browser, "delay_ms")
                  if message(browser, "delay_ms") not in ("", "setting…") else None)
    answer = httpx.post(url + "/api/v1/parameter/delay_ms", content=b"not a number")
    assert 400 <= answer.status_code < 500, answer.text
    assert shown == f"refused: {answer.status_code}: {json.loads(answer.text)['detail']}"
