"""The reliability faults added for import and token tests: a dripping answer, tokens the
SIS revokes early, busy records inside a batch, a failing page. Over real sockets."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from ps_helpers import post_students, student_body
from sis_powerschool.sandbox import DEFAULT_FAULTS

NEW_FAULTS = {"drip_bytes_per_s": 0, "drip_answers": 0, "revoke_new_tokens_every": 0,
              "busy_records": 0, "page_error_at": 0}


def new_token(sandbox) -> str:
    r = httpx.post(sandbox.url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                   auth=(sandbox.client_id, sandbox.client_secret))
    assert r.status_code == 200
    return r.json()["access_token"]


def get(sandbox, path: str, token: str, **kw) -> httpx.Response:
    return httpx.get(sandbox.url + path, headers={"Authorization": f"Bearer {token}"}, **kw)


def test_the_new_faults_are_known_and_off_by_default(sandbox):
    assert {k: DEFAULT_FAULTS[k] for k in NEW_FAULTS} == NEW_FAULTS
    r = httpx.post(sandbox.url + "/sandbox/faults", json={"busy_records": 2, "page_error_at": 3,
                                                          "drip_bytes_per_s": 9})
    assert r.status_code == 200
    faults = httpx.get(sandbox.url + "/sandbox/faults").json()
    assert (faults["busy_records"], faults["page_error_at"], faults["drip_bytes_per_s"]) == (2, 3, 9)
    httpx.post(sandbox.url + "/sandbox/reset")
    faults = httpx.get(sandbox.url + "/sandbox/faults").json()
    assert {k: faults[k] for k in NEW_FAULTS} == NEW_FAULTS


# ----------------------------------------------------------------------------- drip

def test_a_dripping_answer_beats_a_per_read_timeout(sandbox, token):
    path = "/ws/v1/district/school/count"
    expected = get(sandbox, path, token).content
    sandbox.set_faults(drip_bytes_per_s=20, fault_path=path)
    started = time.monotonic()
    r = get(sandbox, path, token, timeout=httpx.Timeout(5, read=0.5))
    took = time.monotonic() - started
    assert r.status_code == 200 and r.content == expected, "the whole answer, intact"
    assert r.headers["Content-Length"] == str(len(expected))
    assert took >= 0.8 * (len(expected) / 20 - 0.25), f"{len(expected)} bytes in {took:.2f}s"
    # only a deadline on the whole answer stops it
    sandbox.set_faults(drip_bytes_per_s=4)
    with httpx.Client(timeout=httpx.Timeout(5, read=0.5)) as client:
        started = time.monotonic()
        with client.stream("GET", sandbox.url + path,
                           headers={"Authorization": f"Bearer {token}"}) as stream:
            got = b""
            for chunk in stream.iter_bytes():
                got += chunk
                if time.monotonic() - started > 1.0:
                    break
        assert 0 < len(got) < len(expected), "still dripping after a second"
    other = get(sandbox, "/ws/v1/metadata", token, timeout=2)
    assert other.status_code == 200, "other paths are not slowed"


def test_drip_answers_counts_the_slow_answers(sandbox, token):
    path = "/ws/v1/district/school/count"
    sandbox.set_faults(drip_bytes_per_s=20, drip_answers=1, fault_path=path)
    started = time.monotonic()
    assert get(sandbox, path, token).status_code == 200
    slow = time.monotonic() - started
    started = time.monotonic()
    assert get(sandbox, path, token).status_code == 200
    fast = time.monotonic() - started
    assert slow > 0.8 and fast < 0.5, (slow, fast)
    assert (sandbox.faults["drip_answers"], sandbox.faults["drip_bytes_per_s"]) == (0, 0)


# ----------------------------------------------------------------------------- tokens

def get_refreshing(sandbox, path: str, state: dict, refreshes: int) -> int:
    """A client that, on 401, fetches a new token at most ``refreshes`` times per request."""
    for attempt in range(refreshes + 1):
        r = get(sandbox, path, state["token"])
        if r.status_code != 401 or attempt == refreshes:
            return r.status_code
        state["token"] = new_token(sandbox)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("fault,refreshes,expected", [
    ("revoke_tokens_every", 1, [200] * 8),
    ("revoke_new_tokens_every", 1, [200, 200, 401, 200, 200, 401, 200, 200]),
    ("revoke_new_tokens_every", 2, [200] * 8),
])
def test_revoke_new_tokens_every_defeats_a_single_refresh(sandbox, fault, refreshes, expected):
    sandbox.set_faults(**{fault: 2})
    state = {"token": new_token(sandbox)}
    got = [get_refreshing(sandbox, "/ws/v1/metadata", state, refreshes) for _ in range(8)]
    assert got == expected


def test_revoke_new_tokens_every_step_by_step(sandbox):
    sandbox.set_faults(revoke_new_tokens_every=2)
    used, bystander = new_token(sandbox), new_token(sandbox)
    assert get(sandbox, "/ws/v1/metadata", used).status_code == 200
    assert get(sandbox, "/ws/v1/metadata", used).status_code == 200  # the 2nd: revokes `used`
    assert get(sandbox, "/ws/v1/metadata", used).status_code == 401
    assert get(sandbox, "/ws/v1/metadata", bystander).status_code == 200, \
        "only the token that request used is revoked"
    dead = new_token(sandbox)
    r = get(sandbox, "/ws/v1/metadata", dead)
    assert r.status_code == 401 and "expired" in r.json()["message"], "revoked before its first use"
    fine = new_token(sandbox)
    assert get(sandbox, "/ws/v1/metadata", fine).status_code == 200


# ----------------------------------------------------------------------------- busy records

def test_busy_records_fail_one_by_one_with_http_200_then_a_retry_succeeds(sandbox, api):
    sandbox.set_faults(busy_records=2)
    bodies = [student_body(uid=f"r{i}") for i in range(3)]
    r = post_students(api, *bodies)
    assert r.status_code == 200
    results = r.json()["results"]
    assert results["insert_count"] == 1
    busy, also_busy, ok = results["result"]
    for item, uid in ((busy, "r0"), (also_busy, "r1")):
        assert (item["client_uid"], item["status"], item["action"]) == (uid, "ERROR", "INSERT")
        error = item["error_message"]["error"]
        assert error["error_code"] == "SERVER_BUSY"
        assert "try again later" in error["error_description"]
    assert ok["status"] == "SUCCESS"
    assert [s["local_id"] for s in sandbox.dump()] == [int(bodies[2]["local_id"])], \
        "a busy record is not saved"
    retry = post_students(api, *bodies[:2]).json()["results"]
    assert [x["status"] for x in retry["result"]] == ["SUCCESS", "SUCCESS"]
    assert len(sandbox.dump()) == 3 and sandbox.faults["busy_records"] == 0


# ----------------------------------------------------------------------------- page errors

def test_page_error_at_fails_that_page_once(sandbox, api):
    sandbox.seed_students(50, seed=2)
    sandbox.set_faults(page_error_at=3)
    params = {"pagesize": 10}
    assert api.get("/ws/v1/district/student", params={**params, "page": 1}).status_code == 200
    assert api.get("/ws/v1/district/student/count").status_code == 200, "count is not a page"
    assert api.get("/ws/v1/district/student", params={**params, "page": 2}).status_code == 200
    failed = api.get("/ws/v1/district/student", params={**params, "page": 3})
    assert failed.status_code == 500
    again = api.get("/ws/v1/district/student", params={**params, "page": 3})
    assert again.status_code == 200 and len(again.json()["students"]["student"]) == 10
    assert sandbox.faults["page_error_at"] == 0


def test_page_error_at_hits_a_school_list_too(sandbox, api):
    sandbox.seed_students(5, seed=2)
    sandbox.set_faults(page_error_at=1)
    assert api.get("/ws/v1/school/1/student").status_code == 500
    assert api.get("/ws/v1/school/1/student").status_code == 200


# ----------------------------------------------------------------------------- CLI

def test_the_cli_sets_the_new_faults():
    code = ("from sis_powerschool.cli import powerschool_command as c; "
            "c(['--port', '0', '--quiet', '--drip-bytes-per-s', '7.5', '--drip-answers', '2', "
            "'--revoke-new-tokens-every', '3', '--busy-records', '4', '--page-error-at', '5'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("PowerSchool sandbox on http://127.0.0.1:"), line + proc.stderr.read()
        faults = httpx.get(line.split()[3] + "/sandbox/faults").json()
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    assert {k: faults[k] for k in NEW_FAULTS} == {
        "drip_bytes_per_s": 7.5, "drip_answers": 2, "revoke_new_tokens_every": 3,
        "busy_records": 4, "page_error_at": 5}
