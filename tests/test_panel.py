"""The nbscale panel in a real JupyterLab, driven by headless Chromium (Debian's, at /usr/bin/chromium).

JupyterLab runs under a base URL, as on Binder or JupyterHub. In the panel tests this test process plays the
kernel: it ingests a dataset, logs a run and starts a background job; the browser must show them in the panel,
cancel the job with its button, and put a dataset's magic into the notebook's active cell. The UI test runs a
real kernel started by the server."""
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
BASE_URL = "/user/nbscale/"  # as Binder's, whose single-user servers live under /user/<name>/


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
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.allow_unauthenticated_access=False", f"--ServerApp.root_dir={root}",
             f"--ServerApp.base_url={BASE_URL}"],
            env=dict(os.environ, NBSCALE_DATA_DIR=cfg.data_dir, NBSCALE_TRACKING_URI=cfg.tracking_uri,
                     JUPYTER_RUNTIME_DIR=str(root.parent / "runtime")),  # where the UI test finds its kernel's connection file
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}{BASE_URL.rstrip('/')}"
            wait_until_answers(f"{base}/nbscale/api/status?token={TOKEN}", process, 90, why=lambda: log.seek(0) or log.read())
            yield base, browser, root
        finally:
            process.terminate()
            process.wait(30)


def test_the_panel_shows_the_work_cancels_a_job_and_inserts_a_magic(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    import nbscale.state  # noqa: F401 - as %load_ext does: this process publishes its jobs like a kernel (not left to test order)
    from nbscale.ingest import ingest
    from nbscale.jobs import background
    from nbscale.session import experiment_id, mlflow

    base, browser_path, _ = lab
    source = tmp_path / "panel.csv"
    source.write_text("x,label\n1,0\n2,1\n3,0\n4,1\n")
    ingest("panel_rows", str(source), label="label")
    mlf = mlflow()
    with mlf.start_run(experiment_id=experiment_id("panel-tutorial"), run_name="panel-run") as run:
        mlf.log_params({"data": "panel_rows@v1"})
        mlf.log_metric("val_accuracy", 0.5)
    job = background.start("test", "panel wait", lambda job: job.stop.wait(300))
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


def luminance(css_color: str) -> float:
    """0 (black) to 1 (white) for an `rgb(...)`/`rgba(...)` computed colour."""
    import re

    red, green, blue = (int(v) / 255 for v in re.findall(r"[\d.]+", css_color)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def card_notebook(root) -> None:
    """A notebook whose outputs are a finished training card and a serve card (one replica up, one down), trusted so
    that JupyterLab renders their HTML as a kernel's output would be rendered."""
    from types import SimpleNamespace

    from nbscale.serving import card as serve_card
    from nbscale.train.card import render

    history = {"loss": [2.1 / (1 + e) for e in range(8)], "val_loss": [2.2 / (1 + e) for e in range(8)],
               "accuracy": [0.5 + e * 0.06 for e in range(8)], "val_accuracy": [0.45 + e * 0.06 for e in range(8)]}
    training = render("%%train digits@v1", history, 8, 5120.0, "0123abcd", None, "finished", "CPU · float32")
    replicas = [SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port) for port in (40001, 40002)]
    service = SimpleNamespace(name="digits", url="http://127.0.0.1:40000", shard_by=None,
                              sides=[SimpleNamespace(label="digits v1", ref="digits@champion", weight=100.0, replicas=replicas)])
    serve_card._examples["digits v1"] = '{"dataframe_split": {"columns": ["pixel_0"], "data": [[0.0]]}}'  # no registry here
    serving = serve_card.render(service, {"sides": [{"label": "digits v1", "requests": 12, "errors": 0, "p50_ms": 3.1, "p95_ms": 5.2,
                                                     "replicas": [{"url": replicas[0].url, "healthy": True},
                                                                  {"url": replicas[1].url, "healthy": False}]}]})
    notebook = json.loads((ROOT / "notebooks" / "00-quickstart.ipynb").read_text())
    notebook["cells"] = [{"cell_type": "code", "id": f"card{i}", "metadata": {}, "execution_count": i + 1, "source": [],
                          "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"text/html": html, "text/plain": "card"}}]}
                         for i, html in enumerate((training, serving))]
    (root / "cards.ipynb").write_text(json.dumps(notebook))
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(root / "cards.ipynb")], check=True, capture_output=True, timeout=60)


