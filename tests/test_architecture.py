"""The package's layers point one way, and no module imports itself back through others (read from the
real import graph, lazy imports inside functions included, by grimp — the engine behind import-linter)."""
import grimp
import pytest

# Top to bottom: a module may import only from its own layer's package or from layers below it.
LIBRARY = ("nbscale.ingest", "nbscale.feed", "nbscale.train", "nbscale.distributed", "nbscale.registry", "nbscale.serving",
           "nbscale.workflow", "nbscale.datasets", "nbscale.lineage", "nbscale.drift", "nbscale.evaluate", "nbscale.promote")
ENGINES = ("nbscale.session", "nbscale.config", "nbscale.errors", "nbscale.events", "nbscale.datadir", "nbscale.limits",
           "nbscale.processes", "nbscale.version", "nbscale.files", "nbscale.contracts", "nbscale.tags", "nbscale.quiet", "nbscale.uilinks",
           "nbscale.tfenv")
SERVICES = ("nbscale.state", "nbscale.jobs.background")  # the kernel's own: its panel publisher, its background jobs
LAYERS = ("nbscale.magics", "nbscale.widgets", grimp.Layer(*SERVICES, independent=False), grimp.Layer(*LIBRARY, independent=False),
          grimp.Layer(*ENGINES, independent=False))


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("nbscale", cache_dir=None)


def packages(graph) -> list[str]:
    return sorted(module for module in graph.modules if graph.find_children(module))


def test_no_import_cycles_between_modules(graph):
    cycles = {package: graph.nominate_cycle_breakers(package) for package in packages(graph)}
    assert {package: found for package, found in cycles.items() if found} == {}


def test_layers_point_one_way(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS)
    assert [(d.importer, d.imported) for d in illegal] == []


def test_the_checks_see_an_up_call():
    """The store calling the workflow engine again (the cycle the events module replaced) is caught by both."""
    graph = grimp.build_graph("nbscale", cache_dir=None)  # its own: the other tests' graph stays as the code is
    graph.add_import(importer="nbscale.ingest.store", imported="nbscale.workflow.memo")
    assert graph.nominate_cycle_breakers("nbscale")
    graph.add_import(importer="nbscale.session", imported="nbscale.widgets.servecard")
    assert graph.find_illegal_dependencies_for_layers(layers=LAYERS)


def test_modules_are_attributes_of_the_package_imported_on_first_use():
    """`import nbscale; nbscale.ingest.ingest(...)` as the README writes it, and the import itself stays light."""
    import subprocess
    import sys

    code = ("import sys, nbscale\n"
            "light = not {'pyspark', 'tensorflow', 'mlflow', 'nbscale.ingest'} & set(sys.modules)\n"
            "print(light, callable(nbscale.ingest.ingest), callable(nbscale.serving.serve), 'nbscale.ingest' in sys.modules)\n"
            "try:\n    nbscale.no_such_module\nexcept AttributeError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert out == ["True True True True", "module 'nbscale' has no attribute 'no_such_module'"]


def test_the_linter_passes():
    """ruff with the rules in pyproject.toml ([tool.ruff]): a `noqa` must name a rule that is checked."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    checked = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "lib", "tests", "benchmarks", "conftest.py"],
                             cwd=root, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def owner(module: str) -> str:
    """The package a module belongs to: nbscale.train.cell -> nbscale.train; a top-level module owns itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def private_imports_across_packages() -> list[str]:
    """`from ..x import _name` where x is another package: the private names each package keeps to itself."""
    import ast
    from pathlib import Path

    import nbscale

    root = Path(nbscale.__file__).parent
    found = []
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root.parent).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            if not target.startswith("nbscale"):
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__") and owner(target) != owner(module):
                    found.append(f"{module}: from {target} import {name}")
    return found


def test_no_package_imports_another_packages_private_names():
    assert private_imports_across_packages() == []


def test_a_deprecated_call_in_nbscale_fails_and_a_named_librarys_own_does_not():
    """pyproject's filterwarnings: a warning raised from nbscale's code is an error; pyspark's about itself is not."""
    import warnings

    call = "import warnings\nwarnings.warn('this call is deprecated', {})"
    for category in (DeprecationWarning, FutureWarning):
        with pytest.raises(category):
            exec(call.format(category.__name__), {"__name__": "nbscale.example"})  # noqa: S102 - a warning attributed to nbscale
    with warnings.catch_warnings(record=True) as seen:  # the suite's filters, recording what they let through
        exec(call.format("DeprecationWarning"), {"__name__": "pyspark.sql.example"})  # noqa: S102
    assert seen == []
