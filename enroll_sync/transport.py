"""The shared HTTP transport every SIS adapter uses.

One ``Transport`` per connection holds one ``httpx.Client`` (keep-alive), so a
bulk sync reuses its sockets. It knows no particular SIS; it only knows how a
polite API client behaves:

- a minimum interval between requests (thread-safe), because SIS admins throttle
  plugins;
- 429 and 503 mean "wait and retry": exponential backoff that honours
  ``Retry-After`` (seconds or an HTTP date) as the server asks, up to ``max_retry_after``
  (longer: give up at once with a message);
- other 5xx answers, timeouts and connection errors are retried a bounded number
  of times (``max_attempts`` in all);
- every try has an overall deadline (``deadline_s``, connect + headers + the whole
  body, measured on a monotonic clock): an answer that trickles in, each read well
  inside ``timeout`` but the whole far too slow, is abandoned at the deadline and
  not retried (kind ``timeout``, "answered too slowly");
- any other 4xx, and 501/505 (the server does not do this at all), is returned at
  once: retrying a refused request never helps;
- ``idempotent=False`` is for writes that must not happen twice (an insert that creates a
  new record each time it arrives): only what surely was **not** processed is sent again
  (a connection that could not be opened, a 429 or 503 that carries ``Retry-After``);
  a 5xx, a timeout or a connection lost after the body went out is raised at once with
  ``maybe_processed=True``, for the caller to look the write up before sending it again;
- with ``auth`` (e.g. ``OAuth2ClientCredentials``) a 401 drops the token that request
  carried, fetches a new one and retries, up to ``token_retries`` times (SISs revoke
  tokens early, sometimes one they have only just issued). All threads sharing the
  transport share one token and one refresh at a time: the others wait for its result;
- every message it produces is scrubbed of secrets (the ``secrets`` given, the
  client secret and every token it has seen), because adapters show ``str(error)``
  to admins as is.

``Transport.request`` returns the ``httpx.Response`` for any answer that is not
retried (2xx, 3xx, 4xx) and raises ``TransportError`` when the SIS could not be
reached or kept failing. ``Transport.json`` is the shortcut adapters mostly want:
it raises on any non-2xx answer and returns the parsed body. Error messages quote the
SIS's own reason from a JSON error body (``message``, ``Message``, ``error_description``,
``error``, ``detail``, ``title``).
"""
from __future__ import annotations

import base64
import email.utils
import heapq
import inspect
import itertools
import logging
import random
import re
import socket
import ssl
import threading
import time
from typing import Any, Iterable, Mapping

import httpx

from .adapters import AdapterError
from .redaction import redact, remember_credential

__all__ = ["Transport", "TransportError", "OAuth2ClientCredentials", "parse_retry_after",
           "error_reason"]

log = logging.getLogger("enroll_sync.transport")

RETRY_WAIT_STATUSES = frozenset({429, 503})
#: 5xx answers returned like a 4xx, never retried: the server does not do this at all
#: (501 Not Implemented, e.g. an API behind a feature flag; 505 HTTP Version Not Supported)
NOT_SUPPORTED_STATUSES = frozenset({501, 505})
#: network errors raised before any byte of the request was sent: the SIS never saw it
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
#: headers whose values are credentials (cut out of everything stored, shown or logged)
_CREDENTIAL_HEADER = re.compile(r"authorization|key|token|cert|secret|password", re.IGNORECASE)


