"""A tiny decoder-only LM built directly with ``onnx.helper``, plus its numpy reference.

The graph has the interface optimum exports for ``text-generation-with-past`` (``input_ids``,
``attention_mask``, ``position_ids``, ``past_key_values.{i}.key/.value`` -> ``logits``,
``present.{i}.key/.value``), so the engine is tested on the real contract without torch. The
numpy forward pass recomputes the whole sequence without a cache: equal greedy tokens mean the
engine's KV-cache, position and mask handling are right.

Architecture (GPT-2-like, pre-LayerNorm): token + learned position embeddings; per layer
multi-head causal self-attention and a ReLU MLP with residuals; final LayerNorm; LM head.
With ``lora=True`` each query projection is ``X·Wq + (X·A)·B`` with A/B overridable
initializers that default to rank 0 (onnx.md §5), so ``.onnx_adapter`` files can apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = npt.NDArray[np.float32]

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Portfolio members are routed per user, within the deployment's bounds.",
    "Héllo wörld! Ça va? naïve café, crème brûlée, smörgåsbord, jalapeño.",
    "日本語のテキストと中文文本, 한국어 문장, Ελληνικά, русский текст.",
    "Emoji: 🙂 🚀 🎉 👍🏽 — and math: ∑ ∫ √ ≤ ≥ ≠ ∞ π.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Answer in one line. Be brief. Explain step by step. Thank you!",
]


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny model."""

    vocab_size: int
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    max_positions: int = 128

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def train_tokenizer(out: Path, vocab_size: int = 400) -> int:
    """Train a byte-level BPE on :data:`CORPUS`; write ``tokenizer.json``; return its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return int(tok.get_vocab_size(with_added_tokens=True))


def init_weights(cfg: TinyConfig, seed: int) -> dict[str, F32]:
    """Random weights, scaled so that logits are spread (sampling has something to choose)."""
    rng = np.random.default_rng(seed)
    d, v = cfg.d_model, cfg.vocab_size

    def w(*shape: int, scale: float) -> F32:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    out: dict[str, F32] = {
        "wte": w(v, d, scale=1.0),
        "wpe": w(cfg.max_positions, d, scale=0.5),
        "lnf.g": (1 + w(d, scale=0.1)).astype(np.float32),
        "lnf.b": w(d, scale=0.1),
        "lm_head": w(d, v, scale=3.0 / np.sqrt(d)),
    }
    for i in range(cfg.n_layers):
        for name, shape in [
            ("q", (d, d)),
            ("k", (d, d)),
            ("v", (d, d)),
            ("o", (d, d)),
            ("fc1", (d, 4 * d)),
            ("fc2", (4 * d, d)),
        ]:
            out[f"h.{i}.{name}"] = w(*shape, scale=1.0 / np.sqrt(shape[0]))
        for ln in ("ln1", "ln2"):
            out[f"h.{i}.{ln}.g"] = (1 + w(d, scale=0.1)).astype(np.float32)
            out[f"h.{i}.{ln}.b"] = w(d, scale=0.1)
    return out


def build_graph(cfg: TinyConfig, weights: dict[str, F32], lora: bool = False) -> onnx.ModelProto:
    """The ONNX decoder with KV cache for ``weights``."""
    d, h, hd = cfg.d_model, cfg.n_heads, cfg.head_dim
    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items()]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", cfg.vocab_size])
    ]

    def const(name: str, value: npt.NDArray[np.generic]) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, ins: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=f"/{out}", **attrs))
        return out

    const("c.heads", np.array([0, 0, h, hd], dtype=np.int64))
    const("c.merge", np.array([0, 0, d], dtype=np.int64))
    const("c.scale", np.array(1.0 / np.sqrt(hd), dtype=np.float32))
    const("c.neg", np.array(-1e9, dtype=np.float32))
    const("c.zero", np.array(0, dtype=np.int64))
    const("c.one", np.array(1, dtype=np.int64))
    const("c.ax0", np.array([0], dtype=np.int64))
    const("c.ax1", np.array([1], dtype=np.int64))
    const("c.ax12", np.array([1, 2], dtype=np.int64))

    # Causal mask over [past + seq] keys, combined with attention_mask: shape [b, 1, s, t].
    node("Shape", ["attention_mask"], "t1", start=1, end=2)
    node("Shape", ["input_ids"], "s1", start=1, end=2)
    node("Squeeze", ["t1", "c.ax0"], "t")
    node("Squeeze", ["s1", "c.ax0"], "s")
    node("Sub", ["t", "s"], "p")
    node("Range", ["p", "t", "c.one"], "rows")
    node("Range", ["c.zero", "t", "c.one"], "cols")
    node("Unsqueeze", ["rows", "c.ax1"], "rows2")
    node("Unsqueeze", ["cols", "c.ax0"], "cols2")
    node("LessOrEqual", ["cols2", "rows2"], "causal")
    node("Unsqueeze", ["attention_mask", "c.ax12"], "am4")
    node("Cast", ["am4"], "am_bool", to=TensorProto.BOOL)
    node("And", ["causal", "am_bool"], "mask")

    node("Gather", ["wte", "input_ids"], "tok_emb")
    node("Gather", ["wpe", "position_ids"], "pos_emb")
    x = node("Add", ["tok_emb", "pos_emb"], "x0")
    for i in range(cfg.n_layers):
        pre = f"h.{i}"
        ln1 = node(
            "LayerNormalization",
            [x, f"{pre}.ln1.g", f"{pre}.ln1.b"],
            f"{pre}.ln1",
            axis=-1,
            epsilon=1e-5,
        )
        q = node("MatMul", [ln1, f"{pre}.q"], f"{pre}.q_lin")
        if lora:
            a_name, b_name = f"lora.{i}.q.A", f"lora.{i}.q.B"
            const(a_name, np.zeros((d, 0), dtype=np.float32))
            const(b_name, np.zeros((0, d), dtype=np.float32))
            # Graph inputs that also have initializers = overridable by a LoRA adapter.
            inputs.append(helper.make_tensor_value_info(a_name, TensorProto.FLOAT, [d, "r"]))
            inputs.append(helper.make_tensor_value_info(b_name, TensorProto.FLOAT, ["r", d]))
            node("MatMul", [ln1, a_name], f"{pre}.q_xa")
            node("MatMul", [f"{pre}.q_xa", b_name], f"{pre}.q_xab")
            q = node("Add", [q, f"{pre}.q_xab"], f"{pre}.q_lora")
        k = node("MatMul", [ln1, f"{pre}.k"], f"{pre}.k_lin")
        v = node("MatMul", [ln1, f"{pre}.v"], f"{pre}.v_lin")
        heads = {}
        for nm, t in (("q", q), ("k", k), ("v", v)):
            r = node("Reshape", [t, "c.heads"], f"{pre}.{nm}_r")
            heads[nm] = node("Transpose", [r], f"{pre}.{nm}_h", perm=[0, 2, 1, 3])
        for kv in ("key", "value"):
            past = f"past_key_values.{i}.{kv}"
            inputs.append(
                helper.make_tensor_value_info(past, TensorProto.FLOAT, ["batch", h, "past", hd])
            )
            outputs.append(
                helper.make_tensor_value_info(
                    f"present.{i}.{kv}", TensorProto.FLOAT, ["batch", h, "total", hd]
                )
            )
            node("Concat", [past, heads[kv[0]]], f"present.{i}.{kv}", axis=2)
        node("Transpose", [f"present.{i}.key"], f"{pre}.kT", perm=[0, 1, 3, 2])
        node("MatMul", [heads["q"], f"{pre}.kT"], f"{pre}.scores_raw")
        node("Mul", [f"{pre}.scores_raw", "c.scale"], f"{pre}.scores")
        node("Where", ["mask", f"{pre}.scores", "c.neg"], f"{pre}.masked")
        node("Softmax", [f"{pre}.masked"], f"{pre}.attn", axis=-1)
        node("MatMul", [f"{pre}.attn", f"present.{i}.value"], f"{pre}.ctx_h")
        node("Transpose", [f"{pre}.ctx_h"], f"{pre}.ctx_t", perm=[0, 2, 1, 3])
        node("Reshape", [f"{pre}.ctx_t", "c.merge"], f"{pre}.ctx")
        node("MatMul", [f"{pre}.ctx", f"{pre}.o"], f"{pre}.attn_out")
        x = node("Add", [x, f"{pre}.attn_out"], f"{pre}.x_attn")
        ln2 = node(
            "LayerNormalization",
            [x, f"{pre}.ln2.g", f"{pre}.ln2.b"],
            f"{pre}.ln2",
            axis=-1,
            epsilon=1e-5,
        )
        node("MatMul", [ln2, f"{pre}.fc1"], f"{pre}.fc1_out")
        node("Relu", [f"{pre}.fc1_out"], f"{pre}.relu")
        node("MatMul", [f"{pre}.relu", f"{pre}.fc2"], f"{pre}.fc2_out")
        x = node("Add", [x, f"{pre}.fc2_out"], f"{pre}.x_mlp")
    node("LayerNormalization", [x, "lnf.g", "lnf.b"], "lnf", axis=-1, epsilon=1e-5)
    node("MatMul", ["lnf", "lm_head"], "logits")
    graph = helper.make_graph(nodes, "tiny-decoder", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.15
    onnx.checker.check_model(model)
    return model


def write_model(
    out: Path,
    tokenizer_json: Path,
    seed: int = 0,
    lora: bool = False,
    max_positions: int = 128,
    n_layers: int = 2,
) -> dict[str, F32]:
    """Write a complete model folder; return its weights (for :func:`reference_logits`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    cfg = TinyConfig(
        vocab_size=int(tok.get_vocab_size(with_added_tokens=True)),
        max_positions=max_positions,
        n_layers=n_layers,
    )
    weights = init_weights(cfg, seed)
    onnx.save(build_graph(cfg, weights, lora=lora), str(out / "model.onnx"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": CHATML,
                "eos_token": "<|im_end|>",
                "bos_token": None,
                "model_max_length": max_positions,
            }
        )
    )
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [tok.token_to_id("<|endoftext|>")]})
    )
    (out / "config.json").write_text(
        json.dumps(
            {
                "model_type": "tiny-test",
                "max_position_embeddings": max_positions,
                "hidden_size": cfg.d_model,
                "num_attention_heads": cfg.n_heads,
                "num_hidden_layers": cfg.n_layers,
                "vocab_size": cfg.vocab_size,
            }
        )
    )
    return weights


