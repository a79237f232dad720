"""The shared transport (enroll_sync.Transport) against the sandbox over a real socket."""
from __future__ import annotations

import email.utils
import logging
import socket
import threading
import time

import pytest

from enroll_sync import (
    AdapterError, OAuth2ClientCredentials, Transport, TransportError, parse_retry_after, redact,
)


def make_transport(sandbox, *, secret=None, **kw):
    opts = {"backoff": 0.005, "max_backoff": 0.05, "max_attempts": 4, "timeout": 2.0}
    opts.update(kw)
    auth = OAuth2ClientCredentials("/oauth/access_token", sandbox.client_id,
                                   secret if secret is not None else sandbox.client_secret)
    return Transport(sandbox.url, auth=auth, **opts)


def api_calls(sandbox, path_prefix="/ws/"):
    return [r for r in sandbox.requests() if r["path"].startswith(path_prefix)]


def token_calls(sandbox):
    return [r for r in sandbox.requests() if r["path"].startswith("/oauth/")]


def assert_no_secret(text, sandbox, transport=None):
    assert sandbox.client_secret not in text
    for tok in list(sandbox.store.tokens):
        assert tok not in text
    if transport is not None:
        for s in transport.secrets:
            assert s not in text


def test_token_is_fetched_once_and_reused(sandbox):
    with make_transport(sandbox) as t:
        for _ in range(3):
            assert t.json("GET", "/ws/v1/metadata")["metadata"]["powerschool_version"]
    assert len(token_calls(sandbox)) == 1
    assert len(api_calls(sandbox)) == 3


def test_expires_in_as_a_string_sets_the_cache_lifetime(sandbox):
    sandbox.set_faults(token_lifetime=1)  # PowerSchool sends "1" (a string)
    with make_transport(sandbox) as t:
        t.json("GET", "/ws/v1/metadata")
        time.sleep(1.1)
        t.json("GET", "/ws/v1/metadata")  # the cached token has run out: a new one
    assert len(token_calls(sandbox)) == 2
    assert all(r["status"] == 200 for r in api_calls(sandbox)), "no request went out with a dead token"


def test_a_revoked_token_is_refreshed_once_on_401(sandbox):
    with make_transport(sandbox) as t:
        t.json("GET", "/ws/v1/metadata")
        sandbox.set_faults(revoke_tokens=True)
        assert t.json("GET", "/ws/v1/metadata")["metadata"]
    statuses = [r["status"] for r in api_calls(sandbox)]
    assert statuses == [200, 401, 200]
    assert len(token_calls(sandbox)) == 2


def test_a_401_after_refresh_is_not_retried_forever(sandbox):
    with make_transport(sandbox) as t:
        t.json("GET", "/ws/v1/metadata")
        # the admin regenerated the secret: tokens revoked, the old secret refused
        sandbox.store.client_secret = "a-brand-new-secret"
        sandbox.set_faults(revoke_tokens=True)
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    assert err.value.kind == "auth"
    assert "client ID or client secret" in str(err.value)
    assert len(api_calls(sandbox)) == 2  # the first success + one 401, then the token URL refused
    assert_no_secret(str(err.value), sandbox)


def test_bad_credentials_say_so_without_the_secret(sandbox):
    with make_transport(sandbox, secret="wrong-secret-value-123") as t:
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    e = err.value
    assert isinstance(e, AdapterError)
    assert e.kind == "auth" and e.status == 401
    assert "rejected the client ID or client secret" in str(e)
    assert "wrong-secret-value-123" not in str(e)
    assert len(token_calls(sandbox)) == 1, "a refused credential is not retried"
    assert api_calls(sandbox) == []


def test_429_with_retry_after_waits_that_long(sandbox):
    with make_transport(sandbox, backoff=0.001, max_backoff=5) as t:
        t.json("GET", "/ws/v1/metadata")  # token first
        sandbox.set_faults(burst_429=1, retry_after="1")
        start = time.monotonic()
        assert t.json("GET", "/ws/v1/district")["district"]["name"]
        elapsed = time.monotonic() - start
    assert elapsed >= 0.95, "Retry-After: 1 must be honoured"
    assert [r["status"] for r in api_calls(sandbox)] == [200, 429, 200]


