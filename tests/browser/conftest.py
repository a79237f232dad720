"""Fixtures for the end-to-end tests: the real app, its in-process huey consumer and
the PowerSchool sandbox started as real processes on free loopback ports, and
Debian's Chromium driven by Playwright.

Without /usr/bin/chromium these tests skip with a message, unless
ENROLL_SYNC_REQUIRE_BROWSER=1 (set by .ci/run), which turns the skip into a failure.
"""
from __future__ import annotations

import json
import os
import sqlite3
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("ENROLL_SYNC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
FAILURES = ARTIFACTS.parent / "failures"
PASSWORD = "enroll-sync-demo"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    mine = [i for i in items if Path(str(i.fspath)).is_relative_to(here)]
    for item in mine:
        item.add_marker(pytest.mark.browser)
    if mine and not Path(CHROMIUM).exists():
        if os.environ.get("ENROLL_SYNC_REQUIRE_BROWSER") == "1":
            raise pytest.UsageError(f"ENROLL_SYNC_REQUIRE_BROWSER=1 but {CHROMIUM} does not exist: "
                                    "install Debian's chromium package (apt-get install chromium)")
        skip = pytest.mark.skip(reason=f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
        for item in mine:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.browser_call_failed = report.failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def enroll_sync_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "enroll_sync.cli", *args]


class Stack:
    """The app and the sandbox as separate processes, sharing one instance folder."""

    def __init__(self, root: Path):
        self.root = root
        self.app_port = free_port()
        self.sandbox_port = free_port()
        self.url = f"http://127.0.0.1:{self.app_port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.env = dict(os.environ,
                        ENROLL_SYNC_INSTANCE_PATH=str(root / "instance"),
                        ENROLL_SYNC_IN_PROCESS_WORKER="1",
                        ENROLL_SYNC_LOGIN_MAX_ATTEMPTS="100",
                        ENROLL_SYNC_SANDBOX_POWERSCHOOL_URL=self.sandbox_url)
        for key in ("ENROLL_SYNC_DATABASE_URL", "ENROLL_SYNC_QUEUE_URL"):
            self.env.pop(key, None)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def run(self, *args):
        out = subprocess.run(enroll_sync_cmd(*args), env=self.env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def spawn(self, name: str, *args) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        proc = subprocess.Popen(enroll_sync_cmd(*args), env=self.env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self, registrations: int = 60):
        self.run("db", "upgrade")
        self.run("demo", "--registrations", str(registrations), "--sandbox-url", f"powerschool={self.sandbox_url}")
        sandbox = self.spawn("sandbox", "sandbox", "powerschool", "--port", str(self.sandbox_port),
                             "--db", str(self.root / "sandbox.db"))
        app = self.spawn("app", "serve", "--port", str(self.app_port))
        wait_http(self.sandbox_url + "/ws/v1/metadata", sandbox)
        wait_http(self.url + "/login", app)
        return self

    def sandbox_dump(self) -> list[dict]:
        """Every student the sandbox SIS holds."""
        return httpx.get(self.sandbox_url + "/sandbox/dump", timeout=10).json()["students"]

    def sandbox_faults(self, **faults):
        r = httpx.post(self.sandbox_url + "/sandbox/faults", json=faults, timeout=10)
        r.raise_for_status()
        return r.json()

    def query(self, sql: str, *args) -> list[sqlite3.Row]:
        """Read the app's SQLite database (to arrange a scenario, e.g. pick example students)."""
        con = sqlite3.connect(f"file:{self.root / 'instance' / 'enroll_sync.db'}?mode=ro", uri=True, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in self.logs if p.exists())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.start()
        yield s
    except Exception:
        print(s.log_text())
        raise
    finally:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


class PageProblems(list):
    """Console errors, page errors and failed requests seen during a test."""


#: counts htmx swaps that have settled, so a test can wait for "the answer is on the page"
HTMX_SETTLE_COUNTER = """
window.__htmxSettled = 0;
window.__pageLoad = Math.random();
document.addEventListener("htmx:afterSettle", function () { window.__htmxSettled++; });
"""


def _htmx_write_without_csrf_header(request) -> bool:
    """Every HTMX request that changes something must carry the CSRF token as a header
    (base.html's hx-headers), not only when it happens to sit inside a form with a
    csrf_token field."""
    headers = request.headers
    return (headers.get("hx-request") == "true" and request.method not in ("GET", "HEAD", "OPTIONS")
            and not headers.get("x-csrftoken"))


@pytest.fixture
def new_page(browser, stack, request):
    """``new_page(role_email)``: a signed-in page in its own browser context. At the end
    of the test, any JavaScript error, failed request, HTTP error response or HTMX
    write without its CSRF header fails the test (``new_page.problems`` lists them)."""
    contexts = []
    problems = PageProblems()

    def _new(email: str | None = None):
        ctx = browser.new_context(base_url=stack.url, viewport={"width": 1400, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15000)
        page.add_init_script(HTMX_SETTLE_COUNTER)
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 else None)
        page.on("request", lambda r: problems.append(f"HTMX {r.method} {r.url} without an X-CSRFToken header")
                if _htmx_write_without_csrf_header(r) else None)
        if email:
            page.goto("/login")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda u: "/login" not in u)
        return page

    _new.problems = problems
    yield _new
    if getattr(request.node, "browser_call_failed", False):  # what the pages showed when it failed
        FAILURES.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(p for ctx in contexts for p in ctx.pages):
            try:
                page.screenshot(path=str(FAILURES / f"{request.node.name}-{i}.png"), full_page=True)
            except Exception:
                pass
    for ctx in contexts:
        ctx.close()
    assert not problems, "the browser saw problems:\n" + "\n".join(problems)


@contextmanager
def htmx_swap(page):
    """Wrap one user gesture that makes an HTMX request; returns once htmx has swapped
    the answer in and settled, so the next gesture finds the new elements. A full page
    load during the gesture fails: HTMX should have kept the page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_load_state()
    before = page.evaluate("[window.__pageLoad, window.__htmxSettled]")
    yield
    try:
        page.wait_for_function("([load, n]) => window.__pageLoad !== load || window.__htmxSettled > n", arg=before)
    except PlaywrightTimeout:
        raise AssertionError("no HTMX swap followed this gesture: is an hx-* attribute broken, or did the "
                             "request fail?") from None
    if page.evaluate("window.__pageLoad") != before[0]:
        raise AssertionError("this gesture loaded a whole page instead of an HTMX swap (or the previous "
                             "navigation had not finished: use follow())")


def follow(page, link):
    """Click a link or button that loads a whole page, and return once that page has loaded,
    so that the next step (an HTMX gesture above all) acts on the new page."""
    with page.expect_navigation():
        link.click()


def screenshot(page, name: str, *, at=None, block: str = "start", full_page: bool = False):
    """Save a screenshot under test-artifacts/screenshots/NAME.png: the viewport (scrolled
    so that locator ``at`` is at its ``block``: start, center or end), or the full page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if at is not None:
        at.evaluate("(el, block) => el.scrollIntoView({block})", block)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)
