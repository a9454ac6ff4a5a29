"""Weight-only int8 / int4 quantization of an exported decoder, with a quality check.

At batch 1 a decode step reads every weight once, so fp32 decoding is memory-bound
(bench/results/engine.md). Storing the MatMul weights as 8- or 4-bit blocks with one fp32 scale
and zero point per ``block_size`` values (ONNX Runtime's ``com.microsoft.MatMulNBits``, which
the CPU execution provider runs) cuts the bytes per token by ~3.5x / ~6x.

What is quantized, and why:

- every ``MatMul`` whose second input is a constant fp32 ``[K, N]`` matrix (the linear layers);
- the LM head too unless ``lm_head=False``: it is the largest single matrix (e.g. 113 of 538 MB
  in SmolLM2-135M), so it matters most for speed, but its error goes straight into the logits.
  Tied heads (``MatMul(x, Transpose(embedding))``) are quantized from the embedding;
- never the embedding table (``Gather``): a step reads one row of it, so quantizing it saves
  disk, not time, and it stays bit-exact for the (possibly tied) input side;
- never LoRA sites (initializers that are also graph inputs): adapters override them at run
  time, so they must keep their fp32 type; LoRA members keep working on a quantized base.

Quantization changes greedy outputs slightly. :func:`quantize` therefore always compares the
result with its fp32 source through :class:`~palm_middleware.engines.onnx.OnnxEngine` and writes
the agreement into ``model_card.json``; it is an opt-in artifact, never a silent replacement.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..._hashing import sha256_file as _sha256
from ...engines.model import find_model_file
from ...exceptions import InvalidParameterError, ModelLoadError
from .._progress import progress_bar

__all__ = [
    "CHECK_PROMPTS",
    "QuantizeResult",
    "agreement",
    "agreement_case",
    "agreement_summary",
    "quantize",
    "quantize_weight",
]

logger = logging.getLogger("palm_middleware.engines")

_TWO_GB = 2**31 - 1  # protobuf's limit: larger models keep weights in external data
_MODEL_FILES = {"model.onnx", "model.onnx.data", "model.onnx_data", "model_card.json"}
_MS = "com.microsoft"

CHECK_PROMPTS = (
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):",
    "Explain why the sky is blue in one paragraph.",
)
"""Prompts of the quality check (chat-formatted when the model has a chat template)."""


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` wrote."""

    path: Path
    n_quantized: int
    card: dict[str, Any]