class TransportError(AdapterError):
    """The SIS could not be reached, refused us, or kept failing.

    ``status`` is the last HTTP status (None when no answer arrived), ``response``
    the last ``httpx.Response`` (may be None), ``kind`` one of ``unreachable``,
    ``tls``, ``timeout``, ``auth``, ``retries``, ``http``, ``malformed``.
    ``maybe_processed`` is False only when the SIS surely did not act on the request
    (the connection was never opened, the token for it could not be had, or the SIS
    answered 401, or 429/503 with ``Retry-After``); True otherwise, so a write that
    failed with it True may have been saved: look it up before sending it again.
    ``str(error)`` never contains a secret.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 response: httpx.Response | None = None, kind: str = "http",
                 attempts: int = 0, maybe_processed: bool = True):
        super().__init__(message)
        self.status = status
        self.response = response
        self.kind = kind
        self.attempts = attempts
        self.maybe_processed = maybe_processed


class _Flight:
    """One token fetch in progress; threads that need a token meanwhile wait for it."""

    __slots__ = ("event", "token", "error")

    def __init__(self):
        self.event = threading.Event()
        self.token: str | None = None
        self.error: BaseException | None = None


class OAuth2ClientCredentials:
    """OAuth2 client-credentials flow: Basic auth to ``token_url``, body
    ``grant_type=client_credentials``; the token is cached until shortly before
    ``expires_in`` (an int or a string, as PowerSchool sends it) runs out.

    Pass it as ``Transport(auth=...)``. ``token_url`` may be a path relative to
    the transport's base URL.

    Thread-safe and single-flight: every thread using the transport shares one
    token; when it must be fetched, one thread fetches it and the others wait for
    that result (the new token, or the same error). ``invalidate(used)`` drops the
    cached token only when it is the one the refused request carried, so a burst of
    401s from many threads on one revoked token causes one refresh, not one each.
    """

    #: refresh this many seconds (or 10% of the lifetime, if less) before expiry
    early_refresh = 60.0

    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | None = None):
        self.token_url = token_url
        self.client_id = client_id or ""
        self.client_secret = client_secret or ""
        self.scope = scope
        self._token: str | None = None
        self._expires_at = 0.0
        self._seen_tokens: list[str] = []
        self._lock = threading.Lock()
        self._flight: _Flight | None = None
        #: how many tokens were fetched (diagnostics and tests)
        self.fetches = 0

    # -- what the transport calls
    def secrets(self) -> list[str]:
        return [self.client_secret, *self._seen_tokens]

    def invalidate(self, used: Mapping[str, str] | str | None = None) -> None:
        """Forget the cached token after a 401. ``used`` is the token (or the headers
        from ``headers()``) the refused request carried; when another thread has
        replaced it meanwhile, the newer token is kept. ``None`` forgets it anyway."""
        token = _bearer_of(used)
        with self._lock:
            if used is None or token is None or token == self._token:
                self._token = None
                self._expires_at = 0.0

    def headers(self, transport: "Transport") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(transport)}"}

    def token(self, transport: "Transport") -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            flight = self._flight
            leader = flight is None
            if leader:
                flight = self._flight = _Flight()
        if not leader:
            flight.event.wait()
            if flight.error is not None:
                raise _copy_error(flight.error)
            return flight.token  # type: ignore[return-value]
        try:
            token, lifetime = self._fetch(transport)
        except BaseException as exc:
            with self._lock:
                self._flight = None
            flight.error = exc
            flight.event.set()
            raise
        remember_credential(token)
        with self._lock:
            self.fetches += 1
            self._token = token
            self._seen_tokens.append(token)
            del self._seen_tokens[:-20]
            margin = min(self.early_refresh, lifetime * 0.1)
            self._expires_at = time.monotonic() + max(0.0, lifetime - margin)
            self._flight = None
        flight.token = token
        flight.event.set()
        return token

    def _fetch(self, transport: "Transport") -> tuple[str, float]:
        if not self.client_id or not self.client_secret:
            raise TransportError("The client ID or client secret is missing.", kind="auth")
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        remember_credential(basic)
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        response = transport.request(
            "POST", self.token_url, data=data, _auth=False,
            headers={"Authorization": f"Basic {basic}",
                     "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
                     "Accept": "application/json"})
        if response.status_code in (400, 401, 403):
            raise TransportError(
                f"The SIS rejected the client ID or client secret "
                f"(HTTP {response.status_code} from the token URL). Check the credentials, "
                f"or regenerate them if the secret was changed.",
                status=response.status_code, response=response, kind="auth")
        if response.status_code == 404:
            raise TransportError(
                "The token URL was not found (HTTP 404): check the server URL.",
                status=404, response=response, kind="http")
        if not response.is_success:
            raise TransportError(
                f"The token URL answered HTTP {response.status_code}.",
                status=response.status_code, response=response, kind="http")
        try:
            body = response.json()
            token = body["access_token"]
            if not isinstance(token, str) or not token:
                raise ValueError("empty token")
        except (ValueError, KeyError, TypeError):
            raise TransportError("The token URL answered without a usable access token.",
                                 status=response.status_code, response=response,
                                 kind="malformed") from None
        try:
            lifetime = float(str(body.get("expires_in", 3600)).strip())
        except (TypeError, ValueError):
            lifetime = 3600.0
        return token, max(0.0, lifetime)


class Transport:
    """One connection's HTTP client. See the module docstring for the policy.

    ``min_interval``, ``timeout``, ``backoff`` and ``max_backoff`` are seconds.
    ``timeout`` bounds each network step (connect, one read, one write);
    ``deadline_s`` bounds one whole try (connect + every read of the answer), by
    default ``DEADLINE_FACTOR`` times ``timeout``. ``max_attempts`` bounds the tries of
    one request (first try included). ``token_retries`` bounds how often one request
    is sent again after a 401 on a token no request had been answered with yet (the
    SIS refusing or revoking what it has just issued); a token that worked and was
    revoked later is replaced too, up to ``max(10, 3 * token_retries)`` new tokens in
    all for one request. ``headers`` are sent with every
    request; ``secrets`` are strings that must never appear in a message (they are
    redacted).
    """

    #: the default deadline of one try, in multiples of ``timeout``
    DEADLINE_FACTOR = 4.0

    def __init__(self, base_url: str, *, timeout: float = 30.0, min_interval: float = 0.0,
                 max_attempts: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_retry_after: float = 300.0, deadline_s: float | None = None,
                 token_retries: int = 3,
                 auth: OAuth2ClientCredentials | None = None,
                 headers: Mapping[str, str] | None = None, secrets: Iterable[str] = (),
                 verify: bool | str | ssl.SSLContext = True):
        self.base_url = str(base_url or "").rstrip("/")
        self.timeout = float(timeout)
        if deadline_s is None or not deadline_s or deadline_s <= 0:
            deadline_s = self.timeout * self.DEADLINE_FACTOR
        self.deadline_s = float(deadline_s)
        self.token_retries = max(0, int(token_retries))
        # tokens some request got a real answer with: a 401 on one of those is an ordinary
        # early revocation, not the SIS refusing a token it has just issued
        self._proven_tokens: dict[str, None] = {}
        self._proven_lock = threading.Lock()
        self.min_interval = max(0.0, float(min_interval))
        self.max_attempts = max(1, int(max_attempts))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max(0.0, float(max_backoff))
        self.max_retry_after = max(0.0, float(max_retry_after))
        self.auth = auth
        self._invalidate_with_token = _takes_argument(getattr(auth, "invalidate", None))
        self._secrets = [s for s in secrets if s]
        for header, value in (headers or {}).items():
            if _CREDENTIAL_HEADER.search(header) and value:
                # a static credential (API key, certificate, Basic value): never shown again
                remember_credential(str(value).split(" ", 1)[-1])
        self._pace_lock = threading.Lock()
        self._next_slot = 0.0
        try:
            self.client = httpx.Client(
                base_url=self.base_url, timeout=self.timeout, headers=dict(headers or {}),
                verify=verify, follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=10, max_connections=20))
        except ValueError as exc:  # e.g. a base URL httpx cannot parse
            raise TransportError(f"The server URL is not valid: {self.redact(str(exc))}",
                                 kind="unreachable") from None

    # ------------------------------------------------------------------ helpers
    @property
    def secrets(self) -> list[str]:
        extra = self.auth.secrets() if self.auth is not None else []
        return [*self._secrets, *extra]

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _pace(self) -> None:
        if not self.min_interval:
            return
        with self._pace_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.min_interval
        if slot > now:
            time.sleep(slot - now)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before the next try: exponential backoff capped at ``max_backoff``, or
        the server's Retry-After as it asks (the caller gives up when that is longer than
        ``max_retry_after``)."""
        base = min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)
        wait = base + random.uniform(0, base * 0.1)
        if response is not None:
            ra = parse_retry_after(response.headers.get("Retry-After"))
            if ra is not None:
                # honour the server's wait, but never hammer it when it says 0
                return max(ra, base)
        return min(wait, self.max_backoff)

    def _where(self, method: str, url: str) -> str:
        path = httpx.URL(url).path if "://" in url else url.split("?", 1)[0]
        return f"{method.upper()} {path}"

    def _host(self, url: str) -> str:
        try:
            u = httpx.URL(url) if "://" in url else httpx.URL(self.base_url)
            return u.host + (f":{u.port}" if u.port else "")
        except Exception:
            return "the server"

    def _network_error(self, exc: Exception, method: str, url: str, attempts: int) -> TransportError:
        host = self._host(url)
        tries = f" (tried {attempts} time{'s' if attempts != 1 else ''})"
        if isinstance(exc, httpx.TimeoutException):
            kind = "timeout"
            if isinstance(exc, httpx.ConnectTimeout):
                msg = f"Timed out connecting to {host} after {self.timeout:g} s{tries}."
            else:
                msg = f"{host} did not answer {self._where(method, url)} within {self.timeout:g} s{tries}."
        elif _is_tls_error(exc):
            kind = "tls"
            msg = (f"TLS error talking to {host}: {_short(exc)}. Check the server URL and its "
                   f"certificate{tries}.")
        elif isinstance(exc, httpx.ConnectError):
            kind = "unreachable"
            reason = _short(exc)
            low = reason.lower()
            if "name or service not known" in low or "nodename nor servname" in low \
                    or "getaddrinfo" in low or "name resolution" in low:
                reason = "the host name could not be resolved"
            elif "refused" in low:
                reason = "the connection was refused"
            msg = f"Could not reach {host}: {reason}{tries}."
        elif isinstance(exc, httpx.UnsupportedProtocol):
            kind = "unreachable"
            msg = f"The server URL is not valid: {_short(exc)}."
        else:
            kind = "unreachable"
            msg = f"Network error talking to {host}: {_short(exc)}{tries}."
        return TransportError(self.redact(msg), kind=kind, attempts=attempts,
                              maybe_processed=not _never_sent(exc))

    def _too_slow(self, method: str, url: str, attempts: int) -> TransportError:
        return TransportError(self.redact(
            f"{self._host(url)} answered {self._where(method, url)} too slowly: the answer was "
            f"not complete after {self.deadline_s:g} s, the longest Enroll Sync waits for one "
            f"answer, so it was abandoned (each part arrived, but far too slowly). The SIS may be "
            f"overloaded; try again later."), kind="timeout", attempts=attempts)  # may be saved

    def _send(self, method: str, url: str, headers: dict, kwargs: dict,
              deadline: float) -> httpx.Response:
        """One try: the response with its body read, all within ``deadline`` (monotonic).

        Each network step may take ``timeout``, but never past the deadline; the body is
        read chunk by chunk and the deadline checked after each one, and a watchdog shuts
        the socket down at the deadline should a read still be waiting then. Raises
        ``_TooSlow`` when the deadline passed, httpx errors otherwise.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _TooSlow()
        step = min(self.timeout, remaining)
        request = self.client.build_request(method, url, headers=headers,
                                            timeout=httpx.Timeout(step), **kwargs)
        try:
            response = self.client.send(request, stream=True)
        except httpx.TimeoutException:
            if time.monotonic() >= deadline - 0.005:
                raise _TooSlow() from None
            raise
        watch = _WATCHDOG.watch(deadline, response)
        try:
            response.stream = _DeadlineStream(response.stream, deadline)
            response.read()
        except (_TooSlow, httpx.TransportError) as exc:
            response.close()
            if isinstance(exc, _TooSlow) or watch.fired or time.monotonic() >= deadline - 0.005:
                raise _TooSlow() from None
            raise
        except BaseException:
            response.close()
            raise
        finally:
            watch.cancel()
        return response

    # ------------------------------------------------------------------ the call
    def request(self, method: str, url_or_path: str, *, retry: bool = True,
                idempotent: bool = True, _auth: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one request with the retry policy; return the final response.

        ``retry=False`` sends it once (still sending it again on a fresh token after a
        401, up to ``token_retries`` times). Raises TransportError when no usable answer
        arrived, or when one try took longer than ``deadline_s``.

        ``idempotent=False`` is for a write the SIS would carry out twice if it arrived
        twice (an insert). It is sent again only when the SIS surely did not process it:
        the connection could not be opened (refused, connect timeout), or the SIS answered
        429 or 503 **with** ``Retry-After`` (it asks to come back later; without the
        header a 503 may come from a gateway after the SIS took the request). A 5xx
        answer (429/503 without ``Retry-After`` included), a timeout or a connection lost
        once the request went out, and an answer too slow for the deadline raise
        TransportError at once with ``maybe_processed=True`` and ``attempts=1``: the write
        may have been saved, so look it up before sending it again. 2xx, 3xx and 4xx
        answers are returned as usual.
        """
        url = url_or_path
        max_attempts = self.max_attempts if retry else 1
        attempt = 0
        refreshes = 0       # 401s on tokens no request had been answered with (fresh ones)
        replacements = 0    # every 401 that led to a new token
        extra_headers = dict(kwargs.pop("headers", None) or {})
        while True:
            attempt += 1
            headers = dict(extra_headers)
            sent_auth: dict | None = None
            if _auth and self.auth is not None:
                try:
                    sent_auth = dict(self.auth.headers(self))
                except TransportError as exc:
                    exc.maybe_processed = False  # no token: this request never went out
                    raise
                headers.update(sent_auth)
            self._pace()
            try:
                response = self._send(method, url, headers, kwargs,
                                      time.monotonic() + self.deadline_s)
            except _TooSlow:
                log.info("abandoned %s: no complete answer within %.3gs",
                         self._where(method, url), self.deadline_s)
                raise self._too_slow(method, url, attempt) from None
            except httpx.InvalidURL as exc:
                raise TransportError(self.redact(f"The server URL is not valid: {_short(exc)}."),
                                     kind="unreachable", attempts=attempt,
                                     maybe_processed=False) from None
            except (httpx.TransportError,) as exc:
                if attempt >= max_attempts or isinstance(exc, httpx.UnsupportedProtocol) \
                        or _is_tls_error(exc) or (not idempotent and not _never_sent(exc)):
                    raise self._network_error(exc, method, url, attempt) from None
                wait = self._delay(attempt, None)
                log.info("retrying %s after %s (attempt %d of %d, waiting %.2fs)",
                         self._where(method, url), type(exc).__name__, attempt + 1,
                         max_attempts, wait)
                time.sleep(wait)
                continue
            status = response.status_code
            if sent_auth is not None:
                token = _bearer_of(sent_auth)
                if status == 401:
                    fresh = token not in self._proven_tokens
                    if (refreshes < self.token_retries or not fresh) \
                            and replacements < self._max_token_replacements:
                        refreshes += fresh
                        replacements += 1
                        if self._invalidate_with_token:
                            self.auth.invalidate(sent_auth)
                        else:
                            self.auth.invalidate()
                        log.info("%s answered 401 (%s token): fetching a new token and sending "
                                 "it again", self._where(method, url),
                                 "a new" if fresh else "a revoked")
                        response.close()
                        attempt -= 1  # a refresh does not use up an attempt
                        continue
                elif token is not None and token not in self._proven_tokens:
                    with self._proven_lock:
                        self._proven_tokens[token] = None
                        if len(self._proven_tokens) > 32:
                            self._proven_tokens.pop(next(iter(self._proven_tokens)), None)
            if status in RETRY_WAIT_STATUSES or (status >= 500 and status not in NOT_SUPPORTED_STATUSES):
                unprocessed = _surely_unprocessed(response)
                if not idempotent and not unprocessed:
                    raise TransportError(
                        self.redact(
                            f"{self._where(method, url)} answered HTTP {status}{_reason(response, self.redact)}. "
                            f"It was not sent again: the SIS may have processed it."),
                        status=status, response=response, kind="http", attempts=attempt)
                if attempt >= max_attempts:
                    raise TransportError(
                        self.redact(
                            f"Gave up on {self._where(method, url)} after {attempt} "
                            f"attempt{'s' if attempt != 1 else ''}: the last answer was "
                            f"HTTP {status}{_reason(response, self.redact)}."),
                        status=status, response=response, kind="retries", attempts=attempt,
                        maybe_processed=not unprocessed)
                wait = self._delay(attempt, response)
                if wait > self.max_retry_after:
                    raise TransportError(
                        f"{self._where(method, url)} answered HTTP {status} and asked to wait {wait:.0f} s "
                        f"before trying again (Retry-After), longer than the {self.max_retry_after:g} s "
                        f"Enroll Sync waits. Nothing more was sent; try again later.",
                        status=status, response=response, kind="retries", attempts=attempt,
                        maybe_processed=not unprocessed)
                log.info("retrying %s after HTTP %d (attempt %d of %d, waiting %.2fs)",
                         self._where(method, url), status, attempt + 1, max_attempts, wait)
                response.close()
                time.sleep(wait)
                continue
            return response

    @property
    def _max_token_replacements(self) -> int:
        """However tokens get revoked, one request fetches at most this many."""
        return max(10, 3 * self.token_retries)

    def token_refused_message(self, where: str) -> str:
        """What to tell the admin when ``where`` kept answering 401 although the token URL
        accepted the credentials and issued fresh tokens: the credentials are fine, the
        API does not take the tokens (or revokes them at once)."""
        n = self.token_retries
        tokens = ("an access token the SIS had just issued" if n <= 1 else
                  f"{n} access tokens in a row, each just issued by the SIS")
        return (f"{where} was refused (HTTP 401) with {tokens}. The token URL accepts the "
                f"client ID and secret, so they are not the problem: the SIS keeps refusing "
                f"or revoking its own new tokens. Check the plugin's (API client's) "
                f"access to this API in the SIS, then try again.")

    def json(self, method: str, url_or_path: str, **kwargs: Any) -> Any:
        """``request`` + raise TransportError on a non-2xx answer + parse JSON."""
        response = self.request(method, url_or_path, **kwargs)
        where = self._where(method, url_or_path)
        if response.status_code == 401 and self.auth is not None:
            raise TransportError(self.token_refused_message(where),
                                 status=401, response=response, kind="auth", maybe_processed=False)
        if not response.is_success:
            raise TransportError(
                self.redact(f"{where} answered HTTP {response.status_code}"
                            f"{_reason(response, self.redact)}."),
                status=response.status_code, response=response, kind="http",
                maybe_processed=not _surely_unprocessed(response))
        try:
            return response.json()
        except ValueError:
            raise TransportError(f"{where} answered with a body that is not JSON "
                                 f"(HTTP {response.status_code}).",
                                 status=response.status_code, response=response,
                                 kind="malformed") from None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


