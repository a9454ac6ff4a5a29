"""Micro-batched decode steps (``RuntimeOptions(batch_decode=True)``): each request's output
equals its unbatched output, batches really form, adapters never mix, leavers don't stall."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware.engines import RuntimeOptions
from palm_middleware.engines._batcher import DecodeBatcher
from palm_middleware.engines.base import Chunk, Generation
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry

from .conftest import TinyModel
from .tiny import reference_greedy

PROMPTS = [
    "Hello world",
    "The quick brown fox jumps over",
    "Emoji: 🙂",
    "def add(a, b):",
    "Portfolio members are routed per user",
    "Ça va?",
]

# A long window: the leader waits for every registered request, so batches form however the
# threads are scheduled (the window only bounds the wait for a request paused between steps).
BATCHED = RuntimeOptions(batch_decode=True, batch_window_ms=5000, max_batch=8)


def _requests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(12):
        params: dict[str, Any] = {"max_tokens": 10 + 3 * i}
        if i % 3 == 1:
            params.update(temperature=1.0, top_p=0.95, seed=i)
        if i % 4 == 2:
            params.update(stop=["e"])
        out.append((PROMPTS[i % len(PROMPTS)], params))
    return out


@pytest.fixture()
def batched(tiny: TinyModel) -> OnnxEngine:
    """A fresh registry per test, so each test's batcher counts only its own runs."""
    return OnnxEngine(tiny.path, registry=SessionRegistry(BATCHED))


def _batcher(engine: OnnxEngine, together: int = 2) -> DecodeBatcher:
    """The engine's batcher, whose first ``together`` joiners wait for each other.

    Without this a request may finish its decode before the next one's prefill ends (the tiny
    model is fast), so no batch would form; with it the first decode step of those requests is
    one batch, however the threads are scheduled. (The timeout only turns a bug into a failed
    assertion instead of a hang.)
    """
    batcher = engine.model.batcher
    assert batcher is not None
    join = batcher.join
    joined: list[None] = []
    all_in = threading.Event()

    def gathered_join() -> None:
        join()
        joined.append(None)
        if len(joined) >= together:
            all_in.set()
        all_in.wait(timeout=60)

    batcher.join = gathered_join  # type: ignore[method-assign]
    return batcher


def test_threads_equal_unbatched(engine: OnnxEngine, batched: OnnxEngine) -> None:
    reqs = _requests()
    sequential = [engine.generate(p, k) for p, k in reqs]
    batcher = _batcher(batched)
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda r: batched.generate(*r), reqs))
    assert [g.token_ids for g in parallel] == [g.token_ids for g in sequential]
    assert [g.text for g in parallel] == [g.text for g in sequential]
    assert [g.finish_reason for g in parallel] == [g.finish_reason for g in sequential]
    assert max(batcher.batch_sizes) > 1


def test_greedy_equals_numpy_reference(tiny: TinyModel, batched: OnnxEngine) -> None:
    tok = batched.model.tokenizer
    prompts = [list(tok.encode(p).ids) for p in PROMPTS]
    n_new = [12, 20, 7, 25, 16, 9]
    batcher = _batcher(batched, together=len(PROMPTS))  # every request decodes (>= 7 tokens)

    def run(i: int) -> tuple[int, ...]:
        g = batched.generate(PROMPTS[i], {"max_tokens": n_new[i]})
        return g.token_ids

    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
        got = list(pool.map(run, range(len(PROMPTS))))
    eos = batched.model.eos_token_ids
    for ids, n, out in zip(prompts, n_new, got, strict=True):
        want = reference_greedy(tiny.weights, ids, n)
        assert list(out) == want[: len(out)]
        assert len(out) == n or out[-1] in eos
    assert max(batcher.batch_sizes) == len(PROMPTS)


async def _collect(engine: OnnxEngine, prompt: str, params: dict[str, Any]) -> list[Chunk]:
    return [c async for c in engine.astream(prompt, params)]


def test_asyncio_equals_unbatched(engine: OnnxEngine, batched: OnnxEngine) -> None:
    reqs = _requests()
    sequential = [engine.generate(p, k) for p, k in reqs]
    batcher = _batcher(batched)

    async def main() -> tuple[list[Generation], list[list[Chunk]]]:
        gens = await asyncio.gather(*(batched.agenerate(p, k) for p, k in reqs))
        streams = await asyncio.gather(*(_collect(batched, p, k) for p, k in reqs))
        return list(gens), list(streams)

    with ThreadPoolExecutor(max_workers=6) as pool:
        batched.executor = pool
        gens, streams = asyncio.run(main())
    assert [g.token_ids for g in gens] == [g.token_ids for g in sequential]
    for chunks, whole in zip(streams, sequential, strict=True):
        assert "".join(c.text for c in chunks) == whole.text
        assert tuple(i for c in chunks for i in c.token_ids) == whole.token_ids
    assert max(batcher.batch_sizes) > 1