def quantize_weight(
    w: npt.NDArray[np.float32], bits: int, block_size: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Asymmetric blockwise quantization of ``w [K, N]`` in MatMulNBits' layout.

    Returns ``(blob [N, n_blocks, block_size * bits / 8], scales [N * n_blocks],
    zero_points)``, where each column of ``w`` is cut into blocks of ``block_size`` rows (the
    last one zero-padded) and ``w ≈ (q - zero_point) * scale``. 4-bit values are packed two per
    byte, low nibble first; 4-bit zero points likewise, each column padded to whole bytes.
    """
    k, n = w.shape
    n_blocks = -(-k // block_size)
    wt = np.zeros((n, n_blocks * block_size), dtype=np.float32)
    wt[:, :k] = w.T
    blocks = wt.reshape(n, n_blocks, block_size)
    qmax = (1 << bits) - 1
    # The range always contains 0, so zero weights (padding, pruned rows) stay exact.
    lo = np.minimum(blocks.min(axis=2), 0.0)
    hi = np.maximum(blocks.max(axis=2), 0.0)
    scale = (hi - lo) / qmax
    scale[scale == 0] = 1.0  # an all-zero block: any scale reproduces it
    zp = np.clip(np.rint(-lo / scale), 0, qmax)
    q = np.clip(np.rint(blocks / scale[..., None]) + zp[..., None], 0, qmax).astype(np.uint8)
    zp8 = zp.astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
        if n_blocks % 2:
            zp8 = np.concatenate([zp8, np.zeros((n, 1), dtype=np.uint8)], axis=1)
        zp8 = zp8[:, 0::2] | (zp8[:, 1::2] << 4)
    return q, scale.astype(np.float32).reshape(-1), zp8.reshape(-1)


def _is_lm_head(node: Any, graph_outputs: set[str]) -> bool:
    return bool(node.output[0] in graph_outputs or "lm_head" in node.name)


def _rewrite(
    model: Any, bits: int, block_size: int, lm_head: bool, accuracy_level: int
) -> dict[str, Any]:
    """Replace eligible MatMuls of ``model`` in place; return counts for the card."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    overridable = {i.name for i in g.input} & set(inits)  # LoRA sites: never quantized
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    outputs = {o.name for o in g.output}

    def constant_weight(name: str) -> tuple[npt.NDArray[np.float32], Any] | None:
        """The fp32 [K, N] matrix behind ``name`` and the Transpose node it came through."""
        if name in inits and name not in overridable:
            arr = numpy_helper.to_array(inits[name])
            return (arr, None) if arr.dtype == np.float32 and arr.ndim == 2 else None
        tr = producers.get(name)
        if (
            tr is None
            or tr.op_type != "Transpose"
            or tr.input[0] not in inits
            or tr.input[0] in overridable
        ):
            return None
        perm = [list(a.ints) for a in tr.attribute if a.name == "perm"]
        arr = numpy_helper.to_array(inits[tr.input[0]])
        if arr.dtype != np.float32 or arr.ndim != 2 or perm not in ([], [[1, 0]]):
            return None
        return arr.T, tr

    stats: dict[str, Any] = {
        "n_matmul": sum(n.op_type == "MatMul" for n in g.node),
        "n_quantized": 0,
        "lm_head": None,
        "fp32_bytes": 0,
        "quantized_bytes": 0,
    }
    new_nodes: list[Any] = []
    dropped: set[str] = set()
    for node in g.node:
        found = (
            constant_weight(node.input[1])
            if node.op_type == "MatMul" and len(node.input) == 2
            else None
        )
        if found is None or (not lm_head and _is_lm_head(node, outputs)):
            if found is not None:
                stats["lm_head"] = "kept fp32"
            new_nodes.append(node)
            continue
        w, transpose = found
        k, n_out = w.shape
        blob, scales, zps = quantize_weight(w, bits, block_size)
        base = node.name.strip("/").replace("/", "_") or node.output[0]
        names = [f"{base}.q{bits}", f"{base}.scales", f"{base}.zero_points"]
        arrays: tuple[npt.NDArray[Any], ...] = (blob, scales, zps)
        for arr, name in zip(arrays, names, strict=True):
            g.initializer.append(numpy_helper.from_array(arr, name))
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], *names],
                list(node.output),
                name=node.name + "Q",
                domain=_MS,
                K=k,
                N=n_out,
                bits=bits,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
        )
        if _is_lm_head(node, outputs):
            stats["lm_head"] = f"int{bits}" + (
                " (tied: quantized from the embedding)" if transpose is not None else ""
            )
        stats["n_quantized"] += 1
        stats["fp32_bytes"] += w.nbytes
        stats["quantized_bytes"] += blob.nbytes + scales.nbytes + zps.nbytes
        consumers[node.input[1]] -= 1
        if consumers[node.input[1]] == 0:
            dropped.add(node.input[1])
            if transpose is not None:
                consumers[transpose.input[0]] -= 1
                if consumers[transpose.input[0]] == 0:
                    dropped.add(transpose.input[0])
    kept = [n for n in new_nodes if not (n.op_type == "Transpose" and n.output[0] in dropped)]
    del g.node[:]
    g.node.extend(kept)
    live = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(live)
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
    return stats


