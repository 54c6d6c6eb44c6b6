"""`%nbscale connect`: move from the laptop to a cluster (or back) with one setting."""
from __future__ import annotations

from .config import Nbscale, default_tracking_uri, settings
from .errors import NbscaleError
from .session import check_master, check_tracking_uri, stop_spark


def connect(master: str | None = None, tracking_uri: str | None = None, data_dir: str | None = None, host: str | None = None):
    """Check the new settings, then keep them; on any error the old settings stay untouched.

    A running Spark session started with the old settings is stopped; the next Spark use
    starts one against the new master.
    """
    given = {k: v for k, v in dict(master=master, tracking_uri=tracking_uri, data_dir=data_dir, host=host).items() if v is not None}
    if not given:
        raise NbscaleError("Nothing to connect to: give --master URL and/or --tracking-uri URI (see %nbscale?).")
    cfg = settings()
    # Validate on a scratch copy so a bad value never reaches the live settings.
    current = cfg.as_dict()
    if "data_dir" in given and "tracking_uri" not in given and cfg.tracking_uri == default_tracking_uri(cfg.data_dir):
        del current["tracking_uri"]  # the default store follows the data dir
    candidate = Nbscale(**{**current, **given})
    if "master" in given:
        check_master(candidate.master)
    if "tracking_uri" in given or "data_dir" in given:
        check_tracking_uri(candidate.tracking_uri)
    spark_moves = any(name in given and getattr(candidate, name) != getattr(cfg, name) for name in ("master", "host", "data_dir"))
    for name, value in candidate.as_dict().items():
        if value != getattr(cfg, name):
            setattr(cfg, name, value)
    if spark_moves:
        stop_spark()
    from .statuscard import status

    return status()
