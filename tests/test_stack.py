"""The pinned stack: what is installed is what pyproject.toml pins, and Binder installs the same."""
import os
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pin exactly"
            found[req.name.lower().replace("_", "-")] = spec.version
    return found


RUNTIME = pins(PROJECT["dependencies"])
TEST = pins(PROJECT["optional-dependencies"]["test"])
LOCK = pins((ROOT / "constraints.txt").read_text().splitlines())


def test_installed_versions_match_the_pins():
    drift = {name: (pin, version(name)) for name, pin in {**RUNTIME, **TEST}.items() if version(name) != pin}
    assert drift == {}, f"installed versions drifted from pyproject.toml (pin, installed): {drift}"


def test_full_resolved_set_matches_what_is_installed():
    drift = {name: (pin, version(name)) for name, pin in LOCK.items() if version(name) != pin}
    assert drift == {}, f"installed versions drifted from constraints.txt (run `make lock` after changing a pin): {drift}"


def test_lock_agrees_with_the_pins():
    assert {name: LOCK.get(name) for name in {**RUNTIME, **TEST}} == {**RUNTIME, **TEST}


def test_one_keras_one_tensorflow():
    # tf-keras needs the full `tensorflow` wheel; a second TensorFlow distribution would shadow it.
    assert "tensorflow-cpu" not in LOCK
    assert RUNTIME["tf-keras"].split(".")[:2] == RUNTIME["tensorflow"].split(".")[:2]
    (gpu,) = PROJECT["optional-dependencies"]["gpu"]
    assert Requirement(gpu).name == "tensorflow" and str(Requirement(gpu).specifier) == f"=={RUNTIME['tensorflow']}"


def test_petastorm_compatible_arrow_and_numpy():
    # Petastorm 0.13.1 needs pyarrow <= 14.0.2, which needs numpy < 2; PySpark 4.1+ would need pyarrow >= 15.
    assert tuple(map(int, RUNTIME["pyarrow"].split("."))) <= (14, 0, 2)
    assert int(RUNTIME["numpy"].split(".")[0]) < 2
    assert RUNTIME["pyspark"].startswith("4.0.")


def test_binder_installs_the_same_pins():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    assert pins(lines) == RUNTIME
    constraint = next(line for line in lines if line.startswith("-c "))
    assert (ROOT / "binder" / constraint.split()[1]).resolve() == ROOT / "constraints.txt"


def test_binder_runtime_java_and_postbuild():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}"
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
        assert f"{name} {RUNTIME[name]}" in readme, f"README does not state {name} {RUNTIME[name]}"
