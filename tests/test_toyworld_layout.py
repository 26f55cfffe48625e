"""The toy world's shape: the core (toyworld/*.py) never imports an experiment (toyworld/experiments/), and each
package's docstring lists its modules."""

import importlib

from test_layout import ROOT, import_graph


def test_the_core_imports_no_experiment():
    graph = import_graph()
    core = {name for name in graph if name.startswith("toyworld.") and not name.startswith("toyworld.experiments")}
    assert {"toyworld.build", "toyworld.evaluate", "toyworld.budget", "toyworld.__main__"} <= core
    for name in core - {"toyworld.__main__"}:  # the command line is the one place that reaches the experiments
        assert not {t for t in graph[name] if t.startswith("toyworld.experiments")}, name


def test_each_package_docstring_lists_its_modules():
    for package in ("toyworld", "toyworld.experiments"):
        doc = importlib.import_module(package).__doc__
        folder = ROOT.joinpath(*package.split("."))
        for path in folder.glob("*.py"):
            if not path.name.startswith("__"):
                assert f"- {path.name}:" in doc, (package, path.name)
