"""A tiny real ONNX sequence classifier built with ``onnx.helper`` (no torch).

It stands for an exported Hugging Face formality classifier (say a DistilBERT fine-tuned on
formal vs informal sentences, exported by ``optimum-cli export onnx --task text-classification``):
same interface (``input_ids``, ``attention_mask`` -> ``logits`` of shape (batch, 2)), same
folder (``model.onnx``, ``tokenizer.json``, ``config.json`` with ``id2label``). Inside, a
bag-of-words model: each token embeds to two logits (formal words push label 1, casual words
label 0), masked mean over the sequence, plus a bias.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FORMAL = ["however", "therefore", "furthermore", "consequently", "regarding", "advisable"]
CASUAL = ["hey", "lol", "gonna", "awesome", "dude", "super"]
OTHER = ["the", "a", "is", "it", "to", "you", "this", "plan", "works", "good"]


def write_classifier(out: Path) -> Path:
    """Write the classifier folder; return it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *FORMAL, *CASUAL, *OTHER])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    emb = np.zeros((len(vocab), 2), dtype=np.float32)
    for w in FORMAL:
        emb[vocab[w]] = [-2.0, 2.0]
    for w in CASUAL:
        emb[vocab[w]] = [2.0, -2.0]
    inits = [
        numpy_helper.from_array(emb, "emb"),
        numpy_helper.from_array(np.array([0.0, 0.0], dtype=np.float32), "bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axm1"),
        numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "tiny"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),  # [b, s, 2]
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axm1"], ["m3"]),  # [b, s, 1]
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "ax1"], ["s"], keepdims=0),  # [b, 2]
        helper.make_node("ReduceSum", ["m3", "ax1"], ["n"], keepdims=0),  # [b, 1]
        helper.make_node("Add", ["n", "tiny"], ["n1"]),
        helper.make_node("Div", ["s", "n1"], ["mean"]),
        helper.make_node("Add", ["mean", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-classifier",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    (out / "config.json").write_text(json.dumps({"id2label": {"0": "casual", "1": "formal"}}))
    return out
