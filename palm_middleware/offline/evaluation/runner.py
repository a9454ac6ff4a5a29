"""Measure reward profiles: run each member over a prompt set, score the replies, aggregate r̂.

For every member: build its engine (:func:`~palm_middleware.engines.members.engine_for_member`),
generate one reply per prompt with the member's own decoding defaults (``max_tokens`` capped,
a fixed seed per prompt when sampling), look each reply up in the :class:`ReplyCache` first,
score all replies with every trait scorer in one ``score_many`` call, and report the mean and
its standard error (sample standard deviation / sqrt(n)) per trait.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...engines.base import GenerationParams
from ...engines.members import engine_for_member
from ...engines.onnx import OnnxEngine
from ...engines.registry import SessionRegistry
from ...exceptions import InvalidParameterError
from ...portfolio.manifest import Member, Portfolio, Provenance
from ...types import FloatArray
from ..scoring.calibration import ScorerSet
from .cache import ReplyCache, member_fingerprint, reply_key
from .prompts import EvalPrompt

__all__ = [
    "MemberResult",
    "evaluate_portfolio",
    "update_portfolio",
    "write_candidates",
    "write_replies",
]


@dataclass(frozen=True)
class MemberResult:
    """One member's measured profile.

    Attributes:
        id: Member id.
        traits: Trait names, in column order.
        mean: r̂, shape (n_traits,).
        stderr: Standard errors of ``mean``, shape (n_traits,).
        n: Prompts measured.
        n_cached: Replies taken from the cache.
        seconds: Wall time spent generating (0 when every reply was cached).
        mean_tokens: Mean completion tokens per reply.
        truncated: Fraction of replies cut by ``max_tokens`` (finish reason ``length``): a
            brevity score earned by truncation rather than by the member's style.
        replies: The replies, in prompt order.
        scores: Per-reply scores, shape (n, n_traits).
    """

    id: str
    traits: tuple[str, ...]
    mean: FloatArray
    stderr: FloatArray
    n: int
    n_cached: int
    seconds: float
    mean_tokens: float
    truncated: float
    replies: tuple[str, ...]
    scores: FloatArray


def _params(
    engine: OnnxEngine, prompt: EvalPrompt, max_tokens: int | None, seed: int
) -> GenerationParams:
    p = engine.defaults
    if max_tokens is not None:
        p = replace(p, max_tokens=min(p.max_tokens, max_tokens))
    if p.seed is None and p.temperature > 0:
        digest = hashlib.sha256(f"{seed}:{prompt.id}".encode()).digest()
        p = replace(p, seed=int.from_bytes(digest[:4], "big"))
    return p


def evaluate_portfolio(
    portfolio: Portfolio,
    scorers: ScorerSet,
    prompts: Sequence[EvalPrompt],
    *,
    root: str | Path = ".",
    bases: Mapping[str, str | Path] | None = None,
    registry: SessionRegistry | None = None,
    cache: ReplyCache | None = None,
    max_tokens: int | None = None,
    workers: int = 1,
    seed: int = 0,
    progress: bool = True,
    on_member: Callable[[MemberResult], None] | None = None,
) -> list[MemberResult]:
    """Measure every member of ``portfolio`` on ``prompts`` with ``scorers``.

    Args:
        portfolio: Members with backends (prompted, onnx or adapter).
        scorers: One scorer per trait to measure.
        prompts: The prompts (risky ones already filtered out by the caller if wanted).
        root: Folder relative model paths are resolved against (the manifest's folder).
        bases: Shared base names to folders (see ``engine_for_member``).
        registry: Shares loaded models between members; a fresh one if ``None``.
        cache: Where replies are looked up and stored; no caching if ``None``.
        max_tokens: Cap on each member's ``max_tokens`` (its own default when lower).
        workers: Concurrent requests per member (the engine decodes one sequence per request).
        seed: Seeds the per-prompt sampling seed of members that sample.
        progress: Show a tqdm bar (hidden when stderr is not a terminal).
        on_member: Called with each member's result as soon as it is measured.

    Returns:
        One result per member, in manifest order.
    """
    from .._progress import progress_bar

    if not prompts:
        raise InvalidParameterError(
            "no prompts to evaluate; check --prompts, --limit and --include-risky"
        )
    if workers < 1:
        raise InvalidParameterError(f"workers must be >= 1; got {workers!r}")
    registry = registry or SessionRegistry()
    traits = tuple(scorers.traits)
    bar = progress_bar(len(portfolio) * len(prompts), "palm eval", progress)
    results = []
    try:
        for member in portfolio.members:
            engine = engine_for_member(member, registry, bases=bases, root=root)
            fp = _fingerprint(member, engine)
            params = [_params(engine, p, max_tokens, seed) for p in prompts]
            keys = [reply_key(fp, p.text, gp) for p, gp in zip(prompts, params)]
            got: list[tuple[str, str, int] | None] = [
                cache.get(k) if cache is not None else None for k in keys
            ]
            n_cached = sum(g is not None for g in got)
            bar.update(n_cached)
            todo = [i for i, g in enumerate(got) if g is None]
            t0 = time.perf_counter()

            def run(
                i: int, engine: OnnxEngine = engine, params: list[GenerationParams] = params
            ) -> tuple[str, str, int]:
                out = engine.generate([{"role": "user", "content": prompts[i].text}], params[i])
                return (out.text, out.finish_reason, out.usage.completion_tokens)

            with ThreadPoolExecutor(max_workers=workers) as pool:
                for i, reply in zip(todo, pool.map(run, todo)):
                    got[i] = reply
                    if cache is not None:
                        cache.put(keys[i], *reply)
                    bar.update(1)
            seconds = time.perf_counter() - t0 if todo else 0.0
            done = [g for g in got if g is not None]
            texts = [g[0] for g in done]
            res = _aggregate(member.id, traits, scorers, texts, [p.text for p in prompts])
            res = replace(
                res,
                n_cached=n_cached,
                seconds=seconds,
                mean_tokens=float(np.mean([g[2] for g in done])),
                truncated=float(np.mean([g[1] == "length" for g in done])),
            )
            results.append(res)
            if on_member is not None:
                on_member(res)
    finally:
        bar.close()
    return results


def _fingerprint(member: Member, engine: OnnxEngine) -> str:
    assert member.backend is not None  # engine_for_member checked it
    files = [engine.path] + ([engine.adapter] if engine.adapter is not None else [])
    return member_fingerprint(member.backend.model_dump(), files)


def _aggregate(
    mid: str, traits: tuple[str, ...], scorers: ScorerSet, texts: list[str], prompts: list[str]
) -> MemberResult:
    cols = [np.clip(scorers.scorers[t].score_many(texts, prompts), 0.0, 1.0) for t in traits]
    scores = np.column_stack(cols)
    n = scores.shape[0]
    mean = scores.mean(axis=0)
    se = scores.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(len(traits))
    return MemberResult(mid, traits, mean, se, n, 0, 0.0, 0.0, 0.0, tuple(texts), scores)


def write_candidates(results: Sequence[MemberResult], path: str | Path) -> None:
    """Write the candidates CSV ``palm build`` reads: id, one column per trait, ``<trait>_se``."""
    if not results:
        raise InvalidParameterError("no results to write")
    traits = results[0].traits
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", *traits, *(f"{t}_se" for t in traits)])
        for r in results:
            w.writerow([r.id, *(f"{v:.6f}" for v in r.mean), *(f"{v:.6f}" for v in r.stderr)])


def write_replies(
    results: Sequence[MemberResult], prompts: Sequence[EvalPrompt], path: str | Path
) -> None:
    """Write every reply with its scores as JSON lines (to audit what the scorers saw)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            for p, text, row in zip(prompts, r.replies, r.scores):
                f.write(
                    json.dumps(
                        {
                            "member": r.id,
                            "prompt_id": p.id,
                            "prompt": p.text,
                            "reply": text,
                            "scores": {t: round(float(v), 6) for t, v in zip(r.traits, row)},
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )


def update_portfolio(
    portfolio: Portfolio,
    results: Sequence[MemberResult],
    *,
    prompt_set: str,
    scorers: Mapping[str, str],
) -> Portfolio:
    """``portfolio`` with each measured member's reward and provenance replaced.

    Raises:
        InvalidParameterError: If a manifest trait was not measured.
    """
    by_id = {r.id: r for r in results}
    members = []
    for m in portfolio.members:
        r = by_id.get(m.id)
        if r is None:
            members.append(m)
            continue
        missing = [t for t in portfolio.space.names if t not in r.traits]
        if missing:
            raise InvalidParameterError(
                f"cannot update the manifest: traits {missing} were not measured; score every "
                "manifest trait (add scorers for them) or write only the candidates file"
            )
        idx = [r.traits.index(t) for t in portfolio.space.names]
        mean, se = r.mean[idx], r.stderr[idx]
        prov = Provenance(
            prompt_set=prompt_set,
            n=r.n,
            stderr={t: round(float(v), 6) for t, v in zip(portfolio.space.names, se)},
            scorers=dict(scorers),
        )
        members.append(replace(m, reward=np.round(mean, 6), stderr=se, provenance=prov))
    return replace(portfolio, members=tuple(members))
