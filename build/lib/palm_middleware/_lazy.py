"""Lazy package exports: heavy names are imported on first attribute access, then cached."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["load"]


def load(package: str, table: Mapping[str, str], name: str) -> Any:
    """The attribute ``name`` of ``package``, imported from the submodule ``table[name]``.

    Packages call this from their module ``__getattr__``; the value is stored on the package so
    the import happens once.
    """
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", package), name)
    setattr(sys.modules[package], name, value)
    return value
