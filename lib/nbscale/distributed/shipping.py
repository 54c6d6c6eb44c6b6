"""What of the notebook a distributed `%%train` cell takes to its workers: the variables its code
reads (pickled with cloudpickle), and modules by name (imported again on the worker)."""
from __future__ import annotations

import ast
import types

from ..errors import NbscaleError


def names_read(code: str) -> set[str]:
    """Names the cell reads but does not bind itself: `model` in `model = ...; model.compile()` is the
    cell's own, and the notebook's trained `model` from an earlier cell must not travel."""
    try:
        tree = ast.parse(code or "")
    except SyntaxError as exc:
        raise NbscaleError(f"The %%train cell has a syntax error on line {exc.lineno}: {exc.msg}.") from None
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return read - bound


def capture(code: str, namespace: dict | None) -> bytes:
    """The cell's free variables from `namespace`, pickled. Workers unpickle them only after TensorFlow's
    strategy is set up: a TF object unpickled earlier would start TF's runtime before its collectives."""
    import cloudpickle

    shipped: dict = {}
    for name in sorted(names_read(code) & set(namespace or {})):
        value = namespace[name]
        if name == "keras" or name.startswith("_"):
            continue  # the worker binds its own keras
        if isinstance(value, types.ModuleType):
            shipped[name] = value  # cloudpickle sends a module by name; the worker imports it
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing to the user
            raise NbscaleError(f"The cell reads `{name}` ({type(value).__name__}), which cannot be sent to the workers "
                               f"({type(exc).__name__}): create it inside the %%train cell instead.") from None
        shipped[name] = value
    return cloudpickle.dumps(shipped)
