"""A registered version's input contract, read from its MLmodel: the raw feature columns it takes by
name (and whether one column holds a whole vector, e.g. an image), or, for a model logged before
models owned their preprocessing, pre-scaled float rows. Clients build requests from it, so a
numpy array (columns in the dataset's order), a pandas frame (columns by name, any order) and one
row as a 1-D list all reach the model the same way."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import NbscaleError


@dataclass(frozen=True)
class InputContract:
    features: tuple[str, ...] | None  # None: an older model taking pre-scaled float rows
    vector: bool = False  # one column holding each row's whole vector

    def frame(self, data):
        """`data` (pandas frame, numpy array, list of rows, one row as a 1-D list) -> a frame of named raw columns."""
        import numpy as np
        import pandas as pd

        names = list(self.features)
        if isinstance(data, pd.DataFrame):
            missing = [c for c in names if c not in data.columns]
            if missing:
                raise NbscaleError(f"The rows have no column{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])}"
                                   f"{' ...' if len(missing) > 5 else ''}: this model takes {_listed(names)} (by name, in any order).")
            return data
        array = np.asarray(data, dtype=np.float64) if not isinstance(data, np.ndarray) or data.dtype != object else data
        if array.ndim == 0:
            raise NbscaleError("%predict needs rows (an array, a frame or a list of examples), not a single number.")
        if self.vector:
            rows = array.reshape((1, -1)) if array.ndim == 1 else array.reshape((len(array), -1))
            return pd.DataFrame({names[0]: [row.tolist() for row in rows]})
        rows = array.reshape((1, -1)) if array.ndim == 1 else array
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise NbscaleError(f"The rows have {rows.shape[-1]} values where this model takes {len(names)} columns ({_listed(names)}): "
                               "send them in the dataset's column order, or as a pandas frame with those names.")
        return pd.DataFrame(rows, columns=names)

    def body(self, data) -> dict:
        """The JSON request for `data`: dataframe_split with the column names, or (older models) bare float rows."""
        import numpy as np

        if self.features is None:
            if hasattr(data, "to_numpy"):
                data = data.to_numpy()
            array = np.asarray(data, dtype=np.float32)
            if array.ndim == 0:
                raise NbscaleError("%predict needs rows (an array or list of examples), not a single number.")
            return {"inputs": array.tolist()}
        frame = self.frame(data)
        rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        return {"dataframe_split": {"columns": [str(c) for c in frame.columns], "data": rows}}


def _plain(value):
    """A JSON value: numpy scalars and arrays to Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _listed(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ... {names[-1]} ({len(names)} columns)"


_known: dict[str, InputContract] = {}
_lock = threading.Lock()


def contract_of(name: str, version) -> InputContract:
    """The contract of registered version `name` vN (its MLmodel read once: a logged model never changes)."""
    import mlflow

    from ..session import tracking_client

    source = tracking_client().get_model_version(name, str(version)).source
    with _lock:
        if source in _known:
            return _known[source]
    info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    config = (info.flavors.get("python_function") or {}).get("config") or {}
    found = InputContract(tuple(config["features"]), bool(config.get("vector"))) if config.get("features") else InputContract(None)
    with _lock:
        _known[source] = found
    return found
