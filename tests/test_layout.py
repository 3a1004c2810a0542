"""The package layout: imports point one way through the pipeline stages, only the CLI imports
``sie3d.commands``, and modules stay small (at most 400 lines).

Every ``import`` in ``sie3d`` (module level and inside functions) is read with :mod:`ast`. A module
may import from its own stage or from a stage of lower rank; stages of equal rank (face, diffusion,
render) may not import each other. Cycles between modules are reported with their path.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sie3d"
MAX_LINES = 400  # "no module over ~400 lines"

#: stage -> rank; a stage is a top-level module or subpackage of sie3d (or one named module)
RANKS: dict[str, float] = {
    "sie3d": 0, "config": 0, "config_args": 0, "registry": 0, "vocabulary": 0, "runtime": 0, "run_dir": 0,
    "weights": 0, "images": 0,
    "face": 1, "diffusion": 1, "render": 1,
    "request": 1.5,  # free text -> emotion class, η, accessory (word list in face, CLIP in diffusion)
    "avatar": 2,
    "subject": 3,
    "train": 4,
    "generate": 5,
    "evaluation": 6,
    "batch": 7, "book": 7,
    "bench": 7.5,
    "commands": 8,
    "cli": 9,
}
BASE_RANK = 0  # the base modules may import each other (cycles are still errors)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "sie3d"
    dotted = ".".join(parts[:2])
    return dotted if dotted in RANKS else parts[0]


def imports_of(path: Path) -> set[str]:
    """Absolute names of the sie3d modules that ``path`` imports (anywhere in the file)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "sie3d")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "sie3d":
                target = node.module
            else:
                continue
            found.add(target)
            # `from pkg import submodule` imports the submodule
            for alias in node.names:
                if (PACKAGE.parent / (target.replace(".", "/") + f"/{alias.name}.py")).is_file():
                    found.add(f"{target}.{alias.name}")
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {t for t in imports_of(path) if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in graph.items():
        a = stage_of(source)
        for target in targets:
            b = stage_of(target)
            if a == b or target == "sie3d":
                continue
            if b not in RANKS or a not in RANKS:
                bad.append(f"{source} -> {target}: stage '{a if a not in RANKS else b}' has no rank in RANKS")
            elif RANKS[b] > RANKS[a] or (RANKS[b] == RANKS[a] and RANKS[a] != BASE_RANK):
                bad.append(f"{source} ({a}, rank {RANKS[a]}) imports {target} ({b}, rank {RANKS[b]})")
    return sorted(bad)


def test_the_checker_sees_a_cycle_and_a_reversed_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    reversed_import = {"sie3d.face.detect": {"sie3d.train.trainer"}, "sie3d.train.trainer": set()}
    assert direction_violations(reversed_import) == [
        "sie3d.face.detect (face, rank 1) imports sie3d.train.trainer (train, rank 4)"]
    sideways = {"sie3d.render.renderer": {"sie3d.diffusion.prior"}, "sie3d.diffusion.prior": set()}
    assert len(direction_violations(sideways)) == 1


def test_imports_point_down_the_pipeline():
    assert direction_violations(import_graph()) == []


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def commands_imports_outside_the_cli(graph: dict[str, set[str]]) -> list[str]:
    """Imports of ``sie3d.commands`` (or a module in it) by a module that is not the CLI."""
    cli = ("sie3d.commands", "sie3d.cli")
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if stage_of(target) == "commands" and not source.startswith(cli))


def test_only_the_cli_imports_commands():
    assert commands_imports_outside_the_cli({"sie3d.bench.ism": {"sie3d.commands._common"}}) == [
        "sie3d.bench.ism -> sie3d.commands._common"]
    assert commands_imports_outside_the_cli(import_graph()) == []


def test_every_stage_says_what_it_owns_and_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc and len(doc) > 80, f"{init} needs a docstring: what the stage owns, what it may import"


def test_modules_stay_small():
    big = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"split these modules (over {MAX_LINES} lines): {big}"
