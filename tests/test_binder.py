"""Binder builds the environment from `binder/` alone: a fresh venv from its files, as repo2docker does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_fresh_venv_from_the_binder_files_runs_nbscale(tmp_path):
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)

    def run(*args, timeout=1200):
        done = subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == f"python-{sys.version_info.major}.{sys.version_info.minor}"
    # repo2docker: requirements.txt, then postBuild from the repository root (pip's cache makes this minutes, not a download).
    # --no-compile: what is checked is that the files resolve and run; byte-compiling TensorFlow, Spark and MLflow
    # (repo2docker does) adds time and proves nothing more.
    run(str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile", "-r", "binder/requirements.txt")
    run("bash", "binder/postBuild")
    # The image starts every process through binder/start: its settings reach nbscale.
    shown = run("bash", "binder/start", str(bin_dir / "python"), "-c",
                "import sys, nbscale; from nbscale.config import settings; s = settings(); "
                "print(nbscale.__file__, s.profile, s.master, s.driver_memory, 'pyspark' in sys.modules)")
    module, profile, master, memory, spark_imported = shown.split()
    assert Path(module).is_relative_to(ROOT / "lib") and (profile, master, memory) == ("binder", "local[2]", "512m")
    assert spark_imported == "False"  # importing nbscale stays light
    kernels = run(str(bin_dir / "jupyter"), "kernelspec", "list")
    assert str(venv) in kernels and "nbscale-local" in kernels and "nbscale-cluster" in kernels
    config = venv / "etc" / "jupyter" / "jupyter_server_config.d" / "nbscale-binder.json"
    assert '"/lab/tree/notebooks/00-quickstart.ipynb"' in config.read_text()
    assert '"nbscale.server": true' in (config.parent / "nbscale.json").read_text()  # the panel's REST API
    assert (ROOT / "notebooks" / "00-quickstart.ipynb").is_file()
    # The tutorials' stack is whole: the kernel's heavy imports resolve in the new venv.
    run(str(bin_dir / "python"), "-c", "import pyspark, petastorm, tensorflow, tf_keras, mlflow, ipywidgets, jupyter_server_proxy, "
        "ai_edge_litert.interpreter")
