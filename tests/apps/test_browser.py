"""The lab in a real browser: a Streamlit server on localhost, every page opened in headless Chromium.

Skipped when Playwright or Chromium (/usr/bin/chromium, Debian package ``chromium``) is
missing, unless TOYLAB_REQUIRE_BROWSER=1 (set by .ci/run), which turns that into a failure.
One screenshot per page goes to $TOYLAB_SCREENSHOTS, or else to a pytest temporary folder;
the test prints where.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Started as the README says, through `toylab lab` (which binds to localhost and sends no
# usage statistics); no file watcher, which the test does not need.
SERVER_ENV = {"STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
PAGE_TIMEOUT_MS = 60_000  # first visit to a page loads its model and computes its caches


def _unavailable(reason: str) -> None:
    if os.environ.get("TOYLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TOYLAB_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        _unavailable(f"there is no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    return sync_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    url = f"http://localhost:{port}"  # what toylab lab binds to
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    cmd = [sys.executable, "-m", "toylab.cli", "lab", "--port", str(port), "--no-browser"]
    with open(log_path, "wb") as log:
        # Its own process group: streamlit runs as a child of the CLI, and both must stop.
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **SERVER_ENV})
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"toylab lab exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the lab was not healthy after 60 s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url, log_path
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the CLI and its streamlit child: SIGTERM to their process group, SIGKILL to what
    is left of it after ``grace`` seconds."""
    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the CLI, so that only live processes keep the group alive
            if not group_alive():
                break
            time.sleep(0.1)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture
def screenshot_dir(tmp_path):
    folder = Path(os.environ.get("TOYLAB_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_until_done(page, title: str) -> None:
    """Until the page's title is shown and its script has finished (Streamlit marks stApp)."""
    page.get_by_role("heading", name=title, level=1).wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(  # plots are <img>; a screenshot before they load shows blanks
        "() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')].every(i => i.complete)",
        timeout=PAGE_TIMEOUT_MS)


def test_every_page_renders_in_a_browser(playwright_api, server, screenshot_dir, lessons):
    url, log_path = server
    expected = ["Home", *(title for _, title in lessons)]
    problems: list[str] = []
    foreign: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda err: problems.append(f"JavaScript error: {err}"))
            page.on("request", lambda req: None if re.match(r"(https?|wss?)://(localhost|127\.0\.0\.1):|data:|blob:", req.url)
                    else foreign.append(req.url))
            page.goto(url, timeout=PAGE_TIMEOUT_MS)
            _wait_until_done(page, "toylab: the lab")
            links = page.locator('[data-testid="stSidebarNavLink"]')
            titles = [t.strip() for t in links.all_inner_texts()]
            assert titles == expected, titles

            for index, title in enumerate(expected):
                start = time.perf_counter()
                links.nth(index).click()
                _wait_until_done(page, "toylab: the lab" if title == "Home" else title)
                elapsed = time.perf_counter() - start
                shot = screenshot_dir / f"{index:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', title).strip('-').lower()}.png"
                # The page scrolls inside Streamlit's main pane, not the document, so a full-page
                # screenshot needs a viewport as tall as that pane's content.
                height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": 1400, "height": min(max(height, 1000), 8000)})
                page.screenshot(path=str(shot), full_page=True)
                page.set_viewport_size({"width": 1400, "height": 1000})
                print(f"{title}: rendered in {elapsed:.2f} s, screenshot {shot}")
                for selector, what in (('[data-testid="stException"]', "exception"),
                                       ('[data-testid="stAlertContentError"]', "error")):
                    for text in page.locator(selector).all_inner_texts():
                        problems.append(f"{title}: {what} shown: {text[:500]}")
        finally:
            browser.close()
    print(f"screenshots in {screenshot_dir}")
    assert not problems, "\n".join(problems) + f"\nserver log:\n{log_path.read_text()}"
    assert not foreign, f"the lab made requests off localhost: {foreign}"
