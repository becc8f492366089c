"""The house rules of the package, checked on its source (CONTRIBUTING: layout and conventions, tests).

Every rule reads every import of a module: at module top, inside functions, under ``if TYPE_CHECKING:`` and a
literal ``importlib.import_module("midtrain.…")``.

- packages are ranked and imports point down (:data:`RANK`): a module imports its own package and packages of a
  lower rank, never one of its own rank or above; each back-arrow is named by file:line;
- no import cycle among midtrain modules;
- package ``__init__.py`` files hold a docstring only;
- no ``_private`` name of one midtrain module imported or used by another;
- no file over 600 lines, no function over 80 lines;
- every verb of the registry lives in a file named by it, and the README lists every verb;
- a map that cannot go stale: the README's tree lists every module and nothing else, and every test file names
  the module it tests (``tests/<pkg>/test_<module>[_<aspect>].py``) or is a cross-cutting suite listed, with its
  reason, in :data:`CROSS_CUTTING`.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from midtrain.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "midtrain"
TESTS = ROOT / "tests"
README = ROOT / "README.md"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80

# Package ranks, lowest first. A module may import its own package and any package of a lower rank; packages of
# one rank are independent families and do not import each other. Why this order (CONTRIBUTING has it too):
# the floor (config, errors, file IO, run directories, data readers) serves every stage; models (tokenizers,
# loading, generation) is what every LLM-using stage builds on; llm (LLMs as tools: backends, judge) and synth
# (the controlled world: problems, verification) each need only models; augment (the annotator loop) and eval
# (benchmarks, scoring) use llm and synth; train (pretrain, SFT, RL) uses them for its rewards and its evaluation;
# analysis reads what training wrote; experiment composes every stage and reports on all of them.
FLOOR = "floor"
ENTRY = "entry"
RANK = {
    FLOOR: 0,  # top-level modules of midtrain, and the floor's own subpackages (FLOOR_PACKAGES)
    "models": 1,
    "llm": 2,
    "synth": 2,
    "augment": 3,
    "eval": 3,
    "train": 4,
    "analysis": 5,
    "experiment": 6,
    ENTRY: 7,
}
FLOOR_PACKAGES = {"data"}  # a floor module split by concern into a subpackage stays on the floor
# The entry points sit above every stage: `midtrain` (cli.py) imports a stage's module when its verb runs, and
# `python -m midtrain` runs the CLI. Nothing in the package imports them. The registry, stages.py, is not among
# them: it names every stage by an import *string* ("midtrain.synth.generate:generate", resolved by
# importlib when a verb runs), so its imports are the floor's and the experiment runner may read it.
ENTRY_MODULES = {"midtrain.cli", "midtrain.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def rel(mod: str) -> str:
    return str(MODULES[mod].relative_to(ROOT))


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


def _import_module_literal(node: ast.AST) -> str | None:
    """The module of ``importlib.import_module("midtrain.x")`` / ``import_module("midtrain.x")`` with a literal."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    arg = node.args[0].value
    return arg if name == "import_module" and isinstance(arg, str) and arg.startswith("midtrain") else None


@dataclass(frozen=True)
class Import:
    target: str  # the imported module (absolute)
    names: tuple[str, ...]  # names taken from it (``from target import a, b``); () for ``import target``
    line: int
    kind: str  # "runtime", "typing" (under ``if TYPE_CHECKING:``) or "dynamic" (a literal import_module)


def imports_of(mod: str) -> list[Import]:
    """Every import in ``mod``, at any depth (functions, ``if TYPE_CHECKING:`` blocks, literal import_module)."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    out: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_one(sub, "typing")
                for sub in child.orelse:
                    visit_one(sub, kind)
                continue
            visit_one(child, kind)

    def visit_one(child: ast.AST, kind: str) -> None:
        if isinstance(child, ast.Import):
            out.extend(Import(a.name, (), child.lineno, kind) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            out.append(Import(_resolve_from(mod, child), tuple(a.name for a in child.names), child.lineno, kind))
        elif (target := _import_module_literal(child)) is not None:
            out.append(Import(target, (), child.lineno, "dynamic"))
        visit(child, kind)

    visit(tree, "runtime")
    return out


def targets_of(imp: Import) -> set[str]:
    """The midtrain modules one import reaches: ``from pkg import sub`` names the submodule when it is one."""
    if not imp.target.startswith("midtrain"):
        return set()
    subs = {f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in MODULES}
    out = set(subs)
    if not imp.names or len(subs) < len(imp.names):
        out.add(imp.target)
    return {t for t in out if t in MODULES}


def edges_of(mod: str) -> set[str]:
    """The midtrain modules ``mod`` imports (every kind of import)."""
    return {t for imp in imports_of(mod) for t in targets_of(imp)} - {mod}


def package_of(mod: str) -> str:
    """The ranked package of a module: ``FLOOR`` for the top level, ``ENTRY`` for the entry points."""
    if mod in ENTRY_MODULES:
        return ENTRY
    parts = mod.split(".")
    if len(parts) < 2 or (len(parts) == 2 and MODULES[mod].name != "__init__.py") or parts[1] in FLOOR_PACKAGES:
        return FLOOR
    return parts[1]


def back_arrows(imports: dict[str, list[Import]]) -> list[str]:
    """Every import that points to the importer's own rank or above, as ``file:line: …``."""
    bad = []
    for mod, imps in imports.items():
        pkg = package_of(mod)
        for imp in imps:
            for target in sorted(targets_of(imp)):
                tpkg = package_of(target)
                if tpkg != pkg and RANK[tpkg] >= RANK[pkg]:
                    how = "" if imp.kind == "runtime" else f" ({'under TYPE_CHECKING' if imp.kind == 'typing' else 'import_module'})"
                    bad.append(f"{rel(mod)}:{imp.line}: {pkg} (rank {RANK[pkg]}) imports {target} ({tpkg}, rank {RANK[tpkg]}){how}")
    return bad


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


