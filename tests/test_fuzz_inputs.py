"""Fuzz every form and every query parameter with hostile input: NUL bytes, strings
longer than any column, numbers no column holds, unicode of every kind, invalid UTF-8.
On SQLite and on PostgreSQL (which refuses NULs and over-long strings with an
exception) the answer must never be a 500: a page, a redirect or a clear message.

Nothing here lists routes or fields by hand:

- the routes are the app's URL map (ids filled in by ``sample_args``);
- a POST route's fields are those of the forms (``<form>`` and ``hx-post``) found on
  every GET page, signed in as a District Admin and signed out; a route no page posts to
  gets the names its module reads from ``request.form``;
- a GET route's query parameters are those of every GET form plus every name the web
  layer reads from ``request.args``.

So a new form or parameter is fuzzed the day it is added. The values come from a seeded
generator (``ENROLL_SYNC_FUZZ_SEED`` to replay a run).
"""
from __future__ import annotations

import inspect
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from enroll_sync.models import SyncConnection
from enroll_sync.testing import LiveServer, Session, db, sign_in
from tests.test_permissions import sample_args
from tests.test_sync_support import FAST, BACKENDS, backend_app, connect_to_sandbox, sandbox  # noqa: F401

SEED = int(os.environ.get("ENROLL_SYNC_FUZZ_SEED", "20261201"))
SKIP_ENDPOINTS = {"auth.logout", "static"}  # signing out would end the fuzzing session
WEB = Path(__file__).resolve().parents[1] / "enroll_sync" / "web"


# --------------------------------------------------------------------------- the values

#: one of each kind goes to every field at once; per field, one text and one number
CLASSICS = {
    "nul": "a\x00b",                     # PostgreSQL refuses a NUL in any text
    "long": "x" * 300,                   # over varchar(255)
    "long_unicode": "é" * 256,           # over 255 characters, 512 bytes
    "huge": "9" * 40,                    # no integer column holds it
    "int_past": "2147483648",            # one past PostgreSQL's integer
    "inf": "1e309",                      # float('inf') when parsed
    "unicode": "Zoë 🎓 \u202eمرحبا\u0301 \ufeff\u200b",
    "bad_utf8": "\udcff\udcfe",          # sent as the bytes FF FE: invalid UTF-8
}
LONG_TEXTS = ("long", "long_unicode")
NUMBERS = ("huge", "int_past", "inf")
ALPHABET = ["a", "7", "-", " ", "\x00", "\u0301", "é", "🎓", "\u202e", "'", '"', "<", "%", "\n", "\t"]


def random_value(rng: random.Random) -> str:
    """A random string of the same kinds: long or short, NULs and unicode mixed in."""
    if rng.random() < 0.2:
        return str(rng.randint(2**31, 2**70) * rng.choice([1, -1]))
    n = rng.choice([1, 50, 256, 1000, 5000])
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def hostile_values(rng: random.Random) -> list[str]:
    return list(CLASSICS.values()) + [random_value(rng) for _ in range(2)]


def field_values(rng: random.Random) -> list[str]:
    """What one field gets while the rest of the form is plausible: a text longer than
    any varchar column, and a number no integer column holds (a NUL is refused before
    any view runs, which every-field-at-once proves)."""
    text = CLASSICS[rng.choice(LONG_TEXTS)]
    if rng.random() < 0.3:
        text = "".join(rng.choice(ALPHABET[:4] + ALPHABET[5:]) for _ in range(rng.choice([256, 1000, 5000])))
    return [text, CLASSICS[rng.choice(NUMBERS)]]


def encode(pairs) -> bytes:
    return urlencode(pairs, encoding="utf-8", errors="surrogateescape").encode("ascii")


# --------------------------------------------------------------------------- reading pages

