"""``enroll-sync sandbox aeries --port N ...`` as a real process: every fault and setting
of ``/sandbox/faults`` has a flag, and the flags are seen over HTTP."""
from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading

import click
import httpx
import pytest

from aeries_helpers import insert_body
from sis_aeries.cli import FAULT_FLAGS, aeries_command
from sis_aeries.sandbox import DEFAULT_FAULTS

CERT = "0123456789abcdef0123456789ABCDEF"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cli_sandbox(*flags: str):
    """Run ``enroll-sync sandbox aeries --port N --quiet ...flags``; yield its URL and
    first output line; stop it afterwards."""
    for attempt in range(3):  # the port may be taken between picking and binding it
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "enroll_sync", "sandbox", "aeries", "--port", str(port), "--quiet", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            line = ""
        if line.startswith("Aeries sandbox on "):
            break
        proc.kill()
        err = proc.communicate(timeout=5)[1]
        if "in use" not in err or attempt == 2:
            pytest.fail(f"the sandbox did not start: {line!r} {err}")
    url = line.split()[3]
    try:
        yield url, line
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


def test_every_fault_has_a_flag_with_help():
    params = {p.name: p for p in aeries_command.params}
    assert set(FAULT_FLAGS.values()) == set(DEFAULT_FAULTS), "each fault has exactly one flag"
    for name in FAULT_FLAGS:
        assert isinstance(params[name], click.Option) and params[name].help, name


def test_the_command_serves_the_api_with_its_flags():
    with cli_sandbox("--cert", CERT, "--seed-students", "25", "--seed", "3", "--year", "2024",
                     "--year", "2025", "--year", "2026", "--default-year", "2025",
                     "--no-update-permission", "BirthDate", "--deny-area", "Contacts",
                     "--not-implemented", "/api/v5/DeleteContact", "--burst-429", "1",
                     "--retry-after", "0", "--fault-path", "/api/v5/schools") as (url, line):
        assert "years 2024, 2025, 2026, default 2025; 25 students" in line
        api = httpx.Client(base_url=url, headers={"AERIES-CERT": CERT}, timeout=5)
        info = api.get("/api/v5/systeminfo").json()
        assert info["AvailableDatabaseYears"][-1] == "2026-2027"
        r = api.get("/api/v5/schools")
        assert r.status_code == 429 and r.headers["Retry-After"] == "0"
        assert len(api.get("/api/v5/schools").json()) == 4
        assert httpx.get(url + "/api/v5/schools", headers={"AERIES-CERT": CERT.lower()}).status_code == 401
        s = api.post("/api/v5/schools/990/InsertStudent", params={"DatabaseYear": 2026}, json=insert_body()).json()
        [after] = api.post(f"/api/v5/UpdateStudent/{s['StudentID']}", params={"DatabaseYear": 2026},
                           json={"BirthDate": "2011-01-01"}).json()
        assert after["Birthdate"] == "2020-03-14T00:00:00"
        assert api.get(f"/api/v5/schools/990/contacts/{s['StudentID']}").status_code == 401
        assert api.get(f"/api/v5/DeleteContact/{s['StudentID']}/1").status_code == 501
        faults = httpx.get(url + "/sandbox/faults").json()
        assert faults["no_update_permission"] == ["BirthDate"] and faults["denied_areas"] == ["Contacts"]
        dump = httpx.get(url + "/sandbox/dump").json()
        assert len(dump["years"]["2025"]["students"]) >= 25 and len(dump["years"]["2026"]["students"]) == 1


def test_the_plugin_registers_the_sandbox_command():
    from sis_aeries import plugin

    group = click.Group("sandbox")
    plugin.register_sandbox_commands(sandbox=group)
    assert group.commands["aeries"] is aeries_command
