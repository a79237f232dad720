"""Fixtures for the end-to-end tests: the real app, its huey consumer (``enroll-sync
worker``) and the PowerSchool sandbox started as separate real processes on free
loopback ports, and Debian's Chromium driven by Playwright.

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
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
FAILURES = ARTIFACTS.parent / "failures"
#: the README's screenshots; rewritten only when ENROLL_SYNC_README_SCREENSHOTS=1 (make screenshots)
README_SCREENSHOTS = ROOT / "docs" / "screenshots"
README_SHOTS = {"dashboard", "registrations-bulk-actions", "job-page", "field-mapping", "send-record-preview",
                "bulk-sync-progress", "sync-logs-failure"}
#: axe-core (an npm devDependency, never served by the app), injected into pages by ``axe_check``
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
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
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):  # what the app, worker and sandbox said
        report.sections.append(("stack process logs", stack.log_text()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: startup can be slow on a loaded 2-core CI machine (imports, plugin loading)
START_TIMEOUT = 90.0
#: what ``enroll-sync worker`` logs once its consumer is about to take tasks (enroll_sync/sync/queue.py)
WORKER_READY = "sync worker:"


class StackError(RuntimeError):
    """A process of the stack did not start (or stop); the message carries its output."""


def _tail(log: Path, limit: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _exited(name: str, proc: subprocess.Popen, log: Path) -> StackError:
    return StackError(f"{name} ({' '.join(map(str, proc.args))}) exited with {proc.returncode} "
                      f"before it was ready; its output:\n{_tail(log)}")


def wait_http(url: str, proc: subprocess.Popen, log: Path, name: str, timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _exited(name, proc, log)
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise StackError(f"{name}: {url} did not answer within {timeout}s; its output:\n{_tail(log)}")


def wait_log(text: str, proc: subprocess.Popen, log: Path, name: str, timeout: float = START_TIMEOUT):
    """Wait until ``proc`` writes ``text`` to its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in _tail(log, 1_000_000):
            return
        if proc.poll() is not None:
            raise _exited(name, proc, log)
        time.sleep(0.1)
    raise StackError(f"{name} did not log {text!r} within {timeout}s; its output:\n{_tail(log)}")


def enroll_sync_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "enroll_sync.cli", *args]


def enroll_sync_script(*args) -> list[str]:
    """The ``enroll-sync`` console script installed next to this Python (as deployed)."""
    script = Path(sys.executable).parent / "enroll-sync"
    return [str(script), *args] if script.exists() else enroll_sync_cmd(*args)


class Stack:
    """The app, its sync worker and the sandbox as separate processes. The app and the
    worker share one instance folder (database, huey queue, keys) through the same
    environment; the app runs no consumer of its own."""

    def __init__(self, root: Path):
        self.root = root
        self.app_port = free_port()
        self.sandbox_port = free_port()
        self.url = f"http://127.0.0.1:{self.app_port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.env = dict(os.environ,
                        ENROLL_SYNC_INSTANCE_PATH=str(root / "instance"),
                        ENROLL_SYNC_IN_PROCESS_WORKER="0",
                        ENROLL_SYNC_WORKERS="2",
                        PYTHONUNBUFFERED="1",
                        ENROLL_SYNC_LOGIN_MAX_ATTEMPTS="100",
                        ENROLL_SYNC_SANDBOX_POWERSCHOOL_URL=self.sandbox_url)
        for key in ("ENROLL_SYNC_DATABASE_URL", "ENROLL_SYNC_QUEUE_URL"):
            self.env.pop(key, None)
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.logs: list[Path] = []

    def run(self, *args):
        out = subprocess.run(enroll_sync_cmd(*args), env=self.env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"enroll-sync {' '.join(args)} exited with {out.returncode}:\n{out.stdout}{out.stderr}"
        return out.stdout

    def python(self, code: str) -> str:
        """Run ``code`` in a Python process with the app's environment (its database), to
        arrange a scenario through the core's own functions (``enroll_sync.testing``)."""
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                             timeout=300, cwd=ROOT)
        assert out.returncode == 0, f"python exited with {out.returncode}:\n{out.stdout}{out.stderr}"
        return out.stdout

    def spawn(self, name: str, cmd: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs.append((name, proc, log))
        return proc, log

    def start(self, registrations: int = 60):
        self.run("db", "upgrade")
        self.run("demo", "--registrations", str(registrations), "--sandbox-url", f"powerschool={self.sandbox_url}")
        sandbox = self.spawn("sandbox", enroll_sync_cmd("sandbox", "powerschool", "--port", str(self.sandbox_port),
                                                        "--db", str(self.root / "sandbox.db")))
        worker = self.spawn("worker", enroll_sync_script("worker"))
        app = self.spawn("app", enroll_sync_cmd("serve", "--port", str(self.app_port)))
        wait_http(self.sandbox_url + "/ws/v1/metadata", *sandbox, "sandbox")
        wait_log(WORKER_READY, *worker, "worker")
        wait_http(self.url + "/login", *app, "app")
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

    def check_running(self):
        """Fail with its output if a process of the stack has died."""
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode} during the tests; its output:\n{_tail(log)}")

    def stop(self) -> list[str]:
        """SIGTERM everything (huey's consumer stops on SIGTERM, the servers exit); returns
        the processes that had to be killed or did not exit cleanly, with their output."""
        running = [(n, p, log) for n, p, log in self.procs if p.poll() is None]
        died = [f"{n} had already exited with {p.returncode}:\n{_tail(log)}"
                for n, p, log in self.procs if p.poll() is not None]
        for _name, proc, _log in running:
            proc.terminate()
        problems = []
        for name, proc, log in running:
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                problems.append(f"{name} ignored SIGTERM for 20s and was killed:\n{_tail(log)}")
                continue
            if name == "worker" and code != 0:
                problems.append(f"worker exited with {code} on SIGTERM:\n{_tail(log)}")
        return died + problems

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in self.logs if p.exists())


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    """One stack per test module; a module sets STACK_REGISTRATIONS for a bigger district."""
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.start(getattr(request.module, "STACK_REGISTRATIONS", 60))
    except BaseException:
        s.stop()
        raise
    yield s
    problems = s.stop()
    if problems:
        raise StackError("the stack did not shut down cleanly:\n" + "\n".join(problems))


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


