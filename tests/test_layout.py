"""The house rules of the package, checked on its source (CONTRIBUTING: layout and conventions).

- no import cycle among midtrain modules, counting imports inside functions (``if TYPE_CHECKING:`` does not count);
- no ``_private`` name of one midtrain module imported or used by another;
- no file over 600 lines, no function over 80 lines;
- every verb of the registry lives in a file named by it, and the README lists every verb.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from midtrain.stages import STAGES

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "midtrain"
README = Path(__file__).resolve().parents[1] / "README.md"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _resolve_from(mod: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from … import`` (relative imports resolved against ``mod``)."""
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[mod].name == "__init__.py"
    base = mod.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(mod: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every runtime import in ``mod``, at any depth."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    out: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, [], child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                out.append((_resolve_from(mod, child), [a.name for a in child.names], child.lineno))
            visit(child)

    visit(tree)
    return out


def edges_of(mod: str) -> set[str]:
    """The midtrain modules ``mod`` imports: ``from pkg import sub`` names the submodule when it is one."""
    targets: set[str] = set()
    for target, names, _ in imports_of(mod):
        if not target.startswith("midtrain"):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        if subs:
            targets.update(subs)
        if not names or len(subs) < len(names):
            targets.add(target)
    targets.discard(mod)
    return {t for t in targets if t in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = {m: edges_of(m) for m in MODULES}
    found = cycles(graph)
    assert not found, "import cycles (imports inside functions count): " + "; ".join(" ↔ ".join(c) for c in found)


def test_no_private_names_across_modules():
    bad = []
    for mod, path in MODULES.items():
        aliases: dict[str, str] = {}  # local name → midtrain module it is bound to
        for target, names, line in imports_of(mod):
            if not target.startswith("midtrain"):
                continue
            for n in names:
                if f"{target}.{n}" in MODULES:
                    aliases[n] = f"{target}.{n}"
                elif n.startswith("_") and target != mod:
                    bad.append(f"{path.relative_to(SRC)}:{line}: imports {target}.{n}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("midtrain") and a.asname:
                        aliases[a.asname] = a.name
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and aliases[node.value.id] != mod
            ):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}: uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_file_and_function_sizes():
    bad = []
    for path in MODULES.values():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            bad.append(f"{path.relative_to(SRC)}: {n} lines (max {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.name} is {length} lines (max {MAX_FUNCTION_LINES})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.verb)
def test_each_verb_lives_in_a_file_named_by_it(stage):
    path = MODULES[stage.module]
    words = stage.verb.split()
    stem = path.stem
    assert any(stem == w or stem.startswith(w) for w in words), f"{stage.verb}: {path.relative_to(SRC)}"
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert f"midtrain {stage.verb}" in doc, f"{path.relative_to(SRC)}: its docstring should name `midtrain {stage.verb}`"


def test_readme_lists_every_verb():
    text = README.read_text(encoding="utf-8")
    missing = [s.verb for s in STAGES if f"`{s.verb}`" not in text and f"midtrain {s.verb}" not in text]
    assert not missing, f"README does not mention: {missing}"


def test_every_module_opens_with_a_docstring():
    bare = [
        str(p.relative_to(SRC))
        for p in MODULES.values()
        if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert not bare, f"modules without a docstring: {bare}"