# -- imports ------------------------------------------------------------------------------------------------------
def test_every_package_has_a_rank():
    unranked = sorted({package_of(m) for m in MODULES} - set(RANK))
    assert not unranked, f"packages without a rank (add them to RANK here and in CONTRIBUTING): {unranked}"


def test_the_import_scan_sees_every_kind_of_import(tmp_path, monkeypatch):
    src = tmp_path / "src" / "midtrain"
    (src / "llm").mkdir(parents=True)
    (src / "__init__.py").write_text('"""root"""\n')
    (src / "llm" / "__init__.py").write_text('"""llm"""\n')
    (src / "llm" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "from midtrain.train import engine\n"  # 3: runtime, a submodule by name
        "if TYPE_CHECKING:\n"
        "    from midtrain.eval.scoring import score\n"  # 5: typing
        "def f():\n"
        "    from ..synth import world\n"  # 7: inside a function, relative, same rank
        "    return importlib.import_module('midtrain.experiment.demo')\n"  # 8: dynamic
        "from . import b\n"  # 9: own package
        "from midtrain.config import Config\n"  # 10: floor
    )
    (src / "llm" / "b.py").write_text('"""b"""\n')
    for sub in ("train/engine", "eval/scoring", "synth/world", "experiment/demo", "config"):
        (src / f"{sub}.py").parent.mkdir(exist_ok=True)
        (src / f"{sub}.py").write_text('"""x"""\n')
    monkeypatch.setitem(globals(), "SRC", tmp_path / "src")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "MODULES", {module_name(p): p for p in sorted(src.rglob("*.py"))})
    imps = imports_of("midtrain.llm.a")
    assert [(i.line, i.kind) for i in imps if i.target.startswith("midtrain")] == [
        (3, "runtime"),
        (5, "typing"),
        (7, "runtime"),
        (8, "dynamic"),
        (9, "runtime"),
        (10, "runtime"),
    ]
    assert edges_of("midtrain.llm.a") == {
        "midtrain.train.engine",
        "midtrain.eval.scoring",
        "midtrain.synth.world",
        "midtrain.experiment.demo",
        "midtrain.llm.b",
        "midtrain.config",
    }
    bad = back_arrows({"midtrain.llm.a": imps})
    assert [b.split(": ", 1)[0] for b in bad] == [
        "src/midtrain/llm/a.py:3",
        "src/midtrain/llm/a.py:5",
        "src/midtrain/llm/a.py:7",
        "src/midtrain/llm/a.py:8",
    ]
    assert "under TYPE_CHECKING" in bad[1] and "import_module" in bad[3]
    assert package_of("midtrain.config") == FLOOR and package_of("midtrain") == FLOOR and package_of("midtrain.llm") == "llm"


def test_imports_point_down_the_package_ranks():
    bad = back_arrows({m: imports_of(m) for m in MODULES})
    assert not bad, "imports that point up or sideways (CONTRIBUTING: layers):\n" + "\n".join(bad)


def test_nothing_imports_the_entry_points():
    bad = [
        f"{rel(m)}:{imp.line}: imports {t}"
        for m in MODULES
        if m not in ENTRY_MODULES
        for imp in imports_of(m)
        for t in targets_of(imp)
        if t in ENTRY_MODULES
    ]
    assert not bad, "\n".join(bad)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = {m: edges_of(m) for m in MODULES}
    found = cycles(graph)
    assert not found, "import cycles (imports inside functions and under TYPE_CHECKING count): " + "; ".join(" ↔ ".join(c) for c in found)


