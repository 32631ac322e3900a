"""Import the three Chalice apps into one pytest process without their modules clashing.

Every app is a module named ``app`` with a package named ``chalicelib`` beside it, so a plain
import would hand the second app the first one's cached modules. ``load_app`` imports one app with
its folder first on ``sys.path`` and the shared names absent from ``sys.modules``, then puts both
back as they were. The loaded app keeps its own modules through its globals; nothing else can reach
them by name, so no test sees another app's code.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from tools.services import ServiceDef

_CLASHING = ("app", "chalicelib")
_loaded: dict[str, ModuleType] = {}


def _clashing(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _CLASHING)


def load_app(service: ServiceDef) -> ModuleType:
    """The ``app`` module of ``service``, imported once per test session."""
    if service.name in _loaded:
        return _loaded[service.name]
    saved_modules = {n: m for n, m in sys.modules.items() if _clashing(n)}
    saved_path = list(sys.path)
    for name in saved_modules:
        del sys.modules[name]
    sys.path.insert(0, str(service.directory))
    try:
        module = importlib.import_module("app")
    finally:
        for name in [n for n in sys.modules if _clashing(n)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
    _loaded[service.name] = module
    return module