def test_retry_after_longer_than_we_wait_gives_up_at_once_with_the_reason(sandbox):
    """Retrying before the server's Retry-After would only be refused again: a wait
    longer than max_retry_after ends the request with a message instead."""
    sandbox.set_faults(burst_429=2, retry_after="120")
    with make_transport(sandbox, max_backoff=0.05, max_retry_after=60) as t:
        start = time.monotonic()
        with pytest.raises(TransportError) as e:
            t.json("GET", "/ws/v1/metadata")
        assert time.monotonic() - start < 2
    assert e.value.status == 429 and e.value.kind == "retries"
    assert "asked to wait 120 s" in str(e.value) and "longer than the 60 s" in str(e.value)


def test_retry_after_is_honoured_beyond_max_backoff(sandbox):
    """max_backoff bounds our own backoff, not the server's stated wait."""
    with make_transport(sandbox, backoff=0.001, max_backoff=0.05) as t:
        t.json("GET", "/ws/v1/metadata")
        sandbox.set_faults(burst_429=1, retry_after="1")
        start = time.monotonic()
        assert t.json("GET", "/ws/v1/district")["district"]["name"]
        assert time.monotonic() - start >= 0.95


def test_429_without_retry_after_backs_off_and_succeeds(sandbox):
    sandbox.set_faults(burst_429=3, retry_after=None, fault_path="/ws/")
    with make_transport(sandbox, backoff=0.01, max_attempts=5) as t:
        start = time.monotonic()
        assert t.json("GET", "/ws/v1/metadata")["metadata"]
        elapsed = time.monotonic() - start
    assert [r["status"] for r in api_calls(sandbox)] == [429, 429, 429, 200]
    assert elapsed >= 0.01 + 0.02 + 0.04, "exponential backoff between tries"


def test_503_is_retried_like_429(sandbox):
    sandbox.set_faults(burst_503=2, retry_after="0", fault_path="/ws/")
    with make_transport(sandbox) as t:
        assert t.json("GET", "/ws/v1/metadata")["metadata"]
    assert [r["status"] for r in api_calls(sandbox)] == [503, 503, 200]


def test_500s_are_retried_a_bounded_number_of_times(sandbox):
    sandbox.set_faults(fail_500=100, fault_path="/ws/")
    with make_transport(sandbox, max_attempts=3) as t:
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    e = err.value
    assert e.kind == "retries" and e.status == 500 and e.attempts == 3
    assert "after 3 attempts" in str(e) and "HTTP 500" in str(e)
    assert len(api_calls(sandbox)) == 3


def test_a_few_500s_then_success(sandbox):
    sandbox.set_faults(fail_500=2, fault_path="/ws/")
    with make_transport(sandbox) as t:
        assert t.json("GET", "/ws/v1/metadata")["metadata"]
    assert [r["status"] for r in api_calls(sandbox)] == [500, 500, 200]


def test_other_4xx_are_returned_at_once(sandbox):
    with make_transport(sandbox) as t:
        r = t.request("GET", "/ws/v1/student/999999")
        assert r.status_code == 404
        r = t.request("POST", "/ws/v1/student", json={"nope": 1})
        assert r.status_code == 400
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/district/student", params={"q": "bogus==1"})
    assert err.value.status == 400 and "Invalid search field" in str(err.value)
    assert [r["status"] for r in api_calls(sandbox)] == [404, 400, 400]


def test_timeouts_are_retried_then_succeed(sandbox):
    sandbox.set_faults(timeouts=1, hang_s=0.6, fault_path="/ws/")
    with make_transport(sandbox, timeout=0.2) as t:
        assert t.json("GET", "/ws/v1/metadata")["metadata"]


def test_timeouts_give_up_with_a_clear_message(sandbox):
    sandbox.set_faults(timeouts=2, hang_s=0.5, fault_path="/ws/")
    with make_transport(sandbox, timeout=0.15, max_attempts=2) as t:
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    e = err.value
    assert e.kind == "timeout" and e.status is None and e.attempts == 2
    assert "did not answer GET /ws/v1/metadata within 0.15 s (tried 2 times)" in str(e)


def test_unreachable_host(sandbox):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    auth = OAuth2ClientCredentials("/oauth/access_token", "id", "secret-xyz")
    with Transport(f"http://127.0.0.1:{port}", auth=auth, max_attempts=2, backoff=0.001) as t:
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    assert err.value.kind == "unreachable"
    assert f"Could not reach 127.0.0.1:{port}: the connection was refused (tried 2 times)" in str(err.value)
    assert "secret-xyz" not in str(err.value)


