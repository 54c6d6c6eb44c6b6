"""The production loop's first half, with real MLflow scoring servers behind nbscale's front: one input contract
(the logged model takes the dataset's raw columns by name and scales them itself, identically on every path),
and drift of what a service really served against the training data, logged to MLflow."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, module_data_dir
from PIL import Image

from nbscale import serving
from nbscale.errors import NbscaleError
from nbscale.ingest import dataset, ingest
from nbscale.registry import register
from nbscale.train import train

pytestmark = pytest.mark.slow

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
CNN = """
model = keras.Sequential([keras.Input(shape=(12, 10, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                          keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with module_data_dir(tmp_path_factory, "production-data") as cfg:
        try:
            ingest("digits", "nbscale:digits", label="label")
            tabular = train(DENSE, data="digits", epochs=3, batch_size=64, scale=16.0, experiment="production")
            register("prod-digits", run_id=tabular.run_id, alias="champion")
            folder = tmp_path_factory.mktemp("shapes")
            rng = np.random.default_rng(0)
            for label, brightness in (("dark", 40), ("light", 200)):
                (folder / label).mkdir()
                for i in range(30):
                    pixels = np.clip(rng.normal(brightness, 30, (12, 10)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels, "L").save(folder / label / f"{i}.png")
            ingest("shapes", str(folder), format="images")
            images = train(CNN, data="shapes", epochs=2, batch_size=16, scale=255.0, experiment="production")
            register("prod-shapes", run_id=images.run_id, alias="champion")
            yield {"digits": tabular, "shapes": images, "data_dir": Path(cfg.data_dir)}
        finally:
            serving.stop() if serving.services() else None
            import nbscale

            nbscale.session.stop_spark()


def post(url: str, body: dict):
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def probabilities(answer: dict) -> np.ndarray:
    return np.asarray([p["probabilities"] for p in answer["predictions"]], dtype=np.float32)


def spark_udf_probabilities(name: str, frame, columns: list[str]) -> np.ndarray:
    """MLflow's own spark_udf over struct(*columns), with its default result type (from the model's signature)."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    from nbscale.session import spark

    session = spark()
    udf = mlflow.pyfunc.spark_udf(session, f"models:/{name}@champion", env_manager="local")
    rows = session.createDataFrame(frame.reset_index(drop=True).reset_index())
    out = rows.select("index", udf(F.struct(*[F.col(f"`{c}`") for c in columns])).alias("p")).orderBy("index").collect()
    return np.asarray([r["p"]["probabilities"] for r in out], dtype=np.float32)


def plain_mlflow_serve(uri: str):
    """`mlflow models serve` of the same model URI, outside nbscale, on a free loopback port: (url, process)."""
    from nbscale.config import settings

    port = free_port()
    # `mlflow models serve` runs `uvicorn` from PATH: the one beside this Python.
    env = dict(os.environ, MLFLOW_TRACKING_URI=settings().tracking_uri,
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                                "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return url, process
        except OSError:
            assert process.poll() is None, "mlflow models serve exited"
            time.sleep(0.5)
    raise AssertionError("mlflow models serve did not answer /ping within 120 s")


def test_a_tabular_model_gives_identical_predictions_on_every_path(models):
    """REST (inputs, dataframe_split, dataframe_records), %predict (numpy float64, reversed frame, one 1-D row),
    %score, mlflow.pyfunc.load_model, spark_udf and plain `mlflow models serve`: the same raw rows, the same answer."""
    import mlflow.pyfunc

    from nbscale.serving.score import score

    frame = dataset("digits").to_pandas(8).drop(columns=["label"])  # raw pixels 0..16, as ingested
    columns = list(frame.columns)
    expected = models["digits"].model.predict(frame.to_numpy(np.float32) / 16, verbose=0)  # what training's feed gives the network
    service = serving.serve("prod-digits@champion")
    plain_url, plain = plain_mlflow_serve("models:/prod-digits@champion")
    try:
        split = {"dataframe_split": {"columns": columns, "data": frame.to_numpy().tolist()}}
        records = {"dataframe_records": frame.to_dict(orient="records")}
        columnar = {"inputs": {c: frame[c].tolist() for c in columns}}
        for url in (service.url, plain_url):
            for body in (split, records, columnar):
                status, answer = post(url, body)
                assert status == 200, answer
                assert np.allclose(probabilities(answer), expected, atol=1e-5)
                assert [p["prediction"] for p in answer["predictions"]] == expected.argmax(axis=1).tolist()
        assert np.allclose(np.asarray(serving.predict("prod-digits", frame.to_numpy(np.float64))), expected, atol=1e-5)
        assert np.allclose(np.asarray(serving.predict("prod-digits", frame[columns[::-1]])), expected, atol=1e-5)  # by name, any order
        assert np.allclose(np.asarray(serving.predict("prod-digits", frame.iloc[0].tolist())), expected[:1], atol=1e-5)  # one row
        status, answer = post(service.url, {"dataframe_split": {"columns": columns[::-1], "data": frame[columns[::-1]].to_numpy().tolist()}})
        assert status == 200 and np.allclose(probabilities(answer), expected, atol=1e-5)
        status, answer = post(service.url, {"inputs": frame.to_numpy().tolist()})  # unnamed rows: refused, never guessed
        assert status == 400 and "missing inputs" in answer["message"]
    finally:
        serving.stop("prod-digits")
        os.killpg(plain.pid, signal.SIGTERM)
        plain.wait(30)
    loaded = mlflow.pyfunc.load_model("models:/prod-digits@champion")
    assert np.allclose(np.stack(loaded.predict(frame.astype("float64"))["probabilities"]), expected, atol=1e-5)
    assert np.allclose(np.stack(loaded.predict(frame[columns[::-1]].astype("float32"))["probabilities"]), expected, atol=1e-5)
    assert np.allclose(spark_udf_probabilities("prod-digits", frame, columns), expected, atol=1e-5)
    scored = score("prod-digits@champion", data="digits", to="digits_contract").to_pandas(None)
    joined = scored.drop_duplicates(subset=columns).merge(frame.drop_duplicates(), on=columns)
    assert len(joined) >= 7
    again = models["digits"].model.predict(joined[columns].to_numpy(np.float32) / 16, verbose=0)
    assert np.allclose(np.stack(joined["probabilities"]), again, atol=1e-5)


def test_an_image_model_takes_its_image_column_as_ingested(models):
    import mlflow.pyfunc

    from nbscale.serving.score import score

    frame = dataset("shapes").to_pandas(6)[["image"]]  # each row: the 120 raw pixels (0..255), as ingested
    pixels = np.stack(frame["image"]).astype(np.float32)
    expected = models["shapes"].model.predict(pixels.reshape(-1, 12, 10, 1) / 255, verbose=0)
    service = serving.serve("prod-shapes@champion")
    try:
        status, answer = post(service.url, {"dataframe_split": {"columns": ["image"], "data": [[row.tolist()] for row in pixels]}})
        assert status == 200 and np.allclose(probabilities(answer), expected, atol=1e-5)
        assert np.allclose(np.asarray(serving.predict("prod-shapes", pixels.astype(np.float64))), expected, atol=1e-5)
        assert np.allclose(np.asarray(serving.predict("prod-shapes", frame)), expected, atol=1e-5)
        assert np.allclose(np.asarray(serving.predict("prod-shapes", serving.sample_rows(service, 6))), expected, atol=1e-5)
        assert "dataframe_split" in service._repr_html_()  # the card's curl line sends a real row
    finally:
        serving.stop("prod-shapes")
    loaded = mlflow.pyfunc.load_model("models:/prod-shapes@champion")
    assert np.allclose(np.stack(loaded.predict(frame)["probabilities"]), expected, atol=1e-5)
    assert np.allclose(spark_udf_probabilities("prod-shapes", frame, ["image"]), expected, atol=1e-5)
    scored = score("prod-shapes@champion", data="shapes", to="shapes_contract").to_pandas(None)
    every = models["shapes"].model.predict(np.stack(scored["image"]).reshape(-1, 12, 10, 1).astype(np.float32) / 255, verbose=0)
    assert len(scored) == 60 and scored["prediction"].tolist() == every.argmax(axis=1).tolist()


def test_the_logged_model_names_its_columns_and_no_local_path(models):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts("models:/prod-digits@champion"))
    text = (local / "MLmodel").read_text()
    assert "/tmp/" not in text.split("artifact_path:", 1)[1].split("\n", 1)[1] and str(Path.cwd()) not in text
    assert "model_code_path: compiled_keras.py" in text
    info = mlflow.models.get_model_info("models:/prod-digits@champion")
    assert info.signature.inputs.input_names() == [f"pixel_{i}" for i in range(64)]
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"][:2] == ["pixel_0", "pixel_1"] and max(max(row) for row in example["data"]) > 1  # raw values, not scaled


def send(url: str, frame, batches: int):
    for chunk in (frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), batches)):  # not on a DataFrame: deprecated
        status, answer = post(url, {"dataframe_split": {"columns": list(frame.columns), "data": chunk.to_numpy().tolist()}})
        assert status == 200, answer


def wait_for_traffic(folder: Path, rows: int):
    """The front flushes what it served once a second: wait (bounded) until `rows` rows are on disk."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = sum(len(json.loads(line)["request"]["dataframe_split"]["data"])
                    for path in folder.glob("*.jsonl") for line in path.read_text().splitlines() if line.strip())
        if found >= rows:
            return
        time.sleep(0.3)
    raise AssertionError(f"the front recorded fewer than {rows} rows in 15 s")


def test_drift_ranks_a_shifted_feature_first_and_flags_no_steady_one(models):
    from nbscale.drift import drift
    from nbscale.session import tracking_client

    folder = models["data_dir"] / "traffic" / "prod-digits" / "v1"
    frame = dataset("digits").to_pandas(400).drop(columns=["label"])
    shutil.rmtree(folder, ignore_errors=True)  # what earlier tests of this module served is not this test's traffic
    service = serving.serve("prod-digits@champion")
    try:
        send(service.url, frame, 10)
        wait_for_traffic(folder, 400)
        steady = drift("prod-digits@champion")
        assert steady.rows == 400 and steady.against == "digits@v1" and steady.drifted == []
        assert steady.prediction is not None and not steady.prediction.drifted
        shutil.rmtree(folder)  # a new window of traffic: shifted
        shifted = frame.copy()
        shifted["pixel_20"] = 0.0  # a dead sensor
        shifted["pixel_43"] = shifted["pixel_43"] + 8  # an offset calibration
        send(service.url, shifted, 10)
        wait_for_traffic(folder, 400)
        report = drift("prod-digits@champion", window="10m")
    finally:
        serving.stop("prod-digits")
    assert {f.feature for f in report.features[:2]} == {"pixel_20", "pixel_43"} and set(report.drifted) >= {"pixel_20", "pixel_43"}
    untouched = {f.feature: f for f in report.features}
    assert not untouched["pixel_0"].drifted and not untouched["pixel_36"].drifted
    card = report._repr_html_()
    assert "Drift of prod-digits v1" in card and "<svg" in card and "drifted" in card
    client = tracking_client()
    run = client.get_run(report.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["nbscale.drift_of"] == "prod-digits v1"
    assert str(models["data_dir"]) in run.info.artifact_uri  # drift.json under the data dir, not the notebook's folder
    assert run.data.metrics["psi.pixel_20"] >= 0.2 and run.data.metrics["drifted_features"] == len(report.drifted)
    assert client.get_model_version("prod-digits", "1").tags["nbscale.drift_run"] == report.run_id
    runs = client.search_runs([client.get_experiment_by_name("nbscale-drift").experiment_id])
    assert runs and all(r.info.status == "FINISHED" for r in runs)  # none left RUNNING


def test_drift_between_two_dataset_versions(models):
    from nbscale.drift import drift

    ingest("digits_inverted", "SELECT pixel_0, pixel_20, 16 - pixel_36 AS pixel_36, label FROM digits@v1")
    ingest("digits_inverted", "SELECT pixel_0, pixel_20, pixel_36, label FROM digits@v1")
    report = drift(data="digits_inverted@v1", against="digits_inverted@v2", log=False)
    assert [f.feature for f in report.features][0] == "pixel_36" and report.drifted == ["pixel_36"]
    assert drift(data="digits_inverted@v2", against="digits_inverted@v2", log=False).drifted == []


def test_drift_bad_inputs_are_one_line(models, ip):
    import mlflow

    from nbscale.drift import drift

    shutil.rmtree(models["data_dir"] / "traffic" / "prod-shapes", ignore_errors=True)  # never served, as far as drift can tell
    cases = [
        (lambda: drift("prod-shapes@champion"), "^prod-shapes v1 has no recorded traffic: serve it"),
        (lambda: drift("prod-digits@champion", window="5x"), r"^--window '5x': give a positive number with s, m, h or d"),
        (lambda: drift(), r"^%drift needs a served model"),
        (lambda: drift(data="digits@v1"), r"^%drift needs a served model"),
    ]
    for call, message in cases:
        with pytest.raises(NbscaleError, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)
    folder = models["data_dir"] / "traffic" / "prod-digits" / "v1"
    if folder.is_dir():  # recorded by the test before: make it old
        for path in folder.glob("*.jsonl"):
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            path.write_text("".join(json.dumps({**r, "t": r["t"] - 7200}) + "\n" for r in lines))
        with pytest.raises(NbscaleError, match=r"^prod-digits v1 served \d+ recorded requests, none in the last 30m \(the newest 2\.\d h ago\)"):
            drift("prod-digits@champion", window="30m")
    # A user's own model, logged under the data dir (an experiment made without a location would write ./mlruns here).
    outside = mlflow.create_experiment("outside", artifact_location=(models["data_dir"] / "outside-artifacts").as_uri())
    with mlflow.start_run(experiment_id=outside):
        info = mlflow.pyfunc.log_model(name="m", python_model=_echo_model(), input_example=np.zeros((1, 2)))
    mlflow.register_model(info.model_uri, "outside-model")
    with pytest.raises(NbscaleError, match=r"^outside-model v1 was not trained by nbscale: it has no training dataset to compare with"):
        drift("outside-model")
    with pytest.raises(NbscaleError, match="^prod-shapes v1 has no recorded traffic"):
        ip.run_line_magic("drift", "prod-shapes@champion --window 1h")


def _echo_model():
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    return Echo()


def test_a_model_logged_before_the_contract_keeps_working(models):
    """A version logged as earlier nbscale did (tensor signature, pre-scaled float rows, raw outputs): served,
    predicted and scored as before."""
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from nbscale.serving.score import score
    from nbscale.session import tracking_client
    from nbscale.train import MODEL_TAG
    from nbscale.train.pyfunc import MODEL_CODE
    from nbscale.train.task import TASK_TAG

    keras_model = models["digits"].model
    scaled = dataset("digits").to_pandas(8).drop(columns=["label"]).to_numpy(np.float32) / 16
    expected = keras_model.predict(scaled, verbose=0)
    trained = tracking_client().get_run(models["digits"].run_id)
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run(experiment_id=trained.info.experiment_id) as run:
        keras_model.save(f"{folder}/model.keras")
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), artifacts={"keras_model": f"{folder}/model.keras"},
                                       signature=infer_signature(scaled, expected), input_example=scaled[:2])
        mlflow.log_params({k: trained.data.params[k] for k in ("data", "label", "scale")})
        mlflow.set_tags({MODEL_TAG: info.model_uri, TASK_TAG: "classification"})
    register("prod-old", run_id=run.info.run_id, alias="champion")
    service = serving.serve("prod-old@champion")
    try:
        assert np.allclose(np.asarray(serving.predict("prod-old", scaled)), expected, atol=1e-5)
        assert np.allclose(np.asarray(serving.predict("prod-old", serving.sample_rows(service, 8))), expected, atol=1e-5)
    finally:
        serving.stop("prod-old")
    scored = score("prod-old@champion", data="digits", to="digits_old").to_pandas(None)
    fresh = score("prod-digits@champion", data="digits", to="digits_new").to_pandas(None)
    assert scored["prediction"].tolist() == fresh["prediction"].tolist()  # the same network, either contract


REGRESSION = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
"""


def test_register_evaluates_the_candidate_beside_the_champion_on_the_same_rows(models):
    from nbscale.session import tracking_client

    same_split = train(DENSE, data="digits", epochs=1, batch_size=64, scale=16.0, experiment="production")  # seed 42, 20 % held out
    card = register("prod-digits", run_id=same_split.run_id, alias="challenger")
    candidate, champion = card.evaluation
    version = card.versions[-1].version
    assert (candidate.label, champion.label) == (f"prod-digits v{version}", "prod-digits v1") and champion.caveat == ""
    # The held-out rows are the training's validation rows: the evaluation's accuracy is each run's own val_accuracy.
    assert abs(candidate.metrics["accuracy_score"] - same_split.metrics["val_accuracy"]) < 1e-3
    assert abs(champion.metrics["accuracy_score"] - models["digits"].metrics["val_accuracy"]) < 1e-3
    assert set(candidate.figures) == set(champion.figures) == {"confusion matrix", "roc", "precision recall"}
    shown = card._repr_html_()
    assert "Evaluated on digits@v1 held-out (" in shown and shown.count("<img") == 6 and "(champion)" in shown
    client = tracking_client()
    assert client.get_model_version("prod-digits", str(version)).tags["nbscale.evaluation_run"] == candidate.run_id
    for evaluation in (candidate, champion):
        run = client.get_run(evaluation.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["nbscale.evaluated"] == evaluation.label
        assert {a.path for a in client.list_artifacts(evaluation.run_id)} >= {"confusion_matrix.png", "roc.png", "precision_recall.png"}
    other_split = train(DENSE, data="digits", epochs=1, batch_size=64, scale=16.0, seed=7, experiment="production")
    _, flattered = register("prod-digits", run_id=other_split.run_id).evaluation
    assert "trained on another split" in flattered.caveat  # the champion may have trained on these rows: said, not hidden


def test_a_regression_is_evaluated_by_its_residuals_and_no_held_out_split_is_said(models):
    fit = train(REGRESSION, data="digits", epochs=3, batch_size=64, scale=16.0, experiment="production")
    candidate, champion = register("prod-values", run_id=fit.run_id, alias="champion").evaluation
    assert champion is None and set(candidate.figures) == {"residuals"}
    assert abs(candidate.metrics["mean_absolute_error"] - fit.metrics["val_mae"]) < 1e-3
    unheld = train(REGRESSION, data="digits", epochs=1, batch_size=64, scale=16.0, validation=0.0, experiment="production")
    card = register("prod-values", run_id=unheld.run_id)
    assert card.evaluation is None and card.unevaluated.startswith("prod-values v2 was trained with --validation 0")
    assert "not evaluated: prod-values v2 was trained with --validation 0" in repr(card)
    assert register("prod-values", run_id=fit.run_id, evaluate=False).evaluation is None


class LabelledTraffic:
    """A client sending rows of the dataset with their label column to a service until stopped (bounded)."""

    def __init__(self, url: str, rows_per_request: int = 5, limit: int = 2000):
        import threading

        frame = dataset("digits").to_pandas(None)
        self.body = [{"dataframe_split": {"columns": list(frame.columns), "data": frame[i:i + rows_per_request].to_numpy().tolist()}}
                     for i in range(0, 400, rows_per_request)]
        self.url, self.limit, self.stop, self.statuses = url, limit, threading.Event(), []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        for i in range(self.limit):
            if self.stop.is_set():
                return
            self.statuses.append(post(self.url, self.body[i % len(self.body)])[0])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


WORSE = DENSE.replace("Adam(0.01)", "Adam(1e-5)")


def test_a_worse_canary_rolls_back_and_a_better_one_is_promoted(models):
    from nbscale.promote import promote
    from nbscale.session import tracking_client

    client = tracking_client()
    worse = train(WORSE, data="digits", epochs=1, batch_size=64, scale=16.0, experiment="production")
    register("prod-digits", run_id=worse.run_id, alias="challenger", evaluate=False)
    champion = client.get_registered_model("prod-digits").aliases["champion"]
    service = serving.serve("prod-digits@champion")
    try:
        with LabelledTraffic(service.url) as traffic:
            lines = []
            rolled = promote("prod-digits", canary=30, run_for="40 requests", on_progress=lambda p: lines.append(p.line()))
        assert rolled.decision == "rolled back" and any(r.startswith("accuracy ") for r in rolled.reasons), rolled.reasons
        assert rolled.canary.labelled >= 50 and rolled.canary.accuracy < rolled.champion.accuracy - 0.2
        # judged on the same rows: every labelled row either side served, answered by both versions
        assert rolled.same_rows.rows == rolled.champion.labelled + rolled.canary.labelled, (rolled.same_rows, rolled.steps)
        assert rolled.same_rows.canary < rolled.same_rows.champion - 0.2 and "on the same" in rolled.reasons[0]
        assert lines and lines[-1].startswith("canary: ")
        assert client.get_registered_model("prod-digits").aliases["champion"] == champion  # the alias stayed
        assert [s.label for s in service.sides] == [f"prod-digits v{champion}"] and service.sides[0].weight == 100
        assert set(traffic.statuses) == {200}  # the clients never saw the canary come and go
        better = train(DENSE.replace("Dense(32", "Dense(64"), data="digits", epochs=12, batch_size=64, scale=16.0, experiment="production")
        card = register("prod-digits", run_id=better.run_id, alias="challenger", evaluate=False)
        candidate = card.versions[-1].version
        with LabelledTraffic(service.url) as traffic:
            promoted = promote("prod-digits", canary=30, run_for="40 requests", guard="accuracy")
            canary_pids = [r.process.pid for r in service.sides[0].replicas]
            after = post(service.url, traffic.body[0])
        assert promoted.decision == "promoted", (promoted.reasons, promoted.steps)
        assert promoted.same_rows.rows == promoted.champion.labelled + promoted.canary.labelled
        assert promoted.same_rows.canary >= promoted.same_rows.champion - 0.02 and "on the same" in promoted.line()
        assert int(client.get_registered_model("prod-digits").aliases["champion"]) == int(candidate)
        assert [s.label for s in service.sides] == [f"prod-digits v{candidate}"] and service.sides[0].ref == "prod-digits@champion"
        assert all(r.process.poll() is None for r in service.sides[0].replicas) and canary_pids  # the canary's replicas, not restarted
        assert after[0] == 200 and set(traffic.statuses) == {200}
    finally:
        serving.stop("prod-digits")
    for promotion in (rolled, promoted):
        run = client.get_run(promotion.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["nbscale.decision"] == promotion.decision
        assert run.data.metrics["canary.requests"] >= 40
        assert run.data.metrics["same_rows.rows"] == promotion.same_rows.rows
    assert client.get_model_version("prod-digits", str(candidate)).tags["nbscale.promotion"].startswith("promoted (")
    client.set_registered_model_alias("prod-digits", "champion", champion)  # later tests of this module serve v1


def test_an_interrupted_promotion_rolls_back_and_a_dead_kernels_is_logged_killed(models):
    from kernel_client import Kernel

    from nbscale.config import settings
    from nbscale.promote import promote, settle_interrupted
    from nbscale.session import tracking_client

    client = tracking_client()
    champion = client.get_registered_model("prod-digits").aliases["champion"]

    def stop_button(promotion):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        promote("prod-digits", canary=20, run_for="10m", on_progress=stop_button)
    service = serving.service("prod-digits")
    try:
        assert [s.label for s in service.sides] == [f"prod-digits v{champion}"]  # what was served stays served
        assert client.get_registered_model("prod-digits").aliases["champion"] == champion
    finally:
        serving.stop("prod-digits")
    killed = client.search_runs([client.get_experiment_by_name("nbscale-promotions").experiment_id],
                                filter_string="tags.`nbscale.decision` = 'interrupted'")
    assert [r.info.status for r in killed] == ["KILLED"]

    env = dict(os.environ, NBSCALE_DATA_DIR=settings().data_dir)
    kernel = Kernel("nbscale-local", env=env)
    try:
        kernel.client.execute("%load_ext nbscale\n%promote prod-digits --canary 20 --for 10m")
        record = models["data_dir"] / "promotions" / "prod-digits.json"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (record.is_file() and "canary" in _front_config(models["data_dir"])):
            time.sleep(0.5)
        assert record.is_file(), "the kernel's promotion never started its canary"
    finally:
        os.kill(kernel.manager.provisioner.process.pid, signal.SIGKILL)  # the kernel dies mid-canary
        kernel.client.stop_channels()
        kernel.manager.shutdown_kernel(now=True)
    assert client.get_registered_model("prod-digits").aliases["champion"] == champion  # the alias never moved
    settled = settle_interrupted("prod-digits")
    assert settled.decision == "interrupted" and f"@champion stayed on v{champion}" in settled.reasons[0]
    assert client.get_run(settled.run_id).info.status == "KILLED" and not record.exists()
    assert settle_interrupted("prod-digits") is None  # logged once


def _front_config(data_dir: Path) -> str:
    """The canary side's label appears in the service's front config once the canary serves."""
    config = data_dir / "serving" / "prod-digits" / "front.json"
    try:
        return "canary" if len(json.loads(config.read_text())["sides"]) > 1 else ""
    except (OSError, ValueError):
        return ""


def test_promote_bad_inputs_are_one_line_and_start_nothing(models):
    from nbscale.promote import promote

    cases = [
        (dict(run_for="soon"), r"^--for 'soon': say how long the canary runs"),
        (dict(guard="speed"), r"^--guard 'speed': use one of errors, latency, accuracy"),
        (dict(canary=100), r"^--canary 100 is the candidate's share of requests in percent"),
        (dict(source="champion"), r"^prod-digits@champion and @champion are both v\d+: there is nothing to promote"),
        (dict(source="nobody"), r"^prod-digits has no alias @nobody"),
    ]
    for options, message in cases:
        with pytest.raises(NbscaleError, match=message) as raised:
            promote("prod-digits", **options)
        assert "\n" not in str(raised.value)
    assert serving.services() == [] and not (models["data_dir"] / "promotions" / "prod-digits.json").exists()
