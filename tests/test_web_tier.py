"""``enroll-sync serve`` runs a production WSGI server (waitress), not Werkzeug's
development server, with the thread count asked for."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from enroll_sync.testing import db, make_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_a_production_server(tmp_path):
    from enroll_sync.migrations import upgrade
    app = make_app(tmp_path)
    with db(app):
        upgrade()
    port = _free_port()
    env = dict(os.environ, ENROLL_SYNC_INSTANCE_PATH=str(tmp_path / "instance"),
               ENROLL_SYNC_DATABASE_URL=app.config["DATABASE_URL"], ENROLL_SYNC_QUEUE_URL=app.config["QUEUE_URL"],
               ENROLL_SYNC_IN_PROCESS_WORKER="0")
    proc = subprocess.Popen([sys.executable, "-m", "enroll_sync.cli", "serve", "--port", str(port), "--threads", "3"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.2)
        assert r.status_code == 200 and "csrf_token" in r.text
        server = r.headers.get("server", "")
        assert "Werkzeug" not in server and server == "Enroll Sync", server  # waitress, with our ident
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "3 threads" in out, out
