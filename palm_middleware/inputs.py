"""Everything a member will read, as plain chat messages the policy can check.

Adapters receive requests in several shapes (OpenAI chat, text completion, Responses, Anthropic
messages). :func:`request_messages` turns each into ``[{"role": ..., "content": str}, ...]``
covering every text the member reads: every role, every content part, tool calls and their
results, tool definitions. Content it cannot read is refused with
:class:`~palm_middleware.exceptions.InvalidRequestError` naming the field, never passed on
stringified; a request over the :class:`RequestLimits` is refused with
:class:`~palm_middleware.exceptions.RequestTooLargeError` before any classification runs.

Roles of the result are one of :data:`ROLES`. Texts the request carries outside its messages
(tool definitions, a response schema) come last, as one ``system`` message, so the position of
the user's own turns is the same as in the request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .exceptions import InvalidParameterError, InvalidRequestError, RequestTooLargeError

__all__ = ["ROLES", "RequestKind", "RequestLimits", "request_messages"]

RequestKind = Literal["chat", "text_completion", "responses", "anthropic_messages"]

#: Roles of chat messages (OpenAI chat; the other formats map onto these).
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

#: Content part types whose text the member reads, and the field holding it.
_TEXT_PARTS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "guarded_text": "text",
    "summary_text": "text",
    "reasoning_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
}
#: Parts that are not text (images, audio, video, files, encrypted reasoning): refused unless
#: the deployment allows them, and then never read as text.
_NON_TEXT_PARTS = frozenset(
    {
        "image_url",
        "input_image",
        "image",
        "input_audio",
        "audio_url",
        "video_url",
        "file",
        "input_file",
        "redacted_thinking",
        "container_upload",
    }
)
_INT_PARAMS = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "seed",
    "top_k",
    "top_logprobs",
)
_NUM_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
#: OpenAI's documented ranges (inclusive; None: unbounded), refused rather than clamped, so a
#: client learns its value was not used. Anthropic's temperature range is 0-1.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
    "max_output_tokens": (1, None),
    "n": (1, 128),
    "top_k": (0, None),
    "seed": (0, None),
    "top_logprobs": (0, 20),
}
_ANTHROPIC_RANGES = {**_RANGES, "temperature": (0.0, 1.0)}


@dataclass(frozen=True)
class RequestLimits:
    """Size limits of one request, checked before any parsing beyond JSON and any model work.

    The defaults are far above what a chat app sends; they bound the cost of a hostile request.

    Args:
        max_body_bytes: request body size (checked by the HTTP adapter before parsing).
        max_messages: messages (and items, prompts) in one request.
        max_message_chars: characters of text in one message, all its parts together.
        max_total_chars: characters of text in the whole request.
    """

    max_body_bytes: int = 1 << 20
    max_messages: int = 1024
    max_message_chars: int = 256 * 1024
    max_total_chars: int = 512 * 1024

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_message_chars", "max_total_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(
                    f"RequestLimits.{name} must be a positive integer; got {value!r}"
                )


_DEFAULT_LIMITS = RequestLimits()


def request_messages(
    kind: RequestKind,
    body: Mapping[str, Any],
    *,
    limits: RequestLimits | None = None,
    allow_non_text: bool = False,
) -> list[dict[str, str]]:
    """The texts of ``body`` as chat messages (role lower-cased, content a string).

    Args:
        kind: the request format.
        body: the parsed JSON body.
        limits: size limits (default :class:`RequestLimits`).
        allow_non_text: accept image, audio, video and file parts (they are skipped, not
            read as text); by default they are refused, since no topic rule can see them.

    Raises:
        InvalidRequestError: content that cannot be read as text, or a field of the wrong
            type; ``param`` names the field (``messages[2].content[0].text``).
        RequestTooLargeError: over ``limits``; ``param`` names the field.
    """
    if not isinstance(body, Mapping):
        raise InvalidRequestError(
            f"the request body must be a JSON object; got {_kind_of(body)}", param=None
        )
    reader = _Reader(limits or _DEFAULT_LIMITS, allow_non_text)
    _check_params(body, kind)
    if kind == "chat":
        reader.chat(body)
    elif kind == "text_completion":
        reader.text_completion(body)
    elif kind == "responses":
        reader.responses(body)
    elif kind == "anthropic_messages":
        reader.anthropic(body)
    else:
        raise InvalidRequestError(f"unknown request kind {kind!r}", param=None)
    reader.extras(body)
    return reader.out


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
    }.get(type(value), "an object" if isinstance(value, Mapping) else type(value).__name__)


def _check_params(body: Mapping[str, Any], kind: RequestKind = "chat") -> None:
    """Types and ranges of the sampling parameters (a provider would coerce or clamp them)."""
    for name in _INT_PARAMS:
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise InvalidRequestError(f"`{name}` must be an integer; got {_kind_of(v)}", param=name)
    for name in _NUM_PARAMS:
        v = body.get(name)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        ):
            raise InvalidRequestError(
                f"`{name}` must be a finite number; got {_kind_of(v)}", param=name
            )
    ranges = _ANTHROPIC_RANGES if kind == "anthropic_messages" else _RANGES
    for name, (low, high) in ranges.items():
        v = body.get(name)
        if v is None or (low is None or v >= low) and (high is None or v <= high):
            continue
        span = f"at least {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequestError(f"`{name}` must be {span}; got {v!r}", param=name)
    v = body.get("stream")
    if v is not None and not isinstance(v, bool):
        raise InvalidRequestError(f"`stream` must be a boolean; got {_kind_of(v)}", param="stream")
    for name in ("stop", "stop_sequences"):
        v = body.get(name)
        if v is None or isinstance(v, str):
            continue
        if not isinstance(v, list):
            raise InvalidRequestError(
                f"`{name}` must be a string or a list of strings; got {_kind_of(v)}",
                param=name,
            )
        for i, s in enumerate(v):
            if not isinstance(s, str):
                raise InvalidRequestError(
                    f"`{name}[{i}]` must be a string; got {_kind_of(s)}",
                    param=f"{name}[{i}]",
                )


class _Reader:
    """Walks one request body, collecting messages and enforcing the limits as it goes."""

    def __init__(self, limits: RequestLimits, allow_non_text: bool) -> None:
        self.limits = limits
        self.allow_non_text = allow_non_text
        self.out: list[dict[str, str]] = []
        self.total = 0

    # -- output ------------------------------------------------------------------------------
    def emit(self, role: str, pieces: list[str], param: str) -> None:
        text = "\n".join(p for p in pieces if p)
        limits = self.limits
        if len(self.out) >= limits.max_messages:
            raise RequestTooLargeError(
                f"more than {limits.max_messages} messages in one request", param=param
            )
        if len(text) > limits.max_message_chars:
            raise RequestTooLargeError(
                f"{param} has {len(text)} characters of text; the limit is "
                f"{limits.max_message_chars}",
                param=param,
            )
        self.total += len(text)
        if self.total > limits.max_total_chars:
            raise RequestTooLargeError(
                f"the request has more than {limits.max_total_chars} characters of text",
                param=param,
            )
        self.out.append({"role": role, "content": text})

    def count(self, items: list[Any], param: str) -> None:
        """Refuse an over-long list before walking it."""
        if len(items) > self.limits.max_messages:
            raise RequestTooLargeError(
                f"`{param}` has {len(items)} entries; the limit is {self.limits.max_messages}",
                param=param,
            )

    # -- small readers -----------------------------------------------------------------------
    @staticmethod
    def string(value: object, param: str, *, optional: bool = False) -> str:
        if isinstance(value, str):
            return value
        if value is None and optional:
            return ""
        raise InvalidRequestError(f"`{param}` must be a string; got {_kind_of(value)}", param=param)

    @staticmethod
    def obj(value: object, param: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise InvalidRequestError(
                f"`{param}` must be an object; got {_kind_of(value)}", param=param
            )
        return value

    @staticmethod
    def array(value: object, param: str) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidRequestError(
                f"`{param}` must be an array; got {_kind_of(value)}", param=param
            )
        return value

    @staticmethod
    def json_text(value: object, param: str) -> str:
        """Structured input (tool arguments, schemas) as the JSON text the member reads."""
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:  # pragma: no cover - parsed JSON always dumps
            raise InvalidRequestError(f"`{param}` is not JSON", param=param) from exc

    def non_text(self, kind: str, param: str) -> None:
        if not self.allow_non_text:
            raise InvalidRequestError(
                f"`{param}` is a {kind!r} part; this deployment reads text only "
                "(non-text content cannot be checked against the policy)",
                param=param,
            )

    def parts(self, content: object, param: str, *, extra: frozenset[str] = frozenset()) -> str:
        """A content value: a string, or a list of typed parts (OpenAI and Anthropic)."""
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise InvalidRequestError(
                f"`{param}` must be a string or an array of content parts; got {_kind_of(content)}",
                param=param,
            )
        return "\n".join(t for t in self.part_texts(content, param, extra) if t)

    def part_texts(self, parts: list[Any], param: str, extra: frozenset[str]) -> Iterator[str]:
        for j, part in enumerate(parts):
            yield from self.part(part, f"{param}[{j}]", extra)

    def part(self, part: object, where: str, extra: frozenset[str]) -> Iterator[str]:
        """The text of one typed content part; non-text parts refused unless allowed."""
        p = self.obj(part, where)
        kind = p.get("type")
        if not isinstance(kind, str):
            raise InvalidRequestError(
                f"`{where}.type` must be a string; got {_kind_of(kind)}", param=f"{where}.type"
            )
        if kind in _TEXT_PARTS:
            field = _TEXT_PARTS[kind]
            yield self.string(p.get(field), f"{where}.{field}")
        elif kind == "document":
            yield from self.document(p, where)
        elif kind == "tool_reference" and "tool_reference" in extra:
            yield self.string(p.get("tool_name"), f"{where}.tool_name")
        elif kind in _NON_TEXT_PARTS:
            self.non_text(kind, where)
        else:
            raise InvalidRequestError(
                f"`{where}.type` {kind!r} is not a content part PALM can read",
                param=f"{where}.type",
            )

    def document(self, p: Mapping[str, Any], where: str) -> Iterator[str]:
        """A document part: plain-text sources are read; base64, URL and file ones are not."""
        for field in ("title", "context"):
            yield self.string(p.get(field), f"{where}.{field}", optional=True)
        source = self.obj(p.get("source"), f"{where}.source")
        stype = source.get("type")
        if stype == "text":
            yield self.string(source.get("data"), f"{where}.source.data")
        elif stype == "content":
            yield self.parts(source.get("content"), f"{where}.source.content")
        else:
            self.non_text(f"document ({stype})", f"{where}.source")

    # -- OpenAI chat -------------------------------------------------------------------------
    def chat(self, body: Mapping[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError(
                f"`messages` must be a non-empty array; got {_kind_of(messages)}",
                param="messages",
            )
        self.count(messages, "messages")
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            msg = self.obj(m, where)
            role = self.role(msg.get("role"), f"{where}.role")
            # A participant name is an identifier (`a-z0-9_-`): underscores stand for spaces,
            # so words hidden in it stay words for the guard.
            name = self.string(msg.get("name"), f"{where}.name", optional=True)
            pieces = [name.replace("_", " ")]
            content = msg.get("content")
            if content is None and role in ("assistant", "function"):
                pass  # an assistant turn that only calls tools
            else:
                extra = frozenset({"tool_reference"}) if role == "tool" else frozenset()
                pieces.append(self.parts(content, f"{where}.content", extra=extra))
            if role == "assistant":
                pieces.extend(self.assistant_extras(msg, where))
            self.emit(role, pieces, where)

    @staticmethod
    def role(value: object, param: str) -> str:
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"`{param}` must be a string; got {_kind_of(value)}", param=param
            )
        role = value.casefold()
        if role not in ROLES:
            raise InvalidRequestError(
                f"`{param}` {value!r} is not a known role; use one of {sorted(ROLES)}",
                param=param,
            )
        return role

    def assistant_extras(self, msg: Mapping[str, Any], where: str) -> Iterator[str]:
        """Tool calls, a legacy function call and reasoning of an assistant turn."""
        calls = msg.get("tool_calls")
        if calls is not None:
            for k, call in enumerate(self.array(calls, f"{where}.tool_calls")):
                at = f"{where}.tool_calls[{k}]"
                c = self.obj(call, at)
                if "function" in c:
                    yield from self.function_call(c["function"], f"{at}.function")
                elif "custom" in c:
                    cu = self.obj(c["custom"], f"{at}.custom")
                    yield self.string(cu.get("name"), f"{at}.custom.name", optional=True)
                    yield self.string(cu.get("input"), f"{at}.custom.input", optional=True)
                else:
                    raise InvalidRequestError(
                        f"`{at}` must have a `function` (or `custom`) object", param=at
                    )
        if msg.get("function_call") is not None:
            yield from self.function_call(msg["function_call"], f"{where}.function_call")
        yield self.string(msg.get("reasoning_content"), f"{where}.reasoning_content", optional=True)
        blocks = msg.get("thinking_blocks")
        if blocks is not None:
            at = f"{where}.thinking_blocks"
            yield "\n".join(self.part_texts(self.array(blocks, at), at, frozenset()))

    def function_call(self, value: object, at: str) -> Iterator[str]:
        fn = self.obj(value, at)
        yield self.string(fn.get("name"), f"{at}.name", optional=True)
        args = fn.get("arguments")
        yield "" if args is None else self.json_text(args, f"{at}.arguments")

    # -- legacy text completion --------------------------------------------------------------
    def text_completion(self, body: Mapping[str, Any]) -> None:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            self.emit("user", [prompt], "prompt")
        elif isinstance(prompt, list) and prompt:
            self.count(prompt, "prompt")
            for i, p in enumerate(prompt):
                if not isinstance(p, str):
                    raise InvalidRequestError(
                        f"`prompt[{i}]` must be a string; token-id prompts are not "
                        "accepted (PALM cannot check them against the policy)",
                        param=f"prompt[{i}]",
                    )
                self.emit("user", [p], f"prompt[{i}]")
        else:
            raise InvalidRequestError(
                "`prompt` must be a string or a non-empty array of strings; got "
                f"{_kind_of(prompt)}",
                param="prompt",
            )
        suffix = body.get("suffix")
        if suffix is not None:
            self.emit("user", [self.string(suffix, "suffix")], "suffix")

    # -- OpenAI Responses --------------------------------------------------------------------
    def responses(self, body: Mapping[str, Any]) -> None:
        for field in ("previous_response_id", "conversation", "prompt"):
            if body.get(field) is not None:
                raise InvalidRequestError(
                    f"`{field}` refers to content stored elsewhere, which PALM cannot "
                    "check; send the conversation in `input`",
                    param=field,
                )
        instructions = body.get("instructions")
        if instructions is not None:
            self.emit("system", [self.string(instructions, "instructions")], "instructions")
        items = body.get("input")
        if isinstance(items, str):
            self.emit("user", [items], "input")
            return
        if not isinstance(items, list) or not items:
            raise InvalidRequestError(
                f"`input` must be a string or a non-empty array of items; got {_kind_of(items)}",
                param="input",
            )
        self.count(items, "input")
        for i, item in enumerate(items):
            self.response_item(self.obj(item, f"input[{i}]"), f"input[{i}]")

    def response_item(self, item: Mapping[str, Any], where: str) -> None:
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = self.role(item.get("role"), f"{where}.role")
            if role in ("tool", "function"):
                raise InvalidRequestError(
                    f"`{where}.role` must be user, assistant, system or developer",
                    param=f"{where}.role",
                )
            self.emit(role, [self.parts(item.get("content"), f"{where}.content")], where)
        elif kind == "function_call":
            self.emit("assistant", list(self.function_call(item, where)), where)
        elif kind == "custom_tool_call":
            name = self.string(item.get("name"), f"{where}.name", optional=True)
            self.emit("assistant", [name, self.string(item.get("input"), f"{where}.input")], where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self.emit("tool", [self.parts(item.get("output"), f"{where}.output")], where)
        elif kind == "reasoning":
            pieces = []
            for field in ("summary", "content"):
                if item.get(field) is not None:
                    pieces.append(self.parts(item[field], f"{where}.{field}"))
            if item.get("encrypted_content") is not None:
                self.non_text("encrypted reasoning", f"{where}.encrypted_content")
            self.emit("assistant", pieces, where)
        else:
            raise InvalidRequestError(
                f"`{where}.type` {kind!r} is not an input item PALM can read (messages, "
                "function calls and their outputs, custom tool calls, reasoning)",
                param=f"{where}.type",
            )

    # -- Anthropic messages ------------------------------------------------------------------
    def anthropic(self, body: Mapping[str, Any]) -> None:
        system = body.get("system")
        if system is not None:
            self.emit("system", [self.anthropic_system(system)], "system")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError(
                f"`messages` must be a non-empty array; got {_kind_of(messages)}",
                param="messages",
            )
        self.count(messages, "messages")
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            msg = self.obj(m, where)
            role = self.role(msg.get("role"), f"{where}.role")
            if role not in ("user", "assistant", "system"):
                raise InvalidRequestError(
                    f"`{where}.role` must be user or assistant", param=f"{where}.role"
                )
            content = msg.get("content")
            if isinstance(content, str):
                self.emit(role, [content], where)
                continue
            own: list[str] = []
            tool: list[str] = []
            for j, block in enumerate(self.array(content, f"{where}.content")):
                self.anthropic_block(block, f"{where}.content[{j}]", own, tool)
            if tool:  # tool results are not the user's own words: their own message
                self.emit("tool", tool, where)
            if own or not tool:
                self.emit(role, own, where)

    def anthropic_system(self, system: object) -> str:
        if isinstance(system, str):
            return system
        texts = []
        for j, block in enumerate(self.array(system, "system")):
            b = self.obj(block, f"system[{j}]")
            if b.get("type") != "text":
                raise InvalidRequestError(
                    f"`system[{j}].type` must be 'text'", param=f"system[{j}].type"
                )
            texts.append(self.string(b.get("text"), f"system[{j}].text"))
        return "\n".join(texts)

    def anthropic_block(self, block: object, at: str, own: list[str], tool: list[str]) -> None:
        b = self.obj(block, at)
        kind = b.get("type")
        if kind in ("tool_use", "server_tool_use"):
            own.append(self.string(b.get("name"), f"{at}.name", optional=True))
            own.append(self.json_text(b.get("input"), f"{at}.input"))
        elif kind == "tool_result":
            content = b.get("content")
            if content is not None:
                extra = frozenset({"tool_reference"})
                tool.append(self.parts(content, f"{at}.content", extra=extra))
        elif kind == "search_result":
            own.append(self.string(b.get("title"), f"{at}.title", optional=True))
            own.append(self.parts(b.get("content"), f"{at}.content"))
        else:
            own.extend(self.part(b, at, frozenset()))

    # -- texts outside the messages ----------------------------------------------------------
    def extras(self, body: Mapping[str, Any]) -> None:
        """Tool definitions and response schemas: the member reads their descriptions."""
        pieces = []
        for field in ("tools", "functions"):
            value = body.get(field)
            if value is None:
                continue
            self.count(self.array(value, field), field)
            for k, tool in enumerate(value):
                pieces.append(self.json_text(self.obj(tool, f"{field}[{k}]"), f"{field}[{k}]"))
        for field in ("response_format", "text", "output_format", "output_config"):
            value = body.get(field)
            if isinstance(value, Mapping):
                pieces.append(self.json_text(value, field))
            elif value is not None and field == "response_format":
                raise InvalidRequestError(
                    f"`{field}` must be an object; got {_kind_of(value)}", param=field
                )
        if any(pieces):
            self.emit("system", pieces, "tools")