def init_problems(where: str, text: str, root: bool, version: str) -> list[str]:
    """What a package ``__init__`` holds besides its docstring (the root package may declare ``__version__``, which
    must be the project's version), as ``where:line: …``."""
    body = ast.parse(text).body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
        return [f"{where}: no docstring"]
    bad = []
    for node in body[1:]:
        if root and isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            if not (isinstance(node.value, ast.Constant) and node.value.value == version):
                bad.append(f"{where}:{node.lineno}: __version__ is not pyproject's {version!r}")
        else:
            bad.append(f"{where}:{node.lineno}: {type(node).__name__} after the docstring")
    return bad


def test_init_problems_are_found():
    assert init_problems("p", '"""doc."""\n', root=False, version="1") == []
    assert init_problems("p", '"""doc."""\nfrom midtrain.synth.world import op_count\nX = 1\n', root=False, version="1") == [
        "p:2: ImportFrom after the docstring",
        "p:3: Assign after the docstring",
    ]
    assert init_problems("p", "import os\n", root=False, version="1") == ["p: no docstring"]
    assert init_problems("p", '"""d"""\n__version__ = "1"\n', root=True, version="1") == []
    assert init_problems("p", '"""d"""\n__version__ = "0.9"\n', root=True, version="1") == ["p:2: __version__ is not pyproject's '1'"]
    assert init_problems("p", '"""d"""\n__version__ = "1"\n', root=False, version="1") == ["p:2: Assign after the docstring"]


