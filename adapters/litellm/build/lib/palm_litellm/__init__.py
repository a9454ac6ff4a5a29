"""palm-middleware for the LiteLLM proxy.

- :mod:`palm_litellm.hook`: ``instance`` (a ``CustomLogger``): per-user routing and bounds in the
  pre-call hook, outcome records, ``x-palm-*`` headers; mounts the ``/palm/v1`` endpoints.
- :mod:`palm_litellm.provider`: ``instance`` (a ``CustomLLM``): local ONNX members as
  ``palm_onnx/<id>``.
- :mod:`palm_litellm.auth`: ``user_api_key_auth`` (proxy ``custom_auth``) and the trust model.
- :mod:`palm_litellm.endpoints`: feedback and profile routes.
- :mod:`palm_litellm.config`: ``palm.yaml`` and the runtime shared by the hook and the provider.

Submodules import LiteLLM; this package module does not.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
