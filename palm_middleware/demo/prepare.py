"""Shared base models of a portfolio: given folders, or prepared (and cached) on first use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ..exceptions import ConfigError
from ..portfolio.manifest import AdapterBackend, Portfolio, PromptedBackend

__all__ = ["PREPARERS", "bases_of", "resolve_bases"]


def _smollm2(progress: bool, ready: Mapping[str, Path]) -> Path:
    from ..offline.engines.base_model import prepare_base

    return prepare_base(progress=progress)


def _smollm2_lora(progress: bool, ready: Mapping[str, Path]) -> Path:
    """The SmolLM2 base with rank-0 LoRA sites (cached beside it; ~1 s after the base)."""
    from .._capture import capture_output
    from ..offline.engines.lora import add_lora_sites

    base = ready.get("smollm2") or _smollm2(progress, ready)
    out = base.with_name(f"{base.name}-lora")
    with capture_output(out.with_name(f"{out.name}.prepare.log")):  # onnx's own notices
        add_lora_sites(base, out)
    return out


#: Base names the package builds offline: name → preparer(progress, bases so far) -> folder.
PREPARERS: dict[str, Callable[[bool, Mapping[str, Path]], Path]] = {
    "smollm2": _smollm2,
    "smollm2-lora": _smollm2_lora,
}


def bases_of(portfolio: Portfolio) -> list[str]:
    """Names of the shared bases the portfolio's members run on, in manifest order."""
    names = [
        m.backend.base
        for m in portfolio.members
        if isinstance(m.backend, (PromptedBackend, AdapterBackend))
    ]
    return list(dict.fromkeys(names))


def resolve_bases(
    portfolio: Portfolio, given: Mapping[str, str | Path] | None = None, *, progress: bool = True
) -> dict[str, Path]:
    """A folder for every base of ``portfolio``: ``given`` first, else a known preparer.

    Raises:
        ConfigError: a base is neither given nor preparable (names the base and the option).
    """
    out: dict[str, Path] = {k: Path(v) for k, v in (given or {}).items()}
    for name in bases_of(portfolio):
        if name in out:
            continue
        prep = PREPARERS.get(name)
        if prep is None:
            raise ConfigError(
                f"portfolio {portfolio.name or portfolio.source!r}: base {name!r} "
                f"has no folder; pass --base {name}=DIR (preparable: "
                f"{sorted(PREPARERS)})"
            )
        out[name] = prep(progress, out)
    return out
