"""Train a LoRA adapter member on CPU with torch and export it as an ``.onnx_adapter``.

LoRA is implemented directly (no peft): each target ``nn.Linear`` (frozen ``W``) gains trainable
``A`` (``d_in x r``, small uniform) and ``B`` (``r x d_out``, zero, so step 0 is the base model);
the layer computes ``x·Wᵀ + (x·A)·B·alpha/r``. The loss is the next-token cross-entropy on the
assistant tokens of chat-templated examples only (the prompt is context, not a target), with
logits computed only at those positions (the LM head is the costliest matmul for short answers).

The export folds ``alpha/r`` into B and names parameters after the torch modules, which are the
site names of :func:`~palm_middleware.offline.engines.lora.add_lora_sites`; a check then
compares greedy tokens of torch+LoRA with ONNX base+adapter. Build time only (extra ``export``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...exceptions import EngineError, InvalidParameterError
from .._progress import progress_bar
from ..evaluation.styles import StyleSet
from .lora import SITES_FILE, Sites, param_names, read_sites, write_adapter

__all__ = ["CHECK_MESSAGES", "TrainConfig", "TrainResult", "train_adapter"]

CHECK_MESSAGES = ("What is the capital of Italy?", "How do plants make food?")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one LoRA run (recorded in the card)."""

    steps: int = 120
    rank: int = 8
    alpha: float = 16.0
    lr: float = 1e-3
    batch_size: int = 8
    warmup: int = 10
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    max_len: int = 256

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rank < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InvalidParameterError("steps, rank and batch size must be >= 1 and lr > 0")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_adapter` wrote: the adapter, its card and the loss per step."""

    adapter: Path
    card: dict[str, Any]
    losses: list[float]


def _lora_linear(base: Any, rank: int, alpha: float) -> Any:
    import torch
    from torch import nn

    class LoraLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            bound = 1.0 / math.sqrt(base.in_features)
            self.lora_A = nn.Parameter(torch.empty(base.in_features, rank).uniform_(-bound, bound))
            self.lora_B = nn.Parameter(torch.zeros(rank, base.out_features))
            self.scaling = alpha / rank

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.lora_A) @ self.lora_B * self.scaling

    return LoraLinear()


def attach_lora(model: Any, config: TrainConfig) -> dict[str, Any]:
    """Freeze ``model`` and wrap its target linears; returns ``{module name: LoRA module}``."""
    from torch import nn

    for p in model.parameters():
        p.requires_grad_(False)
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in config.targets
    ]
    if not found:
        raise EngineError(f"the model has no nn.Linear named {list(config.targets)}")
    wrapped = {}
    for name, mod in found:
        parent_name, _, child = name.rpartition(".")
        wrapper = _lora_linear(mod, config.rank, config.alpha)
        setattr(model.get_submodule(parent_name), child, wrapper)
        wrapped[name] = wrapper
    return wrapped


def lora_params(wrapped: dict[str, Any]) -> dict[str, Any]:
    """Adapter parameters as numpy float32: ``<site>.lora_A``, ``<site>.lora_B`` (scaled)."""
    out = {}
    for name, mod in wrapped.items():
        a, b = param_names(name)
        out[a] = mod.lora_A.detach().float().numpy().copy()
        out[b] = (mod.lora_B.detach().float() * mod.scaling).numpy().copy()
    return out


def _encode(tok: Any, style: StyleSet, max_len: int) -> list[tuple[list[int], int]]:
    """(token ids, index of the first answer token) per example, via the chat template."""
    out = []
    for ex in style.examples:
        user = [{"role": "user", "content": ex.user}]
        prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(
            [*user, {"role": "assistant", "content": ex.assistant}], tokenize=False
        )
        if not full.startswith(prompt):
            raise EngineError(
                "the chat template renders the prompt differently inside the "
                "conversation; cannot separate the answer tokens"
            )
        # The answer part includes the end-of-turn marker, so the adapter learns to stop.
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        out.append(((p_ids + a_ids)[:max_len], len(p_ids)))
    return out


def _batch_loss(model: Any, batch: Sequence[tuple[list[int], int]], pad_id: int) -> Any:
    import torch
    from torch.nn import functional

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    target = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, (seq, start) in enumerate(batch):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        target[i, start : len(seq)] = True
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    # Position t predicts token t+1: logits only where the next token is an answer token.
    where = target[:, 1:]
    logits = model.lm_head(hidden[:, :-1][where])
    return functional.cross_entropy(logits.float(), ids[:, 1:][where])


def _plot(losses: list[float], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience; the card holds the numbers
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set(xlabel="step", ylabel="loss (answer tokens)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _check(
    model: Any, lora_base: Path, adapter: Path, messages: Sequence[str], n: int
) -> dict[str, Any]:
    from ...engines.onnx import OnnxEngine
    from ...engines.registry import SessionRegistry
    from .export import _torch_greedy

    registry = SessionRegistry()  # one session for base and adapter, as in serving
    engine = OnnxEngine(lora_base, registry=registry, adapter=adapter)
    base = OnnxEngine(lora_base, registry=registry)
    cases = []
    for text in messages:
        msgs = [{"role": "user", "content": text}]
        ids = engine.encode_prompt(msgs)
        got = list(engine.generate(msgs, {"max_tokens": n}).token_ids)
        want = _torch_greedy(model, ids, n)
        base_ids = list(base.generate(msgs, {"max_tokens": n}).token_ids)
        # The engine stops at an EOS token; torch's loop does not: compare the common prefix.
        equal = got == want[: len(got)] and (len(got) == n or got[-1] in engine.model.eos_token_ids)
        cases.append(
            {
                "prompt": text,
                "equal": equal,
                "onnx_adapter": got,
                "torch_lora": want,
                "onnx_base": base_ids,
            }
        )
    return {
        "result": "passed" if all(c["equal"] for c in cases) else "failed",
        "n_tokens": n,
        "cases": cases,
    }


def _check_sites(wrapped: dict[str, Any], sites: Sites, lora_base: Path) -> None:
    targets = " ".join(sorted({n.rsplit(".", 1)[-1] for n in wrapped}))
    for name, mod in wrapped.items():
        want = (mod.base.in_features, mod.base.out_features)
        if sites.get(name) != want:
            raise EngineError(
                f"LoRA site {name!r} {want} is not in {lora_base} (has "
                f"{sites.get(name)}); prepare it with `palm prepare-lora-base "
                f"--targets {targets}`"
            )


