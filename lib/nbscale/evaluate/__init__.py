"""Evaluating a registered version on the held-out split of its training, beside the current champion on the
same rows: MLflow's `mlflow.models.evaluate` (static predictions: its metrics and confusion matrix) plus ROC and
precision-recall curves for a classifier or residuals for a regression, drawn with matplotlib. Each evaluation
is an MLflow run in experiment `nbscale-evaluation`, tagged with the version it measured and the rows it used."""
from __future__ import annotations

import concurrent.futures
import io
import warnings
from dataclasses import dataclass, field

from ..errors import NbscaleError

EXPERIMENT = "nbscale-evaluation"


@dataclass
class Evaluation:
    label: str  # "digits-dense v2"
    on: str  # "digits@v1 held-out (360 rows)"
    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)  # title -> PNG
    run_id: str | None = None
    caveat: str = ""  # why the comparison may flatter this version


@dataclass
class HeldOut:
    ref: str
    features: object  # (n, width) raw values, unscaled, as ingested
    labels: object
    spec: object

    @property
    def described(self) -> str:
        return f"{self.ref} held-out ({len(self.labels)} rows)"


def held_out(name: str, version) -> HeldOut:
    """The held-out split a version's training run set aside, as raw rows (read once more and counted)."""
    from .. import feed
    from ..ingest import dataset
    from ..serving.versions import training_params

    params = training_params(name, version)
    if "data" not in params:
        raise NbscaleError(f"{name} v{version} was not trained by nbscale: there is no held-out split to evaluate it on.")
    validation = float(params.get("validation", 0))
    if validation <= 0:
        raise NbscaleError(f"{name} v{version} was trained with --validation 0: no rows were held out to evaluate it on.")
    source = dataset(params["data"])
    spec = feed.spec_for(source, params.get("label"), 1, float(params.get("scale", 1.0)), int(params.get("seed", 42)))
    _, split = feed.split(source, spec, validation)
    features, labels = _rows(split.path, split.encoding, spec)
    if len(labels) != split.rows:
        raise feed.ShortEpochError(f"Reading the held-out split of {source.ref} gave {len(labels)} of its {split.rows} rows: "
                                   "nothing was evaluated. Run it again.")
    return HeldOut(source.ref, features, labels, spec)


def _rows(uri: str, encoding: str, spec):
    import math

    import numpy as np
    import pyarrow.dataset as pads

    from ..feed import FEATURES, LABEL

    table = pads.dataset(uri.removeprefix("file://"), format="parquet").to_table(columns=[FEATURES, LABEL])
    width = math.prod(spec.feature_shape)
    packed = b"".join(v.as_py() for v in table.column(FEATURES).combine_chunks())
    features = np.frombuffer(packed, dtype=encoding).reshape((-1, width)).astype(np.float32)
    return features, table.column(LABEL).to_numpy().astype(spec.label_dtype)


def evaluate(name: str, version, rows: HeldOut) -> Evaluation:
    """Version `name` vN's predictions for `rows`, measured, drawn and logged as one MLflow run."""
    import numpy as np
    import pandas as pd

    from ..serving.contract import contract_of
    from ..session import experiment_id
    from ..session import mlflow as configured
    from ..quiet import quiet_loggers
    from ..train.task import CLASSIFICATION, task_of_version

    mlflow = configured()
    label = f"{name} v{version}"
    task = task_of_version(name, version)
    contract = contract_of(name, version)
    with quiet_loggers("mlflow", "tensorflow", "absl", output=True):
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        if contract.features is not None:
            if not contract.vector and len(contract.features) != rows.features.shape[1]:
                raise NbscaleError(f"{label} takes {len(contract.features)} columns where {rows.ref} has {rows.features.shape[1]}: "
                                   "it cannot be evaluated on these rows.")
            answer = model.predict(contract.frame(rows.features))
            outputs = np.stack(answer["probabilities"]) if task == CLASSIFICATION else answer["prediction"].to_numpy()[:, None]
        else:  # an older model takes the network's input
            outputs = np.asarray(model.predict(rows.features.reshape((-1, *rows.spec.feature_shape)) / rows.spec.scale))
    truth = np.asarray(rows.labels)
    if task == CLASSIFICATION:
        predicted = (outputs[:, 0] >= 0.5).astype(int) if outputs.shape[1] == 1 else outputs.argmax(axis=1)
    else:
        predicted = outputs[:, 0].astype(np.float64)
    frame = pd.DataFrame({"label": truth, "prediction": predicted})
    figures = _figures(task, truth, predicted, outputs)
    client_tags = {"nbscale.evaluated": label, "nbscale.evaluated_on": rows.described}
    def log():  # in a thread of its own: MLflow's active run is per thread, and a caller's (a %%tune parent) must not receive this
        with warnings.catch_warnings(), quiet_loggers("mlflow", output=True), mlflow.start_run(experiment_id=experiment_id(EXPERIMENT), run_name=f"evaluate {label}",
                                                                     tags=client_tags) as run:
            # Integer class labels are what they are: MLflow's hint about missing values in integer columns says nothing here.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            result = mlflow.models.evaluate(data=frame, targets="label", predictions="prediction",
                                            model_type="classifier" if task == CLASSIFICATION else "regressor", evaluators=["default"])
            for title, png in figures.items():
                mlflow.log_image(_image(png), f"{title.replace(' ', '_')}.png")
        return result, run.info.run_id

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbscale-evaluate") as pool:
        result, run_id = pool.submit(log).result()
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    return Evaluation(label, rows.described, task, metrics, figures, run_id)


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))


