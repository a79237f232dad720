"""Token refresh shared by every thread using one transport: one refresh at a time (the
others wait for its result), a 401 burst on one revoked token costs one new token, and a
token the SIS revokes as soon as it is issued is replaced a bounded number of times."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from enroll_sync import OAuth2ClientCredentials, Transport, TransportError


def make_transport(sandbox, **kw):
    opts = {"backoff": 0.005, "max_backoff": 0.05, "max_attempts": 4, "timeout": 5.0}
    opts.update(kw)
    auth = OAuth2ClientCredentials("/oauth/access_token", sandbox.client_id, sandbox.client_secret)
    return Transport(sandbox.url, auth=auth, **opts)


def token_calls(sandbox):
    return [r for r in sandbox.requests() if r["path"].startswith("/oauth/")]


def api_calls(sandbox):
    return [r for r in sandbox.requests() if r["path"].startswith("/ws/")]


def run_threads(n, fn):
    barrier = threading.Barrier(n)

    def go(i):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_threads_needing_a_token_at_once_share_one_fetch(sandbox):
    sandbox.set_faults(latency_ms=100, fault_path="/oauth/")  # a slow token URL
    with make_transport(sandbox) as t:
        run_threads(8, lambda i: t.json("GET", "/ws/v1/metadata"))
        assert t.auth.fetches == 1
    assert len(token_calls(sandbox)) == 1
    assert len(api_calls(sandbox)) == 8


def test_a_401_burst_on_one_revoked_token_costs_one_new_token(sandbox):
    with make_transport(sandbox) as t:
        t.json("GET", "/ws/v1/metadata")
        sandbox.set_faults(revoke_tokens=True)
        run_threads(8, lambda i: t.json("GET", "/ws/v1/district"))
    assert len(token_calls(sandbox)) == 2, "one at the start, one after the revocation"
    district = [r["status"] for r in api_calls(sandbox) if r["path"] == "/ws/v1/district"]
    assert district.count(200) == 8


def test_a_token_revoked_as_soon_as_issued_is_replaced_again(sandbox):
    """revoke_new_tokens_every: the token of every N-th request dies after it, and so does
    the next token issued; the request after that needs two fresh tokens."""
    sandbox.set_faults(revoke_new_tokens_every=3)
    with make_transport(sandbox) as t:
        for _ in range(30):
            assert t.json("GET", "/ws/v1/metadata")["metadata"]
    statuses = [r["status"] for r in api_calls(sandbox)]
    assert statuses.count(200) == 30
    assert statuses.count(401) >= 10


def test_without_token_retries_a_dead_new_token_fails(sandbox):
    """The fault is real: a revoked token is replaced (it had worked), but the new one is
    dead on arrival, and with token_retries=0 that ends the request."""
    sandbox.set_faults(revoke_new_tokens_every=3)
    with make_transport(sandbox, token_retries=0) as t:
        with pytest.raises(TransportError) as err:
            for _ in range(30):
                t.json("GET", "/ws/v1/metadata")
    assert err.value.kind == "auth"


def test_eight_threads_survive_early_revoked_new_tokens(sandbox):
    sandbox.set_faults(revoke_new_tokens_every=10)
    errors = []
    with make_transport(sandbox) as t:
        def work(i):
            for _ in range(40):
                try:
                    t.json("GET", "/ws/v1/metadata")
                except TransportError as exc:  # pragma: no cover - the failure we test for
                    errors.append(str(exc))
        run_threads(8, work)
        fetched = t.auth.fetches
    assert errors == []
    statuses = [r["status"] for r in api_calls(sandbox)]
    assert statuses.count(200) == 320
    # 320 requests revoke about 32 tokens (and the next one each time): single flight keeps
    # fetches near that, not one per thread per 401
    assert fetched <= 2 * (320 // 10) + 8, fetched


def test_tokens_refused_again_and_again_do_not_blame_the_credentials(sandbox, monkeypatch):
    """The token URL accepts the client ID and secret, the API refuses every token: after
    token_retries fresh tokens the request fails, without saying the secret is wrong."""
    monkeypatch.setattr(sandbox.store, "token_valid", lambda token: False)
    with make_transport(sandbox, token_retries=3) as t:
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    e = err.value
    assert e.kind == "auth" and e.status == 401
    text = str(e)
    assert "client ID or client secret" not in text and "check the client" not in text.lower()
    assert "3 access tokens in a row, each just issued" in text
    assert "not the problem" in text
    assert len(api_calls(sandbox)) == 4 and len(token_calls(sandbox)) == 4
    assert sandbox.client_secret not in text


def test_a_refused_token_url_still_blames_the_credentials(sandbox):
    with make_transport(sandbox) as t:
        t.json("GET", "/ws/v1/metadata")
        sandbox.store.client_secret = "changed-by-the-admin"
        sandbox.set_faults(revoke_tokens=True)
        with pytest.raises(TransportError) as err:
            t.json("GET", "/ws/v1/metadata")
    assert "rejected the client ID or client secret" in str(err.value)
    assert len(token_calls(sandbox)) == 2, "a refused credential is not fetched again"


def test_a_failed_fetch_is_the_result_for_every_waiting_thread(sandbox):
    sandbox.set_faults(latency_ms=150, fault_path="/oauth/")
    sandbox.store.client_secret = "not-what-the-client-has"
    with make_transport(sandbox) as t:
        def call(i):
            try:
                t.json("GET", "/ws/v1/metadata")
            except TransportError as exc:
                return exc
        errors = run_threads(6, call)
    assert all(isinstance(e, TransportError) and e.kind == "auth" for e in errors)
    assert len({id(e) for e in errors}) == 6, "each thread gets its own exception object"
    assert len(token_calls(sandbox)) == 1, "the waiting threads took the leader's answer"


def test_an_auth_object_without_invalidate_argument_still_works(sandbox):
    """Older custom auth objects take no argument in invalidate()."""
    class Legacy:
        def __init__(self, inner):
            self.inner = inner

        def headers(self, transport):
            return self.inner.headers(transport)

        def invalidate(self):
            self.inner.invalidate()

        def secrets(self):
            return self.inner.secrets()

    inner = OAuth2ClientCredentials("/oauth/access_token", sandbox.client_id, sandbox.client_secret)
    with Transport(sandbox.url, auth=Legacy(inner), timeout=5) as t:
        t.json("GET", "/ws/v1/metadata")
        sandbox.set_faults(revoke_tokens=True)
        assert t.json("GET", "/ws/v1/metadata")["metadata"]
