"""The training/evaluation modules of ``benchmarks`` import one way: no cycle, not even through a function-level import.

runner → evaluation → overlay, and both runner and evaluation → run_loading (the helpers that read a run back).
"""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
#: Modules that must not sit on an import cycle.
ACYCLIC = (
    "runner",
    "evaluation",
    "measurement",
    "overlay",
    "run_loading",
    "run_status",
    "tensorboard_log",
    "versions",
    "cd_diagram",
)


def _imports(path: Path) -> set[str]:
    """``benchmarks`` modules imported anywhere in ``path`` (function bodies too; ``if TYPE_CHECKING:`` blocks not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                found.add(module.split(".")[0] if module else "")
                found |= {alias.name for alias in node.names} if not module else set()
            elif module.startswith("benchmarks."):
                found.add(module.split(".")[1])
            elif module == "benchmarks":
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in BENCHMARKS.glob("*.py")}
    return {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_runner_evaluation_overlay_and_run_loading_are_on_no_import_cycle():
    graph = _graph()
    assert "run_loading" in graph["runner"] and "run_loading" in graph["evaluation"]
    assert "evaluation" in graph["runner"] and "overlay" in graph["evaluation"]
    on_cycle = [name for name in ACYCLIC if _reaches(graph, name, name)]
    assert on_cycle == []


def test_the_graph_sees_function_level_imports():
    # a lazy import is still an edge: metric_names imports run_status inside a function
    assert "run_status" in _graph()["metric_names"]
