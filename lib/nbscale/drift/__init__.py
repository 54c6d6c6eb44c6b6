"""%drift: how far what a model serves has moved from what it was trained on, per feature and for its
predictions, ranked, drawn and logged to MLflow as a run linked to the model version. Also between two
dataset versions (a %score output against an older one, a new ingest against the last).

The served side is what the service's front recorded (serving/traffic.py); the reference is a sample of the
training dataset version (or --against). Features are the model's input contract: its raw columns by name
(a vector column such as an image is compared position by position)."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..contracts import ModelVersion
from ..errors import NbscaleError
from .stats import Shift, shift

REFERENCE_ROWS = 20_000  # rows of the reference dataset compared (a seeded sample when it holds more)
MIN_ROWS = 20  # fewer current rows than this say nothing reliable about a distribution
EXPERIMENT = "nbscale-drift"


@dataclass
class DriftReport:
    subject: str  # "digits-dense v1", or "digits@v2"
    against: str  # "digits@v1"
    window: str | None
    rows: int  # current rows compared
    reference_rows: int
    features: list[Shift]  # ranked: most drifted first
    prediction: Shift | None
    psi_threshold: float
    alpha: float
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def _repr_html_(self) -> str:
        from .card import render

        return render(self)

    def __repr__(self) -> str:
        top = ", ".join(f"{f.feature} (PSI {f.psi:.2f})" for f in self.features[:3])
        return (f"<Drift of {self.subject} against {self.against}: {len(self.drifted)} of {len(self.features)} features drifted; "
                f"{self.rows} rows; most moved: {top}>")


def parse_window(window: str) -> float:
    """'30m', '1h', '2d', '90s' -> seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", window or "")
    if not found or float(found[1]) <= 0:
        raise NbscaleError(f"--window {window!r}: give a positive number with s, m, h or d (e.g. 30m, 1h, 2d).")
    return float(found[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[found[2]]


def drift(model: str | None = None, *, data: str | None = None, against: str | None = None, window: str = "1h",
          psi_threshold: float = 0.2, alpha: float = 0.01, log: bool = True) -> DriftReport:
    """Drift of model `model`'s served traffic ("name@alias", "name/N") in the last `window` against its training
    dataset version (or `against`); or, with `data` and no model, of dataset version `data` against `against`.
    A feature drifted when its PSI is at least `psi_threshold` and the test's p-value is below `alpha`."""
    if not (0 < alpha < 1) or psi_threshold <= 0:
        raise NbscaleError(f"--psi {psi_threshold:g} must be above 0 and --alpha {alpha:g} between 0 and 1 (e.g. --psi 0.2 --alpha 0.01).")
    if model is None:
        if not data or not against:
            raise NbscaleError("%drift needs a served model (%drift MODEL@ALIAS) or two dataset versions (%drift --data NEW --against OLD).")
        report = _between_datasets(data, against, psi_threshold, alpha)
    else:
        report = _of_traffic(model, against, window, psi_threshold, alpha)
    if log:
        report.run_id = _log(report, model)
    return report


def _of_traffic(model: str, against: str | None, window: str, psi_threshold: float, alpha: float) -> DriftReport:
    import numpy as np

    from ..serving.contract import contract_of
    from ..serving.versions import resolve, trained_feed
    from ..train.task import CLASSIFICATION, task_of_version

    seconds = parse_window(window)
    name, version = resolve(model)
    label = f"{name} v{version}"
    spec, reference = trained_feed(name, version, against, otherwise="it has no training dataset to compare with: pass --against DATA@vK")
    contract = contract_of(name, version)
    records = served(label)
    if not records:
        raise NbscaleError(f"{label} has no recorded traffic: serve it (%serve {name}@ALIAS) and send it requests, "
                           "or compare two datasets with %drift --data NEW --against OLD.")
    since = time.time() - seconds
    recent = [r for r in records if r["t"] >= since]
    if not recent:
        newest = max(r["t"] for r in records)
        raise NbscaleError(f"{label} served {len(records)} recorded requests, none in the last {window} (the newest "
                           f"{_ago(time.time() - newest)} ago): widen --window.")
    features = list(contract.features or spec.features)
    frames, predictions = [], []
    for record in recent:
        frame = _request_rows(record["request"], features)
        if frame is None:
            continue
        frames.append(frame)
        predictions.extend(predicted(record))
    import pandas as pd

    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=features)
    if len(rows) < MIN_ROWS:
        raise NbscaleError(f"{label} served {len(rows)} rows in the last {window}; drift needs at least {MIN_ROWS}: "
                           "send more requests or widen --window.")
    current = _matrix(rows, features)
    if contract.features is None and spec.scale != 1:  # an older model was sent pre-scaled rows: back to the dataset's units
        current = (current[0], [column * spec.scale for column in current[1]])
    ref_frame = _reference(reference, features + [spec.label])
    shifts = _ranked(_matrix(ref_frame, features), current, psi_threshold, alpha)
    task = task_of_version(name, version)
    prediction = None
    if predictions:
        values = np.asarray([p for p in predictions if p is not None], dtype=np.float64)
        if task == CLASSIFICATION:
            values = np.rint(values)
        prediction = _flag(shift("prediction (against training labels)", ref_frame[spec.label].to_numpy(np.float64), values),
                           psi_threshold, alpha)
    return DriftReport(label, reference.ref, window, len(rows), len(ref_frame), shifts, prediction, psi_threshold, alpha)


def _between_datasets(data: str, against: str, psi_threshold: float, alpha: float) -> DriftReport:
    from ..ingest import dataset

    new, old = dataset(data), dataset(against)
    numeric = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")
    old_types = dict(map(tuple, old.manifest["schema"]))
    shared = [c for c, t in map(tuple, new.manifest["schema"])
              if old_types.get(c) == t and (t in numeric or t.startswith("array<"))]
    if not shared:
        raise NbscaleError(f"{new.ref} and {old.ref} share no numeric columns to compare.")
    current, reference = _reference(new, shared), _reference(old, shared)
    if len(current) < MIN_ROWS:
        raise NbscaleError(f"{new.ref} has {len(current)} rows; drift needs at least {MIN_ROWS}.")
    prediction = None
    features = [c for c in shared if c != "prediction"]
    shifts = _ranked(_matrix(reference, features), _matrix(current, features), psi_threshold, alpha)
    if "prediction" in shared:
        prediction = _flag(shift("prediction", reference["prediction"], current["prediction"]), psi_threshold, alpha)
    return DriftReport(new.ref, old.ref, None, len(current), len(reference), shifts, prediction, psi_threshold, alpha)


def _records(folder: Path):
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        with open(path, "rb") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:  # a line cut by a crash or by the size bound
                    continue


def served(label: str, since: float = 0.0) -> list[dict]:
    """What the fronts recorded for model version `label` ("digits v3") from time `since` on."""
    from ..serving import traffic_root
    from ..serving.traffic import version_folder

    return [r for r in _records(version_folder(traffic_root(), label)) if r["t"] >= since]


def request_frame(request: dict):
    """A recorded request's named rows as a frame (every column it sent), or None for bare unnamed rows."""
    import pandas as pd

    if "dataframe_split" in request:
        return pd.DataFrame(request["dataframe_split"]["data"], columns=request["dataframe_split"]["columns"])
    if "dataframe_records" in request:
        return pd.DataFrame(request["dataframe_records"])
    if isinstance(request.get("inputs", request.get("instances")), dict):
        return pd.DataFrame(request.get("inputs", request.get("instances")))
    return None


def predicted(record: dict) -> list:
    """The class or value of each answer in a recorded response."""
    return predicted_answers(record.get("response", {}).get("predictions", []))


def _request_rows(request: dict, features: list[str]):
    """A recorded request's rows as a frame of the model's feature columns (None for a form that names none)."""
    import numpy as np
    import pandas as pd

    frame = request_frame(request)
    if frame is None:  # bare rows: the model's columns in order (what an older, positional model took)
        rows = np.asarray(request.get("inputs", request.get("instances", [])), dtype=np.float64)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        rows = rows.reshape(len(rows), -1)
        if len(features) == 1:
            return pd.DataFrame({features[0]: list(rows)})
        if rows.shape[1] != len(features):
            return None
        frame = pd.DataFrame(rows, columns=features)
    return frame[features] if all(c in frame.columns for c in features) else None


def predicted_answers(predictions: list) -> list:
    """The class or value of each answer: records of a contract model, or an older model's raw outputs."""
    import numpy as np

    out = []
    for p in predictions:
        if isinstance(p, dict):
            out.append(p.get("prediction"))
        else:
            values = np.asarray(p, dtype=np.float64).ravel()
            out.append(float(values[0]) if len(values) == 1 else float(values.argmax()))
    return out


def _matrix(frame, features: list[str]):
    """(names, values): scalar columns as they are; a vector column (an image) one position per feature."""
    import numpy as np

    names, columns = [], []
    for feature in features:
        column = frame[feature]
        if len(column) and isinstance(column.iloc[0], (list, tuple, np.ndarray)):
            block = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in column])
            names.extend(f"{feature}[{i}]" for i in range(block.shape[1]))
            columns.extend(block.T)
        else:
            names.append(feature)
            columns.append(column.to_numpy(dtype=np.float64))
    return names, columns


