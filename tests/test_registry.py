"""%register / %models against a real MLflow store, with models from real %%train runs on digits."""
import pytest
from conftest import module_data_dir

from nbscale.errors import NbscaleError
from nbscale.ingest import ingest
from nbscale.train import train

pytestmark = pytest.mark.slow

MODEL = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with module_data_dir(tmp_path_factory, "registry-data"):
        ingest("digits", "nbscale:digits", label="label")
        small = train(MODEL, data="digits", epochs=1, batch_size=64, scale=16, experiment="select", namespace={"hidden": 2})
        large = train(MODEL, data="digits", epochs=3, batch_size=64, scale=16, experiment="select", namespace={"hidden": 64})
        yield small, large


def test_register_the_best_run_and_move_aliases(trained, ip, capfd):
    small, large = trained
    assert large.metrics["val_accuracy"] > small.metrics["val_accuracy"]
    card = ip.run_line_magic("register", "--best val_accuracy --experiment select --name digits-mlp --alias champion")
    assert f"Registered digits-mlp v1 from run {large.run_id} (best val_accuracy" in repr(card)
    assert "Successfully registered" not in "".join(capfd.readouterr())  # the card says it, once
    assert card.evaluation[0].label == "digits-mlp v1" and "Evaluated on digits@v1 held-out" in card._repr_html_()
    card = ip.run_line_magic("register", f"--no-evaluate --run {small.run_id} --name digits-mlp --alias challenger")
    versions = {v.version: v for v in card.versions}
    assert versions[1].aliases == ["champion"] and versions[2].aliases == ["challenger"]
    assert versions[1].run_id == large.run_id and versions[1].data == "digits@v1"
    assert versions[1].metrics["val_accuracy"] == pytest.approx(large.metrics["val_accuracy"])
    # The lowest val_loss is the large model's too.
    lowest = ip.run_line_magic("register", "--no-evaluate --best val_loss --lowest --experiment select --name digits-by-loss")
    assert lowest.versions[0].run_id == large.run_id
    # Promote the challenger, then roll back.
    assert "digits-mlp@champion now points to v2" in repr(ip.run_line_magic("models", "digits-mlp --alias champion --version 2"))
    ip.run_line_magic("models", "digits-mlp --alias champion --version 1")
    # The alias serves the model it points to: champion (back on v1) predicts as the large model does.
    import gzip

    import numpy as np

    import nbscale

    mlflow = nbscale.session.mlflow()
    import pandas as pd

    raw = np.loadtxt(gzip.open(nbscale.datasets.digits_csv(), "rt"), delimiter=",")[:16, :64]
    champion = mlflow.pyfunc.load_model("models:/digits-mlp@champion").predict(pd.DataFrame(raw, columns=[f"pixel_{i}" for i in range(64)]))
    x = (raw / 16).astype("float32")
    np.testing.assert_allclose(np.stack(champion["probabilities"]), large.model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    listed = ip.run_line_magic("models", "")
    assert "digits-mlp" in listed._repr_html_() and "champion" in listed._repr_html_()


@pytest.mark.parametrize("line, expected", [
    ("--best val_accuracy --experiment nowhere --name m", "There is no MLflow experiment 'nowhere'"),
    ("--best f1 --experiment select --name m", "has a finite value of the metric 'f1' (metrics: "),
    ("--best samples_per_s --experiment select --name m", "Cannot tell whether a higher or a lower 'samples_per_s' is better"),
    ("--run 0123456789abcdef0123456789abcdef --name m", "There is no MLflow run"),
    ("--name m", "Say which run"),
    ("--best val_accuracy --experiment select --name 'bad name'", "is not usable"),
])
def test_bad_register_input_is_one_line(trained, ip, line, expected):
    with pytest.raises(NbscaleError) as error:
        ip.run_line_magic("register", line)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_best_run_by_a_loss_is_its_lowest_unless_told_otherwise(trained, ip):
    small, large = trained
    assert large.metrics["val_loss"] < small.metrics["val_loss"]
    by_loss = ip.run_line_magic("register", "--no-evaluate --best val_loss --experiment select --name by-loss")  # no --lowest
    assert by_loss.versions[0].run_id == large.run_id and "lower is better: a loss or error metric" in by_loss.note
    highest = ip.run_line_magic("register", "--no-evaluate --best val_loss --highest --experiment select --name by-loss-highest")
    assert highest.versions[0].run_id == small.run_id and "(--highest)" in highest.note


def test_a_run_whose_loss_is_not_finite_fails_and_is_never_registered(trained, ip):
    import nbscale
    from nbscale.train import NonFiniteLoss

    with pytest.raises(NonFiniteLoss) as failed:
        train(MODEL.replace("Adam(0.01)", "Adam(1e30)"), data="digits", epochs=3, batch_size=64, scale=16, experiment="select",
              namespace={"hidden": 64})
    message = str(failed.value)
    assert "stopped in epoch 1" in message and "not a finite number" in message and "\n" not in message
    client = nbscale.session.mlflow().MlflowClient()
    experiment = client.get_experiment_by_name("select").experiment_id
    broken = client.search_runs([experiment], "attributes.status = 'FAILED'")
    assert len(broken) == 1 and "nbscale.model_uri" not in broken[0].data.tags  # FAILED, no model logged
    with pytest.raises(NbscaleError) as refused:
        ip.run_line_magic("register", f"--no-evaluate --run {broken[0].info.run_id} --name nan-model")
    assert "has no model" in str(refused.value) or "never registered" in str(refused.value)
    best = ip.run_line_magic("register", "--no-evaluate --best val_loss --experiment select --name after-nan")
    assert best.versions[0].run_id == trained[1].run_id


def test_moving_an_alias_to_a_missing_version_is_one_line(trained, ip):
    ip.run_line_magic("register", "--no-evaluate --best val_accuracy --experiment select --name digits-alias")
    with pytest.raises(NbscaleError, match=r"digits-alias has no version 7 \(versions: 1\)"):
        ip.run_line_magic("models", "digits-alias --alias champion --version 7")
    with pytest.raises(NbscaleError, match="no registered model 'nope'"):
        ip.run_line_magic("models", "nope")


def test_lineage_of_a_dataset_version_nothing_trained_on_is_the_dataset_alone(trained):
    from nbscale.lineage import lineage

    ingest("digits", "nbscale:digits", label="label")  # v2: no run has read it
    alone = lineage("digits@latest")
    assert [(n.kind, n.label) for n in alone.nodes()] == [("dataset", "digits@v2")]
    assert [n.kind for n in lineage("digits@v1").nodes()][:2] == ["dataset", "run"]


@pytest.mark.parametrize("ref, message", [
    ("nothing-here", "'nothing-here' is neither a registered model nor a dataset: see %models and %datasets."),
    ("digits@v9", "digits has no version v9 (versions: v1"),
])
def test_lineage_of_an_unknown_thing_is_one_line(trained, ref, message):
    from nbscale.lineage import lineage

    with pytest.raises(NbscaleError) as caught:
        lineage(ref)
    assert str(caught.value).startswith(message)
