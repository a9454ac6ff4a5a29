"""OpenAI's structured-output and tool-calling fields, for local members, on one grammar.

Both adapters (the proxy's ``palm_onnx`` provider and LangChain's ``OnnxChatModel``) read the
same request fields the same way:

* ``response_format`` (chat) / ``text.format`` (Responses): ``json_object`` and
  ``json_schema`` become a :class:`~palm_middleware.engines.grammar.Grammar`
  (:func:`response_grammar`); PALM also reads ``{"type": "regex", "regex": ...}`` and
  ``{"type": "grammar", "grammar": <lark>}``.
* ``tools`` + ``tool_choice``: a :class:`ToolFormat`. Local chat templates get no native tool
  format (most small members' templates have none): the tools are described in a system
  message, and the answer is constrained to ``{"name": ..., "arguments": {...}}`` with the
  tool's parameter schema. ``required`` (or a named function) forces a call; ``auto`` lets the
  model choose between plain text (not starting with ``{``) and a call; ``none`` hides the
  tools. One call per answer (``parallel_tool_calls`` has no effect).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidParameterError
from .grammar import Grammar

__all__ = ["ToolCall", "ToolFormat", "plain_messages", "response_grammar"]


def response_grammar(fmt: object, field: str = "response_format") -> Grammar | None:
    """The grammar of an OpenAI ``response_format`` (or Responses ``text.format``); None: text.

    Raises:
        InvalidParameterError: an unknown ``type`` or a malformed schema, naming ``field``.
    """
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping) or not isinstance(fmt.get("type"), str):
        raise InvalidParameterError(f"{field} must be an object with a string `type`; got {fmt!r}")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar.json_object(field)
    if kind == "json_schema":
        # Chat nests it ({"json_schema": {"name", "schema"}}); Responses' text.format does not.
        spec = fmt.get("json_schema", fmt)
        if not isinstance(spec, Mapping):
            raise InvalidParameterError(f"{field}.json_schema must be an object; got {spec!r}")
        schema = spec.get("schema", {"type": "object"})
        return Grammar.json_schema(schema, f"{field}.json_schema.schema")
    if kind in ("regex", "grammar"):
        text = fmt.get(kind)
        if not isinstance(text, str) or not text:
            raise InvalidParameterError(f"{field}.{kind} must be a non-empty string")
        return Grammar.regex(text, field) if kind == "regex" else Grammar.lark(text, field)
    raise InvalidParameterError(
        f"{field}.type must be one of text, json_object, json_schema, regex, grammar; got {kind!r}"
    )


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: ``arguments`` is JSON text, as OpenAI sends it."""

    name: str
    arguments: str
    id: str

    def openai(self) -> dict[str, Any]:
        """As an OpenAI ``tool_calls`` item."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class _Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolFormat:
    """The tools of one request, the instructions the model reads, and its answer's grammar.

    Build it with :meth:`parse`; ``None`` there means the request has no tools to offer.
    """

    tools: tuple[_Tool, ...]
    required: bool

    @classmethod
    def parse(
        cls, tools: object, tool_choice: object = None, field: str = "tools"
    ) -> ToolFormat | None:
        """Read OpenAI ``tools`` / ``tool_choice`` (None: no tools, or ``tool_choice: none``).

        Raises:
            InvalidParameterError: a malformed tool or choice, naming its field.
        """
        if tools is None or tools == []:
            if tool_choice not in (None, "none", "auto"):
                raise InvalidParameterError("tool_choice requires a tool; `tools` is empty")
            return None
        if not isinstance(tools, Sequence) or isinstance(tools, str):
            raise InvalidParameterError(f"{field} must be a list of tools; got {tools!r}")
        parsed = tuple(_read_tool(t, f"{field}[{i}]") for i, t in enumerate(tools))
        names = [t.name for t in parsed]
        if tool_choice in (None, "auto"):
            return cls(parsed, required=False)
        if tool_choice == "none":
            return None
        if tool_choice == "required":
            return cls(parsed, required=True)
        name = _chosen_name(tool_choice)
        chosen = tuple(t for t in parsed if t.name == name)
        if not chosen:
            raise InvalidParameterError(
                f"tool_choice names {name!r}, which is not in {field} ({names})"
            )
        return cls(chosen, required=True)

    def instructions(self) -> str:
        """The system text that tells the model its tools and how to call one."""
        lines = ["You can call these tools:"]
        for t in self.tools:
            desc = f": {t.description}" if t.description else ""
            lines.append(f"- {t.name}{desc}. Arguments (JSON schema): {json.dumps(t.parameters)}")
        how = 'To call a tool, answer with only a JSON object {"name": <tool>, "arguments": {...}}.'
        if self.required:
            lines.append(how)
        else:
            lines.append(how + " Otherwise answer in plain text.")
        return "\n".join(lines)

    def messages(self, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        """``messages`` with :meth:`instructions` added to (or as) the first system message."""
        out = [dict(m) for m in messages]
        text = self.instructions()
        if out and out[0].get("role") == "system":
            out[0]["content"] = f"{out[0].get('content', '')}\n\n{text}".lstrip()
        else:
            out.insert(0, {"role": "system", "content": text})
        return out

    def grammar(self) -> Grammar:
        """The answer's grammar: a call to one of the tools, or (``auto``) text or a call."""
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in self.tools
        ]
        schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
        if self.required:
            return Grammar.json_schema(schema, "tools")
        # Plain text may not start with "{" (or blank space): that first character decides.
        lark = f"start: TEXT | call\nTEXT: /[^{{\\s][\\s\\S]*/\ncall: %json {json.dumps(schema)}\n"
        return Grammar.lark(lark, "tools")

    def parse_call(self, text: str) -> ToolCall | None:
        """The call in a constrained answer, or None for a plain-text answer."""
        if not text.lstrip().startswith("{"):
            return None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None  # cut short by max_tokens: the text stays as it is
        if not isinstance(obj, dict) or obj.get("name") not in {t.name for t in self.tools}:
            return None
        args = json.dumps(obj.get("arguments", {}), ensure_ascii=False)
        return ToolCall(str(obj["name"]), args, f"call_{uuid.uuid4().hex[:24]}")