def test_unknown_host_name():
    with Transport("http://no-such-host.invalid", max_attempts=1) as t:
        with pytest.raises(TransportError) as err:
            t.request("GET", "/")
    assert err.value.kind == "unreachable"
    assert "no-such-host.invalid" in str(err.value)


def test_tls_error_is_named(sandbox):
    https_url = sandbox.url.replace("http://", "https://")
    with Transport(https_url, max_attempts=3, backoff=0.001) as t:
        with pytest.raises(TransportError) as err:
            t.request("GET", "/ws/v1/metadata")
    assert err.value.kind == "tls"
    assert str(err.value).startswith("TLS error talking to 127.0.0.1")
    assert err.value.attempts == 1, "a TLS failure does not heal by retrying"


def test_malformed_json_body(sandbox):
    sandbox.set_faults(malformed=1, fault_path="/ws/")
    with make_transport(sandbox) as t:
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    assert err.value.kind == "malformed" and "not JSON" in str(err.value)


def test_min_interval_is_kept_between_requests(sandbox):
    sandbox.set_faults(min_interval_ms=30)  # the SIS's throttle (margin for a busy machine)
    with make_transport(sandbox, min_interval=0.06) as t:
        start = time.monotonic()
        for _ in range(5):
            t.json("GET", "/ws/v1/metadata")
        elapsed = time.monotonic() - start
    assert elapsed >= 0.06 * 5 - 0.01  # token + 5 calls = 6 requests, 5 gaps
    assert all(r["status"] == 200 for r in api_calls(sandbox)), "never throttled"


def test_min_interval_is_thread_safe(sandbox):
    # a wide margin between our pace and the SIS's limit: on a loaded machine a thread can
    # start late and send right behind the next one
    sandbox.set_faults(min_interval_ms=15)
    with make_transport(sandbox, min_interval=0.1) as t:
        t.json("GET", "/ws/v1/metadata")
        errors = []

        def work():
            try:
                for _ in range(3):
                    t.json("GET", "/ws/v1/metadata")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(3)]
        start = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.monotonic() - start
    assert not errors
    assert elapsed >= 0.1 * 8 - 0.01
    assert all(r["status"] == 200 for r in api_calls(sandbox))


def test_the_sis_throttle_without_interval_is_retried(sandbox):
    sandbox.set_faults(min_interval_ms=200, retry_after="0")
    with make_transport(sandbox, backoff=0.05, max_attempts=6) as t:
        for _ in range(2):
            t.json("GET", "/ws/v1/metadata")
    statuses = [r["status"] for r in api_calls(sandbox)]
    assert 429 in statuses and statuses[-1] == 200


def test_retries_are_logged_at_info_without_secrets(sandbox, caplog):
    sandbox.set_faults(burst_429=1, fail_500=1, fault_path="/ws/")
    with caplog.at_level(logging.INFO, logger="enroll_sync.transport"):
        with make_transport(sandbox) as t:
            t.json("GET", "/ws/v1/metadata")
            sandbox.set_faults(revoke_tokens=True)
            t.json("GET", "/ws/v1/metadata")
            secrets = t.secrets
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 500" in text and "HTTP 429" in text and "401" in text
    assert all(r.levelno == logging.INFO for r in caplog.records)
    for s in secrets:
        assert s not in text


def test_redact_hides_secrets_and_authorization_values():
    text = "token abc123def in Authorization: Bearer abc123def and Basic Zm9vOmJhcg== ok"
    out = redact(text, ["abc123def"])
    assert "abc123def" not in out and "Zm9vOmJhcg==" not in out
    assert out.endswith("ok")


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= parse_retry_after(future) <= 10.5
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert parse_retry_after(past) == 0


def test_retry_after_http_date_is_honoured(sandbox):
    sandbox.set_faults(burst_503=1, retry_after=email.utils.formatdate(time.time() + 2, usegmt=True),
                       fault_path="/ws/")
    with make_transport(sandbox, max_backoff=10) as t:
        start = time.monotonic()
        t.json("GET", "/ws/v1/metadata")
    assert time.monotonic() - start >= 0.9


def test_invalid_base_url():
    with pytest.raises(TransportError) as err:
        with Transport("ftp://example.org", max_attempts=1) as t:
            t.request("GET", "/x")
    assert err.value.kind == "unreachable"
