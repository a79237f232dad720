"""``enroll-sync sandbox powerschool --port N ...`` as a real process: every fault of
``/sandbox/faults`` can be set by a flag, and each fault flag is seen over HTTP."""
from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import click
import httpx
import pytest

from ps_helpers import record, student_body
from sis_powerschool.adapter import PowerSchoolAdapter
from sis_powerschool.cli import FAULT_FLAGS, powerschool_command
from sis_powerschool.sandbox import DEFAULT_FAULTS, MALFORMED_KINDS

CID, CSECRET = "cli-client", "cli-secret-not-real"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cli_sandbox(*flags: str):
    """Run ``enroll-sync sandbox powerschool --port N --quiet ...flags`` on a free
    loopback port; yield its base URL; stop it afterwards."""
    for attempt in range(3):  # the port may be taken between picking and binding it
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "enroll_sync", "sandbox", "powerschool", "--port", str(port),
             "--quiet", "--client-id", CID, "--client-secret", CSECRET, *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            line = ""
        if line.startswith("PowerSchool sandbox on "):
            break
        proc.kill()
        err = proc.communicate(timeout=5)[1]
        if "in use" not in err or attempt == 2:
            pytest.fail(f"the sandbox did not start: {line!r} {err}")
    url = line.split()[3]
    assert url == f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


def token(url: str) -> str:
    r = httpx.post(url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                   auth=(CID, CSECRET))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def get(url: str, path: str, tok: str, **kw) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {tok}"}, timeout=5, **kw)


def post_student(url: str, tok: str, **overrides) -> httpx.Response:
    return httpx.post(url + "/ws/v1/student", timeout=5,
                      headers={"Authorization": f"Bearer {tok}"},
                      json={"students": {"student": [student_body(**overrides)]}})


# ----------------------------------------------------------------------------- the flags

#: faults whose flag is not simply the fault's name with dashes
OTHER_NAMES = {"reject_local_ids": "--reject-local-id", "reject_last_names": "--reject-last-name",
               "denied_fields": "--deny-field", "student_max_page_size": "--page-size-max"}


def test_every_fault_has_a_flag_with_help():
    params = {p.name: p for p in powerschool_command.params}
    assert set(FAULT_FLAGS.values()) == set(DEFAULT_FAULTS), "each fault has exactly one flag"
    for name, fault in FAULT_FLAGS.items():
        param = params[name]
        assert isinstance(param, click.Option) and param.help, name
        assert param.opts == [OTHER_NAMES.get(fault, "--" + fault.replace("_", "-"))]
        assert param.multiple == isinstance(DEFAULT_FAULTS[fault], list), fault
    help_text = powerschool_command.get_help(click.Context(powerschool_command))
    for kind in MALFORMED_KINDS:  # the broken bodies are explained
        assert kind in help_text


def test_the_flags_set_every_fault():
    flags = ["--latency-ms", "1", "--error-rate", "0", "--timeout-rate", "0", "--hang-s", "0.2",
             "--fail-500", "1", "--timeouts", "2", "--burst-429", "3", "--burst-503", "4",
             "--retry-after", "7", "--malformed", "5", "--malformed-kind", "html",
             "--malformed-body", "{}", "--lost-answers", "6", "--fault-path", "/nothing",
             "--min-interval-ms", "0", "--throttle-status", "503", "--token-lifetime", "99",
             "--revoke-tokens-every", "8", "--reject-local-id", "11", "--reject-last-name",
             "Doe", "--drop-results-for", "12", "--drop-results-for", "13", "--deny-field",
             "students.dob", "--page-size-max", "50"]
    with cli_sandbox(*flags) as url:
        faults = httpx.get(url + "/sandbox/faults").json()
    assert set(faults) == set(DEFAULT_FAULTS)
    assert faults == {
        "latency_ms": 1, "error_rate": 0.0, "timeout_rate": 0.0, "hang_s": 0.2, "fail_500": 1,
        "timeouts": 2, "burst_429": 3, "burst_503": 4, "retry_after": "7", "malformed": 5,
        "malformed_kind": "html", "malformed_body": "{}", "lost_answers": 6,
        "fault_path": "/nothing", "min_interval_ms": 0, "throttle_status": 503,
        "token_lifetime": 99, "revoke_tokens_every": 8, "reject_local_ids": ["11"],
        "reject_last_names": ["Doe"], "drop_results_for": ["12", "13"],
        "denied_fields": ["students.dob"], "student_max_page_size": 50,
        "revoke_new_tokens_every": 0, "drip_bytes_per_s": 0.0, "drip_answers": 0,
        "busy_records": 0, "page_error_at": 0}


