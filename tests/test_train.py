"""%%train with real Spark, Petastorm, TensorFlow (tf-keras) and MLflow on the real digits."""
import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import module_data_dir

import nbscale
from nbscale import feed
from nbscale.errors import NbscaleError
from nbscale.ingest import dataset, ingest
from nbscale.train import train

pytestmark = pytest.mark.slow

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
CNN = """
def build_model():
    m = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.Flatten(),
                          keras.layers.Dense(10, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m
"""


@pytest.fixture(scope="module", autouse=True)
def digits(tmp_path_factory):
    with module_data_dir(tmp_path_factory, "train-data"):
        ingest("digits", "nbscale:digits", label="label")
        table = np.loadtxt(gzip.open(nbscale.datasets.digits_csv(), "rt"), delimiter=",")
        folder = tmp_path_factory.mktemp("idx")
        for name, array in (("images-idx3-ubyte", table[:, :64].reshape(-1, 8, 8)), ("labels-idx1-ubyte", table[:, 64])):
            array = array.astype(np.uint8)
            (folder / name).write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())
        ingest("digit_images", f"{folder}/images-idx3-ubyte {folder}/labels-idx1-ubyte", shards=4)
        (folder / "unlabelled.csv").write_text("a,b,label\n1,2,0\n3,4,\n5,6,1\n7,8,1\n")
        ingest("unlabelled", str(folder / "unlabelled.csv"), label="label")
        rng = np.random.default_rng(0)  # a regression target: a float label with hundreds of distinct values
        a, b = rng.uniform(0, 10, 400), rng.uniform(0, 10, 400)
        (folder / "prices.csv").write_text("a,b,price\n" + "".join(f"{x:.3f},{y:.3f},{3 * x - 2 * y + rng.normal(0, 0.1):.4f}\n"
                                                                   for x, y in zip(a, b)))
        ingest("prices", str(folder / "prices.csv"), label="price")
        yield


def runs(status: str):
    return nbscale.session.mlflow().search_runs(search_all_experiments=True, filter_string=f"attributes.status = '{status}'")


def test_tabular_digits_train_and_the_run_is_complete():
    result = train(DENSE, data="digits", epochs=8, batch_size=64, scale=16.0, experiment="digits")
    assert result.metrics["val_accuracy"] > 0.85
    assert len(result.history["loss"]) == 8 and result.history["loss"][-1] < result.history["loss"][0]
    client = nbscale.session.mlflow().MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data"] == "digits@v1" and run.data.params["batch_size"] == "64" and run.data.params["optimizer"] == "Adam"
    assert [m.step for m in client.get_metric_history(result.run_id, "val_accuracy")] == list(range(8))
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits@v1"]
    import mlflow.pyfunc

    raw = dataset("digits").to_pandas(5).drop(columns=["label"])  # the logged model takes the raw columns and scales them itself
    answer = mlflow.pyfunc.load_model(result.model_uri).predict(raw)
    assert np.allclose(np.stack(answer["probabilities"]), result.model.predict(raw.to_numpy(np.float32) / 16, verbose=0), atol=1e-5)


