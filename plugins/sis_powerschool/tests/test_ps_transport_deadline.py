"""The transport's overall deadline per try, over real sockets: an answer that drips in
(each read quick, the whole far too slow) is abandoned at the deadline, not after
``timeout`` per byte; a read still waiting at the deadline is ended by the watchdog."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from enroll_sync import OAuth2ClientCredentials, Transport, TransportError


def make_transport(sandbox, **kw):
    opts = {"backoff": 0.005, "max_backoff": 0.05, "max_attempts": 4, "timeout": 2.0}
    opts.update(kw)
    auth = OAuth2ClientCredentials("/oauth/access_token", sandbox.client_id, sandbox.client_secret)
    return Transport(sandbox.url, auth=auth, **opts)


def within(seconds, fn):
    """Run ``fn`` in a thread; fail (instead of hanging) when it takes longer than
    ``seconds``. Returns (its result or the exception it raised, elapsed seconds)."""
    box = {}

    def run():
        start = time.monotonic()
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["value"] = exc
        box["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: no deadline"
    return box["value"], box["elapsed"]


def api_calls(sandbox, prefix="/ws/"):
    return [r for r in sandbox.requests() if r["path"].startswith(prefix)]


def test_the_default_deadline_is_a_few_times_the_timeout():
    assert Transport("http://127.0.0.1:9", timeout=5).deadline_s == 20
    assert Transport("http://127.0.0.1:9", timeout=5, deadline_s=7.5).deadline_s == 7.5
    assert Transport("http://127.0.0.1:9", timeout=5, deadline_s=0).deadline_s == 20


def test_a_dripping_answer_is_abandoned_at_the_deadline(sandbox):
    """1 byte a second: every read returns well inside the 2 s timeout, so a per-read
    timeout alone would wait for the whole body (minutes)."""
    with make_transport(sandbox, deadline_s=1.5) as t:
        t.json("GET", "/ws/v1/metadata")  # token first, answered at once
        sandbox.set_faults(drip_bytes_per_s=1, fault_path="/ws/v1/district")
        e, elapsed = within(5, lambda: t.json("GET", "/ws/v1/district"))
    assert isinstance(e, TransportError), e
    assert e.kind == "timeout" and e.status is None
    assert "too slowly" in str(e) and "1.5 s" in str(e)
    assert 1.4 <= elapsed < 2.5, elapsed
    assert len(api_calls(sandbox, "/ws/v1/district")) == 1, "a too-slow answer is not retried"
    assert sandbox.client_secret not in str(e)


def test_the_transport_works_on_after_a_too_slow_answer(sandbox):
    with make_transport(sandbox, deadline_s=1.0) as t:
        t.json("GET", "/ws/v1/metadata")
        sandbox.set_faults(drip_bytes_per_s=2, drip_answers=1, fault_path="/ws/v1/district")
        with pytest.raises(TransportError, match="too slowly"):
            t.json("GET", "/ws/v1/district")
        for _ in range(3):  # the abandoned connection is not reused
            assert t.json("GET", "/ws/v1/district")["district"]["name"]


def test_a_dripping_token_answer_is_abandoned_too(sandbox):
    sandbox.set_faults(drip_bytes_per_s=1, fault_path="/oauth/")
    with make_transport(sandbox, deadline_s=1.0) as t:
        e, elapsed = within(5, lambda: t.json("GET", "/ws/v1/metadata"))
    assert elapsed < 2.0
    assert isinstance(e, TransportError) and e.kind == "timeout" and "too slowly" in str(e)
    assert "client secret" not in str(e), "slow is not a credentials problem"


def test_a_quick_answer_is_not_affected_by_a_short_deadline(sandbox):
    with make_transport(sandbox, deadline_s=0.5) as t:
        for _ in range(20):
            assert t.json("GET", "/ws/v1/metadata")["metadata"]


class _TricklingServer:
    """Raw HTTP over a socket: headers at once, then one body byte every ``gap`` seconds
    for ``bytes_before_stall`` bytes, then silence for ``stall`` seconds."""

    def __init__(self, gap: float, bytes_before_stall: int, stall: float):
        self.gap, self.n, self.stall = gap, bytes_before_stall, stall
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n")
                for _ in range(self.n):
                    conn.sendall(b" ")
                    time.sleep(self.gap)
                self.stopping.wait(self.stall)
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        self.sock.close()


def test_a_read_still_waiting_at_the_deadline_is_ended_by_the_watchdog():
    """Bytes every 0.25 s, then silence. Each read may wait 3 s (the timeout), and the last
    read starts about 0.75 s in, so without the wall-clock guard the request would end
    near 3.75 s; the deadline is 1 s."""
    server = _TricklingServer(gap=0.25, bytes_before_stall=4, stall=10)
    try:
        with Transport(server.url, timeout=3.0, deadline_s=1.0, max_attempts=1) as t:
            e, elapsed = within(8, lambda: t.request("GET", "/slow"))
    finally:
        server.stop()
    assert isinstance(e, TransportError) and e.kind == "timeout" and "too slowly" in str(e)
    assert elapsed < 1.6, f"abandoned after {elapsed:.2f} s, the deadline is 1 s"


def test_a_stalled_answer_is_still_a_per_read_timeout_and_retried():
    """Silence after the headers: the per-read timeout (0.3 s) ends it long before the
    deadline, and that is retried like any timeout, with its own message."""
    server = _TricklingServer(gap=0.0, bytes_before_stall=0, stall=10)
    try:
        with Transport(server.url, timeout=0.3, deadline_s=30, max_attempts=2,
                       backoff=0.01) as t:
            start = time.monotonic()
            with pytest.raises(TransportError) as err:
                t.request("GET", "/stalled")
            elapsed = time.monotonic() - start
    finally:
        server.stop()
    assert err.value.kind == "timeout" and "tried 2 times" in str(err.value)
    assert "too slowly" not in str(err.value)
    assert elapsed < 2.0
