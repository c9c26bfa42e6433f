"""The package's architecture, checked: each subpackage is one layer, imports point down, no cycles,
and the old module paths still work with a deprecation warning."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mamlbook"

# Bottom up. A module may import its own layer and the ones below, never one above.
LAYERS = {
    "core": 0,  # functional, losses, config, _moved
    "data": 1,
    "tasks": 2,
    "models": 2,
    "meta": 3,
    "engine": 4,
    "train": 5,
    "reports": 6,
    "rl": 6,
    "bench": 7,
    "studies": 7,
    "cli": 8,
}
TOP_LEVEL_API = 6  # mamlbook/__init__.py re-exports the library, up to the reports


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def imports_of(path: Path) -> set[str]:
    """Every mamlbook module `path` imports, at the top or inside a function (lazy imports count)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mamlbook"):
                # `from . import x` names a submodule when x is one
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(
                        sub
                        if (PACKAGE.parent / sub.replace(".", "/")).exists()
                        or (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                        else target
                    )
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mamlbook")}
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_subpackage_is_a_known_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"a new subpackage needs a place in LAYERS: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    if name == "mamlbook":
        allowed = TOP_LEVEL_API
    elif name == "mamlbook.__main__":
        allowed = LAYERS["cli"]
    else:
        allowed = LAYERS[layer_of(name)]
    upward = sorted(t for t in imports_of(MODULES[name]) if t != "mamlbook" and LAYERS[layer_of(t)] > allowed)
    assert not upward, f"{name} (layer {allowed}) imports from a higher layer: {upward}"


def test_no_import_cycles_between_modules():
    graph = {name: {t for t in imports_of(path) if t in MODULES and t != name} for name, path in MODULES.items()}
    # a package's __init__ importing its own modules is how packages work, not a cycle to avoid
    for name in graph:
        graph[name] = {t for t in graph[name] if not (MODULES[t].name == "__init__.py" and name.startswith(t + "."))}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt) :] + [nxt])}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_import_mamlbook_loads_no_study_bench_cli_or_plotting_code():
    code = (
        "import sys, mamlbook\n"
        "bad = [m for m in sys.modules if m.startswith(('mamlbook.studies', 'mamlbook.bench', 'mamlbook.cli', "
        "'matplotlib')) or m == 'mamlbook.train.plots']\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("mamlbook.runconfig", "mamlbook.train.runconfig"),
        ("mamlbook.better_omniglot", "mamlbook.studies.better_omniglot"),
        ("mamlbook.commands.train", "mamlbook.cli.train"),
        ("mamlbook.meta.imaml", "mamlbook.engine.imaml"),
    ],
)
def test_old_module_paths_still_work_and_say_where_they_went(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(f"{old} moved to {new}" in s for s in said), said
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the real module keeps its own identity


def test_old_attribute_paths_warn_too():
    import mamlbook

    with pytest.warns(DeprecationWarning, match="mamlbook.algorithms moved to mamlbook.train.algorithms"):
        algorithms = mamlbook.algorithms
    assert "maml" in algorithms.ALGORITHMS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
            mamlbook.nonsense  # noqa: B018
