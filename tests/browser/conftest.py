"""Fixtures for the end-to-end tests: the real app, its in-process huey consumer and
the PowerSchool sandbox started as real processes on free loopback ports, and
Debian's Chromium driven by Playwright.

Without /usr/bin/chromium these tests skip with a message, unless
ENROLL_SYNC_REQUIRE_BROWSER=1 (set by .ci/run), which turns the skip into a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("ENROLL_SYNC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
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

    def sandbox_dump(self) -> dict:
        return httpx.get(self.sandbox_url + "/sandbox/dump", timeout=10).json()

    def sandbox_faults(self, **faults):
        r = httpx.post(self.sandbox_url + "/sandbox/faults", json=faults, timeout=10)
        r.raise_for_status()
        return r.json()

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


@pytest.fixture
def new_page(browser, stack):
    """``new_page(role_email)``: a signed-in page in its own browser context. At the end
    of the test, any JavaScript error or failed request fails the test."""
    contexts = []
    problems = PageProblems()

    def _new(email: str | None = None):
        ctx = browser.new_context(base_url=stack.url, viewport={"width": 1400, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15000)
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 else None)
        if email:
            page.goto("/login")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda u: "/login" not in u)
        return page

    _new.problems = problems
    yield _new
    for ctx in contexts:
        ctx.close()
    assert not problems, "the browser saw problems:\n" + "\n".join(problems)


def screenshot(page, name: str):
    """Save a screenshot under test-artifacts/screenshots/ (kept by the README and docs)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