def test_padded_rows_match_alone(batched: OnnxEngine) -> None:
    """One batched run of rows with different past lengths = each row run alone."""
    model = batched.model
    batcher = batched.model.batcher
    assert batcher is not None
    steps = []
    for prompt in ("Hi", "Hello world", "The quick brown fox jumps over the lazy dog."):
        ids = np.asarray([model.tokenizer.encode(prompt).ids], dtype=np.int64)
        n = ids.shape[1]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None, :],
        }
        past = {k.input_name: k.empty() for k in model.kv_inputs}
        out = model.session.run(model.output_names, {**feeds, **past})
        past = {k.input_name: v for k, v in zip(model.kv_inputs, out[1:], strict=True)}
        step = {
            "input_ids": np.asarray([[int(np.argmax(out[0][0, -1]))]], dtype=np.int64),
            "attention_mask": np.ones((1, n + 1), dtype=np.int64),
            "position_ids": np.asarray([[n]], dtype=np.int64),
        }
        steps.append((step, past))
    assert len({s[1][model.kv_inputs[0].input_name].shape[2] for s in steps}) == 3
    alone = [batcher.step(f, p) for f, p in steps]  # nobody joined: each runs at once, alone
    items = [_step(f, p) for f, p in steps]
    batcher._run(items)
    for (logits, present), item in zip(alone, items, strict=True):
        assert item.error is None and item.logits is not None
        np.testing.assert_allclose(item.logits, logits, rtol=1e-5, atol=1e-5)
        assert int(np.argmax(item.logits)) == int(np.argmax(logits))
        for name, value in present.items():
            np.testing.assert_allclose(item.present[name], value, rtol=1e-5, atol=1e-5)


def _step(feeds: dict[str, Any], past: dict[str, Any]) -> Any:
    from palm_middleware.engines._batcher import _Step

    return _Step(feeds, past)


def test_adapter_requests_run_alone(tiny: TinyModel, tmp_path: Path) -> None:
    from palm_middleware.offline.engines.lora import add_lora_sites, write_adapter

    from .test_lora import _optimum_named, _random_params

    folder = tmp_path / "lora"
    add_lora_sites(_optimum_named(tiny, tmp_path / "base"), folder)
    adapter = write_adapter(tmp_path / "a.onnx_adapter", _random_params(32, rank=3, seed=1), folder)
    registry = SessionRegistry(BATCHED)
    base = OnnxEngine(folder, registry=registry)
    lora = OnnxEngine(folder, registry=registry, adapter=adapter)
    params = {"max_tokens": 20}
    want_lora = OnnxEngine(folder, adapter=adapter).generate("Hello world", params).token_ids
    want_base = OnnxEngine(folder).generate("Hello world", params).token_ids
    assert want_lora != want_base  # the adapter changes the output, so mixing would show
    engines = [lora, base, lora, base, lora, base]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda e: e.generate("Hello world", params).token_ids, engines))
    assert got == [want_lora, want_base] * 3
    batcher = base.model.batcher
    assert batcher is not None
    # Only the 3 base requests ever reach the batcher: no batch holds more rows than that.
    assert max(batcher.batch_sizes) <= 3
    assert sum(n * c for n, c in batcher.batch_sizes.items()) == 3 * (len(want_base) - 1)


@pytest.mark.timeout(60)
def test_closed_stream_does_not_stall_others(engine: OnnxEngine, tiny: TinyModel) -> None:
    # A huge window: if the closed stream stayed registered, the others would wait for it for
    # 1000 s per step; the 60 s timeout turns that hang into a failure.
    slow = OnnxEngine(
        tiny.path,
        registry=SessionRegistry(RuntimeOptions(batch_decode=True, batch_window_ms=1_000_000)),
    )
    reqs = _requests()[:4]
    want = [engine.generate(p, k).token_ids for p, k in reqs]
    started = threading.Barrier(len(reqs) + 1)

    def early_closer() -> int:
        stream = slow.stream("Hello world", {"max_tokens": 100})
        got = [next(stream), next(stream)]
        started.wait()
        stream.close()  # type: ignore[attr-defined]
        return len(got)

    def normal(r: tuple[str, dict[str, Any]]) -> tuple[int, ...]:
        started.wait()
        return slow.generate(*r).token_ids

    with ThreadPoolExecutor(max_workers=len(reqs) + 1) as pool:
        closer = pool.submit(early_closer)
        got = list(pool.map(normal, reqs))
    assert closer.result() == 2
    assert got == want


def test_cancelled_agenerate_does_not_stall_others(engine: OnnxEngine, tiny: TinyModel) -> None:
    slow = OnnxEngine(
        tiny.path,
        registry=SessionRegistry(RuntimeOptions(batch_decode=True, batch_window_ms=1_000_000)),
    )
    reqs = _requests()[:3]
    want = [engine.generate(p, k).token_ids for p, k in reqs]

    async def main() -> list[Generation]:
        doomed = asyncio.create_task(slow.agenerate("Hello", {"max_tokens": 100}))
        others = [asyncio.create_task(slow.agenerate(p, k)) for p, k in reqs]
        await asyncio.sleep(0)
        doomed.cancel()
        return list(await asyncio.gather(*others))

    with ThreadPoolExecutor(max_workers=6) as pool:
        slow.executor = pool
        got = asyncio.run(main())
    assert [g.token_ids for g in got] == want


def test_one_thread_interleaving_two_streams_finishes(engine: OnnxEngine, tiny: TinyModel) -> None:
    """Both streams are registered but one thread drives them: each step waits out the (short,
    default) window for the other instead of deadlocking, and outputs are unchanged."""
    short = OnnxEngine(tiny.path, registry=SessionRegistry(RuntimeOptions(batch_decode=True)))
    params = {"max_tokens": 16}
    a, b = short.stream("Hello world", params), short.stream("def add(a, b):", params)
    got: dict[str, list[int]] = {"a": [], "b": []}
    live = {"a": a, "b": b}
    while live:
        for key, stream in list(live.items()):
            chunk = next(stream, None)
            if chunk is None:
                del live[key]
            else:
                got[key].extend(chunk.token_ids)
    assert tuple(got["a"]) == engine.generate("Hello world", params).token_ids
    assert tuple(got["b"]) == engine.generate("def add(a, b):", params).token_ids


def test_batching_is_off_by_default(engine: OnnxEngine) -> None:
    assert engine.model.batcher is None