def _logits(model: Any, ids: list[int]) -> npt.NDArray[np.float32]:
    """Logits of every position of ``ids`` in one pass from an empty cache: ``[len, vocab]``."""
    from ...engines._runtime import run_session

    n = len(ids)
    feeds: dict[str, Any] = {
        "input_ids": np.asarray([ids], dtype=model.ids_dtype),
        **{k.input_name: k.empty() for k in model.kv_inputs},
    }
    if "attention_mask" in model.input_names:
        feeds["attention_mask"] = np.ones((1, n), dtype=np.int64)
    if "position_ids" in model.input_names:
        feeds["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
    out = run_session(model.session, [model.logits_name], feeds, None, model.path.name)
    return np.asarray(out[0][0], dtype=np.float32)


def agreement(
    reference: str | Path,
    candidate: str | Path,
    prompts: Sequence[str] = CHECK_PROMPTS,
    n_tokens: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare ``candidate``'s greedy decoding with ``reference``'s, prompt by prompt.

    Both folders run through :class:`OnnxEngine` (KV-cache path, ``max_tokens=n_tokens``, EOS
    ignored so every run has ``n_tokens`` tokens). Reported:

    - ``prefix``: share of positions equal before the first divergence (mean over prompts);
    - ``overall``: share of positions equal anywhere in the two free-running sequences;
    - ``teacher_forced``: share of positions where the candidate's top token equals the
      reference's token when both see the reference's sequence (divergence does not cascade);
    - ``max_logit_diff_first_step``: largest |logit difference| on the first generated token.
    """
    from ...engines.onnx import OnnxEngine

    if n_tokens < 1:
        raise InvalidParameterError(f"n_tokens must be >= 1; got {n_tokens}")
    if not prompts:
        raise InvalidParameterError("agreement needs at least one prompt")
    ref, cand = OnnxEngine(reference).load(), OnnxEngine(candidate).load()
    bar = progress_bar(len(prompts), "quality check", progress)
    cases: list[dict[str, Any]] = []
    for text in prompts:
        prompt: Any = (
            [{"role": "user", "content": text}] if ref.model.chat_template is not None else text
        )
        ids = ref.encode_prompt(prompt)
        params = ref.defaults.merged({"max_tokens": n_tokens, "temperature": 0.0})
        # _tokens ignores EOS, so both sequences have exactly n_tokens positions to compare.
        a = list(ref._tokens(ref.model, ids, params, None))
        b = list(cand._tokens(cand.model, ids, params, None))
        seq = ids + a[:-1]
        lr, lc = _logits(ref.model, seq)[len(ids) - 1 :], _logits(cand.model, seq)[len(ids) - 1 :]
        case = agreement_case(text, a, b, lc.argmax(axis=1))
        case["max_logit_diff_first_step"] = float(np.abs(lr[0] - lc[0]).max())
        case["max_logit_diff"] = float(np.abs(lr - lc).max())
        cases.append(case)
        bar.update(1)
    bar.close()
    out = agreement_summary(cases, n_tokens)
    out["max_logit_diff_first_step"] = max(c["max_logit_diff_first_step"] for c in cases)
    return out


def agreement_case(
    prompt: str, reference: list[int], candidate: list[int], forced: Any
) -> dict[str, Any]:
    """One prompt's greedy comparison: both sequences, where they first part, how many
    positions are equal, and how many of the candidate's teacher-forced top tokens (``forced``,
    on the reference's sequence) equal the reference's."""
    pairs = list(zip(reference, candidate, strict=False))  # GenAI may stop one early at EOS
    return {
        "prompt": prompt,
        "reference": reference,
        "candidate": candidate,
        "first_divergence": next((i for i, (x, y) in enumerate(pairs) if x != y), len(reference)),
        "equal": sum(x == y for x, y in pairs),
        "teacher_forced_equal": int((np.asarray(forced) == np.asarray(reference)).sum()),
    }


def agreement_summary(cases: list[dict[str, Any]], n_tokens: int) -> dict[str, Any]:
    """The shares over all prompts' :func:`agreement_case` records (``prefix``, ``overall``,
    ``teacher_forced``), the records kept under ``cases``."""
    total = n_tokens * len(cases)
    return {
        "n_prompts": len(cases),
        "n_tokens": n_tokens,
        "prefix": round(float(np.mean([c["first_divergence"] / n_tokens for c in cases])), 4),
        "overall": round(sum(c["equal"] for c in cases) / total, 4),
        "teacher_forced": round(sum(c["teacher_forced_equal"] for c in cases) / total, 4),
        "cases": cases,
    }


def _check_args(bits: int, block_size: int, accuracy_level: int) -> None:
    if bits not in (4, 8) or isinstance(bits, bool):
        raise InvalidParameterError(f"bits must be 4 or 8; got {bits!r}")
    if (
        not isinstance(block_size, int)
        or isinstance(block_size, bool)
        or block_size < 16
        or block_size & (block_size - 1)
    ):
        raise InvalidParameterError(
            f"block_size must be a power of two >= 16 (MatMulNBits); got {block_size!r}"
        )
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise InvalidParameterError(f"accuracy_level must be 0..4; got {accuracy_level!r}")
    if bits == 8 and accuracy_level < 4:
        # Measured (bench/results/engine.md): ORT's CPU kernel dequantizes 8-bit weights on
        # every call at fp32 compute, ~10x slower than the fp32 MatMul it replaces.
        logger.warning(
            "8-bit weights with accuracy_level %d run ~10x slower than fp32 on CPU; "
            "use accuracy_level=4 for speed",
            accuracy_level,
        )


def quantize(
    src: str | Path,
    out: str | Path,
    *,
    bits: int = 4,
    block_size: int = 32,
    lm_head: bool = True,
    accuracy_level: int = 4,
    check_prompts: Sequence[str] = CHECK_PROMPTS,
    check_tokens: int = 32,
    progress: bool = True,
) -> QuantizeResult:
    """Write a weight-only quantized copy of model folder ``src`` to ``out``.

    Args:
        src: An exported fp32 model folder (``palm export``): ``model.onnx`` + tokenizer.
        out: New folder; every other file of ``src`` (tokenizer, configs, chat template) is
            copied, and ``model_card.json`` gets a ``quantization`` section.
        bits: 8 or 4 bits per weight.
        block_size: Weights sharing one scale and zero point (power of two, >= 16).
        lm_head: Quantize the LM head too (see the module docstring).
        accuracy_level: MatMulNBits' compute type of the activations: 4 = int8 (fastest on
            CPU, adds activation rounding), 0/1 = fp32 (8-bit weights: ~10x slower than fp32
            on CPU, logged as a warning).
        check_prompts: Prompts of the greedy-agreement check against ``src``.
        check_tokens: Tokens generated per prompt in the check.
        progress: Show progress bars (on a terminal).

    Raises:
        ModelLoadError: ``src`` is missing, unreadable, already quantized or has nothing to
            quantize; or the quantized graph does not load.
        InvalidParameterError: Bad ``bits``/``block_size``, or ``out`` already holds a model.
    """
    import onnx

    _check_args(bits, block_size, accuracy_level)
    if check_tokens < 1 or not check_prompts:
        raise InvalidParameterError("the quality check needs >= 1 prompt and check_tokens >= 1")
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    src_file = find_model_file(src)
    if not (src / "tokenizer.json").is_file():
        raise ModelLoadError(f"{src}: tokenizer.json is missing; not a complete model folder")
    if src.resolve() == out.resolve():
        raise InvalidParameterError("out must differ from src; the source stays untouched")
    if (out / "model.onnx").exists():
        raise InvalidParameterError(f"{out} already holds model.onnx; choose a new folder")
    bar = progress_bar(4, f"palm quantize int{bits}", progress)
    try:
        model = onnx.load(str(src_file))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise ModelLoadError(f"{src_file}: not a readable ONNX file ({exc})") from exc
    if any(
        n.op_type in ("MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul")
        for n in model.graph.node
    ):
        raise ModelLoadError(f"{src_file}: already quantized; quantize the fp32 export instead")
    bar.update(1)
    stats = _rewrite(model, bits, block_size, lm_head, accuracy_level)
    if stats["n_quantized"] == 0:
        raise ModelLoadError(
            f"{src_file}: no MatMul with a constant fp32 weight found ({stats['n_matmul']} "
            "MatMuls); nothing to quantize"
        )
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name not in _MODEL_FILES:
            shutil.copy2(p, out / p.name)
    big = model.ByteSize() > _TWO_GB
    onnx.save(
        model,
        str(out / "model.onnx"),
        save_as_external_data=big,
        location="model.onnx.data" if big else None,
    )
    del model
    bar.update(2)
    check = agreement(src, out, check_prompts, check_tokens, progress)
    bar.update(1)
    bar.close()
    src_card_file = src / "model_card.json"
    try:
        card: dict[str, Any] = (
            json.loads(src_card_file.read_text(encoding="utf-8")) if src_card_file.is_file() else {}
        )
    except (OSError, json.JSONDecodeError):
        card = {}  # an unreadable card is not worth failing for; the source sha256 is recorded
    card["quantization"] = {
        "method": "MatMulNBits (weight-only, asymmetric, blockwise; palm_middleware.engines"
        ".quantize)",
        "bits": bits,
        "block_size": block_size,
        "accuracy_level": accuracy_level,
        "lm_head": stats["lm_head"] or "none found",
        "embeddings": "fp32 (Gather reads one row per token)",
        "n_quantized": stats["n_quantized"],
        "n_matmul": stats["n_matmul"],
        "weights_mb": {
            "fp32": round(stats["fp32_bytes"] / 1e6, 2),
            "quantized": round(stats["quantized_bytes"] / 1e6, 2),
        },
        "source": {"path": str(src.resolve()), "sha256": _sha256(src_file)},
        "sha256": _sha256(out / "model.onnx"),
        "seconds": round(time.perf_counter() - started, 1),
        "agreement": check,
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return QuantizeResult(out, int(stats["n_quantized"]), card)
