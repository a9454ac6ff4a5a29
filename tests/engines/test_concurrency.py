"""Concurrent requests to one member: isolated state, sequential outputs, a free event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from palm_middleware.engines.base import Chunk, Generation
from palm_middleware.engines.onnx import OnnxEngine

from .tiny import mixed_requests, write_model


def _requests() -> list[tuple[str, dict[str, object]]]:
    return mixed_requests(12, 24, 3)


def test_threads_equal_sequential(engine: OnnxEngine) -> None:
    reqs = _requests()
    sequential = [engine.generate(p, k) for p, k in reqs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda r: engine.generate(*r), reqs))
    assert parallel == sequential


def test_thread_streams_equal_sequential(engine: OnnxEngine) -> None:
    reqs = _requests()
    sequential = [engine.generate(p, k) for p, k in reqs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        streamed = list(pool.map(lambda r: list(engine.stream(*r)), reqs))
    for chunks, whole in zip(streamed, sequential, strict=True):
        assert "".join(c.text for c in chunks) == whole.text
        assert chunks[-1].usage == whole.usage


async def _collect(engine: OnnxEngine, prompt: str, params: dict[str, Any]) -> list[Chunk]:
    return [c async for c in engine.astream(prompt, params)]


def test_asyncio_equals_sequential(engine: OnnxEngine) -> None:
    reqs = _requests()
    sequential = [engine.generate(p, k) for p, k in reqs]

    async def main() -> tuple[list[Generation], list[list[Chunk]]]:
        gens = await asyncio.gather(*(engine.agenerate(p, k) for p, k in reqs))
        streams = await asyncio.gather(*(_collect(engine, p, k) for p, k in reqs))
        return list(gens), list(streams)

    gens, streams = asyncio.run(main())
    assert gens == sequential
    for chunks, whole in zip(streams, sequential, strict=True):
        assert "".join(c.text for c in chunks) == whole.text
        assert tuple(i for c in chunks for i in c.token_ids) == whole.token_ids


def test_async_does_not_block_the_event_loop(engine: OnnxEngine) -> None:
    counting = _CountingEngine(engine.path, registry=engine.registry)

    async def main() -> set[int]:
        seen: set[int] = set()
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                seen.add(counting.steps)
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await asyncio.gather(
            *(counting.agenerate("Hello", {"max_tokens": 120}) for _ in range(3)),
            _collect(counting, "Hello", {"max_tokens": 120}),
        )
        done.set()
        await task
        return seen

    seen = asyncio.run(main())
    # A blocked loop runs the ticker only before and after the generations (0 and all steps);
    # a free one runs it between model steps. A count, not a wall-clock comparison.
    assert any(0 < s < counting.steps for s in seen), (sorted(seen), counting.steps)


class _CountingEngine(OnnxEngine):
    """The real engine, counting the model steps it runs."""

    steps = 0

    def _tokens(self, *args: Any, **kwargs: Any) -> Iterator[int]:
        for token in super()._tokens(*args, **kwargs):
            self.steps += 1
            yield token


def test_astream_closed_early_stops_the_worker(engine: OnnxEngine) -> None:
    counting = _CountingEngine(engine.path, registry=engine.registry)

    async def main() -> list[Chunk]:
        got = []
        stream = counting.astream("Hello world", {"max_tokens": 120})
        async for c in stream:
            got.append(c)
            if len(got) == 2:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    assert len(asyncio.run(main())) == 2
    assert counting.steps < 120  # the worker saw the cancel flag instead of running to the end


def test_cancelled_agenerate_stops_the_worker(tokenizer_file: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "long", tokenizer_file, max_positions=4096)
    counting = _CountingEngine(tmp_path / "long")

    async def main() -> bool:
        task = asyncio.create_task(counting.agenerate("Hello", {"max_tokens": 4000}))
        while counting.steps == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())
    assert counting.steps < 4000  # stopped at the cancel flag, not at max_tokens


def test_async_errors_propagate(engine: OnnxEngine) -> None:
    import pytest

    from palm_middleware.exceptions import GenerationError

    async def main() -> None:
        await engine.agenerate(42, {"max_tokens": 3})  # type: ignore[arg-type]

    async def main_stream() -> None:
        async for _ in engine.astream("", {"max_tokens": 3}):
            pass

    with pytest.raises(GenerationError, match="prompt must be a string or a list"):
        asyncio.run(main())
    with pytest.raises(GenerationError, match="prompt is empty"):
        asyncio.run(main_stream())
