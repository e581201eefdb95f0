"""The layout is the architecture: each layer imports only from layers below it, no module imports
itself back through others, and every link in the README resolves inside the repository."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "tpsload"

# lowest first; a module may import from a lower rank, or from its own package
RANKS = {
    "errors": 0, "records": 0, "protocol": 0, "kinds": 0,
    "httpjson": 1, "analysis": 2, "config": 3, "workload": 4, "core": 5,
    "servers": 6, "mock": 6, "scale": 7, "render": 7, "app": 8, "cli": 9, "__main__": 10, "__init__": 10,
}


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: pathlib.Path) -> set[str]:
    """Every tpsload module this one imports, at any depth of the file (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tpsload"))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            mod = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
            if not mod.startswith("tpsload"):
                continue
            for a in node.names:  # `from pkg import module` names a module
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in ALL else mod)
    return found


ALL = modules()


def layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    assert {layer(m) for m in ALL} <= set(RANKS), {layer(m) for m in ALL} - set(RANKS)


def test_layers_import_only_downwards():
    bad = []
    for mod, path in ALL.items():
        me = layer(mod)
        for dep in imports(mod, path):
            other = layer(dep)
            if dep == "tpsload" or other == me:
                continue
            if RANKS[other] >= RANKS[me]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {d for d in imports(m, p) if d in ALL and d != m and d != "tpsload"} for m, p in ALL.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_readme_links_resolve_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#", 1)[0] for link in links if not re.match(r"[a-z]+://", link) and not link.startswith("#")]
    assert local, "the README links to its docs"
    for link in local:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT), f"{link} points outside the repository"
        assert target.exists(), f"{link} does not exist"