#: where an error body says why, in the order they are looked for: ``message`` (most
#: APIs), ``Message`` (ASP.NET Web API: Aeries), OAuth's ``error_description`` and
#: ``error``, RFC 9457's ``detail`` and ``title``
_REASON_KEYS = ("message", "Message", "error_description", "error", "detail", "title")


def error_reason(response: httpx.Response, redact=None) -> str | None:
    """The SIS's own reason in a JSON error body, or None: the first non-blank string of
    ``_REASON_KEYS`` (an ``error`` object's ``message``/``Message`` too), stripped, passed
    through ``redact`` when given, then cut to 200 characters — redacted *before* it is cut,
    or a credential the SIS echoed could straddle the cut and keep its first half."""
    try:
        body = response.json()
    except Exception:
        return None
    if not isinstance(body, dict):
        return None
    for key in _REASON_KEYS:
        val = body.get(key)
        if isinstance(val, dict):
            val = next((val[k] for k in ("message", "Message") if isinstance(val.get(k), str)), None)
        if isinstance(val, str) and val.strip():
            val = val.strip()
            return (redact(val) if redact is not None else val)[:200]
    return None


def _reason(response: httpx.Response, redact=None) -> str:
    """`` (reason)`` for a message, or "" when the body gives none."""
    msg = error_reason(response, redact)
    return f" ({msg})" if msg else ""


