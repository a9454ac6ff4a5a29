"""LoRA sites in an exported decoder graph, and ``.onnx_adapter`` files that fill them.

:func:`add_lora_sites` rewrites each target projection ``Y = X·W`` of an ONNX export as
``Y = X·W + (X·A)·B`` where A ``[d_in, lora_r]`` and B ``[lora_r, d_out]`` are *overridable
initializers* with empty defaults (rank 0): without an adapter the graph computes exactly the
base model; an ``onnxruntime.LoraAdapter`` activated per request replaces A and B
(shared/reference/onnx.md §5).

Sites are named after the torch module they stand for (``model.layers.3.self_attn.q_proj``), so
a LoRA trained on the Hugging Face model maps onto the graph by name: parameters
``<site>.lora_A`` (``d_in x r``) and ``<site>.lora_B`` (``r x d_out``, scaling folded in). The
site map is written to ``lora_sites.json`` next to ``model.onnx``.

Graphs from the ONNX Runtime GenAI model builder (``palm prepare-genai``) work the same way, so
one adapter file serves both kinds of base:

- int8/int4 projections are ``MatMulNBits`` (block-quantized weights): LoRA is additive, so the
  site adds ``(X·A)·B`` in fp32 next to the quantized product, exactly as next to a ``MatMul``;
- q/k/v are one packed ``qkv_proj``: a ``q_proj`` or ``v_proj`` site computes its own
  ``(X·A)·B`` and pads it into its slice of the packed output (widths from
  ``genai_config.json``); the builder's ``attn`` module is torch's ``self_attn``.

Build time only: needs ``onnx`` (in the ``export`` extra); writing adapters needs onnxruntime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...exceptions import EngineError, ModelLoadError

__all__ = [
    "SITES_FILE",
    "Sites",
    "add_lora_sites",
    "param_names",
    "read_sites",
    "write_adapter",
]

SITES_FILE = "lora_sites.json"
#: {site name: (d_in, d_out)}
Sites = dict[str, tuple[int, int]]
_MODEL = "model.onnx"
# onnx.save refuses protobufs above 2 GB; keep a margin for the added nodes.
_MAX_INLINE_BYTES = 1_800_000_000


def param_names(site: str) -> tuple[str, str]:
    """Names of the A and B parameters of ``site`` in the graph and in adapter files."""
    return f"{site}.lora_A", f"{site}.lora_B"


def _site_of(node: Any, genai: bool = False) -> str | None:
    """Torch module of a weight MatMul: from the node name optimum's export gives it
    (``/model/layers.3/self_attn/q_proj/MatMul`` -> ``model.layers.3.self_attn.q_proj``) or the
    GenAI builder does (``genai``: ``.../attn/qkv_proj/MatMul_Q8`` ->
    ``model.layers.3.self_attn.qkv_proj``), else from a weight named after its parameter
    (fused GPT-2: ``transformer.h.0.attn.c_attn.weight``).
    """
    m = re.fullmatch(r"/(.+)/MatMul(_\d+|_Q\d+)?", node.name)
    if m:
        module = m.group(1).replace("/", ".")
        return re.sub(r"\.attn\.", ".self_attn.", module) if genai else module
    w = node.input[1]
    return w[: -len(".weight")] if re.fullmatch(r"[\w.]+\.weight", w) else None


def _weight_dims(node: Any, inits: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(d_in, d_out)`` of a projection with a constant weight, else ``None``."""
    if node.op_type == "MatMul" and node.input[1] in inits:
        d_in, d_out = (int(d) for d in inits[node.input[1]].dims)
        return d_in, d_out
    if node.op_type == "MatMulNBits" and node.input[1] in inits:
        attrs = {a.name: a.i for a in node.attribute}
        return int(attrs["K"]), int(attrs["N"])
    return None


