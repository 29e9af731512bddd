"""The package's import graph: no cycle, nothing in jaxlaw imports experiments/, argparse only in
jaxlaw.cli. Read from the source with `ast` (every import statement, function-level ones too), so
a lazy import that closes a cycle counts as well."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxlaw"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[str]:
    """Absolute names of everything module ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        edges = set()
        for imp in _imports(name):
            # `import jaxlaw.a.b` runs jaxlaw.a's __init__ too; the edge goes to the deepest module.
            while imp and imp not in MODULES:
                imp = imp.rsplit(".", 1)[0] if "." in imp else ""
            if imp and imp != name:
                edges.add(imp)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            # A package's __init__ importing its own submodules, and those submodules importing
            # siblings through the package, is how Python packages work: only a cycle that goes
            # through two different modules' code is a real one. Parent -> child edges of a
            # package's own __init__ are kept; child -> own parent package edges are not.
            if n.startswith(m + "."):
                continue
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_walk_sees_the_package():
    graph = _graph()
    assert len(graph) > 60
    assert "jaxlaw.training" in graph["jaxlaw.sweep._sweep"]
    assert "jaxlaw.fitting._lm" in graph["jaxlaw.fitting._fit"]


def test_no_import_cycle():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_library_never_imports_experiments(name):
    bad = [i for i in _imports(name) if i == "experiments" or i.startswith("experiments.")]
    assert not bad, f"{name} imports {bad}"
    assert "runpy" not in _imports(name), f"{name} runs scripts through runpy"


def test_argparse_only_in_the_cli():
    users = {n for n in MODULES if "argparse" in _imports(n)}
    assert users and all(n == "jaxlaw.cli" or n.startswith("jaxlaw.cli.") for n in users), users