def _surely_unprocessed(response: httpx.Response) -> bool:
    """Whether this answer says the SIS did not act on the request: 401 (not
    authenticated), 501/505 (not supported), or 429/503 carrying a Retry-After it can be
    parsed from."""
    if response.status_code == 401 or response.status_code in NOT_SUPPORTED_STATUSES:
        return True
    return (response.status_code in RETRY_WAIT_STATUSES
            and parse_retry_after(response.headers.get("Retry-After")) is not None)


def _never_sent(exc: BaseException) -> bool:
    """Whether a network error happened before the request left (no connection)."""
    return isinstance(exc, _NOT_SENT)


def _is_tls_error(exc: BaseException) -> bool:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return True
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    upper = text.upper()
    return "SSL" in upper or ("CERTIFICATE" in upper and "VERIFY" in upper)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = text.replace("\n", " ")
    return text[:200]


def _bearer_of(used: Any) -> str | None:
    """The token in ``used``: a token string, or headers with ``Authorization: Bearer``."""
    if isinstance(used, str):
        return used
    if isinstance(used, Mapping):
        for key, value in used.items():
            if str(key).lower() == "authorization" and isinstance(value, str):
                return value.split(" ", 1)[1].strip() if " " in value else value
    return None


def _takes_argument(func: Any) -> bool:
    """Whether an auth object's ``invalidate`` accepts the refused request's headers (older
    auth objects take none)."""
    if func is None:
        return False
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)