def _packed_slices(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """``{"qkv_proj": [("q_proj", width), ("k_proj", width), ("v_proj", width)]}`` of a GenAI
    folder (its q/k/v projections are one MatMul); empty for other graphs."""
    cfg_file = folder / "genai_config.json"
    if not cfg_file.is_file():
        return {}
    dec = json.loads(cfg_file.read_text(encoding="utf-8"))["model"]["decoder"]
    q = int(dec["num_attention_heads"]) * int(dec["head_size"])
    kv = int(dec["num_key_value_heads"]) * int(dec["head_size"])
    return {"qkv_proj": [("q_proj", q), ("k_proj", kv), ("v_proj", kv)]}


def read_sites(folder: str | Path) -> Sites:
    """The site map of a folder prepared by :func:`add_lora_sites`.

    Raises:
        ModelLoadError: ``lora_sites.json`` is missing or malformed.
    """
    path = Path(folder) / SITES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): (int(v[0]), int(v[1])) for k, v in data["sites"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(
            f"{path}: no valid LoRA site map ({exc}); prepare the base with "
            "`palm prepare-lora-base`"
        ) from exc


def _graph_sha(folder: Path) -> str:
    """sha256 of ``model.onnx``, joined with its external weights' (GenAI int8 keeps them in
    ``model.onnx.data``, so the graph file alone would not see a rebuilt model)."""
    from ..._hashing import sha256_file as _sha256

    sha = _sha256(folder / _MODEL)
    data = folder / f"{_MODEL}.data"
    return f"{sha}+{_sha256(data)}" if data.is_file() else sha


def _cached(dst: Path, base_sha: str, targets: Sequence[str]) -> Sites | None:
    from ..._hashing import sha256_file as _sha256

    try:
        data = json.loads((dst / SITES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("base_sha256") != base_sha
        or data.get("targets") != list(targets)
        or not (dst / _MODEL).is_file()
        or _sha256(dst / _MODEL) != data.get("sha256")
    ):
        return None
    return read_sites(dst)


def _add_params(g: Any, site: str, d_in: int, d_out: int) -> tuple[str, str]:
    """Rank-0 overridable A and B of ``site`` (initializers that are also graph inputs)."""
    from onnx import TensorProto, helper, numpy_helper

    a, b = param_names(site)
    g.initializer.extend(
        [
            numpy_helper.from_array(np.zeros((d_in, 0), np.float32), a),
            numpy_helper.from_array(np.zeros((0, d_out), np.float32), b),
        ]
    )
    # The shared symbolic rank lets one adapter file of any rank fill every site.
    g.input.extend(
        [
            helper.make_tensor_value_info(a, TensorProto.FLOAT, [d_in, "lora_r"]),
            helper.make_tensor_value_info(b, TensorProto.FLOAT, ["lora_r", d_out]),
        ]
    )
    return a, b


def _inject(
    proto: Any, targets: Sequence[str], packed: Mapping[str, list[tuple[str, int]]]
) -> Sites:
    """Rewrite ``proto`` in place; returns the sites added.

    ``packed`` names projections that hold several modules side by side in their output
    (``qkv_proj``: q, k, v); a target naming one of those modules gets a site that adds its
    ``(X·A)·B`` to its slice only.
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    sites: Sites = {}
    nodes = []
    for node in g.node:
        nodes.append(node)
        module = _site_of(node, bool(packed)) if node.op_type in ("MatMul", "MatMulNBits") else None
        dims = _weight_dims(node, inits) if module is not None else None
        if module is None or dims is None:
            continue
        d_in, d_out = dims
        parent, _, last = module.rpartition(".")
        if last in targets:  # the whole projection
            parts = [(module, 0, d_out, False)]
        else:
            parts, offset = [], 0
            for sub, width in packed.get(last, []):
                if sub in targets:
                    parts.append((f"{parent}.{sub}", offset, width, True))
                offset += width
            if parts and offset != d_out:
                raise EngineError(
                    f"{module}: packed widths {packed[last]} sum to {offset}, not its "
                    f"{d_out} outputs; genai_config.json does not describe this graph"
                )
        if not parts:
            continue
        x, y = node.input[0], node.output[0]
        total = f"{module}.lora_base"
        node.output[0] = total
        for i, (site, offset, width, pad) in enumerate(parts):
            if site in sites:
                raise EngineError(f"two MatMul nodes map to LoRA site {site!r}; cannot name sites")
            sites[site] = (d_in, width)
            a, b = _add_params(g, site, d_in, width)
            delta = f"{site}.lora_xab"
            nodes += [
                helper.make_node("MatMul", [x, a], [f"{site}.lora_xa"]),
                helper.make_node("MatMul", [f"{site}.lora_xa", b], [delta]),
            ]
            if pad:  # into its slice of the packed output: zeros before and after
                pads, axes = f"{site}.lora_pads", f"{site}.lora_axes"
                g.initializer.extend(
                    [
                        numpy_helper.from_array(
                            np.asarray([offset, d_out - offset - width], np.int64), pads
                        ),
                        numpy_helper.from_array(np.asarray([-1], np.int64), axes),
                    ]
                )
                nodes.append(helper.make_node("Pad", [delta, pads, "", axes], [f"{site}.lora_pad"]))
                delta = f"{site}.lora_pad"
            out = y if i == len(parts) - 1 else f"{site}.lora_sum"
            nodes.append(helper.make_node("Add", [total, delta], [out]))
            total = out
    del g.node[:]
    g.node.extend(nodes)
    return sites


def add_lora_sites(
    src_folder: str | Path,
    dst_folder: str | Path,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    *,
    force: bool = False,
) -> Sites:
    """Copy the model folder ``src_folder`` to ``dst_folder`` with rank-0 LoRA sites.

    Every file (tokenizer, configs, ``model_card.json``) is copied; ``model.onnx`` gets a site
    on each MatMul / MatMulNBits whose torch module name ends in one of ``targets`` (or on the
    slice of a packed ``qkv_proj`` that module owns, in a GenAI folder); ``lora_sites.json``
    records the sites, the targets and the sha256 of both graphs. The card gains a ``lora``
    section and the new graph's sha256. Nothing is redone when ``dst_folder`` already holds
    sites for the same base sha256 and targets (unless ``force``). The folder is written into
    a temporary sibling and renamed, so readers never see a half-written folder.

    Returns:
        ``{site: (d_in, d_out)}``, e.g. ``{"model.layers.0.self_attn.q_proj": (576, 576)}``.

    Raises:
        ModelLoadError: ``src_folder`` holds no ``model.onnx``.
        EngineError: no MatMul matches ``targets``.
    """
    import onnx

    from ..._hashing import sha256_file as _sha256

    src, dst = Path(src_folder), Path(dst_folder)
    if not (src / _MODEL).is_file():
        raise ModelLoadError(f"{src}: no {_MODEL}; prepare the base with `palm prepare-base`")
    targets = list(targets)
    base_sha = _graph_sha(src)
    if not force and (found := _cached(dst, base_sha, targets)) is not None:
        return found
    proto = onnx.load(str(src / _MODEL))
    sites = _inject(proto, targets, _packed_slices(src))
    if not sites:
        raise EngineError(
            f"{src / _MODEL}: no MatMul or MatMulNBits of a module named {targets}; the graph "
            "is neither an optimum export nor a GenAI model builder graph of a Llama-style decoder"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        out = work / dst.name
        shutil.copytree(src, out, ignore=shutil.ignore_patterns(_MODEL, "*.onnx.data", SITES_FILE))
        external = proto.ByteSize() > _MAX_INLINE_BYTES
        onnx.save(
            proto,
            str(out / _MODEL),
            save_as_external_data=external,
            location=f"{_MODEL}.data" if external else None,
        )
        del proto
        sha = _sha256(out / _MODEL)
        (out / SITES_FILE).write_text(
            json.dumps(
                {
                    "base_sha256": base_sha,
                    "sha256": sha,
                    "targets": targets,
                    "sites": {k: list(v) for k, v in sites.items()},
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        card_file = out / "model_card.json"
        if card_file.is_file():
            card = json.loads(card_file.read_text(encoding="utf-8"))
            card["lora"] = {
                "base_sha256": base_sha,
                "targets": targets,
                "n_sites": len(sites),
                "sites_file": SITES_FILE,
            }
            card["sha256"] = sha
            card_file.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        old = None
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            dst.rename(old)
        out.rename(dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sites


def _validate(
    params: Mapping[str, npt.ArrayLike], sites: Mapping[str, tuple[int, int]]
) -> dict[str, npt.NDArray[np.float32]]:
    by_name = {}
    for site in sites:
        a, b = param_names(site)
        by_name[a], by_name[b] = (site, "A"), (site, "B")
    out: dict[str, npt.NDArray[np.float32]] = {}
    ranks: dict[str, int] = {}
    for name, value in params.items():
        if name not in by_name:
            near = sorted(by_name)[:2]
            raise EngineError(
                f"adapter parameter {name!r} is not a LoRA site of the base "
                f"(names look like {near})"
            )
        site, part = by_name[name]
        arr = np.asarray(value, dtype=np.float32)
        d_in, d_out = sites[site]
        if (
            arr.ndim != 2
            or (part == "A" and arr.shape[0] != d_in)
            or (part == "B" and arr.shape[1] != d_out)
        ):
            want = f"({d_in}, r)" if part == "A" else f"(r, {d_out})"
            raise EngineError(f"LoRA site {site!r}: {part} has shape {arr.shape}, expected {want}")
        if not np.isfinite(arr).all():
            raise EngineError(f"LoRA site {site!r}: {part} has NaN or infinite values")
        ranks[name] = arr.shape[1] if part == "A" else arr.shape[0]
        out[name] = np.ascontiguousarray(arr)
    if not out:
        raise EngineError("the adapter has no parameters")
    for name, (site, part) in by_name.items():
        other = param_names(site)[1 if part == "A" else 0]
        if (name in out) != (other in out):
            raise EngineError(f"LoRA site {site!r}: {part} is given without its partner")
    if len(set(ranks.values())) > 1:
        raise EngineError(
            f"LoRA ranks differ between sites ({sorted(set(ranks.values()))}); "
            "one adapter file has one rank"
        )
    return out


def write_adapter(
    path: str | Path,
    params: Mapping[str, npt.ArrayLike],
    sites: Mapping[str, tuple[int, int]] | str | Path,
) -> Path:
    """Write ``params`` (``{<site>.lora_A | <site>.lora_B: array}``) as an ``.onnx_adapter``.

    Args:
        path: The adapter file to write.
        params: A and B per site, float32-castable; sites left out keep rank 0 (base).
        sites: The site map, or a folder prepared by :func:`add_lora_sites`.

    Raises:
        EngineError: unknown parameter, wrong shape, A without B, mixed ranks, non-finite
            values; the message names the site.
    """
    import onnxruntime as ort

    site_map = read_sites(sites) if isinstance(sites, (str, Path)) else sites
    arrays = _validate(params, site_map)
    af = ort.AdapterFormat()
    af.set_adapter_version(1)
    af.set_model_version(1)
    af.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    af.export_adapter(str(out))
    return out
