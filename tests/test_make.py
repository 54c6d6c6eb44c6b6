"""The README's commands, run for real: the fast path of set-up, the Java check, `make lab`."""
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import ROOT, free_port, wait_until_answers


def test_setup_is_skipped_when_the_venv_is_current():
    dry = subprocess.run(["make", "-n", "setup"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "pip install" not in dry.stdout and "-m venv" not in dry.stdout


def test_missing_java_stops_make_with_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "head"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(bin_dir)
    python = shutil.which("python3.11") or shutil.which("python3")
    out = subprocess.run([shutil.which("make"), "-s", "check-tools", f"PYTHON={python}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    message = [line for line in out.stderr.splitlines() if line.startswith("nbscale:")]
    assert message == ["nbscale: Spark needs Java 17+ and found none: install it (Debian/Ubuntu: "
                       "apt-get install openjdk-17-jre-headless) or set JAVA_HOME."]


@pytest.mark.slow
def test_make_lab_serves_jupyterlab_with_both_kernels():
    port, token = free_port(), "nbscale-test-token"
    env = dict(os.environ, JUPYTER_TOKEN=token)
    lab = subprocess.Popen(["make", "lab", f"LAB_PORT={port}"], cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{base}/api/status?token={token}", lab, 120, why=lambda: lab.stdout.read() if lab.poll() is not None else "")
        with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=10) as response:
            specs = json.load(response)["kernelspecs"]
        assert specs["nbscale-local"]["spec"]["display_name"] == "nbscale — Spark local"
        assert specs["nbscale-cluster"]["spec"]["display_name"] == "nbscale — Spark cluster"
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10) as response:
            assert "JupyterLab" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/kernelspecs", timeout=10)
        assert refused.value.code == 403
        # The set-up enabled nbscale's server extension: the panel's API answers, behind the token.
        with urllib.request.urlopen(f"{base}/nbscale/api/status?token={token}", timeout=10) as response:
            assert json.load(response)["result"]["data_dir"]
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        output = lab.communicate(timeout=60)[0]
    assert f"http://127.0.0.1:{port}/lab" in output  # the URL is printed for the user


def test_the_panel_is_built_from_its_sources_and_enabled_in_the_venv():
    import hashlib

    sources = [ROOT / "extension" / name for name in ("package.json", "yarn.lock")]
    sources += sorted((ROOT / "extension" / "src").glob("*.ts")) + sorted((ROOT / "extension" / "style").glob("*.css"))
    sources += sorted((ROOT / "extension" / "schema").glob("*.json")) + [ROOT / "extension" / "install.json"]
    built_from = (ROOT / "lib" / "nbscale" / "labextension" / ".source-sha1").read_text().strip()
    assert built_from == hashlib.sha1(b"".join(p.read_bytes() for p in sources)).hexdigest(), \
        "extension/ changed since lib/nbscale/labextension was built: run make labextension and commit the build"
    listed = subprocess.run([str(ROOT / ".venv" / "bin" / "jupyter"), "labextension", "list"], capture_output=True, text=True, timeout=120)
    line = [ln for ln in (listed.stdout + listed.stderr).splitlines() if "nbscale-labextension" in ln]
    assert line and "enabled" in line[0] and "OK" in line[0], listed.stdout + listed.stderr


@pytest.mark.slow
def test_make_demo_runs_the_quickstart_headless(tmp_path):
    out = subprocess.run(["make", "-s", "demo", f"DEMO_OUT={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, NBSCALE_DATA_DIR=str(tmp_path / "data")))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"Executed notebook: {tmp_path}/00-quickstart.ipynb" in out.stdout
    assert f"Data directory:    {tmp_path}/data" in out.stdout
    import nbformat

    executed = nbformat.read(tmp_path / "00-quickstart.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "at least 6 of 8 predicted right: True" in printed and "Stopped the service of digits-quickstart" in printed
    assert (tmp_path / "00-quickstart.html").stat().st_size > 10_000
