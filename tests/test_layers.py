"""The package's shape: layers whose imports point down only, no import cycle, small modules.

Imports inside functions count; imports under ``if TYPE_CHECKING:`` do not. Run
``python tests/test_layers.py`` to print the layer map and every import edge.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator

PACKAGE = Path(__file__).resolve().parent.parent / "distribute"
MAX_LINES = 450

#: Bottom first. A module may import modules of its own layer or below, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base: errors, settings, secrets", ("exceptions", "version", "settings", "redact")),
    ("protocol: names and formats", ("protocol",)),
    ("git: process, transport, local copy", ("repo",)),
    ("ledger, and its archive of done segments", ("ledger", "archive")),
    ("coordination: leases, lock, wait queue, heartbeat", ("coordination",)),
    ("status model (read-only)", ("status",)),
    ("write transaction (the only writer of master), the worker's checkout",
     ("transaction", "workspace")),
    ("claims, job branches, serving waiters, sessions, batches, the worker's job state machine",
     ("answers", "batch", "bigfiles", "claims", "closing", "jobbranch", "pipeline", "serve",
      "sessions", "worker")),
    ("next-job functions, maintenance", ("next_jobs", "maintenance")),
    ("entry points and settings facade", ("connect", "config")),
    ("the worker loop", ("loop", "supervise")),
    ("integrations and reports", ("vast", "hub", "optuna", "report")),
    ("command line", ("cli",)),
    ("package root and the original design's entry module", ("__init__", "__main__", "dist")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports at run time."""
    is_pkg = path.name == "__init__.py"
    package = ("" if name == "__init__" else name) if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = ["__init__" if a.name == "distribute" else a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            absolute = stem if node.level else stem[len("distribute."):] \
                if stem.startswith("distribute.") else "__init__" if stem == "distribute" else None
            if absolute is None:
                continue
            subs = [f"{absolute}.{a.name}".lstrip(".") for a in node.names]
            targets = [m for m in subs if m in known] or [absolute or "__init__"]
        else:
            continue
        for target in targets:
            if target.startswith("distribute."):
                target = target[len("distribute."):]
            if target in known and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    known.setdefault("__init__", PACKAGE / "__init__.py")
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules() if layer_of(name) < 0] == []


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_imports_point_down() -> None:
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a)]
    assert upward == []


def test_no_old_name_used_inside_the_package() -> None:
    compat = set(LAYERS[-1][1]) - {"__init__", "__main__"}
    users = [f"{a} imports {b}" for a, targets in graph().items() for b in targets
             if b in compat and a not in compat]
    assert users == []


def test_modules_are_small() -> None:
    big = {name: n for name, path in modules().items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert big == {}


#: Methods that run a git command line given as strings: only ``repo/`` may call them.
GIT_RUNNERS = {"git", "_git", "_run", "run_bytes", "_network", "execute"}
#: Functions that run a command: ``run``/``Popen``/... is flagged when its command is a string
#: (``clone.run("log", ...)``), a starred list (``run(*args)``) or a list starting with "git".
COMMAND_RUNNERS = {"run", "Popen", "call", "check_call", "check_output", "system", "popen"}


def _starts_with_git(node: ast.expr) -> bool:
    """Whether ``node`` is a list or tuple of arguments whose first one is ``"git"``."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        return isinstance(first, ast.Constant) and first.value == "git"
    return False


def git_command_lines(source: str) -> list[tuple[int, str]]:
    """``[(line, what)]`` for each place in ``source`` that spells a git command line: a call of
    a git-running method (``clone.git(...)``, ``._network(...)``…), a command runner given git
    arguments, or GitPython imported."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name == "git" or a.name.startswith("git.")]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and (node.module == "git" or node.module.startswith("git.")):
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else ""
            first = node.args[0] if node.args else None
            if name in GIT_RUNNERS and isinstance(node.func, ast.Attribute):
                found.append((node.lineno, ast.unparse(node.func)))
            elif name in COMMAND_RUNNERS and first is not None and (
                    isinstance(first, ast.Starred) or _starts_with_git(first)
                    or isinstance(first, ast.Constant) and isinstance(first.value, str)):
                found.append((node.lineno, ast.unparse(node.func)))
            elif any(_starts_with_git(arg) for arg in node.args if isinstance(arg, ast.expr)):
                found.append((node.lineno, ast.unparse(node.func)))
    return sorted(found)


def test_git_runs_only_in_the_git_layer() -> None:
    """Every git process starts in ``repo/``: the layers above call its named operations."""
    offenders = [f"distribute/{path.relative_to(PACKAGE)}:{line}: {what}"
                 for name, path in modules().items() if layer_of(name) != layer_of("repo")
                 for line, what in git_command_lines(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_git_checker_sees_git_command_lines() -> None:
    source = """
import subprocess
import git
from git import Repo
clone.git("log", "-1")
self.clone.run("commit", "-m", message)
clone.run(*args, stdin=message)
worker.clone._network(["fetch"], what="fetch")
subprocess.run(["git", "init"], check=True)
os.system("git gc")
helper(("git", "gc"))
subprocess.Popen([sys.executable, "-m", "distribute", "worker"])
logging.getLogger("git")
raise RemoteError("git commit failed")
supervisor.run(run_func, worker)
clone.commit_tree(tree, "merge", ["HEAD"])
"""
    assert [line for line, _ in git_command_lines(source)] == [3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    edges = graph()
    for index, (title, _) in enumerate(LAYERS):
        members = sorted(m for m in edges if layer_of(m) == index)
        print(f"{index:2}  {title}")
        for m in members:
            print(f"      {m:28} -> {', '.join(sorted(edges[m])) or '-'}")
    found = cycles(edges)
    print("cycles:", found or "none")
    sys.exit(1 if found else 0)