def test_package_init_files_hold_a_docstring_only():
    """A package's ``__init__`` re-exporting its modules makes ``import midtrain.pkg.x`` import all of them (and
    hides where a name lives): users import from the defining module."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    bad = [
        problem
        for mod, path in MODULES.items()
        if path.name == "__init__.py"
        for problem in init_problems(rel(mod), path.read_text(encoding="utf-8"), root=mod == "midtrain", version=version)
    ]
    assert not bad, "package __init__ files hold a docstring only:\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for mod, path in MODULES.items():
        aliases: dict[str, str] = {}  # local name → midtrain module it is bound to
        for imp in imports_of(mod):
            if not imp.target.startswith("midtrain"):
                continue
            for n in imp.names:
                if f"{imp.target}.{n}" in MODULES:
                    aliases[n] = f"{imp.target}.{n}"
                elif n.startswith("_") and imp.target != mod:
                    bad.append(f"{rel(mod)}:{imp.line}: imports {imp.target}.{n}")
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
                bad.append(f"{rel(mod)}:{node.lineno}: uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


# -- sizes and names ----------------------------------------------------------------------------------------------
def test_file_and_function_sizes():
    bad = []
    for mod, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            bad.append(f"{rel(mod)}: {n} lines (max {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{rel(mod)}:{node.lineno}: {node.name} is {length} lines (max {MAX_FUNCTION_LINES})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.verb)
def test_each_verb_lives_in_a_file_named_by_it(stage):
    path = MODULES[stage.module]
    words = [w.replace("-", "_") for w in stage.verb.split()]  # analyze thought-swap → thought_swap.py
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


# -- the map: the README's tree and the test files ----------------------------------------------------------------
def readme_tree(text: str) -> list[str]:
    """The module paths (relative to ``src/midtrain``) named by the ``src/midtrain/`` tree of the README's
    Development section. An entry at indent 2 is a package (``train/``, ``a/b/``) or top-level modules; deeper
    lines continue the entry above; each ``name.py`` word is a module of the entry's package (code spans and
    paths such as ``synth/verify.py`` in a description are prose, not entries)."""
    section = re.search(r"^## Development\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Development' section"
    block = re.search(r"^```\nsrc/midtrain/\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "README.md's Development section has no ``` block starting with 'src/midtrain/'"
    listed, pkg = [], ""
    for line in block.group(1).splitlines():
        if not line.startswith(" "):  # tests/, bench/: the package's tree has ended
            break
        body = re.sub(r"`[^`]*`", "", line)
        stripped = body.lstrip()
        if len(body) - len(stripped) <= 2:
            head = re.match(r"((?:\w+/)+)(?:\s|$)", stripped)
            pkg = head.group(1) if head else ""
        listed += [pkg + name for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", body)]
    return listed


def test_readme_tree_parser():
    text = (
        "## Development\n\n```\nsrc/midtrain/\n"
        "  cli.py          the `midtrain` command, not `x/y.py`\n"
        "  errors.py console.py   one-line errors\n"
        "  train/          engine.py (run dir), data.py,\n"
        "                  lm.py; see synth/verify.py\n"
        "  data/           jsonl.py\n"
        "  a/b/            c.py\n"
        "tests/            test_x.py\n```\n## Next\n"
    )
    assert readme_tree(text) == [
        "cli.py",
        "errors.py",
        "console.py",
        "train/engine.py",
        "train/data.py",
        "train/lm.py",
        "data/jsonl.py",
        "a/b/c.py",
    ]


def test_readme_tree_lists_every_module():
    listed = readme_tree(README.read_text(encoding="utf-8"))
    modules = {str(p.relative_to(PKG)) for p in MODULES.values() if p.name != "__init__.py"}
    missing = sorted(modules - set(listed))
    extra = sorted(set(listed) - modules)
    twice = sorted({m for m in listed if listed.count(m) > 1})
    assert not (missing or extra or twice), (
        f"README.md's Development tree is stale: missing {missing}, not modules {extra}, listed twice {twice}"
    )


# Test files that test a property of the whole package or of several modules, not one module, each with the reason
# it has no module of its name. A directory entry (ending in '/') covers the files under it.
CROSS_CUTTING = {
    "test_layout.py": "the house rules, checked on the source of every module",
    "test_configs.py": "every shipped YAML under configs/ loads into its verb's config",
    "test_validation.py": "parse-time rules of every stage's config, through the CLI",
    "hostile/": "bad input to every verb through the CLI: one file per stage family, with shared rules",
    "synth/test_cli.py": "the synth verbs (generate, verify, stats) together through midtrain.cli",
    "test_readme.py": "the README's walk-through, run as written with its budgets scaled down",
    "llm/test_real_server.py": "a real `transformers serve` as an experiment's service, with augment and judge through it",
    "llm/test_redaction.py": "credentials never stored: config redaction, backend errors, verdicts and run metadata together",
}
SUPPORT = re.compile(r"^(conftest|__init__|\w+_support)\.py$")  # fixtures and helpers, not test files


def module_of_test(path: Path) -> str | None:
    """The module a test file is named after: ``tests/<pkg>/test_<mod>[_<aspect>].py`` → ``<pkg>/<mod>.py`` (or
    the package ``<pkg>/<mod>/``), the longest module name that matches; None if no module matches."""
    parts = path.relative_to(TESTS).parts
    where = PKG.joinpath(*parts[:-1])
    name = path.stem.removeprefix("test_")
    candidates = [p for p in where.iterdir() if p.suffix == ".py" and p.name != "__init__.py"] if where.is_dir() else []
    candidates += [p for p in where.iterdir() if (p / "__init__.py").is_file()] if where.is_dir() else []
    stems = sorted((p.with_suffix("").name for p in candidates), key=len, reverse=True)
    return next((str(Path(*parts[:-1], s)) for s in stems if name == s or name.startswith(s + "_")), None)


def cross_cutting(path: Path) -> bool:
    name = str(path.relative_to(TESTS))
    return any(name == k or (k.endswith("/") and name.startswith(k)) for k in CROSS_CUTTING)


def test_every_test_file_names_its_module():
    files = [p for p in TESTS.rglob("test_*.py") if not SUPPORT.match(p.name)]
    orphans = sorted(str(p.relative_to(ROOT)) for p in files if not cross_cutting(p) and module_of_test(p) is None)
    assert not orphans, (
        "test files named after no module (tests/<pkg>/test_<module>[_<aspect>].py; rename them, or list a "
        f"cross-cutting suite in CROSS_CUTTING with its reason): {orphans}"
    )


def test_the_cross_cutting_list_is_not_stale():
    stale = []
    for entry in CROSS_CUTTING:
        path = TESTS / entry
        if not path.exists():
            stale.append(f"{entry}: does not exist")
        elif path.is_file() and module_of_test(path) is not None:
            stale.append(f"{entry}: names the module {module_of_test(path)}; it is not cross-cutting")
    assert not stale, "CROSS_CUTTING: " + "; ".join(stale)


def test_the_readme_test_command_is_what_ci_runs():
    """The README's test command is CI's, word for word, wherever the README or CONTRIBUTING gives the whole suite."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if " pytest" in line]
    assert len(ci) == 1, f".ci/run should run pytest once: {ci}"
    for doc in (README, ROOT / "CONTRIBUTING.md"):
        text = doc.read_text(encoding="utf-8")
        commands = [c.strip() for c in re.findall(r"(\.venv/bin/python -m pytest[^#`\n]*)", text)]
        whole = [c for c in commands if not re.search(r"\s(-m|-k)\s|\stests/", c.partition("pytest")[2] + " ")]  # not a subset
        assert whole and all(c == ci[0] for c in whole), f"{doc.name}: the test command {whole} is not .ci/run's {ci[0]!r}"
