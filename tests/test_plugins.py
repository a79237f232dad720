"""The plugin system: entry points, one manager per app, every hook tested and documented."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from enroll_sync import hookimpl, hookspecs
from enroll_sync.adapters import CheckResult, FieldSection, SISAdapter, TargetField
from enroll_sync.plugins import adapter_classes, build_plugin_manager, step_classes

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if not name.startswith("_") and
               hasattr(getattr(hookspecs, name), "enroll_sync_spec"))


def test_installed_adapters_load_through_entry_points():
    pm = build_plugin_manager()
    names = {p["name"]: p for p in __import__("enroll_sync.plugins", fromlist=["x"]).plugin_descriptions(pm)}
    assert "sis_powerschool" in names and names["sis_powerschool"]["distribution"] == "enroll-sync-powerschool"
    assert "sis_generic" in names and names["sis_generic"]["distribution"] == "enroll-sync-generic"
    adapters = adapter_classes(pm)
    assert {"powerschool", "generic_rest"} <= set(adapters)
    assert all(issubclass(c, SISAdapter) for c in adapters.values())


def test_entry_points_can_be_disabled_and_managers_are_per_app(tmp_path):
    bare = build_plugin_manager(load_entrypoints=False)
    assert adapter_classes(bare) == {}
    full = build_plugin_manager()
    assert bare is not full and "powerschool" in adapter_classes(full)


class _Adapter(SISAdapter):
    name, label = "toy", "Toy SIS"

    def check_connection(self):
        return CheckResult(True, "fine")

    def target_fields(self):
        return [FieldSection("student", "Student", (TargetField("name", "Name"),))]


class _Plugin:
    @hookimpl
    def register_sis_adapters(self):
        return [_Adapter]

    @hookimpl
    def register_transformations(self):
        from enroll_sync.mapping.steps import Step

        class Shout(Step):
            kind, label = "shout", "Shout"

            def apply(self, value, ctx):
                return f"{value}!"

        return [Shout]

    @hookimpl
    def register_sandbox_commands(self, sandbox):
        @sandbox.command("toy")
        def toy():
            click.echo("toy sandbox")

    @hookimpl
    def register_demo_connections(self, sandbox_urls):
        return [{"adapter": "toy", "name": "Toy demo", "environment": "sandbox",
                 "settings": {}, "url": sandbox_urls.get("toy")}]


def test_hook_register_sis_adapters():
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[_Plugin()])
    assert adapter_classes(pm)["toy"] is _Adapter


def test_hook_register_transformations():
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[_Plugin()])
    steps = step_classes(pm)
    assert steps["shout"]().apply("hi", None) == "hi!"
    assert "date" in steps  # the built-in steps come from the default plugin


def test_hook_register_sandbox_commands():
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[_Plugin()])
    group = click.Group("sandbox")
    pm.hook.register_sandbox_commands(sandbox=group)
    assert CliRunner().invoke(group, ["toy"]).output == "toy sandbox\n"


def test_hook_register_demo_connections():
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[_Plugin()])
    batches = pm.hook.register_demo_connections(sandbox_urls={"toy": "http://127.0.0.1:1"})
    assert [c["url"] for b in batches for c in b] == ["http://127.0.0.1:1"]


def test_every_hook_has_a_test_and_a_doc_section():
    doc = (ROOT / "docs" / "plugin_hooks.md").read_text()
    tests = (Path(__file__)).read_text()
    assert HOOKS, "no hookspecs found"
    for name in HOOKS:
        assert re.search(rf"^##+ {name}\(", doc, re.M), f"docs/plugin_hooks.md has no section for {name}"
        assert f"def test_hook_{name}(" in tests, f"no test_hook_{name} in tests/test_plugins.py"


def test_enroll_sync_plugins_command_lists_plugins_versions_and_hooks(tmp_path):
    env = dict(os.environ, ENROLL_SYNC_INSTANCE_PATH=str(tmp_path / "instance"))
    out = subprocess.run([sys.executable, "-m", "enroll_sync.cli", "plugins", "--json"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["sis_powerschool"]["version"] == "0.1.0"
    assert "register_sis_adapters" in rows["sis_powerschool"]["hooks"]
    assert "register_transformations" in rows["enroll_sync.mapping.builtin_steps"]["hooks"]


def test_the_documented_step_example_works():
    """The register_transformations example in docs/plugin_hooks.md runs as written."""
    from enroll_sync.mapping import MappingContext, compile_mapping
    doc = (ROOT / "docs" / "plugin_hooks.md").read_text()
    section = doc[doc.index("## register_transformations()"):doc.index("## register_sandbox_commands")]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "plugin_hooks.md", "exec"), namespace)
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[type("P", (), {
        "register_transformations": staticmethod(namespace["register_transformations"])})()])
    steps = step_classes(pm)
    rows = [{"to": "initials", "type": "transformation", "from": "name",
             "steps": [{"kind": "initials", "separator": "."}]}]
    result = compile_mapping(rows, steps=steps)({"name": "ana maria"}, MappingContext())
    assert result.payload == {"initials": "A.M."}
    bad = compile_mapping([{**rows[0], "steps": [{"kind": "initials", "separator": "----"}]}], steps=steps)
    assert not bad({"name": "x"}, MappingContext()).ok
