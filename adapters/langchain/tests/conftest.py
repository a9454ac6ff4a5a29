"""Fixtures of the LangChain tests, defined in langchain_fixtures.py.

Only re-exports: mypy skips this file (one mypy run holds a single module named ``conftest``,
adapters/litellm/tests/conftest.py), so nothing to type-check may live here.
"""

from __future__ import annotations

from langchain_fixtures import onnx_members, palm, tool_members

__all__ = ["onnx_members", "palm", "tool_members"]