def test_an_unknown_malformed_kind_is_refused_at_start():
    r = subprocess.run([sys.executable, "-m", "enroll_sync", "sandbox", "powerschool", "--port", "0",
                        "--malformed-kind", "bogus"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--malformed-kind" in r.stderr


# ----------------------------------------------------------------------------- each fault over HTTP

@pytest.mark.parametrize("retry_after", [None, "2"])
def test_burst_429_with_and_without_retry_after(retry_after):
    flags = ["--burst-429", "2", "--fault-path", "/ws/v1/metadata"]
    if retry_after:
        flags += ["--retry-after", retry_after]
    with cli_sandbox(*flags) as url:
        tok = token(url)  # /oauth is outside the fault path
        answers = [get(url, "/ws/v1/metadata", tok) for _ in range(3)]
        other = get(url, "/ws/v1/district", tok)
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert [a.headers.get("Retry-After") for a in answers[:2]] == [retry_after] * 2
    assert other.status_code == 200


def test_burst_503_fail_500_and_timeouts():
    with cli_sandbox("--burst-503", "1", "--fail-500", "1", "--timeouts", "1",
                     "--hang-s", "0.3", "--retry-after", "1", "--fault-path", "/ws/") as url:
        tok = token(url)
        started = time.monotonic()
        hung = get(url, "/ws/v1/metadata", tok)  # timeouts come first
        hang = time.monotonic() - started
        failed = get(url, "/ws/v1/metadata", tok)
        unavailable = get(url, "/ws/v1/metadata", tok)
        fine = get(url, "/ws/v1/metadata", tok)
    assert hung.status_code == 500 and "timeout" in hung.json()["message"] and hang >= 0.3
    assert failed.status_code == 500
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "1"
    assert fine.status_code == 200


@pytest.mark.parametrize("kind", list(MALFORMED_KINDS))
def test_malformed_kinds(kind):
    with cli_sandbox("--malformed", "1", "--malformed-kind", kind,
                     "--fault-path", "/ws/v1/metadata") as url:
        tok = token(url)
        if kind == "disconnect":
            with pytest.raises(httpx.RemoteProtocolError):
                get(url, "/ws/v1/metadata", tok)
            broken = None
        else:
            broken = get(url, "/ws/v1/metadata", tok)
        after = get(url, "/ws/v1/metadata", tok)
    assert after.status_code == 200 and after.json()["metadata"]["powerschool_version"]
    if broken is None:
        return
    assert broken.status_code == 200
    if kind == "html":
        assert broken.headers["content-type"].startswith("text/html")
        assert broken.text.startswith("<!DOCTYPE html>")
        return
    assert broken.headers["content-type"] == "application/json"
    if kind in ("truncated", "not_json", "empty"):
        with pytest.raises(ValueError):
            broken.json()
    elif kind == "array":
        assert broken.json() == []
    elif kind == "wrong_shape":
        assert broken.json()["metadata"] == ["unexpected"]
    elif kind == "missing_keys":
        assert broken.json()["metadata"] == {}


def test_malformed_body_is_sent_verbatim():
    body = '{"results": {"result": {"client_uid": "u1", "status": "SUCCESS"}}}'
    with cli_sandbox("--malformed", "1", "--malformed-body", body,
                     "--fault-path", "/ws/v1/student") as url:
        tok = token(url)
        r = post_student(url, tok)
        dump = httpx.get(url + "/sandbox/dump").json()["students"]
    assert r.status_code == 200 and r.text == body
    assert dump == [], "a malformed answer means the request was not processed"


def test_token_lifetime_makes_tokens_expire():
    with cli_sandbox("--token-lifetime", "1") as url:
        r = httpx.post(url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                       auth=(CID, CSECRET))
        assert r.json()["expires_in"] == "1"
        tok = r.json()["access_token"]
        assert get(url, "/ws/v1/metadata", tok).status_code == 200
        time.sleep(1.1)
        expired = get(url, "/ws/v1/metadata", tok)
    assert expired.status_code == 401 and "expired" in expired.json()["message"]


def test_revoke_tokens_every():
    with cli_sandbox("--revoke-tokens-every", "2") as url:
        tok = token(url)
        first = [get(url, "/ws/v1/metadata", tok).status_code for _ in range(3)]
        tok2 = token(url)
        second = [get(url, "/ws/v1/metadata", tok2).status_code for _ in range(3)]
    assert first == [200, 200, 401]
    assert second == [200, 200, 401]


def test_lost_answers_and_dropped_results():
    with cli_sandbox("--lost-answers", "1", "--drop-results-for", "610002") as url:
        tok = token(url)
        lost = post_student(url, tok, local_id=610001)
        dropped = post_student(url, tok, local_id=610002)
        dump = httpx.get(url + "/sandbox/dump").json()["students"]
    assert lost.status_code == 500
    assert dropped.status_code == 200 and "result" not in dropped.json()["results"]
    assert sorted(s["local_id"] for s in dump) == [610001, 610002], "both were saved"


def test_rejections_denied_fields_and_page_size():
    with cli_sandbox("--reject-local-id", "610011", "--reject-last-name", "Nope",
                     "--deny-field", "students.dob", "--page-size-max", "2",
                     "--students", "5") as url:
        tok = token(url)
        rejected = post_student(url, tok, local_id=610011, **{"demographics.birth_date": None})
        nope = post_student(url, tok, **{"name.last_name": "Nope",
                                         "demographics.birth_date": None})
        denied = post_student(url, tok)
        page = get(url, "/ws/v1/district/student", tok, params={"pagesize": 100})
        meta = get(url, "/ws/v1/metadata", tok)
    assert rejected.json()["results"]["result"]["error_message"]["error"]["field"] == \
        "student/local_id"
    assert nope.json()["results"]["result"]["error_message"]["error"]["field"] == \
        "student/name/last_name"
    assert denied.status_code == 403 and denied.json()["errors"][0]["field"] == "students.dob"
    assert len(page.json()["students"]["student"]) == 2
    assert meta.json()["metadata"]["student_max_page_size"] == 2


def test_the_adapter_rides_out_faults_set_from_the_command_line():
    """The flags drive the real adapter: 429s (no Retry-After), 503s, a lost connection
    and a token revoked every 3 requests; every record still arrives exactly once."""
    with cli_sandbox("--burst-429", "2", "--burst-503", "1", "--revoke-tokens-every", "3",
                     "--malformed", "1", "--malformed-kind", "disconnect",
                     "--fault-path", "/ws/v1/student") as url:
        settings = {"server_url": url, "client_id": CID, "client_secret": CSECRET,
                    "batch_size": 2, "retry_backoff": 0.005, "max_backoff": 0.05,
                    "max_attempts": 6, "timeout_s": 5}
        with PowerSchoolAdapter(settings) as adapter:
            results = adapter.export([record() for _ in range(5)])
        dump = httpx.get(url + "/sandbox/dump").json()["students"]
        log = httpx.get(url + "/sandbox/requests").json()["requests"]
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    assert len(dump) == 5 and len({s["local_id"] for s in dump}) == 5
    statuses = [r["status"] for r in log if r["path"] == "/ws/v1/student"]
    assert statuses.count(429) == 2 and statuses.count(503) == 1 and 401 in statuses
    assert sum(1 for r in log if r["path"] == "/oauth/access_token") >= 2
