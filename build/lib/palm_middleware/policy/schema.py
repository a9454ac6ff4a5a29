"""The JSON Schema of policy files, for editor validation (``policies/schema.json``).

Regenerate with ``python -m palm_middleware.policy.schema > policies/schema.json``; a test
checks that the committed file equals :func:`policy_json_schema`.
"""

from __future__ import annotations

import json
from typing import Any

from .models import PolicySpec

__all__ = ["policy_json_schema", "policy_json_schema_text"]


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file, generated from :class:`PolicySpec`."""
    schema = PolicySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://palm-middleware.invalid/policies/schema.json"
    schema["title"] = "palm-middleware bounds policy"
    return schema


def policy_json_schema_text() -> str:
    """:func:`policy_json_schema` as stable, indented JSON text (with a final newline)."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(policy_json_schema_text(), end="")
