"""toylab's parts stand in layers: each imports only from its own layer or below, and no two
parts import each other, directly or round a loop. Read from the source (function-level
imports included), so a cycle dodged by importing inside a function still fails here."""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "toylab"

# Bottom to top, as in the README's layout section and toylab/__init__.py.
LAYERS = [
    {"hooks", "components", "models", "tasks", "interventions", "devices", "parallel"},
    {"checkpoint", "train", "snapshots"},
    {"methods", "sae"},
    {"truth"},
    {"zoo"},
    {"validate", "viz", "interop", "challenges"},
    {"lessons", "cli"},
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if bits[0] == "toylab" and len(bits) > 1 else None


def parts(root: Path) -> set[str]:
    """toylab's parts: its top-level modules and subpackages."""
    return {p.stem if p.is_file() else p.name for p in root.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}


def import_graph(root: Path = ROOT) -> dict[tuple[str, str], str]:
    """{(importing part, imported part): where}, for every import between two parts."""
    graph: dict[tuple[str, str], str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        source = _part(module)
        if source is None:  # toylab/__init__.py names every part lazily
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + ([f"toylab.{a.name}" for a in node.names] if target == "toylab" else [])
            else:
                continue
            for target in targets:
                dest = _part(target)
                if dest in parts(root) and dest != source:
                    graph.setdefault((source, dest), f"{path.relative_to(root.parent)}:{node.lineno}")
    return graph


def test_every_part_has_a_layer():
    assert parts(ROOT) - set(LAYER) == set(), "add the new part to LAYERS (and to the README's layout)"


def test_parts_import_only_from_their_layer_or_below():
    upward = [f"{a} -> {b} ({where})" for (a, b), where in import_graph().items() if LAYER[b] > LAYER[a]]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def cycles(graph: dict[tuple[str, str], str]) -> list[str]:
    out = defaultdict(set)
    for a, b in graph:
        out[a].add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(out.get(node, ()))
        return False

    return [f"{a} -> {b} ({where}) and back" for (a, b), where in graph.items() if reaches(b, a)]


def test_no_import_cycle_between_parts():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_checker_sees_a_cycle_dodged_inside_a_function(tmp_path):
    fake = tmp_path / "toylab"
    for part, other in {"tasks": "truth", "truth": "tasks"}.items():
        (fake / part).mkdir(parents=True)
        (fake / part / "__init__.py").write_text(f"def f():\n    from toylab.{other} import x\n")
    assert len(cycles(import_graph(fake))) == 2