def test_the_live_card_shows_steps_within_an_epoch():
    import re

    cards = []
    result = train(DENSE, data="digits", epochs=1, batch_size=8, scale=16.0, experiment="steps", on_step=cards.append)
    rows = int(nbscale.session.mlflow().get_run(result.run_id).data.params["train_rows"])
    steps = [tuple(map(int, m.groups())) for c in cards for m in [re.search(r"step (\d+)/(\d+)", c.html)] if m]
    assert steps and all(total == -(-rows // 8) and 1 <= done <= total for done, total in steps)
    assert steps[0][0] == 1 and all(c.epoch == 0 for c in cards)  # the first batch shows at once; no epoch is done yet


def test_image_dataset_trains_a_cnn():
    result = train(CNN, data="digit_images", epochs=6, batch_size=32, scale=16.0, experiment="digits")
    assert result.metrics["val_accuracy"] > 0.8
    assert "<svg" in result._repr_html_() and "epoch 6/6" in result._repr_html_()


def test_the_reader_pool_reads_every_row_every_time():
    spec = feed.spec_for(dataset("digit_images"), "label", 50, 1.0, 1)
    train_split, _ = feed.split(dataset("digit_images"), spec, 0.2)
    counts = {sum(len(y) for _, y in feed.batches(train_split, spec, shuffle=True, epoch=i)) for i in range(20)}
    assert counts == {train_split.rows}


def test_the_read_ahead_is_seeded_stops_with_its_consumer_and_hands_over_a_readers_error(tmp_path):
    import dataclasses
    import shutil
    import threading

    spec = feed.spec_for(dataset("digit_images"), "label", 50, 1.0, 1)
    train_split, _ = feed.split(dataset("digit_images"), spec, 0.2)
    labels = lambda epoch: np.concatenate([y for _, y in feed.batches(train_split, spec, shuffle=True, epoch=epoch)])  # noqa: E731
    first = labels(3)
    assert (first == labels(3)).all() and not (first == labels(4)).all()  # the same epoch, the same order; the next, another
    one_group, _ = feed.split(dataset("digit_images"), spec, 0.2, row_groups=1)  # rows are shuffled within a row group too
    in_order, shuffled = (np.concatenate([y for _, y in feed.batches(one_group, spec, shuffle=s)]) for s in (False, True))
    assert sorted(in_order) == sorted(shuffled) and (in_order != shuffled).mean() > 0.5
    partial = feed.batches(train_split, spec, shuffle=False)
    next(partial)
    partial.close()  # a fit that stops after one batch
    reading = lambda: [t for t in threading.enumerate() if t.name == "nbscale-feed-read-ahead"]  # noqa: E731
    assert not reading()
    broken = tmp_path / "broken"
    shutil.copytree(train_split.path.removeprefix("file://"), broken)
    for file in broken.glob("*.parquet"):
        file.write_bytes(file.read_bytes()[:200])  # damaged on disk: the reader's error reaches the trainer, no rows are made up
    with pytest.raises(Exception) as raised:
        list(feed.batches(dataclasses.replace(train_split, path=broken.as_uri()), spec, shuffle=False))
    assert not isinstance(raised.value, feed.ShortEpochError) and not reading()


def test_a_split_row_of_the_wrong_width_is_refused_not_reshaped(tmp_path):
    """The feed views each row group's packed column as one matrix: a row a byte short would shift every row after it."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = feed.spec_for(dataset("digit_images"), "label", 50, 1.0, 1)
    train_split, _ = feed.split(dataset("digit_images"), spec, 0.2)
    (first, *_) = sorted(Path(train_split.path.removeprefix("file://")).glob("*.parquet"))
    table = pq.read_table(first)
    packed = table.column(feed.FEATURES).to_pylist()
    packed[0] = packed[0][:-1]
    pq.write_table(table.set_column(table.column_names.index(feed.FEATURES), feed.FEATURES, pa.array(packed, pa.binary())),
                   tmp_path / first.name)
    with pytest.raises(NbscaleError, match=rf"^A row group of the split of digit_images@v1 in {re.escape(str(tmp_path.parent))} does not hold \d+ rows of 64 bytes"):
        list(feed.batches(dataclasses.replace(train_split, path=tmp_path.as_uri(), rows=table.num_rows), spec, shuffle=False))


def test_a_cached_split_is_held_as_stored_and_gives_the_same_batches_as_a_streamed_one_and_as_numpys_decode(monkeypatch):
    import tensorflow as tf

    spec = feed.spec_for(dataset("digit_images"), "label", 50, 16.0, 1)
    train_split, _ = feed.split(dataset("digit_images"), spec, 0.2)
    assert train_split.encoding == "uint8"
    x, _ = next(feed.batches(train_split, spec, shuffle=False, stored=True))
    assert x.dtype == np.uint8 and x.max() > 1  # raw pixels, unscaled: a quarter of float32's bytes in the cache
    asked = []
    real_batches = feed.batches
    monkeypatch.setattr(feed, "batches", lambda *a, **k: asked.append(k["stored"]) or real_batches(*a, **k))

    def epochs(n):
        ds = feed.tf_dataset(train_split, spec, shuffle=False)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(n)]

    cached = epochs(2)  # the second epoch comes from tf.data's cache
    monkeypatch.setattr(feed, "CACHE_BYTES", 0)
    streamed = epochs(1)
    assert asked == [True, True] and cached[0].dtype == streamed[0].dtype == tf.float32.as_numpy_dtype  # decoded by TensorFlow
    assert cached[1].tobytes() == cached[0].tobytes() == streamed[0].tobytes()  # the same float32 values, bit for bit
    in_numpy = np.concatenate([x for x, _ in real_batches(train_split, spec, shuffle=False)])  # what the workers' feed decodes
    assert in_numpy.tobytes() == streamed[0].tobytes()


def test_a_split_is_written_in_row_groups_of_bounded_size_and_read_whole(monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(feed, "ROW_GROUP_BYTES", 16 * 1024)  # the digits' 64 uint8 pixels a row: about 250 rows a group
    spec = feed.spec_for(dataset("digit_images"), "label", 50, 1.0, 1)
    train_split, _ = feed.split(dataset("digit_images"), spec, 0.35)  # a split of its own (another fraction)
    files = list(Path(train_split.path.removeprefix("file://")).glob("*.parquet"))
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files]
    assert sum(groups) > len(files), groups  # the files are cut into several groups, not one each
    assert sum(len(y) for _, y in feed.batches(train_split, spec, shuffle=True)) == train_split.rows


def test_mixed_precision_trains_and_leaves_the_notebook_policy_float32():
    from nbscale.train import device, keras

    result = train(DENSE, data="digits", epochs=6, batch_size=64, scale=16.0, experiment="mixed", precision="mixed")
    assert result.model.dtype_policy.name == "mixed_float16" and result.model.layers[0].compute_dtype == "float16"
    assert isinstance(result.model.optimizer, keras().mixed_precision.LossScaleOptimizer)  # compile() wrapped it: no underflow
    assert result.metrics["val_accuracy"] > 0.8
    params = nbscale.session.mlflow().MlflowClient().get_run(result.run_id).data.params
    assert params["precision"] == "mixed_float16" and params["optimizer"] == "Adam" and params["device"] == device()
    assert f"on {device()} · mixed_float16" in result._repr_html_()
    assert keras().mixed_precision.global_policy().name == "float32"  # the notebook's own Keras code is untouched


def test_auto_precision_is_float32_on_a_cpu():
    from nbscale.train import accelerator, precision_policy

    if accelerator()[1]:
        assert precision_policy("auto") == "mixed_float16"
    else:
        assert accelerator()[0] == "CPU" and precision_policy("auto") == "float32"


def test_the_split_packs_pixels_as_bytes_and_other_features_as_float32(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = dataset("digit_images")
    spec = feed.spec_for(images, "label", 32, 16.0, 3)
    train_split, val_split = feed.split(images, spec, 0.25)
    assert train_split.encoding == val_split.encoding == "uint8"  # whole numbers 0..16: a byte each, lossless
    x = np.concatenate([b[0] for b in feed.batches(train_split, spec, shuffle=False)] + [b[0] for b in feed.batches(val_split, spec, shuffle=False)])
    original = np.stack(images.to_pandas(2000)["image"]).astype(np.float32).reshape(-1, 8, 8, 1) / 16
    assert x.shape == original.shape and sorted(map(bytes, x)) == sorted(map(bytes, original))  # every row, exactly once

    pq.write_table(pa.table({"a": [0.5, 1.25, 300.0, -2.0], "b": [1, 2, 3, 4], "label": [0, 1, 0, 1]}), tmp_path / "t.parquet")
    ingest("floats", str(tmp_path / "t.parquet"), label="label")
    spec = feed.spec_for(dataset("floats"), "label", 2, 1.0, 0)
    whole, _ = feed.split(dataset("floats"), spec, 0.0)
    assert whole.encoding == "float32"
    rows = np.concatenate([b[0] for b in feed.batches(whole, spec, shuffle=False)])
    assert sorted(map(tuple, rows.tolist())) == [(-2.0, 4.0), (0.5, 1.0), (1.25, 2.0), (300.0, 3.0)]


def test_a_uint8_guess_the_rows_disprove_is_written_as_float32_and_nothing_stays_staged_even_when_interrupted(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def encoding_of(name, table):
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "t.parquet")
        return feed._likely_encoding(str(tmp_path / name), ["a"])

    # The guess comes from the footers (range, nulls, type) and a first row group of floats.
    assert encoding_of("whole", pa.table({"a": [0.0, 16.0, 255.0]})) == "uint8"
    assert encoding_of("ints", pa.table({"a": [[0, 1], [2, 255]]})) == "uint8"
    assert encoding_of("fraction", pa.table({"a": [0.0, 3.5]})) == "float32"
    assert encoding_of("negative", pa.table({"a": [-1, 2]})) == "float32"
    assert encoding_of("large", pa.table({"a": [1, 256]})) == "float32"
    assert encoding_of("gaps", pa.table({"a": [1, None]})) == "float32"

    # A guess the rows disprove (a 3.5 the footers and the sample did not show) must not be rounded: the packer refuses
    # every value uint8 cannot hold exactly, and the split is written again as float32.
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.5, 7.0], "b": [4.0, 5.0, 6.0, 8.0], "label": [0, 1, 0, 1]}), tmp_path / "almost.parquet")
    almost = ingest("almost", str(tmp_path / "almost.parquet"), label="label").dataset
    guesses = []
    monkeypatch.setattr(feed, "_likely_encoding", lambda *args: guesses.append(args) or "uint8")
    spec = feed.spec_for(almost, "label", 1, 1.0, 0)
    whole, _ = feed.split(almost, spec, 0.0)
    assert guesses and whole.encoding == "float32"
    rows = np.concatenate([b[0] for b in feed.batches(whole, spec, shuffle=False)])
    assert sorted(map(tuple, rows.tolist())) == [(1.0, 4.0), (2.0, 5.0), (3.5, 6.0), (7.0, 8.0)]
    folder = Path(whole.path.removeprefix("file://")).parent
    assert [p.name for p in folder.parent.iterdir() if "staging" in p.name] == []  # the refused uint8 attempt is gone
    kept, held = feed.split(almost, spec, 0.001)  # no row lands in validation: an empty part Petastorm can still read
    assert (kept.rows, held.rows) == (4, 0) and list(feed.batches(held, spec, shuffle=False)) == []

    # Interrupted as the write ends (the stop button): the staged files go, nothing is published.
    write = feed._write_packed

    def interrupted(*args):
        write(*args)
        assert list(Path(args[4]).rglob("*.parquet"))  # the staging folder was really written
        raise KeyboardInterrupt

    monkeypatch.setattr(feed, "_write_packed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        feed.split(almost, spec, 0.25)
    assert [p.name for p in folder.parent.iterdir() if "staging" in p.name] == []


def test_a_split_deals_rows_by_content_so_a_sorted_source_reaches_every_file_and_any_layout_splits_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = np.random.default_rng(0).integers(0, 256, size=(1200, 4))
    labels = np.repeat(np.arange(4), 300)  # sorted by label, as many exported tables are
    table = pa.table({**{f"f{i}": features[:, i] for i in range(4)}, "label": labels})
    (tmp_path / "one").mkdir()
    (tmp_path / "three").mkdir()
    pq.write_table(table, tmp_path / "one" / "all.parquet")
    for i in range(3):
        pq.write_table(table.slice(i * 400, 400), tmp_path / "three" / f"part-{i}.parquet")
    held = []
    for layout in ("one", "three"):
        version = ingest(f"sorted_{layout}", f"{tmp_path / layout}/*.parquet", label="label").dataset
        spec = feed.spec_for(version, "label", 16, 1.0, 7)
        train_split, val_split = feed.split(version, spec, 0.25, row_groups=4)
        assert train_split.encoding == "uint8" and train_split.rows + val_split.rows == 1200 and 200 < val_split.rows < 400
        for file in Path(train_split.path.removeprefix("file://")).glob("*.parquet"):
            assert set(pq.read_table(file).column(feed.LABEL).to_pylist()) == {0, 1, 2, 3}, file  # every file holds every label
        held.append(sorted(map(tuple, np.concatenate([np.c_[x, y] for x, y in feed.batches(val_split, spec, shuffle=False)]).tolist())))
    assert held[0] == held[1]  # the same rows held out, however the source was laid out


def test_vectors_of_different_lengths_are_refused_in_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"v": [[1.0, 2.0], [1.0, 2.0, 3.0]], "label": [0, 1]}), tmp_path / "ragged.parquet")
    ingest("ragged", str(tmp_path / "ragged.parquet"), label="label")
    spec = feed.spec_for(dataset("ragged"), "label", 1, 1.0, 0)
    with pytest.raises(NbscaleError, match=r"^Rows of ragged@v1 hold feature vectors of different lengths \(the first has 2\)"):
        feed.split(dataset("ragged"), spec, 0.0)


def test_a_short_epoch_fails_the_run_loudly():
    train(DENSE, data="digits", epochs=1, batch_size=64, scale=16.0, experiment="short")  # writes the split
    train_split, _ = feed.split(dataset("digits"), feed.spec_for(dataset("digits"), "label", 64, 16.0, 42), 0.2)
    meta = Path(train_split.path.removeprefix("file://")).parent / "split.json"
    real = json.loads(meta.read_text())
    meta.write_text(json.dumps({**real, "train": real["train"] + 7}))  # the split now holds fewer rows than it claims
    try:
        with pytest.raises(feed.ShortEpochError, match=rf"^Epoch 1 read {real['train']} of the {real['train'] + 7} rows of digits@v1"):
            train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="short")
    finally:
        meta.write_text(json.dumps(real))
    assert len(runs("FAILED")) >= 1 and len(runs("RUNNING")) == 0


RACER = """
import sys, time, warnings
from pathlib import Path
import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from nbscale.train import log_input_once

uri, experiment, go = sys.argv[1:]
mlflow.set_tracking_uri(uri)
with mlflow.start_run(experiment_id=experiment):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = MetaDataset(resolve_dataset_source(Path(go).parent.as_uri()), name="digits@v1", digest="0123abcd")
    Path(go + "." + str(__import__("os").getpid())).touch()
    while not Path(go).exists():
        time.sleep(0.002)
    log_input_once(mlflow, dataset)
"""


def test_trainings_that_start_together_all_link_their_dataset(tmp_path):
    # The trials of a %%tune round log the same dataset at the same moment from separate processes; MLflow's
    # look-up-then-insert let one of them fail with a UNIQUE constraint (13 of 18 processes without the retry).
    import subprocess
    import sys
    import time

    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = mlflow.MlflowClient(uri).create_experiment("together")  # creates the tables once, before the race
    (tmp_path / "racer.py").write_text(RACER)
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), uri, experiment, str(go)], stderr=subprocess.PIPE, text=True)
              for _ in range(6)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < len(racers) and time.monotonic() < deadline and all(r.poll() is None for r in racers):
        time.sleep(0.1)
    go.touch()
    errors = [r.communicate(timeout=120)[1].strip().splitlines()[-1:] for r in racers]
    assert [r.returncode for r in racers] == [0] * 6, errors
    found = mlflow.MlflowClient(uri).search_runs([experiment])
    assert len(found) == 6 and {tuple(i.dataset.name for i in r.inputs.dataset_inputs) for r in found} == {("digits@v1",)}


@pytest.mark.parametrize("code, options, message", [
    (DENSE, {"data": "nothing"}, "No dataset named 'nothing'"),
    (DENSE, {"data": "digits@v7"}, "digits has no version v7"),
    (DENSE, {"data": "digits", "label": "target"}, "Label column 'target' is not in digits@v1"),
    ("model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(10)])", {"data": "digits"}, "The model is not compiled"),
    ("import keras as k3\nmodel = k3.Sequential([k3.Input(shape=(64,)), k3.layers.Dense(10)])\nmodel.compile(loss='mse')",
     {"data": "digits"}, "built with Keras 3"),
    (DENSE.replace("(64,)", "(28, 28, 1)"), {"data": "digits"}, "expects inputs of shape (28, 28, 1) but digits@v1 gives (64,)"),
    (DENSE, {"data": "digits", "batch_size": 5000}, "--batch-size 5000 is larger than the"),
    (DENSE, {"data": "digits", "precision": "half"}, "--precision 'half' is not one nbscale knows"),
    ("x = 1", {"data": "digits"}, "defines no `model` and no `build_model()`"),
    (DENSE, {"data": "digits", "scale": 0}, "--scale 0: features are divided by it"),
    (DENSE, {"data": "digits", "batch_size": 0}, "--batch-size 0 must each be 1 or more"),
    (DENSE, {"data": "digits", "batch_size": -1}, "--batch-size -1 must each be 1 or more"),
    (DENSE, {"data": "digits", "validation": 0.9999}, "--validation 0.9999 leaves 0 of the 1797 rows of digits@v1 for training"),
    (DENSE.replace("Dense(10,", "Dense(5,"), {"data": "digits"},
     "rows of digits@v1 have labels outside 0..4 (5, 6, 7, 8, 9), which sparse_categorical_crossentropy with 5 output unit(s) cannot "
     "learn: give the last layer 10 units"),
    (DENSE.replace("(64,)", "(2,)"), {"data": "unlabelled"}, "1 rows of unlabelled@v1 have no 'label' (null)"),
])
def test_bad_input_is_one_line_and_leaves_no_running_run(code, options, message):
    with pytest.raises(NbscaleError) as raised:
        train(code, **{"epochs": 1, **options})
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert len(runs("RUNNING")) == 0


def test_an_empty_cell_trains_a_default_model_for_columns_images_and_a_continuous_label():
    client = nbscale.session.mlflow().MlflowClient()
    tabular = train("", data="digits", epochs=6, batch_size=64, scale=16.0, experiment="defaults")
    assert "BatchNormalization" in tabular.default_code and 'Dense(10, activation="softmax")' in tabular.default_code
    assert tabular.metrics["val_accuracy"] > 0.8 and "nbscale&#x27;s default model" in tabular._repr_html_()
    assert client.get_run(tabular.run_id).data.params["model"] == "nbscale default"
    images = train("# nothing but a comment\n", data="digit_images", epochs=3, batch_size=32, scale=16.0, experiment="defaults")
    assert "Conv2D" in images.default_code and images.history["loss"][-1] < images.history["loss"][0]
    prices = train("", data="prices", epochs=30, batch_size=16, experiment="defaults")
    assert 'loss="mse"' in prices.default_code and "Dense(1)" in prices.default_code
    spread = float(np.std(dataset("prices").to_pandas()["price"]))
    assert prices.metrics["val_mae"] < spread / 3, (prices.metrics, spread)  # learned, not the mean
    assert client.get_run(prices.run_id).data.tags["nbscale.task"] == "regression"
    # A default model is code: the same code in the cell trains the same model.
    again = train(prices.default_code, data="prices", epochs=1, batch_size=16, experiment="defaults")
    assert again.default_code == "" and again.model.count_params() == prices.model.count_params()


def test_a_continuous_label_is_summarised_not_listed_class_by_class():
    manifest = dataset("prices").manifest
    summary = manifest["label_summary"]
    assert manifest["label_balance"] == {} and sum(summary["counts"]) == 400 and len(summary["counts"]) == 10
    assert summary["min"] < summary["quartiles"][1] < summary["max"]
    card = ingest("prices", str(Path(manifest["source"])), label="price", allow_schema_change=True)._repr_html_()
    assert "(continuous)" in card and card.count("<tr>") < 40  # ten bins, not a row per distinct value
    assert "label balance not counted (continuous: %drift --data prices@v" in card  # not "unchanged"
    assert dataset("digits").manifest["label_balance"]["3"] > 0 and "label_summary" not in dataset("digits").manifest


def test_the_first_training_on_a_split_says_it_writes_the_split_first():
    first, again = [], []
    train("", data="prices", epochs=1, validation=0.3, on_epoch=first.append)  # a validation fraction no other test uses
    train("", data="prices", epochs=1, validation=0.3, on_epoch=again.append)
    assert "writing the training split of prices@v" in first[0].html and first[0].epoch == 0
    assert not any("writing the training split" in card.html for card in again)  # written once per version


def test_a_cell_adds_callbacks_and_fit_arguments():
    cell = DENSE + ("callbacks = [keras.callbacks.EarlyStopping(monitor='loss', patience=0, min_delta=100)]\n"
                    "fit_kwargs = {'class_weight': {c: 0.0 for c in range(10)}}\n")
    result = train(cell, data="digits", epochs=10, batch_size=64, scale=16.0, experiment="callbacks")
    # No epoch improves the loss by 100: EarlyStopping ends the fit after the second; weights of 0 make every loss 0.
    assert len(result.history["loss"]) == 2 and result.history["loss"] == [0.0, 0.0]
    assert "stopped early after 2 of 10 epochs" in result._repr_html_()
    params = nbscale.session.mlflow().MlflowClient().get_run(result.run_id).data.params
    assert params["callbacks"] == "EarlyStopping" and params["class_weight"].startswith("{0: 0.0")


@pytest.mark.parametrize("addition, message", [
    ("fit_kwargs = {'epochs': 3}", "fit_kwargs cannot set epochs: nbscale feeds the data"),
    ("fit_kwargs = [1]", "`fit_kwargs` is a list: make it a dict"),
    ("callbacks = [print]", "`callbacks` holds builtin_function_or_method, not Keras callbacks"),
])
def test_bad_callbacks_and_fit_arguments_are_one_line(addition, message):
    with pytest.raises(NbscaleError) as raised:
        train(DENSE + addition, data="digits", epochs=1)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert len(runs("RUNNING")) == 0


def test_a_classifier_on_a_continuous_label_is_one_line():
    with pytest.raises(NbscaleError) as raised:
        train(DENSE.replace("(64,)", "(2,)"), data="prices", epochs=1)
    assert "'price' of prices@v" in str(raised.value) and "is continuous" in str(raised.value) and "loss='mse'" in str(raised.value)


def test_train_magic_binds_the_trained_model(ip):
    result = ip.run_cell_magic("train", "--data digits --epochs 2 --batch-size 64 --scale 16 --experiment magic -o fit", DENSE)
    assert ip.user_ns["fit"] is result and ip.user_ns["model"] is result.model
    assert result.model.optimizer.iterations.numpy() > 0  # trained, not just built


def test_resume_continues_after_the_last_completed_epoch():
    calls = {"n": 0}

    def interrupt_after_second_epoch(progress):
        if progress.epoch == 2:
            raise KeyboardInterrupt  # what the kernel raises when the user interrupts
    with pytest.raises(KeyboardInterrupt):
        train(DENSE, data="digits", epochs=4, batch_size=64, scale=16.0, experiment="resume", on_epoch=interrupt_after_second_epoch)
    assert list(runs("KILLED")["params.data"]) == ["digits@v1"]

    def count(progress):
        calls["n"] += 1
    killed = runs("KILLED")["run_id"][0]
    resumed = train(DENSE, data="digits", epochs=4, batch_size=64, scale=16.0, experiment="resume", resume=True, on_epoch=count)
    # Epoch 1 was backed up before the interrupt; epoch 2's end was interrupted: epochs 2-4 are run again,
    # in the same MLflow run, which now holds every epoch once.
    assert calls["n"] == 1 + 3 and resumed.run_id == killed and len(resumed.history["loss"]) == 4
    client = nbscale.session.mlflow().MlflowClient()
    assert client.get_run(killed).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(killed, "loss")] == [0, 1, 2, 3]
    fresh = train(DENSE, data="digits", epochs=4, batch_size=64, scale=16.0, experiment="resume")
    assert len(fresh.history["loss"]) == 4  # without --resume the backup is discarded


def _wait(job, state_not="running", seconds=180):
    job.wait(seconds)
    assert job.state != state_not, f"job {job.id} still {job.state} after {seconds} s"
    return job


def test_background_training_runs_while_the_notebook_goes_on(ip, capsys):
    from nbscale.jobs import background

    ip.run_cell_magic("train", "--data digits --epochs 3 --batch-size 64 --scale 16 --experiment bg --background -o bg", DENSE)
    job = background.jobs()[-1]
    assert f"Training in the background as job {job.id}" in capsys.readouterr().out
    assert ip.run_cell("1 + 1").result == 2  # the kernel is free while it trains
    _wait(job)
    assert job.state == "finished", job.error
    assert ip.user_ns["bg"] is job.result and job.result.metrics["val_accuracy"] > 0.5
    assert job.progress.startswith("epoch 3/3")
    assert "finished" in job.view.body.value and job.view.controls.layout.display == "none"  # the cell's card
    listed = ip.run_line_magic("jobs", "").data
    assert f"<td>{job.id}</td>" in listed and "finished" in listed


def test_cancel_stops_a_background_training_and_kills_its_run(ip):
    from nbscale.jobs import background

    ip.run_cell_magic("train", "--data digits --epochs 5000 --batch-size 16 --scale 16 --experiment cancelled --background", DENSE)
    job = background.jobs()[-1]
    for _ in range(600):  # until an epoch is done
        if job.progress.startswith("epoch ") or job.state != "running":
            break
        job.wait(0.2)
    ip.run_line_magic("jobs", f"cancel {job.id}")
    _wait(job, seconds=60)
    assert job.state == "cancelled" and "was cancelled after" in job.error
    status = nbscale.session.mlflow().search_runs(experiment_names=["cancelled"])["status"]
    assert list(status) == ["KILLED"]
    with pytest.raises(NbscaleError, match="There is no job 999"):
        ip.run_line_magic("jobs", "cancel 999")
