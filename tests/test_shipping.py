"""What a distributed %%train cell takes from the notebook to its workers."""
import threading

import cloudpickle
import pytest

from nbscale.distributed.shipping import capture, names_read
from nbscale.errors import NbscaleError

CELL = """
import numpy as np
def build_model():
    m = keras.Sequential([keras.layers.Dense(hidden, activation=activation)])
    return m
model = keras.Sequential()
model.compile(optimizer=make_optimizer(rate))
"""


def test_only_the_names_the_cell_reads_and_does_not_define_travel():
    assert names_read(CELL) == {"keras", "hidden", "activation", "make_optimizer", "rate"}
    namespace = {"hidden": 32, "activation": "relu", "rate": 0.1, "make_optimizer": lambda r: r, "np": threading,
                 "model": object(), "keras": "the notebook's keras", "unrelated": [1, 2]}
    shipped = cloudpickle.loads(capture(CELL, namespace))
    # The notebook's trained `model` stays home: the cell builds its own (unpickling a TF model on a worker
    # would start TensorFlow before its collectives are configured).
    assert sorted(shipped) == ["activation", "hidden", "make_optimizer", "rate"]
    assert shipped["make_optimizer"](3) == 3


def test_a_variable_that_cannot_travel_is_named_in_one_line():
    with pytest.raises(NbscaleError, match=r"reads `lock` \(lock\).*create it inside the %%train cell"):
        capture("model = keras.Sequential(); print(lock)", {"lock": threading.Lock()})


def test_a_syntax_error_names_the_line():
    with pytest.raises(NbscaleError, match="syntax error on line 2"):
        names_read("x = 1\nmodel = (")