def _ranked(reference, current, psi_threshold: float, alpha: float) -> list[Shift]:
    ref_names, ref_columns = reference
    cur_names, cur_columns = current
    if ref_names != cur_names:
        raise NbscaleError(f"The served rows have {len(cur_names)} features where the reference has {len(ref_names)}: "
                           "compare against the dataset version the model was trained on.")
    shifts = [_flag(shift(n, r, c), psi_threshold, alpha) for n, r, c in zip(ref_names, ref_columns, cur_columns)]
    return sorted(shifts, key=lambda s: (-s.psi, s.p_value))


def _flag(found: Shift, psi_threshold: float, alpha: float) -> Shift:
    found.drifted = found.psi >= psi_threshold and found.p_value < alpha
    return found


def _reference(version, columns: list[str]):
    from ..datahost import on_data_host

    return on_data_host(_sample, str(version.path), columns, REFERENCE_ROWS)


def _sample(path: str, columns: list[str], rows: int):
    """Up to `rows` rows of a dataset version's `columns`, a seeded sample when it holds more (runs where the data dir is)."""
    import numpy as np
    import pyarrow.dataset as pads

    table = pads.dataset(path, format="parquet").to_table(columns=columns)
    if table.num_rows > rows:
        table = table.take(np.sort(np.random.default_rng(0).choice(table.num_rows, rows, replace=False)))
    return table.to_pandas()


