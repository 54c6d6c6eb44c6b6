"""`%nbscale connect`: move from the laptop to a cluster (or back) with one setting."""
from __future__ import annotations

from .config import Nbscale, default_tracking_uri, settings
from .datadir import local_dir
from .config import over_connect
from .errors import NbscaleError
from .session import check_master, check_tracking_uri, driver_host, stop_spark


def connect(master: str | None = None, tracking_uri: str | None = None, data_dir: str | None = None, host: str | None = None):
    """Check the new settings, then keep them; on any error the old settings stay untouched.

    A running Spark session started with the old settings is stopped. On a cluster master the new
    session starts here and is checked (executors registered, the same stack on every host, the data
    dir seen at the same path): the status card lists the hosts; a problem is one line and the old
    settings stay. On a local master the next Spark use starts it.
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
    if over_connect(candidate.master) and "tracking_uri" not in given and candidate.tracking_uri == default_tracking_uri(candidate.data_dir):
        # Over Spark Connect the data dir is on the cluster, out of this machine's reach: the default store
        # becomes a SQLite file of this machine (runs on the cluster need a server both reach: --tracking-uri).
        candidate.tracking_uri = default_tracking_uri(str(local_dir(candidate.master)))
    if "master" in given:
        check_master(candidate.master)
    if "tracking_uri" in given or "data_dir" in given:
        check_tracking_uri(candidate.tracking_uri)
    # An explicit --host moves the driver even when it equals the default (it overrides the routed address).
    spark_moves = (any(name in given and getattr(candidate, name) != getattr(cfg, name) for name in ("master", "data_dir"))
                   or ("host" in given and given["host"] != driver_host()))
    before, chosen_before = cfg.as_dict(), cfg.host_was_chosen()
    _apply(cfg, candidate.as_dict())
    if "host" in given:
        cfg.host_chosen = True
    if spark_moves:
        stop_spark()
    from .clustercheck import is_cluster

    if spark_moves and (is_cluster(cfg.master) or over_connect(cfg.master)):
        # A cluster is checked now, in this cell, within bounded waits: executors come, every host runs
        # this stack and sees the data dir. On failure the old settings come back, as for any bad value.
        from .session import spark

        try:
            spark()
        except BaseException:
            _apply(cfg, before)
            cfg.host_chosen = chosen_before
            raise
    from .statuscard import status

    return status()


def _apply(cfg, values: dict) -> None:
    for name, value in values.items():
        if value != getattr(cfg, name):
            setattr(cfg, name, value)
