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
- any other 4xx is returned at once: retrying a refused request never helps;
- with ``auth`` (e.g. ``OAuth2ClientCredentials``) a 401 drops the cached token,
  fetches a new one and retries once (tokens get revoked early);
- every message it produces is scrubbed of secrets (the ``secrets`` given, the
  client secret and every token it has seen), because adapters show ``str(error)``
  to admins as is.

``Transport.request`` returns the ``httpx.Response`` for any answer that is not
retried (2xx, 3xx, 4xx) and raises ``TransportError`` when the SIS could not be
reached or kept failing. ``Transport.json`` is the shortcut adapters mostly want:
it raises on any non-2xx answer and returns the parsed body.
"""
from __future__ import annotations

import base64
import email.utils
import logging
import random
import re
import ssl
import threading
import time
from typing import Any, Iterable, Mapping

import httpx

from .adapters import AdapterError
from .redaction import redact, remember_credential

__all__ = ["Transport", "TransportError", "OAuth2ClientCredentials", "parse_retry_after"]

log = logging.getLogger("enroll_sync.transport")

RETRY_WAIT_STATUSES = frozenset({429, 503})
#: headers whose values are credentials (cut out of everything stored, shown or logged)
_CREDENTIAL_HEADER = re.compile(r"authorization|key|token|cert|secret|password", re.IGNORECASE)


class TransportError(AdapterError):
    """The SIS could not be reached, refused us, or kept failing.

    ``status`` is the last HTTP status (None when no answer arrived), ``response``
    the last ``httpx.Response`` (may be None), ``kind`` one of ``unreachable``,
    ``tls``, ``timeout``, ``auth``, ``retries``, ``http``, ``malformed``.
    ``str(error)`` never contains a secret.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 response: httpx.Response | None = None, kind: str = "http",
                 attempts: int = 0):
        super().__init__(message)
        self.status = status
        self.response = response
        self.kind = kind
        self.attempts = attempts