def _figures(task: str, truth, predicted, outputs) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn import metrics

    drawn = {}

    def png(fig) -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=64, bbox_inches="tight")
        plt.close(fig)
        return buffer.getvalue()

    if task == "classification":
        fig, ax = plt.subplots(figsize=(3.2, 3.2))
        metrics.ConfusionMatrixDisplay.from_predictions(truth, predicted, ax=ax, colorbar=False)
        ax.set_title("confusion matrix", fontsize=9)
        drawn["confusion matrix"] = png(fig)
        classes = np.unique(truth)
        if len(classes) >= 2:
            scores = outputs[:, 0] if outputs.shape[1] == 1 else None
            fig_roc, ax_roc = plt.subplots(figsize=(3.2, 3.2))
            fig_pr, ax_pr = plt.subplots(figsize=(3.2, 3.2))
            for cls in (classes[-1:] if scores is not None else classes):
                positive = truth == cls
                score = scores if scores is not None else outputs[:, int(cls)] if int(cls) < outputs.shape[1] else None
                if score is None or positive.all() or not positive.any():
                    continue
                metrics.RocCurveDisplay.from_predictions(positive, score, ax=ax_roc, name=str(cls), plot_chance_level=False)
                metrics.PrecisionRecallDisplay.from_predictions(positive, score, ax=ax_pr, name=str(cls))
            for ax_, title, (x, y) in ((ax_roc, "ROC (one class vs rest)", ("false positive rate", "true positive rate")),
                                       (ax_pr, "precision-recall", ("recall", "precision"))):
                ax_.set_title(title, fontsize=9)
                ax_.set_xlabel(x, fontsize=8)
                ax_.set_ylabel(y, fontsize=8)
                if ax_.get_legend():
                    ax_.legend(fontsize=5, ncol=2)
            drawn["roc"], drawn["precision recall"] = png(fig_roc), png(fig_pr)
    else:
        residuals = np.asarray(truth, dtype=np.float64) - predicted
        fig, (left, right) = plt.subplots(1, 2, figsize=(6, 2.8))
        left.scatter(predicted, residuals, s=4)
        left.axhline(0, color="grey", linewidth=1)
        left.set_xlabel("predicted")
        left.set_ylabel("label - predicted")
        right.hist(residuals, bins=30)
        right.set_xlabel("residual")
        fig.suptitle("residuals", fontsize=9)
        drawn["residuals"] = png(fig)
    return drawn


def compare(name: str, version, champion: int | None) -> tuple[Evaluation, Evaluation | None]:
    """The candidate, and the champion (when another version holds the alias), on the candidate's held-out rows."""
    rows = held_out(name, version)
    candidate = evaluate(name, version, rows)
    from ..session import tracking_client

    tracking_client().set_model_version_tag(name, str(version), "nbscale.evaluation_run", candidate.run_id)
    current = evaluate(name, champion, rows) if champion is not None and int(champion) != int(version) else None
    if current is not None and _split_of(name, champion) != _split_of(name, version):
        current.caveat = (f"{current.label} was trained on another split (dataset, seed or --validation differ): some of these rows "
                          "may be in its training data, which flatters it")
    return candidate, current


def _split_of(name: str, version) -> tuple:
    """What decides a version's held-out rows: its training's dataset version, label, seed and validation fraction."""
    from ..serving.versions import training_params

    params = training_params(name, version)
    return tuple(params.get(k) for k in ("data", "label", "seed", "validation"))
