"""The dashboard in a real browser: Debian's chromium, driven by Selenium through chromedriver.

One ``pmsq serve`` process serves a store that another process (a worker
and a producer, ``_filler.py``) keeps writing. The test reads the pages as
an operator would, compares them with ``pmsq stats --json``, redrives a
dead letter by clicking, and checks that a request without the token
changes nothing. Screenshots of the main pages are kept under the pytest
temporary directory (the path is printed); set ``PMSQ_SCREENSHOTS=DIR`` to
also write them there (``docs/img`` is refreshed that way).

Without chromium or chromedriver the test is skipped, except under
``CI=true``, where it fails: CI installs them (scripts/install-test-deps.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.backends import History
from tests.web._serve import Served, serve

TOKEN = "browser-token-0123"
EMAILS = 24
FAIL_EVERY = 6  # 4 of the 24 die
ROOT = Path(__file__).resolve().parents[2]


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; CI installs it with scripts/install-test-deps.sh")
    pytest.skip(f"{what} is missing (scripts/install-test-deps.sh installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ModuleNotFoundError:
        _missing("the selenium package")
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("Debian's chromium and chromium-driver")
    assert binary is not None
    assert driver_path is not None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,900",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)  # fmt: skip
    # A driver given by path: Selenium never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll ``condition`` until true; the limit only stops a broken run from hanging."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store a worker process is filling; ``email`` has finished its work."""
    folder = tmp_path_factory.mktemp("browser")
    db = str(folder / "pms.db")
    log = (folder / "worker.log").open("w")  # the worker's log lines, for a failing run
    filler = subprocess.Popen(
        [sys.executable, "-m", "tests.web._filler", db, str(EMAILS), str(FAIL_EVERY)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert filler.stdout is not None
        assert filler.stdout.readline().strip() == "filling"

        def email_done() -> bool:
            data = _stats_json(db)["queues"]["email"]
            return bool(data["processed"] + data["dead"] == EMAILS)

        _wait(email_done, "the worker finishing the email queue")
        yield db
    finally:
        filler.send_signal(signal.SIGTERM)
        filler.communicate(timeout=60)
        log.close()


def _stats_json(db: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pmsq", "stats", db, "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


@pytest.fixture(scope="module")
def served(store: str) -> Iterator[Served]:
    with serve(store, token=TOKEN) as s:
        yield s


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], None]:
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("PMSQ_SCREENSHOTS")
    print(f"\nscreenshots of the dashboard: {folder}")

    def shoot(driver: Any, name: str) -> None:
        # The whole page in one picture: a viewport as tall as the document.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1360, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        target = folder / f"{name}.png"
        try:
            assert driver.save_screenshot(str(target))
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        if extra:
            shutil.copy(target, Path(extra) / f"dashboard-{name}.png")

    return shoot


def _figures(element: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {
        cell.get_attribute("data-figure"): cell.text
        for cell in element.find_elements(By.CSS_SELECTOR, "[data-figure]")
    }


def test_pages_show_what_pmsq_stats_says(
    browser: Any, served: Served, store: str, shots: Any
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url + "/")
    assert browser.title == "queues · pmsq"
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="email"]')
    page = _figures(row)
    email = _stats_json(store)["queues"]["email"]
    # email is finished; ticks keeps moving, so only email's figures are compared.
    for name in ("ready", "delayed", "in_flight", "dead"):
        assert int(page[name]) == email[name], name
    assert email["dead"] == EMAILS // FAIL_EVERY
    assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-queue="ticks"]')
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.ok"), "the charts have bars"
    shots(browser, "overview")

    browser.get(served.url + "/queues/email")
    cards = _figures(browser.find_element(By.ID, "figures"))
    for name in ("dead", "processed", "failed", "ready", "in_flight"):
        assert int(cards[name]) == email[name], name
    letters = browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")
    assert len(letters) == email["dead"]
    assert "has no field <guest_name>" in letters[0].text  # shown as text, not markup
    assert not browser.find_elements(By.CSS_SELECTOR, "form[action$='/actions/redrive']")
    shots(browser, "queue")

    browser.get(served.url + "/tenants")
    tables = browser.find_elements(By.CSS_SELECTOR, "table.tenant-table")
    assert {t.get_attribute("data-tenant") for t in tables} == {"acme", "globex"}
    acme_email = _figures(
        browser.find_element(By.CSS_SELECTOR, 'table[data-tenant="acme"] tr[data-queue="email"]')
    )
    assert (
        int(acme_email["dead"]) == _stats_json(store)["queues"]["email"]["tenants"]["acme"]["dead"]
    )
    shots(browser, "tenants")

    browser.get(served.url + "/schedules")
    names = [
        r.text.split()[0] for r in browser.find_elements(By.CSS_SELECTOR, "#schedules tbody tr")
    ]
    assert names == ["nightly-rates", "ical-poll"]
    shots(browser, "schedules")


def _post(url: str, body: str, **headers: str) -> int:
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_request_without_the_token_changes_nothing(served: Served, store: str) -> None:
    before = _stats_json(store)["queues"]["email"]["dead"]
    for verb in ("redrive", "purge"):
        assert _post(f"{served.url}/actions/{verb}", "queue=email&all=1") == 401
        status = _post(
            f"{served.url}/actions/{verb}",
            "queue=email&all=1",
            authorization="Bearer not-the-token",
        )
        assert status == 401
    assert _stats_json(store)["queues"]["email"]["dead"] == before


def test_a_redrive_through_the_page_really_redrives(
    browser: Any, served: Served, store: str, shots: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served.url + "/login")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit].primary").click()
    _wait(lambda: "Log out" in browser.page_source, "the login")
    browser.get(served.url + "/queues/email")
    shots(browser, "queue-logged-in")
    row = browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")[0]
    target = row.get_attribute("data-id")
    row.find_element(By.CSS_SELECTOR, "button.redrive-one").click()
    # The click returns before the answer's page has loaded: wait for it.
    flash = (
        WebDriverWait(browser, 30)
        .until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".flash")))
        .text
    )
    assert flash == f"redrive email: {target}: 1 changed"

    # The journal says it was redriven by the dashboard's token, and the worker
    # delivered it again (its template still fails, so it dies again).
    with pmsq.connect(store) as broker:
        backend = broker.backend
        assert isinstance(backend, History)

        def delivered_again() -> bool:
            events = [e.event for e in backend.history(message_id=target)]
            return "redriven" in events and "delivered" in events[events.index("redriven") :]

        _wait(delivered_again, "the worker delivering the redriven message")
        operator = [e for e in backend.history(message_id=target) if e.event == "operator"]
        assert [e.detail["action"] for e in operator] == ["redrive"]
        assert operator[0].detail["by"].startswith("token:")

    browser.get(f"{served.url}/trace?id={target}")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "redrive by token:" in text
    assert "redriven" in text
    shots(browser, "trace")


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install-test-deps"):
        _missing("chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _missing("chromium")
