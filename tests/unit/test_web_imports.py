"""`web/` has no import circle: each module can be imported first, and none reaches itself.

The graph counts every import statement in a module, those inside functions too: a circle
hidden behind an import in a function (as `Services` once imported the metrics, which imported
the quote handlers, which imported `web.base` again) is still a circle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import web

WEB = Path(web.__file__).parent
MODULES = sorted(f"web.{p.stem}" for p in WEB.glob("*.py") if p.stem != "__init__")


def imports_of(module: str) -> set[str]:
    """The `web` modules `module` imports anywhere in its text."""
    tree = ast.parse((WEB / f"{module.split('.', 1)[1]}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "web" if node.level else node.module or ""
            if node.level and node.module:
                base = f"web.{node.module}"
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from web import hub`
    return found & set(MODULES)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of `graph` meets (each as the path that closes it)."""
    cycles: list[list[str]] = []
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                walk(nxt, path + [nxt])
        done.add(node)

    for module in sorted(graph):
        if module not in done:
            walk(module, [module])
    return cycles


def test_the_cycle_finder_finds_a_circle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_an_import_made_inside_a_function():
    assert "web.hub" in imports_of("web.services")
    assert "web.services" in imports_of("web.base")


def test_no_web_module_imports_itself_through_others():
    graph = {module: imports_of(module) for module in MODULES}
    assert import_cycles(graph) == []


def test_every_web_module_imports_first_in_a_fresh_interpreter():
    """Each module imported with no other `web` module loaded before it (one interpreter, with
    `web.*` dropped from sys.modules between modules, so the third-party imports load once)."""
    script = "\n".join([
        "import importlib, sys",
        f"for name in {MODULES!r}:",
        "    for loaded in [m for m in sys.modules if m == 'web' or m.startswith('web.')]:",
        "        del sys.modules[loaded]",
        "    importlib.import_module(name)",
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