def _copy_error(exc: BaseException) -> BaseException:
    """The error a token fetch ended with, for each thread that waited for it (one
    exception object raised in several threads would share one traceback)."""
    if isinstance(exc, TransportError):
        return TransportError(str(exc), status=exc.status, response=exc.response,
                              kind=exc.kind, attempts=exc.attempts,
                              maybe_processed=exc.maybe_processed)
    return exc


# ----------------------------------------------------------------------------- the deadline

class _TooSlow(Exception):
    """Internal: one try passed its deadline (turned into a TransportError)."""


class _DeadlineStream(httpx.SyncByteStream):
    """A response body that stops at the deadline: checked after every chunk, so an
    answer that drips in a byte at a time is abandoned however short each read is."""

    def __init__(self, inner: Any, deadline: float):
        self.inner = inner
        self.deadline = deadline

    def __iter__(self):
        for chunk in self.inner:
            if time.monotonic() > self.deadline:
                raise _TooSlow()
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _Watch:
    """One response under the watchdog's eye; ``cancel()`` once its body is read."""

    __slots__ = ("deadline", "response", "fired", "done", "lock")

    def __init__(self, deadline: float, response: httpx.Response):
        self.deadline = deadline
        self.response = response
        self.fired = False
        self.done = False
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.done = True
            self.response = None

    def fire(self) -> None:
        """The deadline passed with a read still waiting: shut the socket down, which
        wakes that read at once (closing it from another thread would not)."""
        with self.lock:
            if self.done:
                return
            self.fired = True
            response, self.response = self.response, None
        stream = response.extensions.get("network_stream") if response is not None else None
        sock = None
        if stream is not None:
            try:
                sock = stream.get_extra_info("socket")
            except Exception:
                sock = None
        if isinstance(sock, socket.socket):
            try:
                # socket.socket's own shutdown, also for an SSLSocket: the TLS layer's would
                # drop its state under the reading thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


