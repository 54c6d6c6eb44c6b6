"""One model server replica: MLflow's own scoring app (what `mlflow models serve` runs) for one model
version, under uvicorn, in a process that dies with the kernel that started it.

    python -m nbscale.serving.replica MODEL_URI HOST PORT
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from ..processes import die_with_parent

    die_with_parent()
    uri, host, port = argv
    from ..tfenv import set_tensorflow_defaults

    set_tensorflow_defaults()
    import mlflow.pyfunc
    import uvicorn
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(mlflow.pyfunc.load_model(uri))
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