def test_the_training_and_serve_cards_read_in_the_light_and_dark_themes(lab):
    """Screenshots of both themes are kept in build/test-artifacts/. In each theme the curves' axis labels take the
    text colour (dark on light, light on dark), the card's border the theme's, and the health dots are CSS shapes."""
    from playwright.sync_api import sync_playwright

    base, browser_path, root = lab
    artifacts = ROOT / "build" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    card_notebook(root)
    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
        try:
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                set_theme(base, theme)
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(f"{base}/lab/tree/cards.ipynb?token={TOKEN}", timeout=120_000)
                curve = page.locator(".nbscale-train svg.nbscale-curve").first
                curve.wait_for(timeout=120_000)
                page.wait_for_function(f"document.body.dataset.jpThemeName === {theme!r}", timeout=30_000)
                # The serve card is the second cell's output: JupyterLab may render it after the first.
                page.locator(".nbscale-serve .nbscale-health").nth(1).wait_for(state="attached", timeout=60_000)
                ticks = curve.locator("text").all_text_contents()
                assert {"1", "4", "8", "epoch"} <= set(ticks), ticks  # epoch ticks and the axis name
                seen[theme] = page.evaluate("""() => {
                    const card = document.querySelector('.nbscale-train');
                    const label = card.querySelector('svg.nbscale-curve text');
                    const dots = [...document.querySelectorAll('.nbscale-health')].map(d => [d.dataset.healthy, getComputedStyle(d).backgroundColor, d.getBoundingClientRect().width]);
                    return {text: getComputedStyle(card).color, label: getComputedStyle(label).fill, border: getComputedStyle(card).borderTopColor, dots};
                }""")
                page.locator(".jp-Notebook").filter(has=page.locator(".nbscale-train")).screenshot(path=str(artifacts / f"cards-{theme.split()[-1].lower()}.png"))
                page.close()
        finally:
            set_theme(base, "JupyterLab Light")
            browser.close()
    light, dark = seen["JupyterLab Light"], seen["JupyterLab Dark"]
    assert light["label"] == light["text"] and dark["label"] == dark["text"], seen  # axis labels are currentColor
    assert luminance(light["text"]) < 0.4 < 0.6 < luminance(dark["text"]), seen
    assert luminance(dark["border"]) < 0.5 < luminance(light["border"]), seen  # no bright frame in the dark theme
    assert [(d[0], d[2] > 4) for d in dark["dots"]] == [("true", True), ("false", True)], seen
    assert dark["dots"][0][1] != dark["dots"][1][1]  # green and red
    assert (artifacts / "cards-dark.png").stat().st_size > 10_000 and (artifacts / "cards-light.png").stat().st_size > 10_000


def put_setting(base: str, plugin: str, values: dict) -> None:
    """A plugin's user settings, through JupyterLab's own settings API (what the Settings editor writes)."""
    import urllib.request

    body = json.dumps({"raw": json.dumps(values)}).encode()
    request = urllib.request.Request(f"{base}/lab/api/settings/{plugin}", data=body, method="PUT",
                                     headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - the test's own server
        assert answer.status in (200, 204)


def set_theme(base: str, theme: str) -> None:
    put_setting(base, "@jupyterlab/apputils-extension:themes", {"theme": theme})


def test_the_panel_polls_only_while_shown_backs_off_on_errors_and_takes_its_interval_from_settings(lab):
    """The request/poll layer in the real bundle: with refreshSeconds 0.5 (the panel's setting) it reads the
    status every half second while shown; collapsed it sends nothing; when every API call fails it says the
    server's message and waits longer and longer (lumino's Poll backoff) instead of hammering the server."""
    import time

    from playwright.sync_api import expect, sync_playwright

    base, browser_path, _ = lab
    put_setting(base, "nbscale-labextension:panel", {"refreshSeconds": 0.5})
    ticks: list[float] = []  # one status request per refresh
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("request", lambda r: ticks.append(time.monotonic()) if "/nbscale/api/status" in r.url else None)
            page.goto(f"{base}/lab/tree/panel.ipynb?token={TOKEN}", timeout=120_000)
            tab = page.locator("li[data-id='nbscale-panel']")
            tab.wait_for(timeout=120_000)
            page.wait_for_timeout(3000)
            assert ticks == [], "the panel polled before it was ever shown"
            tab.click()
            expect(page.locator("#nbscale-panel [data-nbscale-section='datasets']")).to_be_visible(timeout=30_000)
            # From here the API answers at once (an empty state), so the count measures the poll, not MLflow's searches.
            empty = {"status": {}, "runs": {"experiments": [], "runs": []}}
            answering = lambda route: route.fulfill(  # noqa: E731
                status=200, content_type="application/json",
                body=json.dumps({"result": next((v for k, v in empty.items() if f"/nbscale/api/{k}" in route.request.url), [])}))
            page.route("**/nbscale/api/**", answering)

            def count_for(seconds: float) -> int:
                start = time.monotonic()
                page.wait_for_timeout(seconds * 1000)
                return len([t for t in ticks if start <= t < start + seconds])

            shown = count_for(4)
            assert shown >= 5, f"{shown} refreshes in 4 s: the 0.5 s setting did not reach the panel (2 s would give 2)"
            tab.click()  # collapse the sidebar
            expect(page.locator("#nbscale-panel")).to_be_hidden(timeout=10_000)
            page.wait_for_timeout(1000)  # a refresh already under way may finish
            assert count_for(4) == 0, "the collapsed panel kept polling"
            tab.click()
            expect(page.locator("#nbscale-panel")).to_be_visible(timeout=10_000)
            assert count_for(2) >= 1, "the panel did not refresh when shown again"

            def failing(route):
                route.fulfill(status=500, content_type="application/json", body=json.dumps({"message": "nbscale test: the API is down"}))

            page.unroute("**/nbscale/api/**")
            page.route("**/nbscale/api/**", failing)
            expect(page.locator("#nbscale-panel .nbscale-error")).to_have_text("nbscale test: the API is down", timeout=10_000)
            backing_off = count_for(10)
            assert backing_off <= 10, f"{backing_off} refreshes in 10 s of errors: no backoff (0.5 s apart would be 20)"
            page.unroute("**/nbscale/api/**")
        finally:
            put_setting(base, "nbscale-labextension:panel", {})
            browser.close()


def server_kernel(base: str, root):
    """A kernel started by the Jupyter server (so it inherits the server's environment, as a notebook's does), and a
    client that runs cells in it and returns their display outputs."""
    import urllib.request

    from jupyter_client import BlockingKernelClient

    request = urllib.request.Request(f"{base}/api/kernels", data=b'{"name": "python3"}', method="POST",
                                     headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the test's own server
        kernel_id = json.load(answer)["id"]
    client = BlockingKernelClient()
    client.load_connection_file(str(root.parent / "runtime" / f"kernel-{kernel_id}.json"))
    # Not created by a kernel manager, the client judges the kernel alive by its heartbeat, which it calls dead after
    # 1 s without a beat: a kernel starting on a loaded machine missed that once ("Kernel died before replying").
    client.hb_channel.time_to_dead = 10.0
    client.start_channels()
    client.wait_for_ready(timeout=60)

    def run(code: str) -> list[dict]:
        outputs: list[dict] = []
        reply = client.execute_interactive(code, timeout=240, output_hook=lambda m: outputs.append(m["content"]))
        assert reply["content"]["status"] == "ok", [o for o in outputs if "traceback" in o]
        return [o["data"] for o in outputs if "data" in o]

    def shut_down():
        client.stop_channels()
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels/{kernel_id}", method="DELETE",  # noqa: S310
                                                      headers={"Authorization": f"token {TOKEN}"}), timeout=60).close()

    return run, shut_down


