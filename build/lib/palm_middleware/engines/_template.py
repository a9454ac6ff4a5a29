"""Chat templates: Jinja from ``tokenizer_config.json``, rendered as transformers does."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..exceptions import GenerationError, ModelLoadError

__all__ = ["ChatTemplate"]


def _raise_exception(message: str) -> None:
    raise GenerationError(f"chat template refused the messages: {message}")


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers overrides Jinja's tojson, which HTML-escapes; templates expect plain JSON.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template.

    Args:
        source: Jinja source of the template.
        special_tokens: Variables the template may use (``bos_token``, ``eos_token``, ...).
        where: File it came from, for error messages.
    """

    def __init__(self, source: str, special_tokens: Mapping[str, str], where: str) -> None:
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # Sandboxed: a model folder is data, its template must not reach Python internals.
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.where = where
        self.special_tokens = dict(special_tokens)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ModelLoadError(f"{where}: the chat template is not valid Jinja: {exc}") from exc

    def render(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for ``messages``, ending with the assistant turn's opening."""
        from jinja2 import TemplateError

        for i, m in enumerate(messages):
            if (
                not isinstance(m, Mapping)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise GenerationError(
                    f"message {i} must be a mapping with string 'role' and 'content'; got {m!r}"
                )
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except TemplateError as exc:
            raise GenerationError(
                f"{self.where}: rendering the chat template failed: {exc}"
            ) from exc
