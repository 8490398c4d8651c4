"""The package's layering: imports point down, and no two subpackages (or modules) depend on each other.

Every module under dppo/ is parsed with ``ast``; its dependencies are all ``import`` statements, at module level
and inside functions (a lazy import is still a dependency), plus string constants that name a dppo module
(``importlib.import_module("dppo.x")``, entry points such as ``"dppo.envs.avoid:AvoidEnv"``, the task
registry's module table), docstrings excepted. docs/architecture.md shows the same table as a picture.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "dppo"

# Rank of each unit, top to bottom. A module may import its own unit and units of a lower rank; units of the
# same rank are independent of each other. "entry" is every module directly in dppo/ (cli, run, demo, export).
LAYERS = {
    "entry": 7,
    "datagen": 6,  # makes data sets; the SAC data maker trains with the off-policy runner
    "runners": 5,  # the loops that touch data and environments
    "viz": 4,  # figures; task figures know their task's geometry (envs)
    "algos": 3,  # a learner wraps a policy
    "policies": 2,
    "envs": 2,
    "nets": 1,
    "data": 1,
    "utils": 0,
}
# pairs the ranks allow but the design rules out
FORBIDDEN = {("algos", "envs"): "algorithms never touch environments"}

MODULE_STRING = re.compile(r"dppo(\.\w+)+(:\w+)?")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()) else "entry"


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                          ast.AsyncFunctionDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def dependencies(module: str, source: str, is_package: bool = False,
                 strings: bool = True) -> set[str]:
    """dppo modules (or packages) that ``module`` imports anywhere in ``source``; with ``strings``, also the
    dppo modules that its non-docstring string constants name."""
    tree = ast.parse(source)
    package = module if is_package else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "dppo")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "dppo":
                continue
            for alias in node.names:  # "from dppo.envs import tasks" depends on dppo.envs.tasks
                out.add(f"{name}.{alias.name}" if f"{name}.{alias.name}" in MODULES else name)
    if strings:
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                    and MODULE_STRING.fullmatch(node.value)):
                out.add(node.value.split(":")[0])
    out.discard(module)
    return out


def graph(strings: bool = True) -> dict[str, set[str]]:
    return {m: dependencies(m, p.read_text(), p.name == "__init__.py", strings) for m, p in MODULES.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports that do not point down the layers."""
    out = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            a, b = unit(src), unit(dst)
            if a == b:
                continue
            if (a, b) in FORBIDDEN:
                out.append(f"{src} -> {dst}: {FORBIDDEN[(a, b)]}")
            elif LAYERS[b] >= LAYERS[a]:
                out.append(f"{src} -> {dst}: {a} (rank {LAYERS[a]}) may not import {b} (rank {LAYERS[b]})")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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


def unit_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for src, targets in edges.items():
        out.setdefault(unit(src), set()).update(unit(t) for t in targets if unit(t) != unit(src))
    return out


def test_every_unit_has_a_layer():
    assert {unit(m) for m in MODULES} <= set(LAYERS), "add the new subpackage to LAYERS (and docs/architecture.md)"
    assert {"datagen", "runners", "envs", "data", "utils"} <= {unit(m) for m in MODULES}


def test_imports_point_down_the_layers():
    assert violations(graph()) == []


def test_no_cycle_between_subpackages():
    assert cycles(unit_graph(graph())) == []


def test_no_import_cycle_between_modules():
    # import statements only: the task registry names its task modules by string on purpose, so that they
    # register themselves on first use (dppo.envs.tasks <- dppo.envs.avoid imports it)
    assert cycles(graph(strings=False)) == []


def test_the_checks_catch_what_they_are_for():
    # a lazy import of a runner inside the data package, by statement or by string
    lazy = "def f():\n    from dppo.runners import ppo\n    return ppo\n"
    edges = {"dppo.data.npz": dependencies("dppo.data.npz", lazy)}
    assert edges["dppo.data.npz"] == {"dppo.runners.ppo"}
    assert violations(edges) and "data (rank 1) may not import runners" in violations(edges)[0]
    by_string = '"""dppo.viz"""\nimport importlib\nM = importlib.import_module("dppo.runners.ppo")\n'
    assert dependencies("dppo.data.npz", by_string) == {"dppo.runners.ppo"}
    assert violations({"dppo.algos.sac": {"dppo.envs.factory"}})  # same direction as ranks, but forbidden
    assert violations({"dppo.envs.factory": {"dppo.policies.diffusion"}})  # siblings of one rank
    assert dependencies("dppo.envs.avoid", "from . import tasks\nfrom .wrappers import wrap\n") == {
        "dppo.envs.tasks", "dppo.envs.wrappers"}
    # the factory <-> avoid_vector kind of cycle, and one between two subpackages
    assert cycles({"dppo.envs.factory": {"dppo.envs.avoid_vector"}, "dppo.envs.avoid_vector": {"dppo.envs.factory"}})
    assert cycles(unit_graph({"dppo.envs.wrappers": {"dppo.data.npz"}, "dppo.data.npz": {"dppo.envs.avoid"}}))
