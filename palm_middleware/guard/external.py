"""External guard models as a topic source: a LiteLLM model a deployment serves, or any callable.

A topic may ask another model whether a message belongs to it::

    topics:
      violence:
        external: {model: openai/llama-guard, api_base: "http://127.0.0.1:8001/v1",
                   unsafe: unsafe, timeout: 2.0}
      fraud:
        external: {callable: "my_company.guards:is_fraud", timeout: 0.5, on_error: open}

The model gets the message as the user turn (plus ``system:`` if given) and the topic applies
when its reply starts with ``unsafe`` (case-insensitive; Llama Guard answers ``safe`` or
``unsafe\\nS1``). A callable gets the text and returns a bool (or a score >= ``threshold``).

Each call runs under ``timeout`` seconds. When the source fails or times out, ``on_error``
decides: ``closed`` labels the message (so the rules on the topic apply: a law-layer block then
refuses), ``open`` does not. Left unset, it is ``closed`` when a law-layer rule names the topic
and ``open`` otherwise. Either way the failure is logged and the answer is not cached.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError
from ..policy.models import ExternalRef

__all__ = ["ExternalSource", "import_callable", "litellm_judge"]

_log = logging.getLogger(__name__)
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="palm-guard")
    return _pool


def import_callable(path: str) -> Callable[[str], Any]:
    """The callable at ``"package.module:name"``.

    Raises:
        ConfigError: not of that form, not importable, or not callable (the message says which).
    """
    mod_name, sep, attr = path.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"callable must be 'package.module:function'; got {path!r}")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {path!r}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"{path!r} is not callable")
    return fn  # type: ignore[no-any-return]


def litellm_judge(ref: ExternalRef) -> Callable[[str], bool]:
    """A function asking the LiteLLM model of ``ref`` about a text.

    litellm is imported here, when the policy's topics are built, not inside the first timed
    call (its import takes seconds); its remote cost-map fetch is turned off (no network).
    """
    assert ref.model is not None
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    def judge(text: str) -> bool:
        messages = [{"role": "user", "content": text}]
        if ref.system:
            messages.insert(0, {"role": "system", "content": ref.system})
        kwargs: dict[str, Any] = {}
        if ref.api_base:
            kwargs["api_base"] = ref.api_base
        if ref.api_key_env:
            kwargs["api_key"] = os.environ.get(ref.api_key_env, "")
        resp = litellm.completion(
            model=ref.model, messages=messages, timeout=ref.timeout, max_tokens=8, **kwargs
        )
        answer = str(resp.choices[0].message.content or "").strip().casefold()
        return answer.startswith(ref.unsafe.casefold())

    return judge


@dataclass
class ExternalSource:
    """One topic's external source, with its timeout and failure mode.

    Attributes:
        label: The topic.
        fn: Text -> bool or score.
        ref: The policy's settings (timeout, threshold).
        fail_closed: Label the message when ``fn`` fails or times out.
    """

    label: str
    fn: Callable[[str], Any]
    ref: ExternalRef
    fail_closed: bool

    @classmethod
    def build(cls, label: str, ref: ExternalRef, *, law: bool) -> ExternalSource:
        """The source of ``ref``; ``law``: a law-layer rule names the topic (default closed)."""
        fn = import_callable(ref.callable) if ref.callable else litellm_judge(ref)
        closed = ref.on_error == "closed" if ref.on_error is not None else law
        return cls(label, fn, ref, closed)

    def check(self, text: str) -> tuple[bool, bool]:
        """(the topic applies, the answer is final). Not final: the source failed."""
        future = _executor().submit(self.fn, text)
        try:
            out = future.result(timeout=self.ref.timeout)
        except FutureTimeout:
            future.cancel()
            _log.warning(
                "guard source for topic %r timed out after %ss; failing %s",
                self.label, self.ref.timeout, "closed" if self.fail_closed else "open",
            )  # fmt: skip
            return self.fail_closed, False
        except Exception as exc:  # any error of a foreign model or function
            _log.warning(
                "guard source for topic %r failed (%s: %s); failing %s",
                self.label, type(exc).__name__, exc, "closed" if self.fail_closed else "open",
            )  # fmt: skip
            return self.fail_closed, False
        if isinstance(out, bool):
            return out, True
        if isinstance(out, (int, float)):
            return float(out) >= self.ref.threshold, True
        _log.warning(
            "guard source for topic %r returned %r (want a bool or a number)",
            self.label,
            type(out).__name__,
        )
        return self.fail_closed, False
