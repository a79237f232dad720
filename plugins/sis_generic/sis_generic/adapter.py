"""``GenericRestAdapter``: any JSON REST SIS described by OpenAPI 3 / Swagger 2 or a
JSON Schema (Ed-Fi ODS/API is the main example).

The description tells the adapter which fields exist (``target_fields``) and what a
valid request body is: every record is checked against the request schema before it
is sent, so a record the SIS would refuse for its shape is reported with the
schema's own message and never leaves. HTTP goes through the core's shared
``Transport`` (keep-alive, pacing, retries for 429/503/5xx, one token refresh on
401, secrets redacted); outcomes are read from the status code, the configured id
location (a JSON Pointer into the body or the ``Location`` header) and error bodies
— RFC 9457 problem details (Ed-Fi's ``validationErrors``), common ``{"message",
"errors"}`` shapes, and bodies that are not JSON at all.

Per-record truth: an update by id answered 404 (or 410) is ``NOT_FOUND``; a record the
SIS kept refusing with 429/503 until the transport's retries ran out (and the records
held back after it) is ``RETRY``; a record found by *Find existing record*, or matched
by the natural key of an upserting create, carries ``matched_by``.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import html
import logging
import math
import re
import threading
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from enroll_sync import (AdapterError, CheckResult, ExportRecord, ExportResult, FieldError,
                         FieldSection, OAuth2ClientCredentials, Outcome, SettingField, SISAdapter,
                         SISStudent, StudentPage, TargetField, Transport, TransportError, flatten, nest)

from .schema import (PASTED_URI, ApiDescription, OperationRef, json_path_to_field,
                     load_description, parse_document, parse_lookup, parse_operation)

__all__ = ["GenericRestAdapter"]

log = logging.getLogger("sis_generic")

AUTH_MODES = (
    ("none", "None"),
    ("api_key", "API key header"),
    ("bearer", "Bearer token"),
    ("basic", "HTTP basic (user name and password)"),
    ("oauth2", "OAuth2 client credentials"),
)
SCHEMA_SOURCES = (
    ("openapi_url", "OpenAPI / Swagger document at a URL"),
    ("openapi_text", "OpenAPI / Swagger document (pasted or uploaded)"),
    ("json_schema_url", "JSON Schema at a URL"),
    ("json_schema_text", "JSON Schema (pasted or uploaded)"),
)
REQUEST_MODES = (
    ("single", "One record per request"),
    ("array", "An array of records per request"),
)
LOCATION_HEADER = "Location header"
ACCEPT_JSON = {"Accept": "application/json"}
#: errors that say "the SIS cannot be used right now": stop sending the rest of the batch
STOP_KINDS = frozenset({"unreachable", "tls", "auth"})
SLOW_KINDS = frozenset({"timeout", "retries"})
NOT_CONFIRMED = "The SIS never confirmed the record, so it is not marked as synced."
SENT_AGAIN = "Nothing was written; it will be sent again shortly."
FIND_EXISTING = "Find existing record"
#: Ed-Fi's change queries: the newest change version (import reads only what changed since)
CHANGE_VERSIONS = "/changeQueries/v1/availableChangeVersions"
#: where a lookup's answer usually keeps its list of matches (the default id location)
LIST_KEYS = ("data", "items", "results", "records", "value", "content", "entries", "rows")


def _is_location(value: str) -> bool:
    return value.strip().lower() in ("", "location", "location header", "header:location",
                                     "header: location", "location: header")


def _snippet(text: str, limit: int = 160) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text or "")
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pointer_get(doc: Any, pointer: str) -> Any:
    if pointer in ("", "/"):
        return doc if pointer == "" else (doc.get("") if isinstance(doc, dict) else None)
    cur = doc
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list) and token.isdigit() and int(token) < len(cur):
            cur = cur[int(token)]
        else:
            return None
    return cur


class NotFinite(ValueError):
    """A NaN or an infinity: JSON has no way to carry it."""


def _jsonable(value: Any) -> Any:
    """Values the mapping may hand over that JSON has no type for."""
    if isinstance(value, float) and not math.isfinite(value):
        raise NotFinite(str(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise NotFinite(str(value))
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _coerce(value: Any, ftype: str | None) -> Any:
    """Form answers arrive as text; send numbers and booleans as the schema types them,
    and a number mapped to a text field (a form id as the natural key) as text."""
    if ftype == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or ftype not in ("integer", "number", "boolean"):
        return value
    text = value.strip()
    if ftype == "integer" and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if ftype == "number" and re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
        number = float(text)
        if not math.isfinite(number):
            return value  # "1e999": left as text, so the schema check reports it
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if ftype == "boolean":
        low = text.lower()
        if low in ("true", "yes", "y", "1", "t"):
            return True
        if low in ("false", "no", "n", "0", "f"):
            return False
    return value


def _dotted_get(body: Any, key: str) -> Any:
    """The value at a dotted target key (``contact.email``, ``addresses.0.city``) of a body."""
    cur = body
    for part in key.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def _scalar_id(value: Any) -> str | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


def _found_id(parsed: Any, pointer: str) -> tuple[str, Any]:
    """Read a ``Find existing record`` answer: ("found", id), ("none", None),
    ("ambiguous", how many matched) or ("no_id", None)."""
    if parsed is None or parsed == {} or parsed == []:
        return "none", None
    if not pointer:
        items = None
        if isinstance(parsed, list):
            items = parsed
        elif isinstance(parsed, dict):
            key = next((k for k in LIST_KEYS if isinstance(parsed.get(k), list)), None)
            if key is None:
                key = next((k for k, v in parsed.items() if isinstance(v, list)
                            and all(isinstance(x, dict) for x in v)), None)
            if key is not None:
                items = parsed[key]
            elif isinstance(parsed.get("data"), dict):
                items = [parsed["data"]]
            elif "id" in parsed:
                items = [parsed]
            elif parsed.get("data") is None and "data" in parsed:
                items = []
        if items is None:
            return "no_id", None
        if not items:
            return "none", None
        if len(items) > 1:
            return "ambiguous", len(items)
        found = _scalar_id(items[0].get("id")) if isinstance(items[0], dict) else None
        return ("found", found) if found else ("no_id", None)
    cur = parsed
    through_list = False
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if cur is None and not through_list:
            return "none", None  # {"data": null}: nothing matched
        if isinstance(cur, list):
            if not through_list:
                through_list = True
                if not cur:
                    return "none", None  # an empty list of matches
                if len(cur) > 1:
                    return "ambiguous", len(cur)
            if not (token.isdigit() and int(token) < len(cur)):
                return "no_id", None
            cur = cur[int(token)]
        elif isinstance(cur, dict) and token in cur:
            cur = cur[token]
        else:
            return "no_id", None
    found = _scalar_id(cur)
    return ("found", found) if found else ("no_id", None)


def _busy(exc: TransportError) -> bool:
    """The SIS kept answering "not now" (429/503) until the retries ran out, or asked to
    wait longer than Enroll Sync waits."""
    return exc.kind == "retries" and exc.status in (429, 503)


def _with_lookup(info: dict | None, shown: str) -> dict:
    return {"lookup": shown, **(info or {})}


class _Guard:
    """Stops sending the rest of an export once the SIS cannot be used (unreachable,
    TLS, credentials) or keeps timing out / failing after retries. ``busy``: it stopped
    because the SIS kept saying "later" (429/503), so what is held back is RETRY."""

    def __init__(self, adapter: "GenericRestAdapter"):
        self.adapter = adapter
        self.stop: str | None = None
        self.busy = False
        self.slow_failures = 0

    def halt(self, result: ExportResult) -> None:
        self.stop = self.adapter._stop_reason(result)
        self.busy = result.outcome == Outcome.RETRY

    def note(self, kind: str | None, result: ExportResult) -> None:
        if kind in STOP_KINDS:
            self.halt(result)
        elif kind in SLOW_KINDS:
            self.slow_failures += 1
            if self.slow_failures >= 2:
                self.halt(result)
        else:
            self.slow_failures = 0

    def held_back(self, record: ExportRecord) -> ExportResult:
        if self.busy:
            message = f"Not sent: {self.stop} {SENT_AGAIN}"
            return ExportResult(record_id=record.record_id, outcome=Outcome.RETRY,
                                errors=[FieldError(None, "not_sent_busy", message)],
                                message=message)
        return self.adapter._failed(record, f"Not sent: {self.stop}", code="not_sent")


class GenericRestAdapter(SISAdapter):
    """Export to any JSON REST API described by OpenAPI / Swagger or JSON Schema."""

    name = "generic_rest"
    label = "Generic REST (OpenAPI / JSON Schema)"
    version = "0.1.0"

    def __init__(self, settings: Mapping[str, Any]):
        super().__init__(settings)
        self._lock = threading.RLock()
        self._transport: Transport | None = None
        self._plain: Transport | None = None
        self._api: ApiDescription | None = None
        if self.array_mode:  # the core hands export() a few of the SIS's batches at a time
            try:
                self.batch_size = self._num("batch_size", 25, 1, 1000, integer=True)
            except AdapterError:
                pass  # export() reports the bad setting on every record

    # ------------------------------------------------------------------ settings
    @classmethod
    def settings_schema(cls) -> list[SettingField]:
        return [
            SettingField("base_url", "Base URL", "url", required=True,
                         help="The API's root; operation paths are appended to it, e.g. "
                              "https://sis.example.org (Ed-Fi: the ODS/API root, without /data/v3)."),
            SettingField("auth_mode", "Authentication", "choice", required=True, default="oauth2",
                         choices=AUTH_MODES),
            SettingField("header_name", "API key header name", default="X-API-Key",
                         help="API key header authentication: the header that carries the key."),
            SettingField("api_key", "API key", "secret"),
            SettingField("bearer_token", "Bearer token", "secret",
                         help="Sent as \"Authorization: Bearer …\" with every request."),
            SettingField("username", "User name", help="HTTP basic authentication."),
            SettingField("password", "Password", "secret", help="HTTP basic authentication."),
            SettingField("oauth_url", "Token URL", "url",
                         help="OAuth2 client credentials; blank means {base URL}/oauth/token."),
            SettingField("client_id", "Client ID (key)", help="OAuth2 client credentials."),
            SettingField("client_secret", "Client secret", "secret", help="OAuth2 client credentials."),
            SettingField("schema_source", "Field list from", "choice", required=True,
                         default="openapi_url", choices=SCHEMA_SOURCES),
            SettingField("schema_url", "Schema URL", "url",
                         help="The OpenAPI/Swagger or JSON Schema document; a path such as "
                              "/metadata/data/v3/swagger.json is relative to the base URL."),
            SettingField("schema_text", "Schema document", "text",
                         help="Paste the OpenAPI/Swagger or JSON Schema document (JSON), or "
                              "upload its file below."),
            SettingField("create_operation", "Create operation", required=True,
                         default="POST /data/v3/ed-fi/students",
                         help="Method and path (after the base URL) that creates a student, "
                              "e.g. POST /data/v3/ed-fi/students."),
            SettingField("update_operation", "Update operation",
                         help="e.g. PUT /data/v3/ed-fi/students/{id}, used for students whose SIS "
                              "id is known. Blank: the create operation upserts (Ed-Fi's POST "
                              "matches on the natural key)."),
            SettingField("lookup_operation", FIND_EXISTING,
                         help="Optional: a GET that finds a record already in the SIS, e.g. "
                              "GET /api/v1/people?email={contact.email} — each {placeholder} is "
                              "a To Field key, filled from the record. Before a record is "
                              "created (and when creating answers 409) the SIS is asked; a match "
                              "is updated with the update operation and keeps its id. Set it "
                              "when the create operation does not upsert, so a repeated sync "
                              "updates instead of failing or duplicating."),
            SettingField("lookup_id_location", "Where the found record's id is",
                         help="A JSON Pointer into the answer of Find existing record, e.g. "
                              "/data/0/id. Blank: the \"id\" of the first match — the answer's "
                              "first item when it is an array, else the first item of its "
                              "data/items/results list, or the answer itself when it is one "
                              "record. More than one match is never guessed."),
            SettingField("request_mode", "Records per request", "choice", default="single",
                         choices=REQUEST_MODES),
            SettingField("batch_size", "Batch size", "integer", default=25, min=1, max=1000,
                         help="Records per request when sending an array."),
            SettingField("id_location", "Where the new id is", default=LOCATION_HEADER,
                         help="\"Location header\" (its last path segment), or a JSON Pointer "
                              "into the response body such as /id or /data/id."),
            SettingField("timeout", "Timeout (seconds)", "number", default=30, min=1, max=600,
                         help="How long one step may take: connecting, or a pause in an answer."),
            SettingField("deadline", "Longest wait for one answer (seconds)", "number",
                         min=1, max=3600,
                         help="An answer still not complete after this long is abandoned, "
                              "however steadily it trickles in. Blank: four times the timeout."),
            SettingField("min_interval", "Minimum interval between requests (seconds)", "number",
                         default=0, min=0, max=60),
            SettingField("max_attempts", "Attempts per request", "integer", default=4, min=1, max=10,
                         help="How often a request is tried when the SIS is busy (429/503) or "
                              "failing (5xx, timeouts)."),
            SettingField("retry_backoff", "First retry wait (seconds)", "number", default=1.0,
                         min=0, max=60, help="Doubles on each retry unless the SIS says Retry-After."),
        ] + cls.import_settings_schema()

    def _s(self, key: str, default: str = "") -> str:
        value = self.settings.get(key)
        if value is None:
            return default
        text = str(value).strip()
        return text if text else default

    def _num(self, key: str, default: float, lo: float, hi: float, *, integer: bool = False) -> float:
        raw = self.settings.get(key)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            value = default
        else:
            label = next((f.label for f in self.settings_schema() if f.key == key), key)
            if isinstance(raw, bool):
                raise AdapterError(f"{label} must be a number, not {raw!r}.")
            try:
                value = float(raw)
            except (TypeError, ValueError, OverflowError):
                raise AdapterError(f"{label} must be a number, not {str(raw)[:40]!r}.") from None
            if not math.isfinite(value):
                raise AdapterError(f"{label} must be a finite number between {lo:g} and {hi:g}, "
                                   f"not {str(raw)[:40]!r}.")
        value = min(max(value, lo), hi)
        return int(value) if integer else value

    def _secret_values(self) -> list[str]:
        keys = [f.key for f in self.settings_schema() if f.secret]
        return [str(self.settings[k]) for k in keys if self.settings.get(k)]

    def _redact(self, text: str) -> str:
        text = str(text)
        if self._transport is not None:
            return self._transport.redact(text)
        for secret in sorted(self._secret_values(), key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, "[redacted]")
        return text

    def _redact_obj(self, value: Any) -> Any:
        """``_redact`` through a parsed JSON answer (kept in the sync history)."""
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, list):
            return [self._redact_obj(v) for v in value]
        if isinstance(value, dict):
            return {self._redact(str(k)): self._redact_obj(v) for k, v in value.items()}
        return value

    @property
    def base_url(self) -> str:
        base = self._s("base_url").rstrip("/")
        if not base:
            raise AdapterError("Set the base URL of the SIS API.")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AdapterError("The base URL must start with https:// (or http://) and name a host.")
        return base

    def _url(self, path_or_url: str) -> str:
        if re.match(r"^https?://", path_or_url, re.I):
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    @property
    def array_mode(self) -> bool:
        return self._s("request_mode", "single") == "array"

    # ------------------------------------------------------------------ transport
    def _get_transport(self) -> Transport:
        with self._lock:
            if self._transport is None:
                self._transport = self._build_transport(with_auth=True)
            return self._transport

    def _plain_transport(self) -> Transport:
        with self._lock:
            if self._plain is None:
                self._plain = self._build_transport(with_auth=False)
            return self._plain

    def _build_transport(self, *, with_auth: bool) -> Transport:
        base = self.base_url
        headers = {"User-Agent": f"EnrollSync-GenericREST/{self.version}"}
        secrets = self._secret_values()
        auth = None
        mode = self._s("auth_mode", "none")
        if with_auth:
            if mode == "none":
                pass
            elif mode == "api_key":
                header = self._s("header_name", "X-API-Key")
                if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", header):
                    raise AdapterError(f"The API key header name {header[:60]!r} is not a valid "
                                       f"HTTP header name.")
                key = self._s("api_key")
                if not key:
                    raise AdapterError("The API key is missing.")
                headers[header] = key
            elif mode == "bearer":
                token = self._s("bearer_token")
                if not token:
                    raise AdapterError("The bearer token is missing.")
                headers["Authorization"] = f"Bearer {token}"
            elif mode == "basic":
                user, password = self._s("username"), str(self.settings.get("password") or "")
                if not user or not password:
                    raise AdapterError("HTTP basic authentication needs a user name and a password.")
                encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
                headers["Authorization"] = f"Basic {encoded}"
                secrets.append(encoded)
            elif mode == "oauth2":
                cid, csecret = self._s("client_id"), self._s("client_secret")
                if not cid or not csecret:
                    raise AdapterError("OAuth2 needs a client ID and a client secret.")
                token_url = self._url(self._s("oauth_url") or "/oauth/token")
                auth = OAuth2ClientCredentials(token_url, cid, csecret)
            else:
                raise AdapterError(f"Unknown authentication {mode[:30]!r}; choose one of "
                                   f"{', '.join(k for k, _ in AUTH_MODES)}.")
        backoff = self._num("retry_backoff", 1.0, 0, 60)
        deadline = self._num("deadline", 0, 0, 3600) or None  # blank: the transport's default
        return Transport(base, timeout=self._num("timeout", 30, 1, 600), deadline_s=deadline,
                         min_interval=self._num("min_interval", 0, 0, 60),
                         max_attempts=self._num("max_attempts", 4, 1, 10, integer=True),
                         backoff=backoff, max_backoff=max(30.0, backoff * 8),
                         auth=auth, headers=headers, secrets=secrets)

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.base_url)
        return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)

    def _fetch(self, url: str) -> Any:
        """GET a schema document. Credentials go only to the SIS's own origin."""
        transport = self._get_transport() if self._same_origin(url) else self._plain_transport()
        shown = self._redact(url)
        try:
            resp = transport.request("GET", url, headers=ACCEPT_JSON)
        except TransportError as exc:
            raise AdapterError(f"Could not fetch the schema from {shown}: {exc}") from None
        status = resp.status_code
        if 300 <= status < 400:
            where = resp.headers.get("Location", "")
            raise AdapterError(f"The schema URL {shown} answered a redirect (HTTP {status}"
                               f"{' to ' + self._redact(where) if where else ''}); use the final URL.")
        if status in (401, 403):
            raise AdapterError(f"The schema URL {shown} refused access (HTTP {status}); check the "
                               f"authentication settings.")
        if not resp.is_success:
            raise AdapterError(f"The schema URL {shown} answered HTTP {status}"
                               f"{' (not found)' if status == 404 else ''}.")
        return parse_document(resp.text, f"The schema at {shown}")

    # ------------------------------------------------------------------ the description
    def _load(self) -> ApiDescription:
        create = parse_operation(self.settings.get("create_operation"), "The create operation",
                                 allow_placeholder=False)
        if create is None:
            raise AdapterError("Set the create operation, e.g. \"POST /data/v3/ed-fi/students\".")
        update = parse_operation(self.settings.get("update_operation"), "The update operation",
                                 allow_placeholder=True)
        lookup = parse_lookup(self.settings.get("lookup_operation"), FIND_EXISTING)
        if lookup is not None and update is None:
            raise AdapterError(f"{FIND_EXISTING} needs an update operation (e.g. PUT "
                               f"/api/v1/people/{{id}}) to update the record it finds.")
        lookup_id = self._s("lookup_id_location")
        if lookup_id and not lookup_id.startswith("/"):
            raise AdapterError("\"Where the found record's id is\" must be a JSON Pointer such as "
                               f"/data/0/id (or blank), not {lookup_id[:60]!r}.")
        id_location = self._s("id_location", LOCATION_HEADER)
        if not _is_location(id_location) and not id_location.startswith("/"):
            raise AdapterError("\"Where the new id is\" must be \"Location header\" or a JSON "
                               f"Pointer such as /id, not {id_location[:60]!r}.")
        source = self._s("schema_source", "openapi_url")
        if source not in dict(SCHEMA_SOURCES):
            raise AdapterError(f"Unknown schema source {source[:30]!r}.")
        kind = "openapi" if source.startswith("openapi") else "jsonschema"
        if source.endswith("_url"):
            raw = self._s("schema_url")
            if not raw:
                raise AdapterError("Set the schema URL (or choose a pasted document as the source).")
            url = self._url(raw)
            document = self._fetch(url)
            uri = url
        else:
            document = parse_document(self._s("schema_text"), "The pasted schema document")
            uri = PASTED_URI
        api = load_description(kind=kind, document=document, uri=uri, fetch=self._fetch,
                               create=create, update=update)
        if lookup is not None:
            known = set(api.field_types())
            for key in lookup.keys:
                norm = re.sub(r"(?<=\.)\d+(?=\.|$)", "0", key)
                if norm not in known:
                    sample = ", ".join(sorted(known)[:8])
                    raise AdapterError(f"{FIND_EXISTING} ({lookup}) matches on {{{key}}}, which is "
                                       f"not a field of the {api.resource} schema (fields include "
                                       f"{sample}…). Use the To Field key of a field the mapping "
                                       f"fills.")
            api.lookup = lookup
        return api

    def _description(self, *, fresh: bool = False) -> ApiDescription:
        with self._lock:
            if self._api is None or fresh:
                self._api = None
                self._api = self._load()
            return self._api

    # ------------------------------------------------------------------ contract: fields
    def target_fields(self) -> list[FieldSection]:
        """Always read the schema afresh: the core caches the sections itself and asks
        again only on first use and on Refresh fields, and the adapter instance lives on
        across those, so a cached description would hide a changed schema. The fresh
        description also replaces the one exports validate against."""
        try:
            return list(self._description(fresh=True).sections)
        except AdapterError as exc:
            raise AdapterError(self._redact(str(exc))) from None

    # ------------------------------------------------------------------ bodies
    def _record_body(self, record: ExportRecord, api: ApiDescription) -> dict:
        types = api.field_types()
        flat = {}
        for key, value in record.payload.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # a blank answer is not sent
            norm = re.sub(r"(?<=\.)\d+(?=\.|$)", "0", str(key))
            try:
                flat[str(key)] = _coerce(_jsonable(value), types.get(norm))
            except NotFinite as exc:
                raise AdapterError(f"{key} is {exc}, which is not a number the SIS can be sent "
                                   f"(JSON has no NaN or infinity); fix the value or its "
                                   f"mapping.") from None
        return nest(flat)

    def _is_update(self, record: ExportRecord, api: ApiDescription) -> bool:
        return bool(record.sis_id) and api.update is not None

    def _request_body(self, body: dict, api: ApiDescription, update: bool) -> Any:
        if not update and (self.array_mode or api.body_is_array):
            return [body]
        return body

    def preview(self, record: ExportRecord) -> Any:
        """Exactly the body ``export`` sends for ``record`` alone."""
        try:
            api = self._description()
        except AdapterError as exc:
            raise AdapterError(self._redact(str(exc))) from None
        update = self._is_update(record, api)
        return self._request_body(self._record_body(record, api), api, update)

    # ------------------------------------------------------------------ contract: check
    def check_connection(self) -> CheckResult:
        try:
            transport = self._get_transport()
            if transport.auth is not None:
                try:
                    transport.auth.token(transport)
                except TransportError as exc:
                    return CheckResult(False, self._redact(f"Authentication failed: {exc}"))
            api = self._description(fresh=True)
        except AdapterError as exc:
            return CheckResult(False, self._redact(str(exc)))
        notes = []
        if "{" not in api.create.path:
            path = api.create.path
            try:
                resp = transport.request("GET", self._url(path), params={"limit": 1},
                                         headers=ACCEPT_JSON, retry=False)
            except TransportError as exc:
                if exc.status is not None:  # it answered, with 5xx
                    return CheckResult(False, self._redact(
                        f"The schema was read, but the SIS is failing: {exc} Try again later; "
                        f"records are not marked as synced while it fails."))
                return CheckResult(False, self._redact(f"The schema was read, but the SIS could not "
                                                       f"be reached: {exc}"))
            if resp.status_code == 401:
                if transport.auth is not None:  # the token URL took the credentials
                    return CheckResult(False, "The schema was read, but "
                                       + transport.token_refused_message(f"GET {path}"))
                return CheckResult(False, f"The schema was read, but the SIS refused the credentials "
                                          f"(GET {path} answered HTTP 401). Check the authentication "
                                          f"settings.")
            parsed, is_json, text = self._parse(resp)
            if resp.is_success and text.strip() and not is_json:
                ctype = (resp.headers.get("Content-Type") or "no content type").split(";")[0]
                return CheckResult(False, self._redact(
                    f"The schema was read, but GET {path} answered with a body that is not JSON "
                    f"({ctype}: “{_snippet(self._redact(text))}”). Check the base URL — a proxy or login page "
                    f"may be answering instead of the API."))
            if resp.status_code == 429:
                notes.append(f"The SIS is rate limiting (GET {path} answered HTTP 429).")
            if resp.status_code == 403:
                notes.append(f"GET {path} answered HTTP 403: this client may not read "
                             f"{api.resource.lower()} records (writing may still be allowed).")
        if api.lookup is not None:
            problem = self._check_lookup(transport, api)
            if problem:
                return CheckResult(False, self._redact(problem))
        fields = api.fields
        required = api.required
        shown = ", ".join(required[:8]) + (" …" if len(required) > 8 else "")
        message = (f"Connected. {api.resource} ({api.create}): {len(fields)} fields, "
                   f"{len(required)} required{': ' + shown if required else ''}. "
                   + (f"Updates use {api.update}." if api.update else "The create operation upserts.")
                   + (f" Existing records are found with {api.lookup}." if api.lookup else "")
                   + (" " + " ".join(notes) if notes else ""))
        kind = {"openapi": "OpenAPI", "swagger": "Swagger", "jsonschema": "JSON Schema"}[api.kind]
        details = {
            "resource": api.resource,
            "schema": f"{kind} {api.version if api.kind != 'jsonschema' else ''}".strip()
                      + f" ({self._redact(api.source)})",
            "create operation": str(api.create),
            "update operation": str(api.update) if api.update else "the create operation upserts",
            "find existing record": str(api.lookup) if api.lookup else "not set",
            "fields": str(len(fields)),
            "required": ", ".join(required) or "none",
        }
        return CheckResult(True, self._redact(message), details)

    def _check_lookup(self, transport: Transport, api: ApiDescription) -> str | None:
        """Run Find existing record once with a value no record has; None when it behaves."""
        lookup = api.lookup
        path = lookup.url_path({k: "enroll-sync-check-0" for k in lookup.keys})
        shown = f"{FIND_EXISTING} (GET {path})"
        try:
            resp = transport.request("GET", self._url(path), headers=ACCEPT_JSON, retry=False)
        except TransportError as exc:
            return f"The schema was read, but {shown} failed: {exc}"
        status = resp.status_code
        parsed, is_json, text = self._parse(resp)
        if status == 404:
            if "{" in lookup.template.split("?", 1)[0]:
                return None  # /people/by-email/{email}: 404 is "no such record"
            return (f"The schema was read, but {shown} answered HTTP 404: the SIS has no such "
                    f"path. Check {FIND_EXISTING}.")
        if status in (401, 403):
            return (f"The schema was read, but {shown} answered HTTP {status}: these credentials "
                    f"may not read the records a repeated sync must find and update.")
        if not 200 <= status < 300:
            detail, _, _ = self._error_details(parsed, is_json, text, status)
            return (f"The schema was read, but {shown} answered HTTP {status}"
                    f"{': ' + detail if detail else ''}.")
        if text.strip() and not is_json:
            return (f"The schema was read, but {shown} answered with a body that is not JSON "
                    f"(“{_snippet(self._redact(text))}”).")
        outcome, value = _found_id(parsed, self._s("lookup_id_location"))
        if outcome in ("found", "ambiguous"):
            n = value if outcome == "ambiguous" else 1
            return (f"The schema was read, but {shown} found {n} record{'s' if n != 1 else ''} "
                    f"for a value no record has: the SIS seems to ignore the filter, so every "
                    f"record would be matched to the wrong student. Check the parameter name "
                    f"in {FIND_EXISTING}.")
        if outcome == "no_id":
            return (f"The schema was read, but the answer of {shown} has no list of matches "
                    f"where “Where the found record's id is” points. Set it to the JSON Pointer "
                    f"of the id, e.g. /data/0/id.")
        return None

    # ------------------------------------------------------------------ contract: export
    def export(self, records: Sequence[ExportRecord]) -> list[ExportResult]:
        records = list(records)
        if not records:
            return []
        results: list[ExportResult | None] = [None] * len(records)
        try:
            transport = self._get_transport()
            api = self._description()
            size = self._num("batch_size", 25, 1, 1000, integer=True)
        except AdapterError as exc:
            msg = self._redact(str(exc))
            return [self._failed(r, f"Not sent: {msg}", code="configuration") for r in records]

        singles: list[tuple[int, ExportRecord, Any, bool]] = []
        batched: list[tuple[int, ExportRecord, Any]] = []
        for i, record in enumerate(records):
            try:
                update = self._is_update(record, api)
                body = self._record_body(record, api)
                errors = api.validate(body, update=update)
            except AdapterError as exc:
                results[i] = self._failed(record, f"Not sent: {self._redact(str(exc))}", code="schema")
                continue
            except Exception:  # a bug, but one record must not sink the others
                log.exception("generic_rest: could not prepare record %s", record.record_id)
                results[i] = self._failed(record, "Not sent: the generic REST adapter could not "
                                                  "prepare this record (internal error).",
                                          code="internal")
                continue
            if errors:
                results[i] = self._invalid(record, errors)
                continue
            if self.array_mode and not update:
                batched.append((i, record, body))
            else:
                singles.append((i, record, body, update))

        guard = _Guard(self)

        def run(i: int, record: ExportRecord, body: Any, send) -> None:
            if guard.stop:
                results[i] = guard.held_back(record)
                return
            try:
                result, kind = send()
            except Exception:  # a bug; still exactly one honest result per record
                log.exception("generic_rest: sending record %s failed", record.record_id)
                result, kind = self._failed(record, "Not synced: the generic REST adapter failed "
                                                    "while sending this record (internal error); "
                                                    "it is not marked as synced.",
                                            code="internal", sent=body), None
            results[i] = result
            guard.note(kind, result)

        for i, record, body, update in singles:
            run(i, record, body,
                lambda record=record, body=body, update=update:
                self._send_one(transport, api, record, body, update))

        if batched and api.lookup is not None:
            # match before insert: found records are updated one by one, the rest batched
            new: list[tuple[int, ExportRecord, Any]] = []
            for i, record, body in batched:
                if guard.stop:
                    results[i] = guard.held_back(record)
                    continue
                try:
                    found, failure = self._find_existing(transport, api, record, body)
                except Exception:
                    log.exception("generic_rest: looking up record %s failed", record.record_id)
                    found, failure = None, (self._failed(
                        record, f"Not sent: the generic REST adapter failed while running "
                                f"{FIND_EXISTING} (internal error).", code="internal"), None)
                if failure is not None:
                    results[i] = failure[0]
                    guard.note(failure[1], failure[0])
                elif found is not None:
                    run(i, record, body, lambda record=record, body=body, found=found:
                        self._update_found(transport, api, record, body, found, conflict=False))
                else:
                    new.append((i, record, body))
            batched = new

        for start in range(0, len(batched), size):
            chunk = batched[start:start + size]
            if guard.stop:
                for i, record, _ in chunk:
                    results[i] = guard.held_back(record)
                continue
            try:
                out, kind, statuses = self._send_batch(transport, api, chunk)
            except Exception:
                log.exception("generic_rest: sending a batch of %d failed", len(chunk))
                out = [self._failed(record, "Not synced: the generic REST adapter failed while "
                                            "sending this batch (internal error); it is not marked "
                                            "as synced.", code="internal", sent=body)
                       for _, record, body in chunk]
                kind, statuses = None, [None] * len(chunk)
            for (i, _, _), result in zip(chunk, out):
                results[i] = result
            if kind in STOP_KINDS or kind in SLOW_KINDS:
                guard.halt(out[0])
            if api.lookup is not None:
                # an item the SIS refused as a duplicate (409): find it and update it
                for (i, record, body), status in zip(chunk, statuses):
                    if status == 409 and not guard.stop:
                        conflict = results[i]
                        run(i, record, body, lambda record=record, body=body, conflict=conflict:
                            self._resolve_conflict(transport, api, record, body, conflict))

        return [r if r is not None else
                self._failed(records[i], "Not synced: the generic REST adapter lost track of this "
                                         "record (internal error).", code="internal")
                for i, r in enumerate(results)]

    def _invalid(self, record: ExportRecord, errors: list[FieldError], what: str = "") -> ExportResult:
        first = "; ".join(f"{e.field + ': ' if e.field else ''}{e.message}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return ExportResult(
            record_id=record.record_id, outcome=Outcome.FAILED, sis_id=record.sis_id, errors=errors,
            message=f"Not sent: {what}the record does not match the SIS schema — {first}{more}.")

    @staticmethod
    def _stop_reason(result: ExportResult) -> str:
        text = result.message.replace(NOT_CONFIRMED, "").replace(SENT_AGAIN, "").strip()
        for prefix in ("Not synced: ", "Not sent: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
        if result.outcome == Outcome.RETRY:
            return f"held back because the SIS was too busy for an earlier record — {text}"
        return f"held back because the SIS failed for an earlier record — {text}"

    def _failed(self, record: ExportRecord, message: str, *, code: str, sent: Any = None,
                response: Any = None, errors: list[FieldError] | None = None) -> ExportResult:
        return ExportResult(record_id=record.record_id, outcome=Outcome.FAILED, sis_id=record.sis_id,
                            errors=list(errors or []) or [FieldError(None, code, message)],
                            message=message, sent=sent, response=response)

    # ------------------------------------------------------------------ sending
    def _send_one(self, transport: Transport, api: ApiDescription, record: ExportRecord,
                  body: Any, update: bool) -> tuple[ExportResult, str | None]:
        if update:
            return self._put(transport, api, record, body)
        if api.lookup is not None:  # match before insert
            found, failure = self._find_existing(transport, api, record, body)
            if failure is not None:
                return failure
            if found is not None:
                return self._update_found(transport, api, record, body, found, conflict=False)
        op = api.create
        sent = self._request_body(body, api, False)
        try:
            resp = transport.request(op.method, self._url(op.path), json=sent, headers=ACCEPT_JSON)
        except TransportError as exc:
            return self._from_transport_error(record, sent, exc, create=True), exc.kind
        result = self._from_response(record, sent, resp, op, False)
        if resp.status_code == 409 and api.lookup is not None:
            return self._resolve_conflict(transport, api, record, body, result)
        return result, ("auth" if resp.status_code in (401, 403) else None)

    def _put(self, transport: Transport, api: ApiDescription, record: ExportRecord,
             body: Any, *, found: bool = False) -> tuple[ExportResult, str | None]:
        """Update ``record.sis_id``. ``found``: the id comes from Find existing record a
        moment ago, not from the core's link."""
        op = api.update
        url = self._url(op.url_path(record.sis_id))
        try:
            resp = transport.request(op.method, url, json=body, headers=ACCEPT_JSON)
        except TransportError as exc:
            return self._from_transport_error(record, body, exc), exc.kind
        if resp.status_code in (404, 410):
            return self._gone(record, body, resp, op, found=found), None
        return (self._from_response(record, body, resp, op, True),
                "auth" if resp.status_code in (401, 403) else None)

    def _gone(self, record: ExportRecord, body: Any, resp, op: OperationRef, *,
              found: bool) -> ExportResult:
        """The SIS has no record with the id the update was sent to."""
        parsed, is_json, text = self._parse(resp)
        info = self._response_info(resp, parsed, is_json, text)
        detail, errors, _ = self._error_details(parsed, is_json, text, resp.status_code)
        d = f": {detail.rstrip('. ')}" if detail else ""
        field_errors = [e for _, e in errors]
        if found:
            # found by Find existing record, gone by the time it was updated: look again
            message = self._redact(
                f"Not synced: {FIND_EXISTING} found record {record.sis_id}, but it was gone when "
                f"it was updated ({op} answered HTTP {resp.status_code}{d}). Nothing was "
                f"written; it will be looked up and sent again.")
            return ExportResult(record_id=record.record_id, outcome=Outcome.RETRY,
                                action="update", message=message, sent=body, response=info,
                                errors=field_errors + [FieldError(None, "match_gone", message)])
        message = self._redact(
            f"Not synced: the SIS has no record with id {record.sis_id} any more ({op} answered "
            f"HTTP {resp.status_code}{d}): it was deleted, or the SIS was emptied or restored "
            f"from a backup. Nothing was written; it is sent again without that id, to be "
            f"matched or created anew.")
        return ExportResult(record_id=record.record_id, outcome=Outcome.NOT_FOUND,
                            action="update", message=message, sent=body, response=info,
                            errors=field_errors + [FieldError(None, "not_found", message)])

    def _resolve_conflict(self, transport: Transport, api: ApiDescription, record: ExportRecord,
                          body: Any, conflict: ExportResult) -> tuple[ExportResult, str | None]:
        """Create answered 409: the record may already be there. Find it and update it."""
        found, failure = self._find_existing(transport, api, record, body)
        if failure is not None:
            result, kind = failure
            text = result.message[len("Not synced: "):] if result.message.startswith("Not synced: ") else result.message
            result.message = f"Not synced: the SIS refused to create it (HTTP 409), and then {text}"
            result.sent = conflict.sent
            return result, kind
        if found is None:
            return conflict, None  # its message says Find existing record found nothing
        return self._update_found(transport, api, record, body, found, conflict=True)

    def _lookup_values(self, api: ApiDescription, body: Any) -> tuple[dict[str, str], str | None]:
        values: dict[str, str] = {}
        for key in api.lookup.keys:
            value = _dotted_get(body, key)
            if isinstance(value, bool):
                value = "true" if value else "false"
            if value is None or isinstance(value, (dict, list)) or not str(value).strip():
                return {}, key
            values[key] = str(value)
        return values, None

    def _find_existing(self, transport: Transport, api: ApiDescription, record: ExportRecord,
                       body: Any) -> tuple[str | None, tuple[ExportResult, str | None] | None]:
        """Ask the SIS for the record (``Find existing record``).

        (id, None) when exactly one record matched, (None, None) when none did, and
        (None, (failed result, transport kind)) when the answer cannot be trusted — the
        record is then not created, because it might already exist.
        """
        values, blank = self._lookup_values(api, body)
        if blank is not None:
            return None, (self._failed(
                record, f"Not sent: {FIND_EXISTING} matches on {blank}, which is blank for this "
                        f"record, so the SIS cannot be asked whether it already has it. Fill "
                        f"{blank} (map it, or complete the registration) or change {FIND_EXISTING}.",
                code="lookup_blank"), None)
        path = api.lookup.url_path(values)
        shown = self._redact(f"GET {path}")
        keep_out = "so the record was not created (it may already be in the SIS)"
        try:
            resp = transport.request("GET", self._url(path), headers=ACCEPT_JSON)
        except TransportError as exc:
            info = None
            if exc.response is not None:
                parsed, is_json, text = self._parse(exc.response)
                info = self._response_info(exc.response, parsed, is_json, text)
            if _busy(exc):
                message = self._redact(
                    f"Not synced: the SIS was too busy to answer {FIND_EXISTING} ({shown}): "
                    f"{exc} {SENT_AGAIN}")
                return None, (ExportResult(
                    record_id=record.record_id, outcome=Outcome.RETRY, message=message,
                    errors=[FieldError(None, "lookup_busy", message)],
                    response=_with_lookup(info, shown)), exc.kind)
            return None, (self._failed(
                record, self._redact(f"Not synced: {FIND_EXISTING} ({shown}) failed, {keep_out}: "
                                     f"{exc} Syncing it again is safe: it is looked up first."),
                code=f"lookup_{exc.kind}", response=_with_lookup(info, shown)), exc.kind)
        status = resp.status_code
        parsed, is_json, text = self._parse(resp)
        info = _with_lookup(self._response_info(resp, parsed, is_json, text), shown)
        if status == 404:
            return None, None  # "no such record" (GET /people/by-email/{email} style)
        if not 200 <= status < 300:
            detail, _, code = self._error_details(parsed, is_json, text, status)
            hint = (" Check the authentication settings and that this client may read these "
                    "records." if status in (401, 403) else "")
            return None, (self._failed(
                record, self._redact(f"Not synced: {FIND_EXISTING} ({shown}) answered HTTP {status}"
                                     f"{': ' + detail if detail else ''}, {keep_out}.{hint}"),
                code=f"lookup_{code}", response=info),
                "auth" if status in (401, 403) else None)
        if text.strip() and not is_json:
            ctype = (resp.headers.get("Content-Type") or "no content type").split(";")[0]
            return None, (self._failed(
                record, self._redact(f"Not synced: {FIND_EXISTING} ({shown}) answered with a body "
                                     f"that is not JSON ({ctype}: “{_snippet(self._redact(text))}”), {keep_out}."),
                code="lookup_not_json", response=info), None)
        pointer = self._s("lookup_id_location")
        outcome, value = _found_id(parsed, pointer)
        if outcome == "found":
            return value, None
        if outcome == "none":
            return None, None
        if outcome == "ambiguous":
            message = (f"Not synced: {FIND_EXISTING} ({shown}) found {value} records in the SIS, "
                       f"and which one is this student is not guessed; {keep_out}. Match on a "
                       f"field that is unique, or merge the duplicates in the SIS.")
        else:
            where = pointer or "the first match's \"id\""
            message = (f"Not synced: {FIND_EXISTING} ({shown}) answered, but there is no id at "
                       f"{where} in its answer; {keep_out}. Set “Where the found record's id "
                       f"is” to the JSON Pointer of the id.")
        return None, (self._failed(record, self._redact(message), code=f"lookup_{outcome}",
                                   response=info), None)

    def _update_found(self, transport: Transport, api: ApiDescription, record: ExportRecord,
                      body: Any, found_id: str, *, conflict: bool) -> tuple[ExportResult, str | None]:
        """Update the record ``Find existing record`` found, reporting it with its id."""
        found = dataclasses.replace(record, sis_id=found_id)
        how = (f"creating it answered HTTP 409, so {FIND_EXISTING} looked it up"
               if conflict else f"{FIND_EXISTING} found it")
        try:
            errors = api.validate(body, update=True)
        except AdapterError as exc:
            return self._failed(found, f"Not sent: {self._redact(str(exc))}", code="schema"), None
        if errors:
            return self._invalid(found, errors, f"{how} (id {found_id}), but "), None
        result, kind = self._put(transport, api, found, body, found=True)
        if result.ok:
            result.message = self._redact(f"{how} in the SIS (id {found_id}): {result.message}")
            result.action = "update"
            result.matched_by = self._lookup_label(api)
        elif result.outcome == Outcome.RETRY:
            pass  # its message says what happened
        else:
            text = result.message
            for prefix in ("Not synced: ", "Not sent: "):
                if text.startswith(prefix):
                    text = text[len(prefix):]
            result.message = self._redact(f"Not synced: {how} in the SIS (id {found_id}), but "
                                          f"updating it failed — {text}")
        return result, kind

    def _send_batch(self, transport: Transport, api: ApiDescription,
                    chunk: list[tuple[int, ExportRecord, Any]]
                    ) -> tuple[list[ExportResult], str | None, list[int | None]]:
        """(one result per record, transport kind, each record's own HTTP status when the
        answer gave one)."""
        op = api.create
        bodies = [b for _, _, b in chunk]
        none = [None] * len(chunk)
        try:
            resp = transport.request(op.method, self._url(op.path), json=bodies, headers=ACCEPT_JSON)
        except TransportError as exc:
            return ([self._from_transport_error(r, b, exc, create=True) for _, r, b in chunk],
                    exc.kind, none)
        status = resp.status_code
        parsed, is_json, text = self._parse(resp)
        response_info = self._response_info(resp, parsed, is_json, text)
        out: list[ExportResult] = []
        if 200 <= status < 300:
            if text.strip() and not is_json:
                message = self._not_json_message(resp, text)
                return [self._failed(r, message, code="not_json", sent=b, response=response_info)
                        for _, r, b in chunk], None, none
            items = parsed if isinstance(parsed, list) and len(parsed) == len(chunk) else None
            if items is None:
                return [self._unconfirmed(record, body, status, parsed, api, response_info)
                        for _, record, body in chunk], None, none
            statuses: list[int | None] = []
            for n, (_, record, body) in enumerate(chunk):
                result, item_status = self._batch_item_result(record, body, status, items[n],
                                                              response_info, api)
                out.append(result)
                statuses.append(item_status)
            return out, None, statuses
        detail, errors, code = self._error_details(parsed, is_json, text, status)
        by_index: dict[int, list[FieldError]] = {}
        unplaced: list[FieldError] = []
        for index, err in errors:
            if index is not None and 0 <= index < len(chunk):
                by_index.setdefault(index, []).append(err)
            else:
                unplaced.append(err)
        base = self._status_message(status, op, None, detail, api)
        for n, (_, record, body) in enumerate(chunk):
            mine = by_index.get(n)
            if mine:
                msg = (f"Not synced: the SIS refused this record (HTTP {status}): "
                       + "; ".join(f"{e.field + ': ' if e.field else ''}{e.message}" for e in mine[:3]))
                out.append(self._failed(record, self._redact(msg), code=code, sent=body,
                                        response=response_info, errors=mine + unplaced))
            elif by_index:
                msg = (f"Not synced: the SIS refused the whole batch because of other records "
                       f"(HTTP {status}); send it again once they are fixed.")
                out.append(self._failed(record, msg, code="batch_refused", sent=body, response=response_info))
            else:
                out.append(self._failed(record, self._redact(base), code=code, sent=body,
                                        response=response_info, errors=unplaced))
        kind = "auth" if status in (401, 403) else None
        return out, kind, none

    def _unconfirmed(self, record: ExportRecord, body: Any, status: int, parsed: Any,
                     api: ApiDescription, response_info: dict) -> ExportResult:
        """A 2xx answer to a batch that cannot be matched to its records item by item."""
        if isinstance(parsed, list):
            shape = f"its answer lists {len(parsed)} item{'s' if len(parsed) != 1 else ''} for the batch"
        elif parsed is None:
            shape = "its answer is empty"
        else:
            shape = "its answer is not a list with one item per record"
        if api.lookup is not None:
            after = (f"Syncing again is safe: {FIND_EXISTING} will find it and update it if the "
                     f"SIS saved it.")
        else:
            after = (f"A retry may create a duplicate unless {FIND_EXISTING} is set, so check in "
                     f"the SIS before syncing it again.")
        message = (f"Not synced: the SIS accepted the request (HTTP {status}) but did not confirm "
                   f"this record ({shape}), so it is not marked as synced. Check in the SIS "
                   f"whether it was saved. {after}")
        return self._failed(record, message, code="unconfirmed", sent=body, response=response_info)

    def _batch_item_result(self, record: ExportRecord, body: Any, status: int, item: Any,
                           response_info: dict, api: ApiDescription) -> tuple[ExportResult, int | None]:
        response_info = {k: v for k, v in response_info.items() if k != "body"}
        item_status = None
        if isinstance(item, dict):
            raw = item.get("status", item.get("statusCode", item.get("code")))
            if isinstance(raw, int) and not isinstance(raw, bool):
                item_status = raw
            elif isinstance(raw, str) and raw.isdigit():
                item_status = int(raw)
            failed = (item_status is not None and not 200 <= item_status < 300) or (
                item_status is None and (item.get("errors") or item.get("error")))
            if failed:
                s = item_status or status
                detail, errors, code = self._error_details(item, True, "", s)
                msg = self._status_message(s, api.create, None, detail, api)
                return self._failed(record, self._redact(msg), code=code, sent=body,
                                    response={**response_info, "item": self._redact_obj(item)},
                                    errors=[e for _, e in errors]), item_status
        sis_id = self._id_from(None, item)
        s = item_status or status
        action = "insert" if s == 201 else ("update" if api.update is None and s == 200 else None)
        message = f"Sent to the SIS in a batch (HTTP {s})" + (f"; id {sis_id}." if sis_id else
                                                               "; the answer carried no id for it.")
        return ExportResult(record_id=record.record_id, outcome=Outcome.SUCCEEDED, sis_id=sis_id,
                            action=action, message=message, sent=body,
                            response={**response_info, "item": self._redact_obj(item)},
                            matched_by=self._natural_key_label(api) if action == "update"
                            else None), item_status

    # ------------------------------------------------------------------ reading answers
    @staticmethod
    def _parse(resp) -> tuple[Any, bool, str]:
        text = resp.text or ""
        if not text.strip():
            return None, False, text
        try:
            return resp.json(), True, text
        except ValueError:
            return None, False, text

    def _response_info(self, resp, parsed: Any, is_json: bool, text: str) -> dict:
        info: dict[str, Any] = {"status": resp.status_code}
        location = resp.headers.get("Location")
        if location:
            info["location"] = self._redact(location)
        if is_json:
            info["body"] = self._redact_obj(parsed)
        elif text.strip():
            info["body_text"] = self._redact(_snippet(self._redact(text), 500))
            info["content_type"] = resp.headers.get("Content-Type", "")
        return info

    def _id_from(self, resp, parsed: Any) -> str | None:
        where = self._s("id_location", LOCATION_HEADER)
        value = None
        if not _is_location(where) and parsed is not None:
            found = _pointer_get(parsed, where)
            if isinstance(found, (str, int)) and not isinstance(found, bool) and str(found) != "":
                value = str(found)
        if value is None and resp is not None:
            location = resp.headers.get("Location")
            if location:
                segments = [s for s in urlsplit(location).path.split("/") if s]
                if segments:
                    value = unquote(segments[-1])
        return value

    def _not_json_message(self, resp, text: str) -> str:
        ctype = (resp.headers.get("Content-Type") or "no content type").split(";")[0]
        return self._redact(
            f"Not synced: the SIS answered HTTP {resp.status_code} with a body that is not JSON "
            f"({ctype}: “{_snippet(self._redact(text))}”), so the record is not marked as synced. Check the base "
            f"URL and the operation — a proxy or login page may be answering instead of the API.")

    def _error_details(self, parsed: Any, is_json: bool, text: str,
                       status: int) -> tuple[str, list[tuple[int | None, FieldError]], str]:
        """(detail, [(batch index, FieldError)], code) from an error body of any shape."""
        code = f"http_{status}"
        detail = ""
        errors: list[tuple[int | None, FieldError]] = []

        def add_map(mapping: dict, err_code: str) -> None:
            for key, msgs in mapping.items():
                index, fname = json_path_to_field(key)
                for m in (msgs if isinstance(msgs, list) else [msgs]):
                    if isinstance(m, dict):
                        m = m.get("message") or m.get("detail") or str(m)
                    errors.append((index, FieldError(fname, err_code, self._redact(str(m)))))

        def add_list(items: list, err_code: str) -> None:
            for e in items:
                if isinstance(e, str):
                    errors.append((None, FieldError(None, err_code, self._redact(e))))
                elif isinstance(e, dict):
                    source = e.get("source") if isinstance(e.get("source"), dict) else {}
                    where = (e.get("field") or e.get("path") or e.get("pointer")
                             or e.get("property") or source.get("pointer"))
                    index, fname = (None, None)
                    if isinstance(where, str) and where:
                        if where.startswith("/"):
                            parts = [p for p in where.split("/") if p]
                            if parts[:2] == ["data", "attributes"]:
                                parts = parts[2:]
                            where = ".".join(parts)
                        index, fname = json_path_to_field(where)
                    msg = e.get("message") or e.get("detail") or e.get("title") or e.get("description") or str(e)
                    ecode = e.get("code") if isinstance(e.get("code"), str) else err_code
                    errors.append((index, FieldError(fname, ecode, self._redact(str(msg)))))

        if is_json and isinstance(parsed, dict):
            for key in ("type", "code", "error"):
                if isinstance(parsed.get(key), str) and parsed[key]:
                    code = parsed[key]
                    break
            for key in ("detail", "message", "error_description", "title", "error"):
                val = parsed.get(key)
                if isinstance(val, str) and val.strip():
                    detail = val.strip()
                    break
                if isinstance(val, dict) and isinstance(val.get("message"), str):
                    detail = val["message"]
                    break
            if isinstance(parsed.get("validationErrors"), dict):
                add_map(parsed["validationErrors"], "validation")
            errs = parsed.get("errors")
            if isinstance(errs, dict):
                add_map(errs, "validation")
            elif isinstance(errs, list):
                add_list(errs, code)
        elif is_json and isinstance(parsed, list):
            add_list(parsed, code)
        elif is_json and isinstance(parsed, str):
            detail = parsed
        elif text.strip():
            detail = f"the body is not JSON: “{_snippet(self._redact(text))}”"
        return self._redact(detail)[:500], errors, code

    def _status_message(self, status: int, op: OperationRef, sis_id: str | None, detail: str,
                        api: ApiDescription | None = None) -> str:
        detail = detail.rstrip(". ") if detail and not detail.endswith("…") else detail
        d = f": {detail}" if detail else ""
        if status == 409 and api is not None and op == api.create and api.update is not None:
            # the create operation does not upsert: a conflict is usually "already there"
            if api.lookup is None:
                return (f"Not synced: conflict in the SIS (HTTP 409){d}. The record probably "
                        f"already exists in the SIS; set {FIND_EXISTING} so a repeated sync "
                        f"updates it. Not retried.")
            return (f"Not synced: conflict in the SIS (HTTP 409){d}. {FIND_EXISTING} "
                    f"({api.lookup}) found no matching record, so nothing was updated either. "
                    f"Not retried: fix the data or the records it refers to, then sync again.")
        if status in (400, 422):
            return f"Not synced: the SIS refused the record (HTTP {status}){d}"
        if status == 401:
            if self._transport is not None and self._transport.auth is not None:
                # OAuth2: the token URL accepted the credentials, the API refused its tokens
                return "Not synced: " + self._transport.token_refused_message(str(op))
            return (f"Not synced: the SIS refused the credentials (HTTP 401){d}. Check the "
                    f"authentication settings.")
        if status == 403:
            return (f"Not synced: the SIS does not allow {op} for these credentials "
                    f"(HTTP 403){d}.")
        if status == 404:
            if sis_id:
                return (f"Not synced: the SIS has no record with id {sis_id} (HTTP 404){d}. It may "
                        f"have been deleted; clear the student's SIS id to create it again.")
            return (f"Not synced: the SIS has no {op} (HTTP 404){d}. Check the base URL and the "
                    f"operation.")
        if status == 405:
            return f"Not synced: the SIS does not accept {op} (HTTP 405){d}."
        if status == 409:
            return (f"Not synced: conflict in the SIS (HTTP 409){d}. Not retried: fix the data or "
                    f"the records it refers to, then sync again.")
        if status == 412:
            return (f"Not synced: the record was changed in the SIS meanwhile (HTTP 412){d}. Not "
                    f"retried: sync again to send the current data.")
        if 300 <= status < 400:
            return (f"Not synced: the SIS answered a redirect (HTTP {status}) instead of accepting "
                    f"the record. Check the base URL (https, host, path).")
        return f"Not synced: the SIS answered HTTP {status}{d}."

    def _from_response(self, record: ExportRecord, body: Any, resp, op: OperationRef,
                       update: bool) -> ExportResult:
        api = self._description()
        status = resp.status_code
        parsed, is_json, text = self._parse(resp)
        info = self._response_info(resp, parsed, is_json, text)
        if 200 <= status < 300:
            if text.strip() and not is_json:
                return self._failed(record, self._not_json_message(resp, text), code="not_json",
                                    sent=body, response=info)
            sis_id = self._id_from(resp, parsed)
            if update:
                sis_id = sis_id or record.sis_id
                action = "update"
            elif status == 201:
                action = "insert"
            elif api.update is None:
                action = "update"  # the create operation upserts: 200 means it matched a student
            else:
                action = None
            matched_by = (self._natural_key_label(api)
                          if action == "update" and not update else None)
            verb = {"insert": "Created", "update": "Updated"}.get(action or "", "Accepted")
            message = f"{verb} in the SIS (HTTP {status})"
            if matched_by:
                message = f"Updated the record the SIS matched by {matched_by} (HTTP {status})"
            if sis_id:
                message += f"; id {sis_id}."
            else:
                where = self._s("id_location", LOCATION_HEADER)
                message += (f"; the answer carried no id (looked in the "
                            f"{'Location header' if _is_location(where) else 'body at ' + where}).")
            return ExportResult(record_id=record.record_id, outcome=Outcome.SUCCEEDED,
                                sis_id=sis_id, action=action, message=self._redact(message),
                                sent=body, response=info, matched_by=matched_by)
        detail, errors, code = self._error_details(parsed, is_json, text, status)
        message = self._status_message(status, op, record.sis_id if update else None, detail, api)
        return self._failed(record, self._redact(message), code=code, sent=body, response=info,
                            errors=[e for _, e in errors])

    def _from_transport_error(self, record: ExportRecord, body: Any, exc: TransportError, *,
                              create: bool = False) -> ExportResult:
        info = None
        errors: list[FieldError] = []
        if exc.response is not None:
            parsed, is_json, text = self._parse(exc.response)
            info = self._response_info(exc.response, parsed, is_json, text)
            _, pairs, _ = self._error_details(parsed, is_json, text, exc.response.status_code)
            errors = [e for _, e in pairs]
        if _busy(exc):
            # 429/503 until the retries ran out: "not now", and by HTTP's rules nothing written
            message = self._redact(f"Not synced: the SIS was too busy to take it: {exc} "
                                   f"{SENT_AGAIN}")
            return ExportResult(record_id=record.record_id, outcome=Outcome.RETRY, sent=body,
                                response=info, message=message,
                                errors=errors + [FieldError(None, f"transport_{exc.kind}", message)])
        message = self._redact(f"Not synced: {exc}")
        if exc.kind == "retries":
            message += " " + NOT_CONFIRMED
        if exc.kind in ("retries", "timeout", "unreachable"):
            message += " " + self._maybe_saved_note(create)
        return self._failed(record, message, code=f"transport_{exc.kind}", sent=body,
                            response=info, errors=errors)

    def _maybe_saved_note(self, create: bool) -> str:
        """What an admin should know about a record the SIS may or may not have saved."""
        if not create:
            return ("The SIS may have saved it before the answer was lost; syncing again is safe "
                    "(it updates the same record).")
        api = self._api
        if api is not None and api.lookup is not None:
            return (f"The SIS may have saved it before the answer was lost; syncing again is "
                    f"safe: {FIND_EXISTING} looks it up first and updates it if it is there.")
        if api is not None and api.update is None:
            return ("The SIS may have saved it before the answer was lost; syncing again is safe: "
                    "the create operation matches it by its natural key.")
        return (f"The SIS may have saved it before the answer was lost. Check in the SIS before "
                f"syncing it again: without {FIND_EXISTING} a second sync may create a duplicate.")

    # ------------------------------------------------------------------ matched_by
    @staticmethod
    def _labels(api: ApiDescription) -> dict[str, str]:
        return {f.key: f.label for s in api.sections for f in s.fields}

    def _lookup_label(self, api: ApiDescription) -> str:
        """matched_by for a record Find existing record found: the fields it matched on."""
        labels = self._labels(api)
        keys = list(api.lookup.keys) if api.lookup is not None else []
        return " and ".join(labels.get(k, k) for k in keys) or FIND_EXISTING

    def _natural_key_label(self, api: ApiDescription) -> str:
        """matched_by for a record an upserting create matched (Ed-Fi's natural key)."""
        names = [f.label for s in api.sections for f in s.fields
                 if "natural key" in (f.help or "")]
        return f"{' and '.join(names)} (natural key)" if names else "natural key"

    # ------------------------------------------------------------------ lifecycle
    # ------------------------------------------------------------------ import (SIS -> Enroll)
    @classmethod
    def import_settings_schema(cls) -> list[SettingField]:
        """The settings an import reads (each has a default that suits Ed-Fi)."""
        return [
            SettingField("list_operation", "List operation (import)",
                         help="The GET that lists students, paged with limit and offset, e.g. "
                              "GET /data/v3/ed-fi/students. Blank: GET on the create operation's path."),
            SettingField("list_page_size", "Students per page (import)", "integer", default=100, min=1,
                         max=1000, help="The limit of each list request (Ed-Fi allows up to 500)."),
            SettingField("list_id_field", "Student id field (import)", default="id",
                         help="Where a listed student's id is (a dotted path): the id exports link to."),
            SettingField("list_school_field", "School field (import)",
                         help="Optional: where a listed student's school number is (a dotted path). "
                              "Blank: every student is imported."),
            SettingField("change_versions_path", "Change versions (import)",
                         default=CHANGE_VERSIONS,
                         help="Ed-Fi change queries: the path that answers {\"newestChangeVersion\": n}. "
                              "When it answers, later imports read only what changed "
                              "(minChangeVersion/maxChangeVersion). \"off\", or not found: every "
                              "import reads every student."),
        ]

    def _list_op(self):
        text = self._s("list_operation")
        if text:
            op = parse_operation(text, "List operation", allow_placeholder=False)
        else:
            create = parse_operation(self._s("create_operation"), "Create operation", allow_placeholder=False)
            if create is None:
                raise AdapterError("Set the list operation (or the create operation) to import students.")
            op = OperationRef("GET", create.path)
        if op.method != "GET":
            raise AdapterError(f"The list operation must be a GET, not {op}.")
        return op

    def import_fields(self) -> list[FieldSection]:
        """The student schema's fields (those an export writes), plus the record's id."""
        sections = self.target_fields()
        id_field = self._s("list_id_field", "id")
        keys = {f.key for sec in sections for f in sec.fields}
        if id_field in keys:
            return sections
        return [FieldSection("record", "SIS record", (TargetField(id_field, "Record id",
                                                                     help="The id Enroll links to."),)),
                *sections]

    def _newest_change_version(self, transport: Transport) -> tuple[int | None, int | None]:
        """(oldest, newest) change versions, or (None, None) when the SIS offers none."""
        path = self._s("change_versions_path", CHANGE_VERSIONS)
        if not path or path.lower() in ("none", "off", "-"):
            return None, None
        try:
            resp = transport.request("GET", self._url(path), headers=ACCEPT_JSON)
        except TransportError as exc:
            if exc.status is not None and exc.status < 500:
                return None, None
            raise AdapterError(self._redact(f"Could not read the change versions: {exc}")) from None
        if resp.status_code >= 400:
            return None, None
        body, is_json, _ = self._parse(resp)
        if not is_json or not isinstance(body, dict):
            return None, None
        newest, oldest = body.get("newestChangeVersion"), body.get("oldestChangeVersion")
        if isinstance(newest, bool) or not isinstance(newest, int):
            return None, None
        return (oldest if isinstance(oldest, int) and not isinstance(oldest, bool) else 0), newest

    def _listed(self, item: Any) -> SISStudent | None:
        if not isinstance(item, dict):
            return None
        sis_id = _scalar_id(_dotted_get(item, self._s("list_id_field", "id")))
        if sis_id is None:
            return None
        body = {k: v for k, v in item.items() if k not in ("_etag", "_lastModifiedDate", "link")}
        school_field = self._s("list_school_field")
        school = _dotted_get(item, school_field) if school_field else None
        return SISStudent(sis_id, flatten(body), None if school in (None, "") else str(school))

    def list_students(self, *, since: str | None = None, page_size: int | None = None,
                      cursor: str | None = None):
        """The list operation paged with ``limit``/``offset`` (``totalCount=true``: the
        ``Total-Count`` header). With Ed-Fi change queries, a pass reads the window up to
        the newest change version at its start (kept as the marker); given ``since``, only
        ``minChangeVersion=since+1`` to that newest. The cursor is "offset:min:max:marker"."""
        try:
            op = self._list_op()
            transport = self._get_transport()
            size = self._num("list_page_size", 100, 1, 1000, integer=True)
        except AdapterError as exc:
            raise AdapterError(self._redact(str(exc))) from None
        if page_size:
            size = max(1, min(int(page_size), size))
        if cursor:
            try:
                off, lo, hi, marker = (str(cursor).split(":") + ["", "", ""])[:4]
                offset = int(off)
                lo_v, hi_v = (int(lo) if lo else None), (int(hi) if hi else None)
                marker = marker or None
            except ValueError:
                raise AdapterError(f"Cannot continue an import from {cursor!r}: start it again.") from None
        else:
            offset, lo_v, hi_v, marker = 0, None, None, None
            oldest, newest = self._newest_change_version(transport)
            if newest is not None:
                marker = str(newest)
                try:
                    known = int(since) if since not in (None, "") else None
                except ValueError:
                    known = None
                if known is not None and known >= (oldest or 0):
                    lo_v, hi_v = known + 1, newest
        while True:
            params: dict[str, Any] = {"limit": size, "offset": offset, "totalCount": "true"}
            if lo_v is not None:
                params.update(minChangeVersion=lo_v, maxChangeVersion=hi_v)
            where = f"{op} (offset {offset:,}, limit {size})"
            try:
                resp = transport.request("GET", self._url(op.path), params=params, headers=ACCEPT_JSON)
            except TransportError as exc:
                raise AdapterError(self._redact(f"{where} could not be read: {exc}")) from None
            body, is_json, text = self._parse(resp)
            if resp.status_code >= 400:
                detail = self._error_details(body, is_json, text, resp.status_code)[0]
                raise AdapterError(self._redact(f"{where} answered HTTP {resp.status_code}"
                                                f"{': ' + str(detail) if detail else '.'}"))
            if not is_json:
                raise AdapterError(self._redact(f"{where} did not answer JSON: {_snippet(text)}"))
            items = body
            if isinstance(body, dict):
                key = next((k for k in LIST_KEYS if isinstance(body.get(k), list)), None)
                items = body.get(key) if key else None
            if not isinstance(items, list):
                raise AdapterError(f"{where} did not answer a list of students.")
            total_text = resp.headers.get("Total-Count")
            total = int(total_text) if total_text and total_text.strip().isdigit() else None
            students = [st for st in (self._listed(i) for i in items) if st is not None]
            offset += len(items)
            last = len(items) < size or not items
            next_cursor = None if last else (f"{offset}:{'' if lo_v is None else lo_v}:"
                                             f"{'' if hi_v is None else hi_v}:{marker or ''}")
            yield StudentPage(students, total, next_cursor, marker)
            if last:
                return

    def get_student(self, sis_id: str):
        """One student: GET {list path}/{id} (Ed-Fi reads a resource by its id), or None."""
        from urllib.parse import quote
        op = self._list_op()
        try:
            resp = self._get_transport().request("GET", self._url(op.path.rstrip("/") + "/" + quote(str(sis_id), safe="")),
                                                  headers=ACCEPT_JSON)
        except TransportError as exc:
            raise AdapterError(self._redact(f"Could not read student {sis_id}: {exc}")) from None
        if resp.status_code in (400, 404):
            return None
        body, is_json, text = self._parse(resp)
        if resp.status_code >= 400 or not is_json:
            raise AdapterError(self._redact(f"Reading student {sis_id} answered HTTP {resp.status_code}."))
        return self._listed(body)

    def close(self) -> None:
        with self._lock:
            for t in (self._transport, self._plain):
                if t is not None:
                    t.close()
            self._transport = self._plain = None