def test_the_spark_and_mlflow_ui_links_open_through_the_jupyter_server(lab):
    """JupyterLab elsewhere (Binder, a remote host): the browser reaches the Jupyter server and nothing else. A kernel
    the server started links its Spark UI and its MLflow UI under the server's base URL; Chromium, with every request
    to another port refused, opens them there: Spark's jobs page, its executors page (which Spark's scripts fill in
    from its REST API; under jupyter-server-proxy's own /proxy/<port>/ route they ask for an application called
    "<port>" and the table stays empty), and MLflow's experiment list. A port no kernel published is not proxied."""
    import http.client
    import re
    import urllib.error
    import urllib.parse
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    base, browser_path, root = lab
    run, shut_down = server_kernel(base, root)
    try:
        run("%load_ext nbscale\nfrom nbscale.session import spark\nspark().range(1000).selectExpr('sum(id)').collect()")
        card = run("%nbscale")[0]["text/html"]
        spark_link = re.search(r'<a href="([^"]+)"', card).group(1)
        ui = run("%nbscale ui")[0]["text/html"]
        mlflow_link = re.search(r"<a href='([^']+)'", ui).group(1)
        assert re.fullmatch(f"{BASE_URL}nbscale/ui/[0-9]+/jobs/", spark_link), card
        assert re.fullmatch(f"{BASE_URL}nbscale/ui/[0-9]+/", mlflow_link), ui
        origin = base[: -len(BASE_URL.rstrip("/"))]
        jupyter_port = urllib.parse.urlsplit(origin).port
        anonymous = http.client.HTTPConnection("127.0.0.1", jupyter_port, timeout=30)
        anonymous.request("GET", spark_link)  # no token, no cookie: the server's login, never Spark's page
        assert anonymous.getresponse().status in (302, 403)
        anonymous.close()
        with pytest.raises(urllib.error.HTTPError, match="404"):  # a port of this machine that no kernel published
            urllib.request.urlopen(urllib.request.Request(f"{base}/nbscale/ui/{jupyter_port}/api/status",  # noqa: S310
                                                          headers={"Authorization": f"token {TOKEN}"}), timeout=30)
        refused: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
            try:
                context = browser.new_context()

                def only_the_jupyter_server(route):
                    if urllib.parse.urlsplit(route.request.url).port == jupyter_port:
                        return route.continue_()
                    refused.append(route.request.url)
                    return route.abort()

                context.route("**/*", only_the_jupyter_server)
                page = context.new_page()
                page.goto(f"{base}/api/status?token={TOKEN}", timeout=60_000)  # logs in: the server sets its cookie
                page.goto(origin + spark_link, timeout=60_000)
                expect(page.locator("#completed-job-table, #completedJob-table, table").first).to_contain_text("collect", timeout=30_000)
                page.goto(origin + spark_link.replace("/jobs/", "/executors/"), timeout=60_000)
                expect(page.locator("#active-executors-table")).to_contain_text("driver", timeout=30_000)
                page.goto(origin + mlflow_link, timeout=60_000)
                expect(page.get_by_text("Default").first).to_be_visible(timeout=60_000)
            finally:
                browser.close()
        assert refused == [], f"the pages asked for addresses other than the Jupyter server's: {refused}"
    finally:
        shut_down()