def _read_tool(tool: object, where: str) -> _Tool:
    if not isinstance(tool, Mapping):
        raise InvalidParameterError(f"{where} must be an object; got {tool!r}")
    fn = tool.get("function", tool)  # OpenAI chat nests it; Responses' tools are flat
    if tool.get("type", "function") != "function" or not isinstance(fn, Mapping):
        raise InvalidParameterError(f"{where}: only function tools are supported; got {tool!r}")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(f"{where}.function.name must be a non-empty string")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(params, Mapping):
        raise InvalidParameterError(f"{where}.function.parameters must be a JSON schema object")
    if params.get("type") == "object" and "additionalProperties" not in params:
        # A call passes the declared arguments (OpenAI's strict mode): unlisted keys would let
        # a small model write keys until max_tokens.
        params = {**params, "additionalProperties": False}
    desc = fn.get("description") or ""
    return _Tool(name, str(desc), params)


def _chosen_name(choice: object) -> str:
    if isinstance(choice, Mapping):
        fn = choice.get("function", choice)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if isinstance(name, str) and name:
            return name
    raise InvalidParameterError(
        "tool_choice must be none, auto, required or {type: function, function: {name}}; "
        f"got {choice!r}"
    )


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """OpenAI chat messages as the ``role``/``content`` strings a chat template reads.

    Text parts are joined; an assistant's ``tool_calls`` become the JSON the model was
    constrained to write; a ``tool`` result becomes a user turn that names the call (templates
    without a tool format have no ``tool`` role).
    """
    out: list[dict[str, str]] = []
    names: dict[object, object] = {}  # tool_call_id -> the function it called
    for m in messages:
        role = str(m.get("role", "user"))
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, Mapping) and p.get("type") in ("text", "input_text", "output_text")
            )
        text = "" if content is None else str(content)
        calls = m.get("tool_calls")
        if role == "assistant" and isinstance(calls, list) and calls:
            written = [_call_text(c) for c in calls]
            for c in calls:
                if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping):
                    names[c.get("id")] = c["function"].get("name")
            text = "\n".join([*([text] if text else []), *written])
        elif role in ("tool", "function"):
            call_id = m.get("tool_call_id")
            ref = m.get("name") or names.get(call_id) or call_id or "the tool"
            role, text = "user", f"Result of {ref}: {text}"
        out.append({"role": role, "content": text})
    return out


def _call_text(call: object) -> str:
    fn = call.get("function", {}) if isinstance(call, Mapping) else {}
    args: object = fn.get("arguments", "{}") if isinstance(fn, Mapping) else "{}"
    try:
        parsed = json.loads(args) if isinstance(args, str) else args
    except json.JSONDecodeError:
        parsed = args
    name = fn.get("name") if isinstance(fn, Mapping) else None
    return json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