def _layer_norm(
    x: npt.NDArray[np.float64], g: npt.NDArray[Any], b: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return np.asarray((x - mu) / np.sqrt(var + 1e-5) * g + b, dtype=np.float64)


def reference_logits(
    weights: dict[str, F32], ids: list[int], n_heads: int = 4, lora: dict[str, F32] | None = None
) -> npt.NDArray[np.float64]:
    """Logits of every position, shape (len(ids), vocab), computed without a cache in float64."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    n_layers = sum(1 for k in w if k.endswith(".q") and k.startswith("h."))
    n = len(ids)
    x = w["wte"][ids] + w["wpe"][np.arange(n)]
    d = x.shape[-1]
    hd = d // n_heads
    causal = np.tril(np.ones((n, n), dtype=bool))
    for i in range(n_layers):
        pre = f"h.{i}"
        a = _layer_norm(x, w[f"{pre}.ln1.g"], w[f"{pre}.ln1.b"])
        wq = w[f"{pre}.q"]
        if lora is not None and f"lora.{i}.q.A" in lora:
            wq = wq + lora[f"lora.{i}.q.A"].astype(np.float64) @ lora[f"lora.{i}.q.B"]
        q, k, v = (a @ wq, a @ w[f"{pre}.k"], a @ w[f"{pre}.v"])
        q, k, v = (t.reshape(n, n_heads, hd).transpose(1, 0, 2) for t in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        scores = np.where(causal, scores, -1e9)
        scores -= scores.max(-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(-1, keepdims=True)
        ctx = (p @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + ctx @ w[f"{pre}.o"]
        m = _layer_norm(x, w[f"{pre}.ln2.g"], w[f"{pre}.ln2.b"])
        x = x + np.maximum(m @ w[f"{pre}.fc1"], 0) @ w[f"{pre}.fc2"]
    return _layer_norm(x, w["lnf.g"], w["lnf.b"]) @ w["lm_head"]


def reference_greedy(
    weights: dict[str, F32], ids: list[int], n_new: int, lora: dict[str, F32] | None = None
) -> list[int]:
    """Greedy continuation of ``ids`` by the numpy reference (no EOS handling)."""
    seq = list(ids)
    for _ in range(n_new):
        seq.append(int(np.argmax(reference_logits(weights, seq, lora=lora)[-1])))
    return seq[len(ids) :]


REQUEST_PROMPTS = ["Hello world", "The quick brown fox", "Emoji: 🙂", "def add(a, b):"]


def mixed_requests(
    n: int, first_max_tokens: int, sample_every: int
) -> list[tuple[str, dict[str, object]]]:
    """``n`` requests of growing length; all but every ``sample_every``-th sample (seeded top-p).

    Concurrency tests run them at once and compare with running them one by one.
    """
    out: list[tuple[str, dict[str, object]]] = []
    for i in range(n):
        params: dict[str, object] = {"max_tokens": first_max_tokens + i}
        if i % sample_every:
            params.update(temperature=1.0, top_p=0.95, seed=i)
        out.append((REQUEST_PROMPTS[i % len(REQUEST_PROMPTS)], params))
    return out
