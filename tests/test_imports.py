"""The package's import graph has no circles, and every module imports on its own."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "lorat_scale"


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package."""
    mods = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _targets(mods: dict[str, pathlib.Path], cur: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Package modules an import statement loads (``from a import b`` may name module ``a.b``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = cur.split(".")
            keep = len(base) - node.level + (1 if mods[cur].name == "__init__.py" else 0)
            module = ".".join(base[:keep] + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        names = [module] + [f"{module}.{a.name}" for a in node.names]
    return [n for n in names if n in mods]


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its file (function-level imports included).

    A submodule importing its own parent package is left out: Python has already started that package
    when the submodule loads, so it is not a circle between two files.
    """
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[m].update(t for t in _targets(mods, m, node) if t != m and not m.startswith(t + "."))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_cycle_finder_sees_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve():
    graph = import_graph()
    assert "lorat_scale.config" in graph["lorat_scale.train.loop"]  # the loop reads the typed configuration
    assert len(graph) > 40


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_module_imports():
    # __main__ modules run their program when imported: that is their job, not an import to check.
    mods = sorted(m for m in _modules() if not m.endswith("__main__"))
    code = ("import importlib, sys\nnames = sys.stdin.read().split()\n"
            "for m in names:\n    importlib.import_module(m)\nprint('ok', len(names))")
    out = subprocess.run([sys.executable, "-c", code], input="\n".join(mods), capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith(f"ok {len(mods)}")
