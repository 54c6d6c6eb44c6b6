"""Registered model versions: what "name@alias" means now, and how a version's training run read its
features (label, scale, dataset) so that serving, scoring and streaming feed it the same way."""
from __future__ import annotations

from ..errors import NbscaleError
from ..tags import run_of


def resolve(ref: str) -> tuple[str, int]:
    """"name@alias", "name/3" or "name" (its latest version) -> (name, version), checked in the registry."""
    from ..session import tracking_client as _client

    client = _client()
    name, _, alias = ref.partition("@")
    name, _, number = name.partition("/")
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - the store's own error type
        raise NbscaleError(f"There is no registered model {name!r}: see %models, or %register it first.") from None
    if alias:
        aliases = model.aliases or {}
        if alias not in aliases:
            raise NbscaleError(f"{name} has no alias @{alias} (aliases: {', '.join('@' + a for a in sorted(aliases)) or 'none'}): "
                               f"%register --name {name} --run RUN_ID --alias {alias}, or pick one from %models.")
        return name, int(aliases[alias])
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if number:
        if not number.isdigit() or int(number) not in versions:
            raise NbscaleError(f"{name} has no version {number} (versions: {', '.join(map(str, versions)) or 'none'}).")
        return name, int(number)
    return name, versions[-1]


def training_params(name: str, version) -> dict:
    """The parameters of the nbscale run that trained `name` vN ({} for a version nbscale did not train)."""
    from ..session import tracking_client

    client = tracking_client()
    run_id = run_of(client.get_model_version(name, str(version)))
    return dict(client.get_run(run_id).data.params) if run_id else {}


def trained_feed(name: str, version, data: str | None = None, otherwise: str = ""):
    """(FeedSpec, dataset) for model version `name` vN: how its training run read features (label, scale),
    applied to dataset version `data` (default: the one it was trained on)."""
    from .. import feed
    from ..ingest import dataset

    params = training_params(name, version)
    if data is None and "data" not in params:
        raise NbscaleError(f"{name} v{version} was not trained by nbscale: {otherwise}.")
    source = dataset(data or params["data"])
    return feed.spec_for(source, params.get("label", "label"), 1, float(params.get("scale", 1.0)), 0), source


def sample_rows(service, n: int):
    """`n` rows of the served version's training data as its clients send them: the raw feature columns by
    name (a pandas frame), or, for an older model, scaled float rows (what the card's Send posts)."""
    import numpy as np
    import pyarrow.dataset as pads

    from .contract import contract_of

    name, version = service.sides[0].label.rsplit(" v", 1)
    spec, trained_on = trained_feed(name, version, otherwise="send your own rows with %predict")
    table = pads.dataset(trained_on.path, format="parquet").head(n, columns=list(spec.features))
    if contract_of(name, version).features is not None:
        return table.to_pandas()
    if len(spec.features) == 1 and spec.feature_shape != (1,):
        x = np.stack(table.column(0).to_numpy(zero_copy_only=False)).astype(np.float32)
    else:
        x = np.stack([table.column(c).to_numpy().astype(np.float32) for c in spec.features], axis=1)
    return x.reshape((-1, *spec.feature_shape)) / np.float32(spec.scale)
