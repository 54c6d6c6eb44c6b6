"""Workflow memoization and fan-out, measured in one run:

  memo-hit re-run wall ÷ first run wall (ingest -> 3 trainings -> select, all --memo; goal <= 0.05)
  fan-out of the 3 trainings at parallelism 3 ÷ the same at parallelism 1 (no memo)
  %%tune trials/s with 2 trials at a time (Spark tasks) ÷ one at a time (4 trials, 2 epochs)

    .venv/bin/python benchmarks/workflow.py
"""
import os
import time

from measure import scratch_data_dir  # benchmarks/ is on sys.path when a script runs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRAIN = """
from nbscale.train import train
{name} = train('''
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense({units}, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
''', data="digits", epochs=3, batch_size=64, scale=16.0, experiment="bench-workflow").metrics["val_accuracy"]
"""


SEARCH = """
def build_model(hp):
    units = hp.suggest_int("units", 8, 64, log=True)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


def define(memo: bool) -> None:
    from nbscale import workflow

    workflow.reset()
    workflow.define("ingest", "from nbscale.ingest import ingest\ningest('digits', 'nbscale:digits', label='label')", memo=memo)
    for name, units in (("small", 8), ("wide", 64), ("mid", 32)):
        workflow.define(f"train_{name}", TRAIN.format(name=name, units=units), after=["ingest"], memo=memo)
    workflow.define("select", "best = max(small, wide, mid)", after=["train_small", "train_wide", "train_mid"], memo=memo)


def timed(parallel: int) -> float:
    from nbscale import workflow

    started = time.perf_counter()
    view = workflow.run({}, parallel=parallel)
    assert not view.failed, repr(view)
    return time.perf_counter() - started


def main() -> None:
    import nbscale
    from nbscale import workflow

    define(memo=True)
    first = timed(parallel=3)
    again = timed(parallel=3)
    states = sorted({s.state for s in workflow.steps()})
    define(memo=False)
    timed(parallel=3)  # ingest publishes a version; the split is written: both out of the comparison below
    fan_out = timed(parallel=3)
    one_at_a_time = timed(parallel=1)
    from nbscale.workflow.tune import tune

    search = SEARCH
    rates = {}
    for parallel in (1, 2):
        result = tune(search, data="digits", trials=4, parallel=parallel, epochs=2, scale=16.0, experiment="bench-tune")
        rates[parallel] = len(result.trials) / result.seconds
    nbscale.session.stop_spark()
    print(f"cores: {os.cpu_count()}; steps: ingest -> 3 trainings (3 epochs, digits) -> select")
    print(f"first run {first:6.1f} s, memo-hit re-run {again * 1000:6.1f} ms (states: {', '.join(states)})")
    print(f"ratio memo re-run / first run          {again / first:6.3f}   (goal <= 0.05)")
    print(f"fan-out, parallelism 3 {fan_out:6.1f} s, parallelism 1 {one_at_a_time:6.1f} s")
    print(f"ratio parallel / sequential wall       {fan_out / one_at_a_time:6.2f}")
    print(f"%%tune: {rates[2]:.3f} trials/s at 2 at a time, {rates[1]:.3f} one at a time")
    print(f"ratio tune trials/s parallel 2 / 1     {rates[2] / rates[1]:6.2f}")


if __name__ == "__main__":
    with scratch_data_dir("workflow"):
        main()
