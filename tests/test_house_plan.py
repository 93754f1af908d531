"""The house plan: which package may import which, no import cycles, and vLLM's environment set in one place.

  core/      imports nothing of the project (the modes and think tags, process clean-up)
  model/     core
  rewards/   core
  rollouts/  core, model
  rl/        anything
  bench/     anything

Read from the source with `ast` (nothing is imported): absolute and relative imports, at module level and inside
functions. A package is a folder with `__init__.py` or a single file: `rl/config.py` and `rl/config/` both work.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("core", "model", "rewards", "rollouts", "rl", "bench")
ALLOWED: dict[str, tuple[str, ...]] = {
    "core": (),
    "model": ("core",),
    "rewards": ("core",),
    "rollouts": ("core", "model"),
    "rl": ("core", "model", "rewards", "rollouts"),
}
"""Package -> the other project packages it may import."""
ENV_DEFAULTS_HOME = "rollouts/vllm/engine.py"
"""The one module whose `make_llm` applies vLLM's environment defaults (`cpu_defaults`), at engine creation."""


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module (dotted)."""
    target: str
    """The imported module (dotted): the most specific module that exists, else the name as written."""
    where: str
    """`path:line`."""
    code: str
    """The import statement."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def python_files(package: str) -> list[Path]:
    single = ROOT / f"{package}.py"
    return [single] if single.is_file() else sorted((ROOT / package).rglob("*.py"))


def imports_of(path: Path) -> list[Import]:
    """The imports of project packages in one file, relative ones resolved to the module they name."""
    source, tree = module_name(path), ast.parse(path.read_text(), str(path))
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level - 1 >= len(base):
                    raise AssertionError(f"{path}:{node.lineno}: relative import above the top package")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{module}.{alias.name}"
                found.append((node, sub if alias.name != "*" and is_module(sub) else module))
    where = path.relative_to(ROOT)
    return list(dict.fromkeys(Import(source, target, f"{where}:{node.lineno}", ast.unparse(node))
                              for node, target in found if target.split(".")[0] in PROJECT))


def project_imports() -> list[Import]:
    return [imp for package in ALLOWED for path in python_files(package) for imp in imports_of(path)]


def floor_violations(package: str, imports: list[Import]) -> list[str]:
    allowed = set(ALLOWED[package]) | {package}
    return [f"{imp.where}: `{imp.code}`: {package}/ may import only {', '.join(sorted(allowed))}"
            for imp in imports if imp.source.split(".")[0] == package and imp.target.split(".")[0] not in allowed]


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle per strongly connected component of the module graph (Tarjan), as the imports along it."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.target != imp.source:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:  # a shortest way back to the first module, within the component
        start = min(component)
        paths = {start: []}
        frontier = [start]
        while frontier and start not in {t for n in frontier for t in graph[n]}:
            nxt = []
            for n in frontier:
                for t, imp in sorted(graph[n].items()):
                    if t in component and t not in paths:
                        paths[t] = paths[n] + [imp]
                        nxt.append(t)
            frontier = nxt
        last = min(n for n in frontier if start in graph[n])
        cycles.append(paths[last] + [graph[last][start]])
    return cycles


def describe(cycle: list[Import]) -> str:
    chain = " -> ".join([cycle[0].source] + [imp.target for imp in cycle])
    return chain + "".join(f"\n    {imp.where}: `{imp.code}`" for imp in cycle)


def module_level_calls(path: Path, name: str) -> list[int]:
    """Lines where `name(...)` runs when the module is imported (not inside a function body)."""
    lines = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute)
                                                                     and func.attr == name):
                lines.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return lines


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return project_imports()


@pytest.mark.parametrize("package", list(ALLOWED))
def test_each_package_imports_only_the_floors_below(package, imports):
    problems = floor_violations(package, imports)
    assert not problems, "imports that break the house plan:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", list(ALLOWED))
def test_no_import_cycles(package, imports):
    cycles = [c for c in import_cycles(imports) if any(imp.source.split(".")[0] == package for imp in c)]
    assert not cycles, "import cycles:\n" + "\n".join(describe(c) for c in cycles)


@pytest.mark.parametrize("package", list(ALLOWED) + ["bench", "tests"])
def test_vllm_env_defaults_are_not_applied_at_import_time(package):
    found = [f"{path.relative_to(ROOT)}:{line}" for path in python_files(package)
             if path.relative_to(ROOT).as_posix() != ENV_DEFAULTS_HOME
             for line in module_level_calls(path, "cpu_defaults")]
    assert not found, (f"cpu_defaults() runs at import time in {', '.join(found)}: vLLM's environment defaults are "
                       f"applied by make_llm ({ENV_DEFAULTS_HOME}), in the process that starts the engine")


# ---- the checker itself, on made-up trees ----

def imp(source: str, target: str) -> Import:
    return Import(source, target, f"{source}.py:1", f"import {target}")


def test_cycles_are_found_and_reported_in_order():
    cycles = import_cycles([imp("a.x", "a.y"), imp("a.y", "a.z"), imp("a.z", "a.x"), imp("a.z", "b"),
                            imp("b", "c")])
    assert [[i.source for i in c] for c in cycles] == [["a.x", "a.y", "a.z"]]
    assert describe(cycles[0]).startswith("a.x -> a.y -> a.z -> a.x\n")
    assert import_cycles([imp("a.x", "a.y"), imp("a.x", "a.z"), imp("a.y", "a.z")]) == []


def test_floor_rules_name_the_file_and_the_import():
    found = floor_violations("model", [imp("model.doctor", "rollouts.vllm.engine"), imp("model.x", "core.modes"),
                                       imp("model.y", "model.x")])
    assert found == ["model.doctor.py:1: `import rollouts.vllm.engine`: model/ may import only core, model"]


def test_relative_and_function_level_imports_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    (tmp_path / "rl" / "sub").mkdir(parents=True)
    for name in ("rl/__init__.py", "rl/sub/__init__.py", "rl/sub/b.py", "rl/c.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "rl" / "sub" / "a.py").write_text(
        "import os\nfrom . import b\nfrom ..c import f\n\ndef g():\n    from model.processor import X\n")
    found = {(i.target, i.where) for i in imports_of(tmp_path / "rl" / "sub" / "a.py")}
    assert found == {("rl.sub.b", "rl/sub/a.py:2"), ("rl.c", "rl/sub/a.py:3"), ("model.processor", "rl/sub/a.py:6")}
    (tmp_path / "rl" / "sub" / "d.py").write_text("from .. import c\nfrom . import nothing_here\n")
    assert [i.target for i in imports_of(tmp_path / "rl" / "sub" / "d.py")] == ["rl.c", "rl.sub"]
    (tmp_path / "rl" / "sub" / "__init__.py").write_text("from .b import g\nimport rl.c\n")
    assert [i.target for i in imports_of(tmp_path / "rl" / "sub" / "__init__.py")] == ["rl.sub.b", "rl.c"]


def test_module_level_calls_skip_function_bodies(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from x import cpu_defaults\ncpu_defaults()\n\ndef f():\n    cpu_defaults()\n"
                    "if True:\n    engine.cpu_defaults()\n")
    assert module_level_calls(path, "cpu_defaults") == [2, 7]
