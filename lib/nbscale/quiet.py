"""Quiet blocks: library loggers that say nothing to a notebook user, silenced for one block at a time."""
from __future__ import annotations

import contextlib
import io
import threading

_quieting = threading.RLock()


@contextlib.contextmanager
def quiet_loggers(*names: str, output: bool = False):
    """Silence warnings that say nothing to the notebook user (e.g. TF's retracing notice when MLflow
    calls predict on an input example; absl's note on optimizer slots not restored); with `output`, the
    block's prints too. One block at a time: logger levels and sys.stdout belong to the process, and
    blocks in side-by-side threads (workflow steps) would restore each other's and leave them swapped."""
    import logging

    with _quieting:
        loggers = [logging.getLogger(name) for name in names]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        swallow = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())) if output else ()
        try:
            with contextlib.ExitStack() as stack:
                for redirect in swallow:
                    stack.enter_context(redirect)
                yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