def train_adapter(
    hf_folder: str | Path,
    style: StyleSet,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    lora_base: str | Path | None = None,
    base_info: dict[str, Any] | None = None,
    check_messages: Sequence[str] = CHECK_MESSAGES,
    n_check_tokens: int = 6,
    progress: bool = True,
    log: Any = print,
) -> TrainResult:
    """Train a LoRA adapter on ``style`` over the HF model in ``hf_folder``; write it to ``out``.

    Args:
        hf_folder: Local Hugging Face model folder (fp32 weights and tokenizer).
        style: The examples; the loss covers their assistant turns only.
        out: The ``.onnx_adapter`` file; the card (``.json``) and loss plot (``.png``, if
            matplotlib is installed) are written next to it.
        config: Hyper-parameters; the run is deterministic for a seed on one machine.
        lora_base: Folder from ``palm prepare-lora-base``; its sites must cover the trained
            modules, and ONNX base+adapter greedy tokens are checked against torch+LoRA.
        base_info: Recorded in the card (e.g. the GGUF sha256).
        log: Called with one line per report (loss curve, check).
    """
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = Path(hf_folder)
    out = Path(out)
    sites = read_sites(lora_base) if lora_base is not None else None
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    auto_tok: Any = AutoTokenizer
    tok = auto_tok.from_pretrained(hf)
    model: Any = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    wrapped = attach_lora(model, config)
    if sites is not None and lora_base is not None:
        _check_sites(wrapped, sites, Path(lora_base))
    data = _encode(tok, style, config.max_len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    trainable = [p for m in wrapped.values() for p in (m.lora_A, m.lora_B)]
    opt = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:  # linear warm-up, then linear decay to 10%
        if step < config.warmup:
            return (step + 1) / config.warmup
        return 1.0 - 0.9 * (step - config.warmup) / max(1, config.steps - config.warmup)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    order: list[int] = []
    bar = progress_bar(total=config.steps, desc=f"train {style.name}", enabled=progress)
    started = time.perf_counter()
    every = max(1, config.steps // 10)
    try:
        for step in range(config.steps):
            while len(order) < config.batch_size:  # epochs of shuffled examples
                order += [int(i) for i in rng.permutation(len(data))]
            batch = [data[i] for i in order[: config.batch_size]]
            del order[: config.batch_size]
            loss = _batch_loss(model, batch, pad)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if not progress and (step + 1) % every == 0:  # no bar: still show it is moving
                log(
                    f"step {step + 1}/{config.steps}: loss {losses[-1]:.3f} "
                    f"({(time.perf_counter() - started) / (step + 1):.1f} s/step)"
                )
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    model.eval()
    log(
        "loss: "
        + "  ".join(
            f"{i + 1}:{losses[i]:.3f}"
            for i in sorted({*range(0, config.steps, every), config.steps - 1})
        )
    )
    params = lora_params(wrapped)
    write_adapter(
        out,
        params,
        sites
        if sites is not None
        else {n: (m.base.in_features, m.base.out_features) for n, m in wrapped.items()},
    )
    check: dict[str, Any] = {"result": "skipped"}
    if lora_base is not None and n_check_tokens > 0:
        check = _check(model, Path(lora_base), out, check_messages, n_check_tokens)
        log(
            f"token check (ONNX base+adapter vs torch+LoRA, {n_check_tokens} greedy tokens): "
            f"{check['result']}"
        )
    tail = losses[-min(10, len(losses)) :]
    card: dict[str, Any] = {
        "kind": "lora-adapter",
        "style": style.name,
        "data": {"file": Path(style.source).name, "sha256": style.sha256, "examples": len(style)},
        "config": {**asdict(config), "targets": list(config.targets)},
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
        "final_loss": round(sum(tail) / len(tail), 4),
        "first_loss": round(losses[0], 4),
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / config.steps, 2),
        "adapter_bytes": out.stat().st_size,
        "sites": len(wrapped),
        "base": dict(base_info or {}),
        "check": check,
        "losses": [round(x, 4) for x in losses],
    }
    if lora_base is not None:
        recorded = json.loads((Path(lora_base) / SITES_FILE).read_text(encoding="utf-8"))
        card["base"].update(
            onnx_sha256=recorded["base_sha256"], lora_base_sha256=recorded["sha256"]
        )
    plot = _plot(losses, out.with_suffix(".loss.png"), f"LoRA {style.name}: r={config.rank}")
    card["loss_plot"] = plot.name if plot else None
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return TrainResult(out, card, losses)
