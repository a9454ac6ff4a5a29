"""The guard: de-obfuscation, keyword matching, a learned risk classifier and reply checks."""

from __future__ import annotations
