"""The nbscale panel in a real JupyterLab, driven by headless Chromium (Debian's, at /usr/bin/chromium).

This test process plays the kernel: it ingests a dataset, logs a run and starts a background job; the
browser must show them in the panel, cancel the job with its button, and put a dataset's magic into the
notebook's active cell."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, free_port, module_data_dir, wait_until_answers

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
TOKEN = "nbscale-panel-test"


def chromium() -> str:
    """Debian's Chromium, installed here when missing (browser downloads by test tools fail on these machines)."""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not os.path.exists(CHROMIUM):
        print("\n" + "!" * 100 + f"\nSKIPPING THE BROWSER TEST: {CHROMIUM} is missing and could not be installed "
              "(apt-get install chromium).\n" + "!" * 100)
        pytest.skip(f"{CHROMIUM} is missing and apt-get could not install it")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    browser = chromium()
    with module_data_dir(tmp_path_factory, "panel-data") as cfg:
        root = tmp_path_factory.mktemp("panel-notebooks")
        notebook = json.loads((ROOT / "notebooks" / "00-quickstart.ipynb").read_text())
        notebook["cells"] = [{"cell_type": "code", "id": "first", "metadata": {}, "execution_count": None, "outputs": [], "source": []}]
        (root / "panel.ipynb").write_text(json.dumps(notebook))
        port = free_port()
        log = open(root.parent / "lab.log", "w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", f"--port={port}", "--ip=127.0.0.1", "--no-browser", "--allow-root",
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.allow_unauthenticated_access=False", f"--ServerApp.root_dir={root}"],
            env=dict(os.environ, NBSCALE_DATA_DIR=cfg.data_dir, NBSCALE_TRACKING_URI=cfg.tracking_uri), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_answers(f"{base}/nbscale/api/status?token={TOKEN}", process, 90, why=lambda: log.seek(0) or log.read())
            yield base, browser
        finally:
            process.terminate()
            process.wait(30)


def test_the_panel_shows_the_work_cancels_a_job_and_inserts_a_magic(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from nbscale.ingest import ingest
    from nbscale.jobs import registry
    from nbscale.session import experiment_id, mlflow

    base, browser_path = lab
    source = tmp_path / "panel.csv"
    source.write_text("x,label\n1,0\n2,1\n3,0\n4,1\n")
    ingest("panel_rows", str(source), label="label")
    mlf = mlflow()
    with mlf.start_run(experiment_id=experiment_id("panel-tutorial"), run_name="panel-run") as run:
        mlf.log_params({"data": "panel_rows@v1"})
        mlf.log_metric("val_accuracy", 0.5)
    job = registry.start("test", "panel wait", lambda job: job.stop.wait(300))
    job_key = f"{os.getpid()}/{job.id}"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/lab/tree/panel.ipynb?token={TOKEN}", timeout=120_000)
            tab = page.locator("li[data-id='nbscale-panel']")
            tab.wait_for(timeout=120_000)
            tab.click()
            panel = page.locator("#nbscale-panel")
            expect(panel.locator("[data-nbscale-dataset='panel_rows@v1']")).to_be_visible(timeout=30_000)
            expect(panel.locator(f"[data-nbscale-run='{run.info.run_id}']")).to_contain_text("panel-run")
            running = panel.locator(f"[data-nbscale-job='{job_key}']")
            expect(running).to_have_attribute("data-state", "running", timeout=30_000)
            page.screenshot(path=str(tmp_path / "nbscale-panel.png"))
            running.locator("button.nbscale-cancel").click()
            expect(running).to_have_attribute("data-state", "cancelled", timeout=30_000)
            assert job.wait(10).state == "cancelled"  # the kernel's job really stopped, not just its row
            # A click on the dataset puts the magic that trains on it into the notebook's active cell.
            page.locator(".jp-Notebook .jp-Cell").first.click()
            panel.locator("[data-nbscale-dataset='panel_rows@v1'] a").click()
            expect(page.locator(".jp-Notebook .jp-Cell").first).to_contain_text("%%train --data panel_rows@v1", timeout=10_000)
            page.screenshot(path=str(tmp_path / "nbscale-panel-after.png"))
        finally:
            browser.close()
    assert (tmp_path / "nbscale-panel.png").stat().st_size > 10_000
