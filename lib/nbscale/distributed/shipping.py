"""What of the notebook a distributed `%%train` cell takes to its workers: the variables its code
reads (pickled with cloudpickle), and modules by name (imported again on the worker)."""
from __future__ import annotations

import ast
import types

from ..errors import NbscaleError


def names_read(code: str) -> set[str]:
    try:
        tree = ast.parse(code or "")
    except SyntaxError as exc:
        raise NbscaleError(f"The %%train cell has a syntax error on line {exc.lineno}: {exc.msg}.") from None
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def capture(code: str, namespace: dict | None) -> dict:
    """The cell's free variables from `namespace`, checked to survive the trip to a worker."""
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
    return shipped
