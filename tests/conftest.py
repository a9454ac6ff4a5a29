from __future__ import annotations

import os

from hypothesis import settings

# Deterministic property tests in CI; explore more locally with HYPOTHESIS_PROFILE=dev.
settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None)
settings.register_profile("dev", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
