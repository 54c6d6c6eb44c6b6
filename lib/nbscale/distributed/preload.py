"""A PySpark daemon whose Python workers start with TensorFlow already imported: the Binder profile's
`spark.python.daemon.module` on a cluster (nbscale.limits.spark_conf).

PySpark forks each Python worker from this daemon, and a barrier task then forks its distributed worker
(nbscale.distributed.launcher) instead of starting a fresh interpreter. TensorFlow's import-time memory
(~0.2 GiB of Python objects and registrations per process) is then shared copy-on-write by every worker on
the host instead of being built again by each: three TensorFlow processes of a parameter-server run took
1146 MB PSS started fresh and 831 MB forked, the daemon included. The daemon's stdout carries its port to
the JVM, so TensorFlow's import must print nothing there: its start-up lines go to stderr."""
from __future__ import annotations

import os


# PySpark starts one daemon per kind of Python task: DataFrame UDFs (the barrier stage's mapInPandas) have this
# variable set, RDD tasks (the cluster check) do not. Only the first kind runs distributed workers; an RDD
# daemon holding TensorFlow would cost ~0.35 GiB for nothing. Should a Spark release drop the variable, no
# daemon preloads and each worker starts fresh again: more memory, the same training.
FOR_DATAFRAME_TASKS = "SPARK_SIMPLIFIED_TRACEBACK"
# Set by a preloading daemon, so inherited by exactly the Python workers it forks: the barrier task forks its
# worker only then. TensorFlow found imported any other way (a reused worker that ran a model) may have its
# runtime threads started, and a fork of that could hang.
PRELOADED = "NBSCALE_TENSORFLOW_PRELOADED"


def main() -> None:
    from pyspark import daemon

    if os.environ.get(FOR_DATAFRAME_TASKS):
        import gc

        from ..tfenv import set_tensorflow_defaults

        set_tensorflow_defaults()  # as a fresh distributed worker sets them

        import tensorflow  # noqa: F401 - the point of this module: imported once, before the daemon forks

        # Out of the collector's reach: a child's collections would otherwise write to every imported object's
        # header and so copy the pages this fork is meant to share.
        gc.freeze()
        os.environ[PRELOADED] = "1"
    daemon.manager()


if __name__ == "__main__":
    main()