def _aborted_poll(request) -> bool:
    """A GET that the browser dropped because the page moved on (a progress or navigation
    poll in flight at a click on a link) is not a problem of the page; an aborted write is."""
    return request.method == "GET" and "ERR_ABORTED" in (request.failure or "")


@pytest.fixture
def new_page(browser, stack, request):
    """``new_page(role_email)``: a signed-in page in its own browser context. At the end
    of the test, any JavaScript error, failed request, HTTP error response or HTMX
    write without its CSRF header fails the test (``new_page.problems`` lists them)."""
    stack.check_running()  # a dead worker or server fails here, with its output, not as a timeout
    contexts = []
    problems = PageProblems()

    def _new(email: str | None = None, viewport: dict | None = None, password: str = PASSWORD):
        ctx = browser.new_context(base_url=stack.url, viewport=viewport or {"width": 1400, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15000)
        page.add_init_script(HTMX_SETTLE_COUNTER)
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: None if _aborted_poll(r) else problems.append(
            f"request failed: {r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 else None)
        page.on("request", lambda r: problems.append(f"HTMX {r.method} {r.url} without an X-CSRFToken header")
                if _htmx_write_without_csrf_header(r) else None)
        if email:
            page.goto("/login")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(password)
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
    so that locator ``at`` is at its ``block``: start, center or end), or the full page.
    The README's pictures (README_SHOTS, in docs/screenshots/) are rewritten too when
    ENROLL_SYNC_README_SCREENSHOTS=1 (``make screenshots``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if at is not None:
        at.evaluate("(el, block) => el.scrollIntoView({block})", block)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)
    if os.environ.get("ENROLL_SYNC_README_SCREENSHOTS") == "1" and name in README_SHOTS:
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / f"{name}.png", README_SCREENSHOTS / f"{name}.png")


#: what axe must not find: the impacts that block or seriously hinder a person
AXE_BLOCKING = ("serious", "critical")


def axe_check(page, what: str, *, include: str | None = None, exclude: tuple[str, ...] = (),
              known: tuple[str, ...] = ()) -> list[str]:
    """Run axe-core (WCAG 2.x A/AA rules) on the page as it is now; returns its serious
    and critical violations, one line each (none: an empty list). ``known``: rule ids
    reported to the owners of the page and not counted here (say why where it is used)."""
    assert AXE_JS.exists(), f"{AXE_JS} is missing: run make setup (npm ci installs axe-core)"
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE_JS.read_text())
    result = page.evaluate("""async ([include, exclude]) => {
        const context = {exclude: exclude.map(s => [s])};
        if (include) context.include = [[include]];
        const r = await axe.run(context, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
                                           resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " :: " + n.failureSummary)}));
    }""", [include, list(exclude)])
    return [f"{what}: {v['impact']} {v['id']} ({v['help']}): " + " | ".join(v["nodes"])
            for v in result if v["impact"] in AXE_BLOCKING and v["id"] not in known]
