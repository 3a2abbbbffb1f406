"""The other owners' modules, found by name: the service names them but imports none of its own accord."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType


def installed(names: Iterable[str]) -> list[ModuleType]:
    """The named modules whose package is present (the serving image ships without bench/, say); any other
    import error still raises."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name.split(".")[0]:
                raise
    return modules
