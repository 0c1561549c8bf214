"""The core is a clean ground floor: its import graph, read from the source with ``ast``.

- no import circles among the modules of ``nasengine/`` and its subpackages (every import counts: module level, inside
  functions and under ``TYPE_CHECKING``);
- ``interfaces.py``, the contract plugins build on, imports no other core module but ``errors``;
- the core imports no plugin package (``nasengine.spaces``, ``.tasks``, ``.strategies``);
- no built-in plugin name (the entry points of ``pyproject.toml``) appears in the core's string literals
  outside ``nasengine/settings/defaults.py``: a literal equal to a name, or, for a name with a hyphen
  (``coco-fpn``), one that contains it as a word. Docstrings are prose and are not checked; a plain word
  such as ``random`` only counts as a whole literal.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "nasengine"
TABLE = "settings.defaults"  # the one module that may name built-in plugins
PLUGIN_PACKAGES = ("spaces", "tasks", "strategies", "constraints")


def core_modules() -> dict[str, ast.Module]:
    """Every module of the core by its dotted name below ``nasengine`` (``protocol.engine``; a subpackage's
    ``__init__`` by the subpackage's name, the top package's as ``__init__``)."""
    modules = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        modules[".".join(parts) or "__init__"] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return modules


def source_path(module: str) -> str:
    return f"nasengine/{module.replace('.', '/')}.py"


def imported(tree: ast.Module, modules: set[str]) -> set[str]:
    """The modules of ``modules`` (dotted below ``nasengine``) an AST imports, anywhere in it. A name imported
    from a package that is not one of its modules (a class, a function) counts as an import of the package
    (``__init__`` for ``nasengine`` itself); a plugin package counts as itself, whatever is taken from it."""

    def resolve(dotted: str) -> str:
        parts = dotted.split(".")
        if parts[0] in PLUGIN_PACKAGES:
            return parts[0]
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or "__init__"

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] == "nasengine"]
            found |= {resolve(name.removeprefix("nasengine").lstrip(".")) for name in names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, "the core imports absolutely (from nasengine.x import y)"
            if (node.module or "").split(".")[0] != "nasengine":
                continue
            package = (node.module or "").removeprefix("nasengine").lstrip(".")
            found |= {resolve(f"{package}.{alias.name}" if package else alias.name) for alias in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    trees = core_modules()
    names = set(trees) | set(PLUGIN_PACKAGES)
    return {module: imported(tree, names) - {module} for module, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in graph or target == "__init__":  # the package itself is not a module of the graph
                continue
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def builtin_plugin_names() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = project["entry-points"]
    names = [
        name
        for group in ("nasengine.spaces", "nasengine.tasks", "nasengine.strategies")
        for name in groups.get(group, {})
    ]
    assert names, "pyproject.toml registers no built-in plugins"
    return names


def docstring_nodes(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add(id(first.value))
        # an attribute docstring: a string expression right after an assignment
        body = getattr(node, "body", None)
        body = body if isinstance(body, list) else []  # a lambda's body is one expression
        for before, after in zip(body[:-1], body[1:]):
            if (
                isinstance(before, (ast.Assign, ast.AnnAssign))
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                found.add(id(after.value))
    return found


def plugin_names_in_literals(tree: ast.Module, names: list[str]) -> list[tuple[int, str, str]]:
    words = [name for name in names if "-" in name]
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, words)) + r")(?![\w-])") if words else None
    skip = docstring_nodes(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if text in names:
                hits.append((node.lineno, text, text))
            elif pattern and (match := pattern.search(text)):
                hits.append((node.lineno, match.group(1), text))
    return hits


# --- the checks -----------------------------------------------------------------------------------
def test_the_reader_sees_every_kind_of_import():
    tree = ast.parse(
        "import nasengine.a\nfrom nasengine import b, errors, Thing\nfrom nasengine.c import d\n"
        "def f():\n    from nasengine.e.f import g\n"
        "if TYPE_CHECKING:\n    from nasengine.h import Run\nfrom nasengine.tasks.coco import x\n"
    )
    modules = {"a", "b", "errors", "c", "e", "e.f", "h", "tasks"}
    assert imported(tree, modules) == {"a", "b", "errors", "__init__", "c", "e.f", "h", "tasks"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "errors"}, "b": {"errors"}, "errors": set()}) is None


def test_no_import_circles_in_the_core():
    graph = import_graph()
    assert {"protocol.engine", "interfaces", "flops", "report.build"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle or [])}"


def test_the_contract_imports_nothing_of_the_core_above_it():
    imports = import_graph()["interfaces"]
    assert imports <= {"errors"}, f"interfaces.py imports {sorted(imports - {'errors'})}"


def test_the_core_imports_no_plugin():
    for module, imports in import_graph().items():
        assert not imports & set(PLUGIN_PACKAGES), (
            f"{source_path(module)} imports {sorted(imports & set(PLUGIN_PACKAGES))}"
        )


def test_no_builtin_plugin_is_named_outside_the_table():
    names = builtin_plugin_names()
    hits = [
        f"{source_path(module)}:{line}: {name!r} in {text[:80]!r}"
        for module, tree in core_modules().items()
        if module != TABLE
        for line, name, text in plugin_names_in_literals(tree, names)
    ]
    assert not hits, "built-in plugin names outside nasengine/settings/defaults.py:\n" + "\n".join(hits)


def test_the_table_names_the_defaults():
    from nasengine.settings import config, defaults

    names = builtin_plugin_names()
    assert plugin_names_in_literals(core_modules()[TABLE], names)  # the check would see a name in the table
    run = config.RunConfig()
    assert {run.space, run.task, run.pretrain_task, run.search.strategy, defaults.RANDOM_STRATEGY} <= set(names)
    assert config.PRESETS is defaults.PRESETS
