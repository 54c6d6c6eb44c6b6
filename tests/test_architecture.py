"""The package's layers point one way, and no module imports itself back through others (read from the
real import graph, lazy imports inside functions included, by grimp — the engine behind import-linter)."""
import grimp
import pytest

# Top to bottom: a module may import only from its own layer's package or from layers below it.
LIBRARY = ("nbscale.ingest", "nbscale.feed", "nbscale.train", "nbscale.distributed", "nbscale.registry", "nbscale.serving",
           "nbscale.workflow", "nbscale.datasets", "nbscale.lineage")
ENGINES = ("nbscale.session", "nbscale.config", "nbscale.errors", "nbscale.events", "nbscale.datadir", "nbscale.limits",
           "nbscale.processes", "nbscale.version")
LAYERS = ("nbscale.magics", "nbscale.widgets", "nbscale.state", grimp.Layer(*LIBRARY, independent=False),
          grimp.Layer(*ENGINES, independent=False))


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("nbscale")


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
    graph = grimp.build_graph("nbscale")  # its own: the other tests' graph stays as the code is
    graph.add_import(importer="nbscale.ingest.store", imported="nbscale.workflow.memo")
    assert graph.nominate_cycle_breakers("nbscale")
    graph.add_import(importer="nbscale.session", imported="nbscale.widgets.servecard")
    assert graph.find_illegal_dependencies_for_layers(layers=LAYERS)
