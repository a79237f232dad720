"""The shared transport's non-idempotent mode and its reading of ``{"Message": ...}``
error bodies, over a real socket against the Aeries sandbox (whose inserts create a new
student every time they arrive: exactly what ``idempotent=False`` is for).

``Transport.request(..., idempotent=False)`` sends a write again only when Aeries surely
did not process it: a connection that could not be opened, or 429/503 with Retry-After.
A 5xx, a timeout, a lost answer or an answer too slow is raised at once with
``maybe_processed=True``.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from aeries_helpers import insert_body, posts
from enroll_sync import Transport, TransportError, error_reason
from sis_aeries.sandbox import serve_in_thread

INSERT = "/api/v5/schools/990/InsertStudent"


def make_transport(url, cert, **kw):
    opts = {"backoff": 0.005, "max_backoff": 0.05, "max_attempts": 4, "timeout": 2.0}
    opts.update(kw)
    return Transport(url, headers={"AERIES-CERT": cert, "Accept": "application/json"}, secrets=[cert], **opts)


@pytest.fixture
def transport(sandbox):
    with make_transport(sandbox.url, sandbox.cert) as t:
        yield t


def insert(t, **kw):
    return t.request("POST", INSERT, params={"DatabaseYear": 2025}, json=insert_body(), **kw)


def statuses(sandbox):
    return [p["status"] for p in posts(sandbox, "InsertStudent")]


def test_a_500_is_raised_at_once_and_may_have_been_processed(transport, sandbox):
    sandbox.set_faults(fail_500=3, fault_path=INSERT)
    with pytest.raises(TransportError) as err:
        insert(transport, idempotent=False)
    e = err.value
    assert (e.status, e.kind, e.attempts, e.maybe_processed) == (500, "http", 1, True)
    assert "HTTP 500 (An error has occurred.)" in str(e) and "not sent again" in str(e)
    assert statuses(sandbox) == [500]
    # the default (idempotent) mode retries the same answer
    assert insert(transport).status_code == 200 and statuses(sandbox) == [500, 500, 500, 200]


def test_a_lost_answer_is_never_sent_again(transport, sandbox):
    sandbox.set_faults(lost_answers=1, fault_path=INSERT)  # saved, then answered 500
    with pytest.raises(TransportError) as err:
        insert(transport, idempotent=False)
    assert err.value.maybe_processed and sandbox.count() == 1 and statuses(sandbox) == [500]


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_with_retry_after_are_sent_again(transport, sandbox, status):
    sandbox.set_faults(**{f"burst_{status}": 2}, retry_after="0", fault_path=INSERT)
    response = insert(transport, idempotent=False)
    assert response.status_code == 200 and statuses(sandbox) == [status, status, 200]
    assert sandbox.count() == 1


def test_429_with_retry_after_past_the_attempts_was_not_processed(transport, sandbox):
    sandbox.set_faults(burst_429=10, retry_after="0", fault_path=INSERT)
    with pytest.raises(TransportError) as err:
        insert(transport, idempotent=False)
    e = err.value
    assert (e.status, e.kind, e.attempts, e.maybe_processed) == (429, "retries", 4, False)
    assert "Gave up" in str(e) and "(Too many requests.)" in str(e) and sandbox.count() == 0


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_without_retry_after_are_not_sent_again(transport, sandbox, status):
    sandbox.set_faults(**{f"burst_{status}": 2}, fault_path=INSERT)  # no Retry-After
    with pytest.raises(TransportError) as err:
        insert(transport, idempotent=False)
    assert err.value.status == status and err.value.maybe_processed and statuses(sandbox) == [status]


def test_a_timeout_after_sending_is_not_sent_again(sandbox):
    sandbox.set_faults(timeouts=1, hang_s=0.5, fault_path=INSERT)
    with make_transport(sandbox.url, sandbox.cert, timeout=0.2) as t:
        with pytest.raises(TransportError) as err:
            insert(t, idempotent=False)
    assert err.value.kind == "timeout" and err.value.maybe_processed and err.value.attempts == 1
    time.sleep(0.5)  # the hung request ends
    assert len(posts(sandbox, "InsertStudent")) == 1


def test_an_answer_too_slow_for_the_deadline_may_have_been_processed(sandbox):
    sandbox.set_faults(drip=1, drip_ms=100, drip_bytes=16, fault_path=INSERT)
    with make_transport(sandbox.url, sandbox.cert, deadline_s=0.5) as t:
        with pytest.raises(TransportError) as err:
            insert(t, idempotent=False)
    assert err.value.kind == "timeout" and err.value.maybe_processed
    assert sandbox.count() == 1 and len(posts(sandbox, "InsertStudent")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_was_not_processed(sandbox):
    port = _free_port()  # nothing listens there
    with make_transport(f"http://127.0.0.1:{port}", sandbox.cert) as t:
        with pytest.raises(TransportError) as err:
            insert(t, idempotent=False)
    e = err.value
    assert (e.kind, e.attempts, e.maybe_processed) == ("unreachable", 4, False)
    assert "connection was refused" in str(e)


def test_a_refused_connection_is_sent_again_once_the_sis_listens():
    port = _free_port()
    started: list = []

    def start_later():
        time.sleep(0.3)
        started.append(serve_in_thread(port=port))

    later = threading.Thread(target=start_later)
    later.start()
    try:
        from sis_aeries.sandbox import DEFAULT_CERT
        with make_transport(f"http://127.0.0.1:{port}", DEFAULT_CERT, backoff=0.1, max_backoff=0.4,
                            max_attempts=8) as t:
            response = insert(t, idempotent=False)
        later.join()
        assert response.status_code == 200 and started[0].count() == 1
    finally:
        later.join()
        for handle in started:
            handle.stop()


def test_a_401_is_returned_and_was_not_processed(sandbox):
    with make_transport(sandbox.url, "0badc0de0badc0de0badc0de0badc0de") as t:
        assert insert(t, idempotent=False).status_code == 401
        with pytest.raises(TransportError) as err:
            t.json("GET", "/api/v5/schools")
    assert err.value.status == 401 and not err.value.maybe_processed
    assert "(Authorization has been denied for this request.)" in str(err.value)


def test_501_is_returned_at_once_in_both_modes(transport, sandbox):
    sandbox.set_faults(not_implemented=[INSERT])
    assert insert(transport).status_code == 501
    assert insert(transport, idempotent=False).status_code == 501
    assert statuses(sandbox) == [501, 501], "retrying what the server does not do never helps"


def test_aeries_message_is_quoted_in_errors(transport, sandbox):
    with pytest.raises(TransportError) as err:
        transport.json("GET", "/api/v5/schools/12345")
    assert str(err.value) == "GET /api/v5/schools/12345 answered HTTP 404 (School 12345 was not found.)."
    response = transport.request("POST", "/api/v5/UpdateStudent/12345", json={"FirstName": "Ana"})
    assert response.status_code == 400 and error_reason(response) == "Invalid Student ID"


def test_error_reason_reads_the_usual_shapes():
    import httpx

    def reason(body):
        return error_reason(httpx.Response(400, json=body))

    assert reason({"Message": " Invalid Staff ID "}) == "Invalid Staff ID"
    assert reason({"message": "a", "Message": "b"}) == "a"
    assert reason({"error": {"Message": "nested"}}) == "nested"
    assert reason({"error": "invalid_client", "error_description": "Bad secret"}) == "Bad secret"
    assert reason({"title": "Not Found"}) == "Not Found"
    assert reason({"Message": ""}) is None and reason(["x"]) is None
    assert error_reason(httpx.Response(500, text="<html>oops</html>")) is None
    assert len(reason({"Message": "x" * 500})) == 200
