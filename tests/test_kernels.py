"""The two kernel specs, installed in the venv by the set-up, started as real Jupyter kernels."""
import os
import sys
from pathlib import Path

import pytest
from conftest import free_port
from jupyter_client.kernelspec import KernelSpecManager
from kernel_client import Kernel

pytestmark = pytest.mark.slow


def test_both_kernels_are_installed_in_the_venv():
    specs = KernelSpecManager().get_all_specs()
    assert specs["nbscale-local"]["spec"]["display_name"] == "nbscale — Spark local"
    assert specs["nbscale-cluster"]["spec"]["display_name"] == "nbscale — Spark cluster"
    for name in ("nbscale-local", "nbscale-cluster"):
        assert Path(specs[name]["resource_dir"]).is_relative_to(sys.prefix)
        assert specs[name]["spec"]["argv"][-2:] == ["--ext", "nbscale"]


def test_local_kernel_loads_nbscale_and_keeps_jvm_noise_out_of_cells():
    with Kernel("nbscale-local") as kernel:
        loaded = kernel.run("print('nbscale' in get_ipython().extension_manager.loaded, __import__('os').environ['TF_USE_LEGACY_KERAS'])")
        assert loaded.text().strip() == "True 1"
        assert kernel.run("%config Nbscale.master").text() == "'local[*]'"
        started = kernel.run("%nbscale start")
        assert started.status == "ok", started.text()
        shown = started.text()
        assert "running" in shown and "UI http://127.0.0.1:" in shown
        assert "WARN" not in shown and "log4j" not in shown and "incubator" not in shown
        assert kernel.run("print(spark.range(5).count())").text().strip() == "5"
        assert kernel.run("%nbscale stop").text().strip() == "Spark session stopped."


def test_cluster_kernel_reads_master_from_its_variable():
    master = f"spark://127.0.0.1:{free_port()}"
    env = dict(os.environ, NBSCALE_CLUSTER_MASTER=master)
    with Kernel("nbscale-cluster", env=env) as kernel:
        assert kernel.run("%config Nbscale.master").text() == repr(master)
        failed = kernel.run("import nbscale; nbscale.spark()")
        error = failed.error()
        assert failed.status == "error" and error["ename"] == "SettingError"
        assert len(error["traceback"]) == 1 and f"Nbscale.master = '{master}': nothing answers" in error["evalue"]


def test_cluster_kernel_without_its_variable_says_which_to_set():
    env = {k: v for k, v in os.environ.items() if k != "NBSCALE_CLUSTER_MASTER"}
    with Kernel("nbscale-cluster", env=env) as kernel:
        error = kernel.run("%nbscale start").error()
        assert error["ename"] == "SettingError"
        assert "Nbscale.master is not set" in error["evalue"] and "export NBSCALE_CLUSTER_MASTER=" in error["evalue"]