def _ago(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _log(report: DriftReport, model: str | None) -> str:
    """One MLflow run per measurement, linked to the model version (a tag both ways); never left RUNNING."""
    import mlflow.entities

    from ..session import experiment_id, tracking_client

    client = tracking_client()
    tags = {"nbscale.drift_of": report.subject, "nbscale.drift_against": report.against,
            "mlflow.note.content": f"Drift of {report.subject} against {report.against}: {len(report.drifted)} features drifted."}
    run = client.create_run(experiment_id(EXPERIMENT), run_name=f"drift {report.subject}", tags=tags)  # artifacts under the data dir
    status = "FAILED"
    try:
        Param, Metric = mlflow.entities.Param, mlflow.entities.Metric
        now = int(time.time() * 1000)
        params = [Param("against", report.against), Param("window", report.window or "—"), Param("rows", str(report.rows)),
                  Param("reference_rows", str(report.reference_rows)), Param("psi_threshold", str(report.psi_threshold)),
                  Param("alpha", str(report.alpha))]
        metrics = [Metric("drifted_features", len(report.drifted), now, 0), Metric("max_psi", max((f.psi for f in report.features), default=0), now, 0)]
        metrics += [Metric(f"psi.{_key(f.feature)}", f.psi, now, 0) for f in report.features[:200]]
        if report.prediction:
            metrics.append(Metric("psi.prediction", report.prediction.psi, now, 0))
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.log_text(run.info.run_id, json.dumps({"features": [vars(f) for f in report.features],
                                                    "prediction": vars(report.prediction) if report.prediction else None}), "drift.json")
        if model is not None:
            subject = ModelVersion.from_label(report.subject)
            client.set_model_version_tag(subject.name, str(subject.version), "nbscale.drift_run", run.info.run_id)
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _key(feature: str) -> str:
    return re.sub(r"[^\w.\- /]", "_", feature)
