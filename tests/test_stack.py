"""The tested stack: what is installed is the exact set constraints.txt locks, inside pyproject.toml's ranges, and Binder installs the same."""
import os
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(lines) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            found[req.name.lower().replace("_", "-")] = req
    return found


def pins(lines) -> dict[str, str]:
    found = {}
    for name, req in requirements(lines).items():
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req}: pin exactly"
        found[name] = spec.version
    return found


RUNTIME = requirements(PROJECT["dependencies"])  # ranges: nbscale installs beside a user's stack
TEST = pins(PROJECT["optional-dependencies"]["test"])  # the test tools: exact
LOCK = pins((ROOT / "constraints.txt").read_text().splitlines())  # the exact set CI tests and make installs


def test_every_dependency_is_a_range_from_the_tested_version_with_a_cap():
    for name, req in RUNTIME.items():
        operators = {spec.operator: spec.version for spec in req.specifier}
        assert set(operators) == {">=", "<"}, f"{req}: a range >=TESTED,<CAP"
        assert operators[">="] == LOCK[name], f"{req}: the lower bound is the version constraints.txt tests ({LOCK[name]})"


def test_installed_versions_are_the_locked_ones_and_inside_the_ranges():
    drift = {name: (LOCK.get(name), version(name)) for name in {**RUNTIME, **TEST} if version(name) != LOCK.get(name)}
    assert drift == {}, f"installed versions drifted from constraints.txt (locked, installed): {drift}"
    outside = {name: (str(req.specifier), version(name)) for name, req in RUNTIME.items() if version(name) not in req.specifier}
    assert outside == {}, outside


def required_here() -> set[str]:
    """Every distribution an installed one requires on this Python (markers evaluated, extras not asked for)."""
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    needed = set()
    for dist in distributions():
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                needed.add(canonicalize_name(requirement.name))
    return needed


def test_full_resolved_set_matches_what_is_installed():
    """The lock is resolved on Python 3.11; on 3.12 a pin only an older Python needs (overrides, for jupyter-server
    below 3.12) is absent, and must then be needed by nothing installed."""
    from importlib.metadata import PackageNotFoundError

    from packaging.utils import canonicalize_name

    drift, absent = {}, []
    for name, pin in LOCK.items():
        try:
            if version(name) != pin:
                drift[name] = (pin, version(name))
        except PackageNotFoundError:
            absent.append(canonicalize_name(name))
    assert drift == {}, f"installed versions drifted from constraints.txt (run `make lock` after changing a range): {drift}"
    assert sorted(set(absent) & required_here()) == [], "pinned, required here, and not installed"
    assert sys.version_info[:2] > (3, 11) or absent == [], f"the lock's own Python lacks {absent}"


def test_lock_agrees_with_the_test_pins():
    assert {name: LOCK.get(name) for name in TEST} == TEST


def test_one_keras_one_tensorflow():
    # tf-keras needs the full `tensorflow` wheel; a second TensorFlow distribution would shadow it.
    assert "tensorflow-cpu" not in LOCK
    assert LOCK["tf-keras"].split(".")[:2] == LOCK["tensorflow"].split(".")[:2]
    assert RUNTIME["tf-keras"].specifier == RUNTIME["tensorflow"].specifier  # released per TensorFlow minor
    (gpu,) = PROJECT["optional-dependencies"]["gpu"]
    assert Requirement(gpu).name == "tensorflow" and Requirement(gpu).specifier == RUNTIME["tensorflow"].specifier


def test_petastorm_compatible_arrow_and_numpy():
    # Petastorm 0.13.1 needs pyarrow <= 14.0.2, which needs numpy < 2; PySpark 4.1+ would need pyarrow >= 15.
    assert "15.0.0" not in RUNTIME["pyarrow"].specifier and "14.0.2" in RUNTIME["pyarrow"].specifier
    assert "2.0.0" not in RUNTIME["numpy"].specifier
    assert "4.1.0" not in RUNTIME["pyspark"].specifier and LOCK["pyspark"].startswith("4.0.")


def test_what_nbscale_imports_is_declared():
    """A package imported by nbscale's own code is a declared dependency, not something another one happens to pull."""
    import ast
    import sys

    imported = set()
    for path in (ROOT / "lib" / "nbscale").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    distributions = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "tf_keras": "tf-keras", "IPython": "ipython",
                     "jupyter_server": "jupyter-server", "jupyter_server_proxy": "jupyter-server-proxy", "ai_edge_litert": "ai-edge-litert", "pyspark": "pyspark", "google": None, "grpc": None}
    third_party = {distributions.get(name, name.lower()) for name in imported - set(sys.stdlib_module_names) - {"nbscale"}} - {None}
    declared = {name.lower() for name in RUNTIME}
    assert third_party - declared == set(), f"imported but not declared in pyproject.toml: {sorted(third_party - declared)}"


def test_binder_installs_the_same_ranges_and_the_locked_set():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    assert requirements(lines) == RUNTIME
    constraint = next(line for line in lines if line.startswith("-c "))
    assert (ROOT / "binder" / constraint.split()[1]).resolve() == ROOT / "constraints.txt"


def test_binder_runtime_java_and_postbuild():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    main_python = re.search(r"^PYTHON \?= python(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert runtime == f"python-{main_python}"  # Binder runs the Python the lock was resolved on, as make does
    assert re.search(rf">=\s*{runtime[7:]}", PROJECT["requires-python"])
    apt = (ROOT / "binder" / "apt.txt").read_text().split()
    assert "openjdk-17-jre-headless" in apt
    post = ROOT / "binder" / "postBuild"
    body = post.read_text()
    assert body.startswith("#!/bin/bash") and re.search(r"^set -e", body, re.M) and os.access(post, os.X_OK)
    for kernel in (ROOT / "kernels").iterdir():
        if kernel.is_dir():
            assert f"kernels/{kernel.name}" in body


def test_readme_states_the_pinned_stack():
    readme = (ROOT / "README.md").read_text()
    for name in ("pyspark", "pyarrow", "numpy", "tensorflow", "tf-keras", "mlflow", "petastorm", "jupyterlab"):
        assert f"{name} {LOCK[name]}" in readme, f"README does not state the tested {name} {LOCK[name]}"
