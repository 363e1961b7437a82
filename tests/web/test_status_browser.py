"""The status pages in a real headless Chromium while a large upload is in flight."""

from __future__ import annotations

import re
import time
from typing import Any

from tests.web.browser import browser
from tests.web.status_node import BackgroundUpload, StatusGateway, status_gateway

__all__ = ["browser", "status_gateway"]

MiB = 1 << 20
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_bytes(text: str) -> float:
    """'12.3 MiB' → bytes."""
    number, unit = text.split()
    return float(number) * UNITS[unit]


def in_flight(driver: Any) -> dict[tuple[str, str], float]:
    """(direction, file) → bytes done, read from the live page's 'In flight' table."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#in-flight tbody tr')).map(function (r) {"
        "  var c = function (k) { var e = r.querySelector('.c-' + k); return e && e.textContent; };"
        "  return [c('direction'), c('file'), c('done')]; });"
    )
    return {(d, f): parse_bytes(done) for d, f, done in rows if done and done != "–"}


def live_text(driver: Any) -> str:
    """The page's live indicator ('live, updated …' once the script has polled)."""
    return str(driver.find_element("id", "live").text)


def wait_until(check: Any, timeout: float = 30.0) -> Any:
    """Poll ``check()`` every 0.1 s until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return result


def test_pages_render_and_progress_advances_live(
    status_gateway: StatusGateway, browser: Any
) -> None:
    """Every page loads and goes live; on Transfers, bytes done grow without a reload."""
    base = status_gateway.url.rstrip("/")
    browser.get(base + "/transfers")
    upload = BackgroundUpload(status_gateway.gw, "browser-big.bin", 200 * MiB, pause=0.02)
    try:
        first = wait_until(lambda: in_flight(browser))
        wait_until(lambda: live_text(browser).startswith("live, updated"))
        grew = wait_until(
            lambda: (
                [
                    key
                    for key, done in in_flight(browser).items()
                    if key in first and done > first[key]
                ]
                or upload.done.is_set()
            )
        )
        assert grew is not True, "the upload finished before the page showed it advance"
        assert grew[0][1] == "/browser-big.bin"
        progress = browser.find_elements("css selector", "#in-flight progress")
        assert progress
        for path, heading in (("/", "Storage servers"), ("/sftp", "Open SFTP sessions")):
            browser.get(base + path)
            assert heading in browser.page_source
            wait_until(lambda: live_text(browser).startswith("live, updated"))
        assert re.search(r"SSH-2\.0-paramiko", browser.find_element("id", "sessions").text)
        browser.get(base + "/health")
        wait_until(lambda: live_text(browser).startswith("live, updated"))
        assert "Recent warnings and errors" in browser.page_source
    finally:
        upload.wait()
    browser.get(base + "/transfers")
    finished = browser.find_element("id", "finished").text
    assert "browser-big.bin" in finished


def test_page_reads_well_with_scripts_off(status_gateway: StatusGateway) -> None:
    """Without scripts the served HTML already holds every section's data."""
    status, _, body = status_gateway.get("/")
    html = body.decode()
    assert status == 200
    assert "<td class='c-nickname'>embedded</td>" in html
    assert "<td class='c-text'>1/1/1</td>" not in html  # encoding shows as k, happy, N
    assert re.search(r"<th>Shares needed \(k\)</th><td class='c-needed'>1</td>", html)
