"""Weight soups of two ONNX exports: ``(1 - lam) * A + lam * B``, per initializer.

Two exports of the same architecture and config have identical node lists and initializer
names, so mixing their initializers gives the ONNX model of the mixed weights exactly. The soup
is written as a new model folder; ``SessionOptions.add_initializer`` is no substitute (with graph
optimizations on, ONNX Runtime silently uses neither A nor B).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._hashing import sha256_file as _sha256
from ...engines.model import find_model_file
from ...exceptions import InvalidParameterError, ModelLoadError

__all__ = ["SoupResult", "soup"]

_TWO_GB = 2**31 - 1  # protobuf's limit: larger models keep weights in external data
_COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class SoupResult:
    """What :func:`soup` wrote."""

    path: Path
    n_mixed: int
    n_shared: int
    card: dict[str, Any]


def _signature(model: Any) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in model.graph.node]


def soup(a: str | Path, b: str | Path, lam: float, out: str | Path) -> SoupResult:
    """Write the soup of model folders ``a`` and ``b`` to folder ``out``.

    Args:
        a: First model folder (its tokenizer and configs are copied).
        b: Second model folder, same architecture and export.
        lam: Weight of ``b``, in [0, 1]: 0 gives ``a``, 1 gives ``b``.
        out: Output folder (created; must not hold a model already).

    Raises:
        ModelLoadError: A folder has no model, or the graphs do not match.
        InvalidParameterError: ``lam`` is outside [0, 1] or ``out`` already holds a model.
    """
    import onnx
    from onnx import numpy_helper

    if not isinstance(lam, int | float) or isinstance(lam, bool) or not 0.0 <= lam <= 1.0:
        raise InvalidParameterError(f"lam must be a number in [0, 1]; got {lam!r}")
    a, b, out = Path(a), Path(b), Path(out)
    fa, fb = find_model_file(a), find_model_file(b)
    if (out / "model.onnx").exists():
        raise InvalidParameterError(f"{out} already holds model.onnx; choose a new folder")
    try:
        ma, mb = onnx.load(str(fa)), onnx.load(str(fb))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelLoadError(f"{fa} or {fb}: not a readable ONNX file ({exc})") from exc
    if _signature(ma) != _signature(mb):
        raise ModelLoadError(
            f"{fa} and {fb} have different graphs ({len(ma.graph.node)} vs "
            f"{len(mb.graph.node)} nodes, or other ops/names); a soup needs two exports of the "
            "same architecture and config made with the same exporter versions"
        )
    init_b = {t.name: t for t in mb.graph.initializer}
    names_a = [t.name for t in ma.graph.initializer]
    if sorted(names_a) != sorted(init_b):
        diff = sorted(set(names_a) ^ set(init_b))[:5]
        raise ModelLoadError(f"{fa} and {fb} have different initializers (e.g. {diff})")
    n_mixed = n_shared = 0
    for ia in ma.graph.initializer:
        xa = numpy_helper.to_array(ia)
        xb = numpy_helper.to_array(init_b[ia.name])
        if xa.shape != xb.shape or xa.dtype != xb.dtype:
            raise ModelLoadError(
                f"initializer {ia.name!r}: {xa.dtype}{list(xa.shape)} in {fa} but "
                f"{xb.dtype}{list(xb.shape)} in {fb}"
            )
        if np.array_equal(xa, xb):
            n_shared += 1  # constants and tied buffers: keep bit-exact
            continue
        if xa.dtype.kind != "f":
            raise ModelLoadError(
                f"initializer {ia.name!r} ({xa.dtype}) differs between {fa} and {fb}; only "
                "float weights can be mixed"
            )
        mixed = (1.0 - lam) * xa.astype(np.float64) + lam * xb.astype(np.float64)
        ia.CopyFrom(numpy_helper.from_array(mixed.astype(xa.dtype), ia.name))
        n_mixed += 1
    out.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        if (a / name).is_file():
            shutil.copy2(a / name, out / name)
    big = ma.ByteSize() > _TWO_GB
    onnx.save(
        ma,
        str(out / "model.onnx"),
        save_as_external_data=big,
        location="model.onnx.data" if big else None,
    )
    card = {
        "kind": "soup",
        "lam": float(lam),
        "sources": [
            {"path": str(a.resolve()), "sha256": _sha256(fa), "weight": 1.0 - float(lam)},
            {"path": str(b.resolve()), "sha256": _sha256(fb), "weight": float(lam)},
        ],
        "n_mixed": n_mixed,
        "n_shared": n_shared,
        "sha256": _sha256(out / "model.onnx"),
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return SoupResult(out, n_mixed, n_shared, card)
