"""Build the :class:`RequestContext` of a request from authenticated metadata and the clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from .bounds import BoundsPolicy
from .conditions import RequestContext

__all__ = ["build_context"]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _str(v: object) -> str | None:
    if isinstance(v, bool) or v is None:
        return None if v is None else str(v).lower()
    if isinstance(v, (str, int, float)):
        s = str(v)
        return s if s else None
    return None


def build_context(
    policy: BoundsPolicy,
    metadata: Mapping[str, Any] | None,
    now: float,
    topics: frozenset[str] = frozenset(),
    language: str | None = None,
) -> RequestContext:
    """The context conditions of ``policy`` see for one request.

    Args:
        policy: Supplies the time zone and the declared attributes (undeclared metadata keys
            are dropped: no condition can read them).
        metadata: Authenticated request metadata from the adapter: ``cohort``, ``channel``
            and attributes, flat or under ``attributes``. Never user-editable profile fields.
        now: Unix seconds.
        topics: Labels of every text of the request.
        language: Detected language of the request (None: not detected or unclear).
    """
    md: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    declared = policy.spec.context.attributes if policy.spec is not None else {}
    attrs: dict[str, str] = {}
    if declared:
        nested = md.get("attributes")
        sources = [md, nested] if isinstance(nested, Mapping) else [md]
        for src in sources:
            for name in declared:
                if name in src:
                    v = _str(src[name])
                    if v is not None:
                        attrs[name] = v
    local = datetime.fromtimestamp(now, tz=timezone.utc).astimezone(_zone(policy.timezone))
    return RequestContext(
        topics=topics,
        cohort=_str(md.get("cohort")),
        channel=_str(md.get("channel")),
        attributes=attrs,
        minute=local.hour * 60 + local.minute,
        weekday=local.weekday(),
        language=language,
    )
