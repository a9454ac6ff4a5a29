"""Shared base models of a portfolio: given folders, or prepared (and cached) on first use.

The default portfolio runs on ``smollm2-genai-int4-gguf`` (the GGUF's own 4-bit blocks written
into the GenAI model builder's fused graph), and ``smollm2-genai-int4-gguf-lora`` with LoRA sites
for the adapter members: the fastest variant that keeps >= 90% greedy agreement with fp32 for
every member (BENCHMARKS.md); ``smollm2-genai-int8`` (+ ``-lora``) stays preparable. Preparing
either needs the builder's own environment (~1.7 GB, created once under the cache).
``smollm2`` / ``smollm2-lora`` (the ``palm prepare-base`` fp32 export) need no builder; tests and
CI use them, and ``smollm2/portfolio-fp32.yaml`` serves the same members on them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ..exceptions import ConfigError, ModelLoadError
from ..portfolio.manifest import AdapterBackend, Portfolio, PromptedBackend

__all__ = [
    "DEFAULT_GENAI",
    "FP32_PORTFOLIO",
    "GENAI_BASES",
    "PREPARERS",
    "bases_of",
    "resolve_bases",
]

#: The fp32 manifest that serves the default members without the GenAI builder.
FP32_PORTFOLIO = "smollm2/portfolio-fp32.yaml"


def _say(progress: bool, line: str) -> None:
    if progress:
        print(f"      {line}", flush=True)


def _smollm2(progress: bool, ready: Mapping[str, Path]) -> Path:
    from ..offline.engines.base_model import prepare_base

    return prepare_base(progress=progress)


def _with_lora_sites(base: Path) -> Path:
    """``base`` with rank-0 LoRA sites on q_proj/v_proj, cached beside it (~1-5 s)."""
    from .._capture import capture_output
    from ..offline.engines.lora import add_lora_sites

    out = base.with_name(f"{base.name}-lora")
    with capture_output(out.with_name(f"{out.name}.prepare.log")):  # onnx's own notices
        add_lora_sites(base, out)
    return out


def _smollm2_lora(progress: bool, ready: Mapping[str, Path]) -> Path:
    """The SmolLM2 base with rank-0 LoRA sites (cached beside it; ~1 s after the base)."""
    return _with_lora_sites(ready.get("smollm2") or _smollm2(progress, ready))


def _genai_preparer(precision: str, what: str) -> Callable[[bool, Mapping[str, Path]], Path]:
    """Preparer of ``smollm2-genai-<precision>`` (``palm prepare-genai --precision <precision>``).

    ``what`` says what the build does, for its progress line.
    """

    def prepare(progress: bool, ready: Mapping[str, Path]) -> Path:
        """The builder's env once, the graph, its agreement check.

        Third-party output (GGUF conversion, the builder, onnx) goes to logs under the cache;
        the terminal gets one line per step.

        Raises:
            ModelLoadError: a step failed; names it, its log, and the builder-free fallback.
        """
        import json

        from .._capture import capture_output
        from ..data import bundled
        from ..offline.engines.genai_build import ensure_builder_env, prepare_genai

        name = f"smollm2-genai-{precision}"
        reference = ready.get("smollm2") or _smollm2(progress, ready)
        root = reference.parent
        dest, log = root / name, root / "genai-build.log"
        fallback = f"palm demo --portfolio {bundled(FP32_PORTFOLIO)}"
        step = "creating the GenAI model builder's environment"
        try:
            if not (dest / "model_card.json").is_file():
                if not (root / "genai-builder" / ".palm-requirements").is_file():
                    _say(
                        progress,
                        f"{step} once (onnxruntime-genai's builder, transformers 5, torch: ~1.7 GB "
                        f"in {root / 'genai-builder'}, 2-10 min; pip's output goes to {log})",
                    )
                ensure_builder_env(root, log=log)
                step = f"building the {precision} graph ({what})"
                _say(
                    progress,
                    f"{step} and checking its greedy agreement with fp32 (about 1-3 min; logs "
                    f"{log}, {dest}.prepare.log)",
                )
            else:
                step = f"checking the cached GenAI {precision} graph"
            with capture_output(dest.with_name(f"{dest.name}.prepare.log")):
                out = prepare_genai([precision], cache=root, reference=reference)[precision]
        except Exception as exc:  # builder, pip, onnx and GenAI raise many kinds; all end here
            raise ModelLoadError(
                f"preparing base {name!r} failed while {step}: {exc}. To serve the same "
                f"members on the fp32 export instead (no builder needed): {fallback}"
            ) from exc
        check = json.loads((out / "model_card.json").read_text(encoding="utf-8")).get("check", {})
        if "teacher_forced" in check:
            _say(
                progress,
                f"GenAI {precision} graph at {out}: greedy agreement with fp32 on the check "
                f"prompts {check['teacher_forced']:.0%} teacher-forced, {check['overall']:.0%} "
                "free-running",
            )
        return out

    return prepare


def _lora_preparer(base: str) -> Callable[[bool, Mapping[str, Path]], Path]:
    """Preparer of ``<base>-lora``: ``base`` with LoRA sites next to its MatMulNBits (q/v
    slices of qkv_proj)."""

    def prepare(progress: bool, ready: Mapping[str, Path]) -> Path:
        return _with_lora_sites(ready.get(base) or PREPARERS[base](progress, ready))

    return prepare


#: The base the default portfolio's prompted member runs on (its LoRA members: ``<it>-lora``).
DEFAULT_GENAI = "smollm2-genai-int4-gguf"

#: Base names the package builds offline: name → preparer(progress, bases so far) -> folder.
PREPARERS: dict[str, Callable[[bool, Mapping[str, Path]], Path]] = {
    "smollm2": _smollm2,
    "smollm2-lora": _smollm2_lora,
    "smollm2-genai-int8": _genai_preparer("int8", "8-bit blocks, the GenAI model builder"),
    "smollm2-genai-int4-gguf": _genai_preparer(
        "int4-gguf", "the GGUF's own Q4_1 / Q8_0 blocks in the builder's fused fp32 graph"
    ),
    "smollm2-genai-int8-lora": _lora_preparer("smollm2-genai-int8"),
    "smollm2-genai-int4-gguf-lora": _lora_preparer("smollm2-genai-int4-gguf"),
}
#: The bases whose preparation runs the GenAI model builder (its own ~1.7 GB environment).
GENAI_BASES = frozenset(b for b in PREPARERS if b.startswith("smollm2-genai-"))


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
        ModelLoadError: preparing a base failed (names the step and its log).
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
