"""The thin IPython layer: every magic parses its arguments and calls one library function."""
from __future__ import annotations

from ..config import Nbscale
from ..errors import NbscaleError
from ..tfenv import set_tensorflow_defaults


def _one_line_error(shell, etype, value, tb, tb_offset=None):
    # An NbscaleError already says what is wrong and how to fix it; a traceback would bury it.
    # IPython leaves showing to the handler; _showtraceback is what both the terminal and
    # ipykernel (an `error` message with ename/evalue) implement.
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def load(ipython) -> None:
    from .core import NbscaleMagics
    from .ingest import IngestMagics
    from .jobs import JobsMagics
    from .registry import RegistryMagics
    from .serving import ServingMagics
    from .train import TrainMagics
    from .workflow import WorkflowMagics

    set_tensorflow_defaults()  # before anything imports TensorFlow
    if Nbscale.initialized():
        cfg = Nbscale.instance()
        cfg.update_config(ipython.config)  # e.g. --Nbscale.master=... on the kernel command line
    else:
        cfg = Nbscale.instance(parent=ipython)
    if cfg not in ipython.configurables:
        ipython.configurables.append(cfg)  # makes `%config Nbscale` list and set it
    ipython.register_magics(NbscaleMagics(ipython, cfg))
    ipython.register_magics(IngestMagics)
    ipython.register_magics(TrainMagics)
    ipython.register_magics(JobsMagics)
    ipython.register_magics(RegistryMagics)
    ipython.register_magics(ServingMagics)
    ipython.register_magics(WorkflowMagics)
    ipython.set_custom_exc((NbscaleError,), _one_line_error)
    # Kernel services: the panel's view of this kernel's jobs and services starts with the first of them.
    from .. import state  # noqa: F401 - subscribes to events.WORK_STARTED
    # A model service shows as its live card (the widgets layer renders what the library returns).
    ipython.display_formatter.ipython_display_formatter.for_type_by_name("nbscale.serving", "Service", _show_service)


def _show_service(service) -> None:
    from ..widgets.servecard import show_service

    show_service(service)


def unload(ipython) -> None:
    ipython.set_custom_exc((), None)
    if Nbscale.initialized() and Nbscale.instance() in ipython.configurables:
        ipython.configurables.remove(Nbscale.instance())
