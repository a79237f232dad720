"""The plugin contract is the public package: code under ``plugins/`` (adapters and their
tests) may import ``enroll_sync`` (names in ``enroll_sync.__all__``) and
``enroll_sync.testing`` (names in its ``__all__``), nothing deeper, and never the core's
``tests``. Anything else ties a plugin to the core's module layout, which must stay
free to change.

Checked statically with ``ast`` over every ``.py`` file under ``plugins/``: import
statements, ``enroll_sync.<name>`` attribute access, ``import_module``/``importorskip``
calls, ``python -m enroll_sync.<module>`` argument lists, and import statements inside
string literals (code run in a subprocess)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import enroll_sync
import enroll_sync.testing

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
SKIP_DIRS = {".venv", "build", "dist", "__pycache__", "node_modules"}
ALLOWED_MODULES = {"enroll_sync", "enroll_sync.testing"}
IMPORT_CALLS = {"import_module", "importorskip", "__import__"}
#: import statements inside a string (code for ``python -c``); "import tests" in prose is not one
IMPORT_IN_TEXT = re.compile(r"\bfrom\s+((?:enroll_sync|tests)(?:\.\w+)*)\s+import\b"
                            r"|\bimport\s+((?:enroll_sync|tests)\.\w+(?:\.\w+)*)")
#: modules that must not load on ``import enroll_sync`` / ``import enroll_sync.testing``
HEAVY = ("flask", "httpx", "peewee", "werkzeug", "huey", "jsonata", "cryptography")


def public_names(module: str) -> set[str]:
    return set({"enroll_sync": enroll_sync, "enroll_sync.testing": enroll_sync.testing}[module].__all__)


def module_problem(name: str) -> str | None:
    """Why importing module ``name`` from a plugin breaks the contract, or None."""
    if name in ALLOWED_MODULES:
        return None
    if name.startswith("enroll_sync."):
        return f"imports {name}; use the public names of enroll_sync (or enroll_sync.testing)"
    if name == "tests" or name.startswith("tests."):
        return f"imports {name}, the core's test suite; use enroll_sync.testing"
    return None


def contract_violations(path: Path, source: str | None = None) -> list[str]:
    """``path:line: problem`` for every way ``path`` reaches past the public package."""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source, filename=str(path))
    problems: list[tuple[int, str]] = []
    aliases = {}  # local name -> "enroll_sync" / "enroll_sync.testing"
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}

    def names_problem(module: str, names) -> None:
        allowed = public_names(module)
        for alias in names:
            if alias.name != "*" and alias.name not in allowed:
                problems.append((node.lineno, f"imports {alias.name!r} from {module}, which is not "
                                              f"in {module}.__all__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                why = module_problem(alias.name)
                if why:
                    problems.append((node.lineno, why))
                elif alias.name in ALLOWED_MODULES:
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else "enroll_sync")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            why = module_problem(node.module)
            if why:
                problems.append((node.lineno, why))
            elif node.module in ALLOWED_MODULES:
                if node.module == "enroll_sync":
                    for alias in node.names:  # `from enroll_sync import testing` is fine
                        if alias.name == "testing":
                            aliases[alias.asname or "testing"] = "enroll_sync.testing"
                    names_problem(node.module, [a for a in node.names if a.name != "testing"])
                else:
                    names_problem(node.module, node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if fname in IMPORT_CALLS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                why = module_problem(node.args[0].value)
                if why:
                    problems.append((node.lineno, f"{fname}(): {why}"))
        elif isinstance(node, (ast.List, ast.Tuple)):
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for flag, target in zip(values, values[1:]):
                if flag == "-m" and isinstance(target, str):
                    why = module_problem(target)
                    if why:
                        problems.append((node.lineno, f"runs python -m {target}: {why}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            for m in IMPORT_IN_TEXT.finditer(node.value):
                why = module_problem(m.group(1) or m.group(2))
                if why:
                    problems.append((node.lineno, f"code in a string {why}"))

    # enroll_sync.<name> on an imported module: only public names
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases:
            module = aliases[node.value.id]
            allowed = public_names(module) | ({"testing"} if module == "enroll_sync" else set())
            if node.attr not in allowed and not node.attr.startswith("__"):
                problems.append((node.lineno, f"uses {module}.{node.attr}, which is not in "
                                              f"{module}.__all__"))
    return [f"{path}:{line}: {why}" for line, why in sorted(set(problems))]


def plugin_files() -> list[Path]:
    return sorted(p for p in PLUGINS.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(PLUGINS).parts)
                  and not any(part.endswith(".egg-info") for part in p.parts))


def test_plugins_import_only_the_public_package():
    files = plugin_files()
    assert len(files) >= 20 and {f.relative_to(PLUGINS).parts[0] for f in files} >= {
        "sis_powerschool", "sis_generic"}, "the scan found too few plugin files"
    problems = [p for f in files for p in contract_violations(f)]
    assert not problems, "plugins reach past the public package:\n" + "\n".join(problems)


def test_the_check_names_file_and_line_of_every_kind_of_breach(tmp_path):
    bad = tmp_path / "bad_plugin.py"
    source = "\n".join([
        "import enroll_sync",                                              # 1 ok
        "from enroll_sync import Transport, hookimpl",                     # 2 ok
        "from enroll_sync.testing import make_app, run_worker",            # 3 ok
        "from enroll_sync.transport import Transport",                     # 4
        "import enroll_sync.models",                                       # 5
        "from enroll_sync import hookspecs",                               # 6
        "from enroll_sync.testing import _session_class",                  # 7
        "from tests.conftest import sign_in",                              # 8
        "x = enroll_sync.db.database",                                     # 9
        "pytest.importorskip('tests.conftest')",                           # 10
        "ENTRY = 'import sys; from enroll_sync.cli import main; main()'",  # 11
        "args = [sys.executable, '-m', 'enroll_sync.cli', 'serve']",       # 12
        "def f():",                                                        # 13
        "    from enroll_sync.sync.queue import start_in_process_consumer",  # 14
        "args = [sys.executable, '-m', 'enroll_sync', 'serve']",           # 15 ok
        "import enroll_sync.testing as t; t.make_app; t.LiveServer",       # 16 ok
        "def g():",                                                        # 17
        '    """Never `from enroll_sync.models import X` (import tests read this)."""',  # 18 ok
        "print('import tests alone, in prose')",                           # 19 ok
    ])
    problems = contract_violations(bad, source)
    lines = sorted({int(p.split(":")[1]) for p in problems})
    assert lines == [4, 5, 6, 7, 8, 9, 10, 11, 12, 14], "\n".join(problems)
    assert all(p.startswith(f"{bad}:") for p in problems)
    assert any("enroll_sync.transport" in p for p in problems)
    assert any("'hookspecs'" in p and "__all__" in p for p in problems)


def test_the_check_fails_on_a_real_plugin_file(tmp_path):
    """The scan really reads plugin files: a copy of one with a forbidden import fails."""
    real = PLUGINS / "sis_generic" / "sis_generic" / "plugin.py"
    assert contract_violations(real) == []
    broken = real.read_text(encoding="utf-8").replace(
        "from enroll_sync import hookimpl", "from enroll_sync.hookspecs import hookimpl")
    assert [p.split(": ", 1)[1] for p in contract_violations(real, broken)] == [
        "imports enroll_sync.hookspecs; use the public names of enroll_sync (or enroll_sync.testing)"]


def test_every_public_name_resolves():
    for module in (enroll_sync, enroll_sync.testing):
        assert len(module.__all__) == len(set(module.__all__)), f"{module.__name__}.__all__ has duplicates"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{module.__name__}.__all__ lists names that do not resolve: {missing}"
    # lazily loaded names are the real objects, and unknown names fail plainly
    from enroll_sync import redaction, transport
    from enroll_sync.mapping import steps
    assert enroll_sync.Transport is transport.Transport and enroll_sync.redact is redaction.redact
    assert enroll_sync.Step is steps.Step
    assert "Transport" in dir(enroll_sync)
    try:
        enroll_sync.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("enroll_sync.no_such_name resolved")


def test_plugin_manager_checks_a_plugins_hooks():
    from enroll_sync import hookimpl, plugin_manager

    class Good:
        @hookimpl
        def register_sis_adapters(self):
            return []

    class Misspelt:
        @hookimpl
        def register_sis_adaptors(self):
            return []

    assert plugin_manager(Good()).hook.register_sis_adapters() == [[]]
    assert plugin_manager(defaults=True).hook.register_transformations()  # the built-in steps
    try:
        plugin_manager(Misspelt())
    except Exception as exc:
        assert "register_sis_adaptors" in str(exc)
    else:
        raise AssertionError("a misspelt hook was accepted")


def test_importing_the_public_package_stays_light():
    code = ("import sys, enroll_sync, enroll_sync.testing; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import enroll_sync loads {out.stdout.strip()}"