class FormParser(HTMLParser):
    """Every form of a page (action, method, fields with their values) and every
    element that posts with ``hx-post`` (with its enclosing form's fields)."""

    def __init__(self, page_url: str):
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.forms: list[dict] = []
        self._stack: list[dict] = []
        self._select: str | None = None
        self._option: tuple | None = None
        self.hx_posts: list[tuple[str, int | None]] = []
        self.query_names: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            form = {"action": a.get("hx-post") or a.get("action") or self.page_url,
                    "method": "post" if a.get("hx-post") else (a.get("method") or "get").lower(),
                    "fields": [], "files": set(), "buttons": []}
            self.forms.append(form)
            self._stack.append(form)
        elif a.get("hx-post") or (a.get("formaction") and (a.get("formmethod") or "").lower() == "post"):
            self.hx_posts.append((a.get("hx-post") or a["formaction"], len(self.forms) - 1 if self._stack else None))
        for attr in ("href", "hx-get"):
            if a.get(attr) and "?" in a[attr]:
                self.query_names |= {n for n, _ in parse_qsl(urlsplit(a[attr]).query, keep_blank_values=True)}
        form = self._stack[-1] if self._stack else None
        if form is None or tag not in ("input", "select", "textarea", "button", "option"):
            return
        name = a.get("name")
        if tag == "option" and self._select is not None:
            if "value" not in a:  # <option>K</option>: its text is its value
                self._option = (form, "selected" in a)
                return
            self._add_option(form, a["value"], "selected" in a)
            return
        if not name:
            return
        kind = (a.get("type") or "text").lower()
        if tag == "select":
            self._select = name
            form["fields"].append((name, None))  # its selected option, if any, fills it in
        elif tag == "textarea":
            form["fields"].append((name, ""))
        elif tag == "button" or kind == "submit":
            form["buttons"].append((name, a.get("value", "")))
        elif kind == "file":
            form["files"].add(name)
        elif kind in ("checkbox", "radio"):
            if "checked" in a:
                form["fields"].append((name, a.get("value", "on")))
            else:
                form.setdefault("unchecked", []).append((name, a.get("value", "on")))
        else:
            form["fields"].append((name, a.get("value", "")))

    def _add_option(self, form, value, selected):
        form.setdefault("options", {}).setdefault(self._select, []).append(value)
        if selected:
            form["fields"] = [(n, value if n == self._select and v is None else v) for n, v in form["fields"]]

    def handle_data(self, data):
        if self._option is not None:
            form, selected = self._option
            self._option = None
            self._add_option(form, data.strip(), selected)

    def handle_endtag(self, tag):
        if tag == "form" and self._stack:
            self._stack.pop()
        elif tag == "select":
            self._select = None


def plausible(name: str, n: int) -> str:
    """A value that passes the usual checks, for a field the page left empty."""
    low = name.lower()
    if "email" in low:
        return f"fuzz{n}@example.org"
    if "password" in low or "secret" in low:
        return "correct-horse-battery"
    if "url" in low:
        return "http://127.0.0.1:9"
    if low.endswith(("_id", "ids", "upto", "version")):
        return "1"
    return f"Fuzz {n}"


def source_names(module_source: str, what: str) -> set[str]:
    return set(re.findall(rf"request\.{what}\.get(?:list)?\(\s*[\"']([^\"']+)[\"']", module_source))


def web_sources() -> str:
    return "\n".join(p.read_text() for p in sorted(WEB.rglob("*.py")))


def rule_path(rule, args) -> str:
    path = rule.rule
    for a in rule.arguments:
        for form in (f"<{a}>", f"<int:{a}>", f"<string:{a}>", f"<path:{a}>"):
            path = path.replace(form, str(args[a]))
    return path


