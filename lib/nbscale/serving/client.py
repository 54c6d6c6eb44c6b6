"""Calling a served model: rows in, predictions out, with the latency and the version that answered."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import NbscaleError


@dataclass
class Predictions:
    values: object  # numpy array
    served_by: str
    latency_ms: float
    task: str | None = None  # classification | regression, as recorded with the model; None: outputs shown as they are

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        import numpy as np

        values = np.asarray(self.values)
        wide = values.ndim == 2 and values.shape[1] > 1
        if self.task == "classification":
            shown = values.argmax(axis=1).tolist() if wide else (values.reshape(len(values), -1)[:, 0] >= 0.5).astype(int).tolist()
            kind = "classes (argmax)" if wide else "classes (output >= 0.5)"
        elif self.task == "regression":
            shown = [float(f"{v:.6g}") for v in values.reshape(len(values), -1)[:, 0]]
            kind = "values (regression)"
        else:
            shown, kind = values.tolist(), "outputs (the model does not say whether they are classes or values)"
        return f"{len(values)} {kind} from {self.served_by} in {self.latency_ms:.1f} ms: {shown}"


def post(url: str, body: dict, timeout: float = 60) -> Predictions:
    """POST `body` (a JSON request, see contract.InputContract.body) to a service; the outputs as an array:
    a classifier's probabilities (one row per input), a regression's values (one column), or an older
    model's raw outputs."""
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(), headers={"content-type": "application/json"},
                                     method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            payload, served_by = json.load(answer), answer.headers.get("x-nbscale-served-by", url)
    except urllib.error.HTTPError as error:
        raise NbscaleError(f"The model server refused the request ({error.code}): {_message(error.read())}") from None
    except urllib.error.URLError as error:
        raise NbscaleError(f"The model server at {url} did not answer ({error.reason}): is it still served? See %serve.") from None
    latency = (time.perf_counter() - started) * 1000
    return Predictions(outputs(payload["predictions"]), served_by, latency)


def outputs(predictions: list):
    """The answer's predictions as an array: records ({"prediction", "probabilities"}) of a model that owns its
    input contract, or the bare outputs of an older one."""
    import numpy as np

    if predictions and isinstance(predictions[0], dict):
        if "probabilities" in predictions[0]:
            return np.asarray([p["probabilities"] for p in predictions], dtype=np.float32)
        return np.asarray([[p["prediction"]] for p in predictions], dtype=np.float64)
    return np.asarray(predictions)


def _message(body: bytes) -> str:
    try:
        message = json.loads(body).get("message", "")
    except ValueError:
        message = body.decode(errors="replace")
    message = str(message)
    if "Error: " in message:  # MLflow repeats the whole input, then says what is wrong after the last "Error: "
        message = message.rsplit("Error: ", 1)[1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (lines[0] if lines else "no reason given")[:300]