class _Watchdog:
    """One thread for the whole process that ends reads still waiting at their deadline
    (a per-read timeout alone cannot: a read may start just before the deadline). It
    starts on first use and stops after a while with nothing to watch."""

    IDLE_EXIT = 10.0

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, response: httpx.Response) -> _Watch:
        w = _Watch(deadline, response)
        with self._cond:
            heap = self._heap
            if len(heap) > 512 and len(heap) % 512 == 0:
                heap[:] = [e for e in heap if not e[2].done]  # drop finished ones
                heapq.heapify(heap)
            heapq.heappush(heap, (deadline, next(self._seq), w))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="enroll-sync-deadlines",
                                                daemon=True)
                self._thread.start()
            elif heap[0][2] is w:
                self._cond.notify()
        return w

    def _run(self) -> None:
        with self._cond:
            heap = self._heap
            while True:
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                now = time.monotonic()
                if not heap:
                    self._cond.wait(self.IDLE_EXIT)
                    if not heap:
                        self._thread = None
                        return
                    continue
                if heap[0][0] > now:
                    self._cond.wait(heap[0][0] - now)
                    continue
                _, _, w = heapq.heappop(heap)
                self._cond.release()
                try:
                    w.fire()
                finally:
                    self._cond.acquire()


_WATCHDOG = _Watchdog()
