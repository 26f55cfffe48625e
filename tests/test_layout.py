"""The project's shape: who may import whom, and no import cycle between the project's files.

Imports are read with the standard library's ast, function-level ones included: an import
moved inside a function to dodge a cycle still counts as an edge.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zeroft", "train", "toyworld", "bench", "webapp")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    files = sorted(ROOT.glob("app*.py")) + [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return {module_name(p): p for p in files if p.is_file()}


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` (module ``name``) imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # "from zeroft.config import X" names the module zeroft.config; "from . import stages" names a module too.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            # A package's __init__ importing its own submodules is how re-exports work, not a cycle of files.
            if node and target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"pkg": {"pkg.x"}, "pkg.x": {"pkg"}}) is None  # re-exports


def test_relative_and_function_level_imports_are_edges(tmp_path):
    graph = import_graph()
    assert "zeroft.config" in graph["zeroft.pipeline"]  # from .config import ZeroFTConfig
    assert "zeroft.locate" in graph["zeroft.loading"] and "zeroft.assemble" in graph["zeroft.generation"]


def test_no_import_cycle_between_the_projects_files():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_imports_neither_the_trainer_nor_the_toy_world():
    graph = import_graph()
    for name, targets in graph.items():
        layer = name.partition(".")[0]
        if layer == "zeroft":
            assert not {t for t in targets if t.partition(".")[0] in ("train", "toyworld", "bench", "app", "webapp")}, name
        if layer == "train":
            assert not {t for t in targets if t.partition(".")[0] in ("toyworld", "bench", "app", "webapp")}, name
        if layer == "bench":
            assert not {t for t in targets if t.partition(".")[0] == "toyworld"}, name


def test_the_apps_parts_import_the_library_only():
    """The root app.py is the Space's entry into the webapp package; webapp uses zeroft and nothing else of ours."""
    graph = import_graph()
    assert {t.partition(".")[0] for t in graph["app"]} == {"webapp"}
    for name, targets in graph.items():
        if name.partition(".")[0] == "webapp":
            assert {t.partition(".")[0] for t in targets} <= {"webapp", "zeroft"}, name


def test_the_app_package_imports_the_zerogpu_shim_first():
    """On ZeroGPU, spaces must be imported before anything initialises CUDA: app.py and webapp import it first."""
    for path in (ROOT / "app.py", ROOT / "webapp" / "__init__.py"):
        first = next(node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom)))
        names = [alias.name for alias in first.names]
        assert "webapp.zerogpu" in names or (first.module in (None, "webapp") and "zerogpu" in names), path


def test_checkpoint_module_knows_no_pipeline_class():
    graph = import_graph()
    for module in ("zeroft.checkpoint", "zeroft.assemble", "zeroft.locate"):
        assert "zeroft.pipeline" not in graph[module] and "zeroft.pipeline_xl" not in graph[module], module


def test_importing_zeroft_loads_no_model_library_until_a_name_is_used():
    """``import zeroft`` is cheap (PEP 562 exports): the CLI's --help and input checks need no torch or diffusers;
    every public name still resolves to its owning module's object."""
    import importlib
    import subprocess
    import sys

    import zeroft

    code = "import sys, zeroft; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
    for name in zeroft.__all__:
        owner = importlib.import_module(f"zeroft.{zeroft._OWNER[name]}")
        assert getattr(zeroft, name) is getattr(owner, name) and name in dir(zeroft)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        zeroft.nothing  # noqa: B018
