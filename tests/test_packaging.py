"""Templates and static files are found when Enroll Sync is installed from a wheel."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import sys, enroll_sync, pathlib
assert "site-packages" not in enroll_sync.__file__ and sys.argv[1] in enroll_sync.__file__, enroll_sync.__file__
from enroll_sync import create_app
app = create_app({"INSTANCE_PATH": sys.argv[2], "LOAD_PLUGINS": "0"})
assert pathlib.Path(app.template_folder).is_relative_to(sys.argv[1]), app.template_folder
client = app.test_client()
page = client.get("/login")
assert page.status_code == 200 and b"Sign in" in page.data, page.status_code
css = client.get("/static/app.css")
assert css.status_code == 200 and b"Enroll Sync" in css.data
htmx = client.get("/static/vendor/htmx.min.js")
assert htmx.status_code == 200 and b"htmx" in htmx.data
bootstrap = client.get("/static/vendor/bootstrap/bootstrap.min.css")
assert bootstrap.status_code == 200 and b"Bootstrap" in bootstrap.data
print("ok")
"""


def test_wheel_contains_and_serves_templates_and_static(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                            str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("enroll_sync-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "enroll_sync/templates/base.html" in names
    assert "enroll_sync/templates/schools/index.html" in names
    assert "enroll_sync/static/app.css" in names
    # the front-end files fetched from npm at set-up travel in the wheel too (make test
    # runs after make setup, so static/vendor is there)
    assert "enroll_sync/static/vendor/htmx.min.js" in names
    for vendored in ("bootstrap/bootstrap.min.css", "bootstrap/bootstrap.bundle.min.js",
                     "bootstrap-icons/bootstrap-icons.min.css", "bootstrap-icons/fonts/bootstrap-icons.woff2",
                     "chart.umd.min.js"):
        assert f"enroll_sync/static/vendor/{vendored}" in names, vendored
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = dict(os.environ, PYTHONPATH=str(target))
    run = subprocess.run([sys.executable, "-c", PROBE, str(target), str(tmp_path / "instance")], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