class OAuth2ClientCredentials:
    """OAuth2 client-credentials flow: Basic auth to ``token_url``, body
    ``grant_type=client_credentials``; the token is cached until shortly before
    ``expires_in`` (an int or a string, as PowerSchool sends it) runs out.

    Pass it as ``Transport(auth=...)``. ``token_url`` may be a path relative to
    the transport's base URL.
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

    # -- what the transport calls
    def secrets(self) -> list[str]:
        return [self.client_secret, *self._seen_tokens]

    def invalidate(self) -> None:
        """Forget the cached token (after a 401): the next request fetches a new one."""
        with self._lock:
            self._token = None
            self._expires_at = 0.0

    def headers(self, transport: "Transport") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(transport)}"}

    def token(self, transport: "Transport") -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            self._token, lifetime = self._fetch(transport)
            remember_credential(self._token)
            self._seen_tokens.append(self._token)
            del self._seen_tokens[:-20]
            margin = min(self.early_refresh, lifetime * 0.1)
            self._expires_at = time.monotonic() + max(0.0, lifetime - margin)
            return self._token

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
    ``max_attempts`` bounds the tries of one request (first try included).
    ``headers`` are sent with every request; ``secrets`` are strings that must
    never appear in a message (they are redacted).
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0, min_interval: float = 0.0,
                 max_attempts: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_retry_after: float = 300.0,
                 auth: OAuth2ClientCredentials | None = None,
                 headers: Mapping[str, str] | None = None, secrets: Iterable[str] = (),
                 verify: bool | str | ssl.SSLContext = True):
        self.base_url = str(base_url or "").rstrip("/")
        self.timeout = float(timeout)
        self.min_interval = max(0.0, float(min_interval))
        self.max_attempts = max(1, int(max_attempts))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max(0.0, float(max_backoff))
        self.max_retry_after = max(0.0, float(max_retry_after))
        self.auth = auth
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
        return TransportError(self.redact(msg), kind=kind, attempts=attempts)

    # ------------------------------------------------------------------ the call
    def request(self, method: str, url_or_path: str, *, retry: bool = True,
                _auth: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one request with the retry policy; return the final response.

        ``retry=False`` sends it once (still refreshing an expired token once).
        Raises TransportError when no usable answer arrived.
        """
        url = url_or_path
        max_attempts = self.max_attempts if retry else 1
        attempt = 0
        refreshed = False
        extra_headers = dict(kwargs.pop("headers", None) or {})
        while True:
            attempt += 1
            headers = dict(extra_headers)
            if _auth and self.auth is not None:
                headers.update(self.auth.headers(self))
            self._pace()
            try:
                response = self.client.request(method, url, headers=headers, **kwargs)
            except httpx.InvalidURL as exc:
                raise TransportError(self.redact(f"The server URL is not valid: {_short(exc)}."),
                                     kind="unreachable", attempts=attempt) from None
            except (httpx.TransportError,) as exc:
                if attempt >= max_attempts or isinstance(exc, httpx.UnsupportedProtocol) \
                        or _is_tls_error(exc):
                    raise self._network_error(exc, method, url, attempt) from None
                wait = self._delay(attempt, None)
                log.info("retrying %s after %s (attempt %d of %d, waiting %.2fs)",
                         self._where(method, url), type(exc).__name__, attempt + 1,
                         max_attempts, wait)
                time.sleep(wait)
                continue
            status = response.status_code
            if status == 401 and _auth and self.auth is not None and not refreshed:
                refreshed = True
                self.auth.invalidate()
                log.info("%s answered 401: fetching a new token and retrying once",
                         self._where(method, url))
                attempt -= 1  # the refresh does not use up an attempt
                continue
            if status in RETRY_WAIT_STATUSES or status >= 500:
                if attempt >= max_attempts:
                    raise TransportError(
                        self.redact(
                            f"Gave up on {self._where(method, url)} after {attempt} "
                            f"attempt{'s' if attempt != 1 else ''}: the last answer was "
                            f"HTTP {status}{_reason(response, self.redact)}."),
                        status=status, response=response, kind="retries", attempts=attempt)
                wait = self._delay(attempt, response)
                if wait > self.max_retry_after:
                    raise TransportError(
                        f"{self._where(method, url)} answered HTTP {status} and asked to wait {wait:.0f} s "
                        f"before trying again (Retry-After), longer than the {self.max_retry_after:g} s "
                        f"Enroll Sync waits. Nothing more was sent; try again later.",
                        status=status, response=response, kind="retries", attempts=attempt)
                log.info("retrying %s after HTTP %d (attempt %d of %d, waiting %.2fs)",
                         self._where(method, url), status, attempt + 1, max_attempts, wait)
                response.close()
                time.sleep(wait)
                continue
            return response

    def json(self, method: str, url_or_path: str, **kwargs: Any) -> Any:
        """``request`` + raise TransportError on a non-2xx answer + parse JSON."""
        response = self.request(method, url_or_path, **kwargs)
        where = self._where(method, url_or_path)
        if response.status_code == 401 and self.auth is not None:
            raise TransportError(
                f"{where} was refused (HTTP 401) even with a fresh token: check the "
                f"client ID, client secret and the plugin's access.",
                status=401, response=response, kind="auth")
        if not response.is_success:
            raise TransportError(
                self.redact(f"{where} answered HTTP {response.status_code}"
                            f"{_reason(response, self.redact)}."),
                status=response.status_code, response=response, kind="http")
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


def _reason(response: httpx.Response, redact=None) -> str:
    """A short, human hint from an error body ("message" or "error"), if any, redacted
    with ``redact`` *before* it is cut short: cut first, a credential the SIS echoed
    could straddle the cut and keep its first half out of reach of redaction."""
    try:
        body = response.json()
    except Exception:
        return ""
    msg = None
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "detail"):
            val = body.get(key)
            if isinstance(val, str) and val:
                msg = val
                break
            if isinstance(val, dict) and isinstance(val.get("message"), str):
                msg = val["message"]
                break
    if not msg:
        return ""
    if redact is not None:
        msg = redact(msg)
    return f" ({msg[:200]})"


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