def discover(app, admin, anon, connection_id: int):
    """(GET paths, query names, POST targets: endpoint -> {"path", "fields", ...})."""
    args = {**sample_args(app), "filename": "app.css", "connection_id": connection_id}
    adapter = app.url_map.bind("localhost")
    gets, posts = [], {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP_ENDPOINTS:
            continue
        if "GET" in rule.methods:
            gets.append((rule.endpoint, rule_path(rule, args)))
        if "POST" in rule.methods:
            posts[rule.endpoint] = {"path": rule_path(rule, args), "fields": [], "files": set(), "buttons": [],
                                    "unchecked": [], "options": {}, "from_page": False}
    pages = [(anon, "/login")] + [(admin, p) for e, p in gets if e not in ("auth.login",)]
    get_names = set()
    for session, path in pages:
        r = session.get(path)
        if r.status_code != 200 or "html" not in r.headers.get("content-type", ""):
            continue
        parser = FormParser(path)
        parser.feed(r.text)
        get_names |= parser.query_names
        targets = [(f["action"], f) for f in parser.forms]
        targets += [(url, parser.forms[i] if i is not None else None) for url, i in parser.hx_posts]
        for action, form in targets:
            if form is not None and form["method"] == "get":
                get_names |= {n for n, _ in form["fields"]}
                continue
            try:
                endpoint, _ = adapter.match(urlsplit(action).path, method="POST")
            except Exception:
                continue
            if endpoint not in posts:
                continue
            target = posts[endpoint]
            if not target["from_page"]:
                target.update(path=urlsplit(action).path, from_page=True)
            if form is not None:
                seen = {n for n, _ in target["fields"]}
                target["fields"] += [(n, v) for n, v in form["fields"] if n not in seen]
                target["files"] |= form["files"]
                target["buttons"] += [b for b in form["buttons"] if b not in target["buttons"]]
                target["unchecked"] += form.get("unchecked", [])
                for k, opts in form.get("options", {}).items():
                    target["options"].setdefault(k, opts)
    sources = web_sources()
    get_names |= source_names(sources, "args") | {"page"}
    for endpoint, target in posts.items():
        if not target["fields"]:
            module = inspect.getmodule(app.view_functions[endpoint])
            names = source_names(inspect.getsource(module), "form") if module else set()
            target["fields"] = [(n, "") for n in sorted(names)]
    return gets, sorted(get_names), posts


# --------------------------------------------------------------------------- fuzzing

def baseline(target: dict) -> list[tuple[str, str]]:
    """The form as the page offers it, empty fields filled with plausible values,
    unchecked boxes checked, the first submit button pressed."""
    out, n = [], 0
    for name, value in target["fields"] + target["unchecked"]:
        if value is None:
            value = next((o for o in target["options"].get(name, []) if o), "")
        if value == "" and name in target["options"]:
            value = next((o for o in target["options"][name] if o), "")
        if value == "" and name != "csrf_token":
            n += 1
            value = plausible(name, n)
        out.append((name, value))
    if target["buttons"]:
        out.append(target["buttons"][0])
    return out


def field_names(target: dict, rng: random.Random, most: int = 10) -> list[str]:
    """The fields to fuzz one at a time: all, or for a form of hundreds of fields (the
    Field Mapping editor) one of each kind (the part of the name after the last ``|``)."""
    names = []
    for name, _ in target["fields"] + target["unchecked"] + target["buttons"]:
        if name != "csrf_token" and name not in names:
            names.append(name)
    if len(names) <= most:
        return names
    by_kind: dict[str, list[str]] = {}
    for name in names:
        by_kind.setdefault(name.rsplit("|", 1)[-1], []).append(name)
    picked = [rng.choice(group) for group in by_kind.values()]
    return picked[:most] if len(picked) > most else picked


class Fuzzer:
    def __init__(self, rng):
        self.rng = rng
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.requests = 0
        self.times: dict[str, float] = {}

    def check(self, what: str, r, has_nul: bool):
        with self.lock:
            self._check(what, r, has_nul)

    def _check(self, what: str, r, has_nul: bool):
        self.requests += 1
        key = what.split(" [")[0].split("=")[0]
        self.times[key] = self.times.get(key, 0) + r.elapsed.total_seconds()
        if r.status_code == 500 or (r.status_code > 500 and "unexpected error" in r.text):
            self.failures.append(f"{what}: {r.status_code}")
        elif has_nul and r.status_code != 400:
            self.failures.append(f"{what}: {r.status_code} for a NUL byte (expected 400)")
        elif r.status_code == 400 and "This form has expired" in r.text:
            self.failures.append(f"{what}: refused for its CSRF token, so its input was never tried")
        elif re.search(r"Traceback|psycopg2|DataError|IntegrityError|OperationalError", r.text or ""):
            self.failures.append(f"{what}: a database error reached the page")

    def get(self, s, path: str, names: list[str], value: str):
        value = value[:2500]  # past the longest a query value may be, within what a URL holds
        group: list[str] = []
        for name in names + [None]:
            query = encode([(n, value) for n in group + ([name] if name else [])])
            if name is not None and len(query) < 30000:
                group.append(name)
                continue
            r = s.get(f"{path}?{encode([(n, value) for n in group]).decode()}")
            self.check(f"GET {path} {group} [{value[:20]!r}…]", r, "\x00" in value)
            group = [name] if name else []

    def post(self, s, path: str, pairs, files: set[str], what: str, htmx: bool = False):
        pairs = [("csrf_token", s.csrf)] + [(n, v) for n, v in pairs if n != "csrf_token"]
        has_nul = any("\x00" in n or "\x00" in v for n, v in pairs)
        headers = {"HX-Request": "true", "X-CSRFToken": s.csrf} if htmx else {}
        if files:
            multipart = {n: (self.rng.choice(["a.json", "é" * 300]), b'{"rows": [1]}') for n in files}
            data: dict[str, list[str]] = {}
            for n, v in pairs:
                data.setdefault(n, []).append(v.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            r = s.post(path, data=data, files=multipart, headers=headers)
        else:
            r = s.post(path, content=encode(pairs),
                            headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
        self.check(f"POST {path} {what}", r, has_nul)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_input_makes_a_500(backend, tmp_path, sandbox):  # noqa: F811
    started = time.monotonic()
    rng = random.Random(SEED)
    values = hostile_values(rng)
    gen = backend_app(backend, tmp_path, LOGIN_MAX_ATTEMPTS="100000", LOGIN_MAX_ATTEMPTS_PER_ADDRESS="100000")
    app = next(gen)
    try:
        conn_id = connect_to_sandbox(app, sandbox)  # the Field Mapping editor shows all its rows
        with db(app):  # every connection gives up quickly (the others point at closed ports)
            for conn in SyncConnection.select():
                conn.settings = {**conn.settings, **FAST}
                conn.save()
        server = LiveServer(app)
        admin = sign_in(server.url, "District Admin")
        anon = Session(base_url=server.url, follow_redirects=False, timeout=30)
        anon.page("/login")
        gets, query_names, posts = discover(app, admin, anon, conn_id)
        assert len(gets) > 20 and len(posts) > 20, (len(gets), len(posts))
        assert {"q", "grade", "school_year", "page", "status"} <= set(query_names), query_names
        assert {"email", "password"} <= {n for n, _ in posts["auth.login"]["fields"]}
        fuzz = Fuzzer(rng)
        # the requests of one route run in parallel (the server is threaded, as in production)
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda job: fuzz.get(admin, *job),
                          [(path, query_names, value) for _, path in gets for value in values]))
            # what re-points the connection (its edit form) goes last, so the rest talk to the sandbox
            for endpoint, target in sorted(posts.items(), key=lambda kv: ("edit" in kv[0], kv[0])):
                s = anon if endpoint == "auth.login" else admin
                base = baseline(target)
                jobs = []
                for value in values:  # every field at once
                    pairs = [(n, value) for n, _ in base] + [("fuzz_extra", value)]
                    jobs.append((pairs, f"all fields [{value[:20]!r}…]", rng.random() < 0.3))
                for name in field_names(target, rng):  # one field at a time, the rest plausible
                    for value in field_values(rng):
                        pairs = [(n, value if n == name else v) for n, v in base]
                        if name not in {n for n, _ in base}:
                            pairs.append((name, value))
                        jobs.append((pairs, f"{name}=[{value[:20]!r}…]", False))
                list(pool.map(lambda job: fuzz.post(s, target["path"], job[0], target["files"], job[1],
                                                    htmx=job[2]), jobs))
        admin.close()
        anon.close()
        server.stop()
    finally:
        next(gen, None)
    elapsed = time.monotonic() - started
    slow = sorted(fuzz.times.items(), key=lambda kv: -kv[1])[:12]
    print("slowest:", "; ".join(f"{k} {v:.1f}s" for k, v in slow))
    print(f"fuzz {backend}: {fuzz.requests} requests over {len(gets)} GET and {len(posts)} POST routes "
          f"in {elapsed:.1f}s (seed {SEED})")
    assert fuzz.requests > 500
    assert not fuzz.failures, f"{len(fuzz.failures)} failures (seed {SEED}):\n" + "\n".join(fuzz.failures[:80])
