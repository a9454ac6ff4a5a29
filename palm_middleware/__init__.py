"""palm-middleware: per-user routing over a PALM portfolio of aligned models."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
