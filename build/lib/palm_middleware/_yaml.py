"""YAML loading that keeps the line and column of every key, for errors that point at the text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .exceptions import ConfigError, ConfigIssue

__all__ = ["LocatedYAML", "issues_from_pydantic", "load_yaml_file", "load_yaml_text"]

#: Configuration files larger than this are refused (a policy is kilobytes, not megabytes).
MAX_CONFIG_BYTES = 4 * 1024 * 1024

Path_ = tuple[str | int, ...]


@dataclass
class LocatedYAML:
    """Parsed YAML data plus the (line, column) of every node, keyed by its path."""

    data: Any
    positions: dict[Path_, tuple[int, int]]
    filename: str

    def locate(self, path: Sequence[str | int]) -> tuple[int | None, int | None]:
        """(line, column), 1-based, of ``path`` or of its deepest existing ancestor."""
        p = tuple(path)
        while True:
            if p in self.positions:
                return self.positions[p]
            if not p:
                return (None, None)
            p = p[:-1]

    def issue(
        self, path: Sequence[str | int], message: str, rule_id: str | None = None
    ) -> ConfigIssue:
        """A :class:`ConfigIssue` located at ``path``."""
        line, col = self.locate(path)
        return ConfigIssue(
            message=message,
            file=self.filename,
            line=line,
            column=col,
            field=_dotted(path),
            rule_id=rule_id,
        )


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay strings)."""


_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


def load_yaml_text(
    text: str, filename: str, error_cls: type[ConfigError] = ConfigError
) -> LocatedYAML:
    """Parse ``text``; syntax errors become ``error_cls`` naming file, line and column."""
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise error_cls(
            ConfigIssue(f"file is larger than {MAX_CONFIG_BYTES} bytes; refusing", file=filename)
        )
    try:
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise error_cls(
            ConfigIssue(
                f"invalid YAML: {exc.problem or exc.context}",
                file=filename,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        ) from exc
    except yaml.YAMLError as exc:
        raise error_cls(ConfigIssue(f"invalid YAML: {exc}", file=filename)) from exc
    positions: dict[Path_, tuple[int, int]] = {}
    budget = [200_000]  # nodes; bounds alias expansion ("billion laughs")
    data = _construct(node, (), positions, budget, filename, error_cls) if node else None
    return LocatedYAML(data=data, positions=positions, filename=filename)


def load_yaml_file(path: str | Path, error_cls: type[ConfigError] = ConfigError) -> LocatedYAML:
    """Read and parse a YAML file; a missing or unreadable file is an error, never skipped."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise error_cls(
                ConfigIssue(f"file is larger than {MAX_CONFIG_BYTES} bytes; refusing", file=str(p))
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_cls(ConfigIssue("file not found", file=str(p))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error_cls(ConfigIssue(f"cannot read file: {exc}", file=str(p))) from exc
    return load_yaml_text(text, str(p), error_cls)


def _construct(
    node: yaml.Node,
    path: Path_,
    positions: dict[Path_, tuple[int, int]],
    budget: list[int],
    filename: str,
    error_cls: type[ConfigError],
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise error_cls(ConfigIssue("document too large or too deeply aliased", file=filename))
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = _scalar(knode, filename, error_cls)
            if isinstance(key, (dict, list)) or not isinstance(key, (str, int, float, bool)):
                raise error_cls(
                    ConfigIssue(
                        "mapping keys must be plain scalars",
                        file=filename,
                        line=knode.start_mark.line + 1,
                        column=knode.start_mark.column + 1,
                    )
                )
            if key in out:
                raise error_cls(
                    ConfigIssue(
                        f"duplicate key {key!r}",
                        file=filename,
                        line=knode.start_mark.line + 1,
                        column=knode.start_mark.column + 1,
                        field=_dotted((*path, str(key))),
                    )
                )
            kpath = (*path, str(key))
            positions[kpath] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            out[key] = _construct(vnode, kpath, positions, budget, filename, error_cls)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(v, (*path, i), positions, budget, filename, error_cls)
            for i, v in enumerate(node.value)
        ]
    return _scalar(node, filename, error_cls)


def _scalar(node: yaml.Node, filename: str, error_cls: type[ConfigError]) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise error_cls(
            ConfigIssue(
                "mapping keys must be plain scalars",
                file=filename,
                line=node.start_mark.line + 1,
                column=node.start_mark.column + 1,
            )
        )
    try:
        # Tags were resolved while composing (without timestamps); this only builds the value.
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        raise error_cls(
            ConfigIssue(
                f"invalid value: {exc}",
                file=filename,
                line=node.start_mark.line + 1,
                column=node.start_mark.column + 1,
            )
        ) from exc


def issues_from_pydantic(
    exc: Any, doc: LocatedYAML, prefix: Sequence[str | int] = ()
) -> list[ConfigIssue]:
    """Turn a pydantic ``ValidationError`` into located :class:`ConfigIssue` objects."""
    out = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *[p for p in err["loc"] if isinstance(p, (str, int))])
        msg = err["msg"]
        if err.get("type") not in ("missing", "extra_forbidden") and "input" in err:
            inp = err["input"]
            if not isinstance(inp, (dict, list)):
                msg = f"{msg}; got {inp!r}"
        out.append(doc.issue(loc, msg))
    return out
