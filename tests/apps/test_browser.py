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


@pytest.mark.parametrize("share", [0, 1], ids=["even pages", "odd pages"])
def test_every_page_renders_in_a_browser(playwright_api, server, screenshot_dir, lessons, share):
    """Every page, half of them per test (alternately, so the slow ones split): the two halves
    run on two workers, each with its own server."""
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
                if index % 2 != share:
                    continue
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


PATCHING_TITLE = "3 Activation and path patching"


def _open_patching(browser, url: str):
    """A new browser session (its own context, so its own Streamlit session) on the patching page."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url, timeout=PAGE_TIMEOUT_MS)
    _wait_until_done(page, "toylab: the lab")
    page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=PATCHING_TITLE).click()
    _wait_until_done(page, PATCHING_TITLE)
    return page


def _clean_metric(page) -> str:
    metric = page.get_by_test_id("stMetric").filter(has_text="Clean logit difference")
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def test_two_sessions_computing_at_once_each_get_their_own_result(playwright_api, server):
    """Two browser sessions of the patching page ask, one right after the other, for pairs no
    cache holds (a pair seed each), so both scripts run at once on the server; each shows the
    clean logit difference of its own pairs, computed here independently of the lab."""
    import torch

    from toylab import zoo
    from toylab.tasks import logit_diff

    url, log_path = server
    zm = zoo.load("induction-siit")  # the page's default model and seed
    seeds = (424_242, 737_373)  # pair seeds no other test asks the server for
    want = {}
    with torch.no_grad():
        for pair_seed in seeds:
            pair = zm.task.counterfactual(32, seed=pair_seed)  # the page's default 32 pairs
            want[pair_seed] = f"{float(logit_diff(zm.model(pair.clean.tokens), pair)):.2f}"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pages = {pair_seed: _open_patching(browser, url) for pair_seed in seeds}
            for pair_seed, page in pages.items():  # both reruns start before either is waited for
                field = page.get_by_label("Pair seed")
                field.fill(str(pair_seed))
                field.press("Enter")
            for pair_seed, page in pages.items():
                page.get_by_text("Clean logit difference").wait_for(timeout=PAGE_TIMEOUT_MS)
                page.wait_for_function(
                    f"() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
                    f".some(e => e.innerText.trim() === '{want[pair_seed]}')", timeout=PAGE_TIMEOUT_MS)
                _wait_until_done(page, PATCHING_TITLE)
            got = {pair_seed: _clean_metric(page) for pair_seed, page in pages.items()}
            errors = [t for page in pages.values() for t in page.locator('[data-testid="stException"]').all_inner_texts()]
        finally:
            browser.close()
    assert not errors, errors
    assert want[seeds[0]] != want[seeds[1]]  # the two sessions do ask different questions
    assert got == want, f"{got} != {want}\nserver log:\n{log_path.read_text()}"
